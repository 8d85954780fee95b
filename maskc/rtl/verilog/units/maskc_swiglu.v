// maskc BASE-DIE MODEL (fixed-function silicon, not personalization): SwiGLU -> act8
// (docs/numerics.md "SwiGLU -> act8") with lut.sigmoid (8192 int32, SIGMOID_HEX).
// Behavioural, one clock edge.
/* verilator lint_off WIDTH */  // deliberate: sign extension and truncation of integers
module maskc_swiglu #(
  parameter N = 160,
  parameter F = 12,
  parameter SIGMOID_HEX = "tables/lut_sigmoid.hex"
) (
  input  wire clk,
  input  wire rst,
  input  wire start,
  input  wire [32 * N - 1:0] g,
  input  wire [32 * N - 1:0] u,
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

  reg [31:0] sig_lut [0:8191];
  initial $readmemh(SIGMOID_HEX, sig_lut);

  integer j;
  reg signed [63:0] gj, n, sl;
  reg [64 * N - 1:0] w;
  always @(posedge clk) begin
    done <= 1'b0;
    if (rst) begin
      {e, m, s, x} <= 0;
    end else if (start) begin
      for (j = 0; j < N; j = j + 1) begin
        gj = $signed(g[32 * j +: 32]);
        n = rsr(gj, F - 8);
        if (n < -4096) n = -4096;
        if (n > 4095) n = 4095;
        n = n + 4096;
        sl = rsr(gj * $signed({1'b0, sig_lut[n]}), 15);
        w[64 * j +: 64] = sat32(rsr(sl * $signed(u[32 * j +: 32]), F));
      end
      {e, m, s, x} <= q8(w, F);
      done <= 1'b1;
    end
  end
endmodule
