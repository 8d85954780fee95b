// maskc BASE-DIE MODEL (fixed-function silicon, not personalization): the `quantize` op,
// Q8(y, F, 32) of a signal (docs/numerics.md "Value types"). Behavioural, one clock edge.
/* verilator lint_off WIDTH */  // deliberate: sign extension and truncation of integers
module maskc_quantize #(
  parameter N = 64,
  parameter F = 12
) (
  input  wire clk,
  input  wire rst,
  input  wire start,
  input  wire [32 * N - 1:0] y,
  output reg  [8 * N - 1:0] x,
  output reg  [3 * ((N + 31) / 32) - 1:0] s,
  output reg  [11:0] m,
  output reg  signed [15:0] e,
  output reg  done
);
  localparam Q8_N = N;
  localparam Q8_G = 32;
  localparam Q8_NG = (N + 31) / 32;
`include "maskc_prims.vh"
`include "maskc_q8.vh"

  integer j;
  reg [64 * N - 1:0] w;
  always @(posedge clk) begin
    done <= 1'b0;
    if (rst) begin
      {e, m, s, x} <= 0;
    end else if (start) begin
      for (j = 0; j < N; j = j + 1) w[64 * j +: 64] = $signed(y[32 * j +: 32]);
      {e, m, s, x} <= q8(w, F);
      done <= 1'b1;
    end
  end
endmodule
