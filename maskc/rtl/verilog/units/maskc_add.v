// maskc BASE-DIE MODEL (fixed-function silicon, not personalization): the residual add,
// sat32(a + b) per element (docs/numerics.md "The whole model"). Behavioural, one clock edge.
/* verilator lint_off WIDTH */  // deliberate: sign extension and truncation of integers
module maskc_add #(
  parameter N = 64
) (
  input  wire clk,
  input  wire rst,
  input  wire start,
  input  wire [32 * N - 1:0] a,
  input  wire [32 * N - 1:0] b,
  output reg  [32 * N - 1:0] y,
  output reg  done
);
`include "maskc_prims.vh"
  integer j;
  reg signed [63:0] t;
  always @(posedge clk) begin
    done <= 1'b0;
    if (rst) begin
      y <= 0;
    end else if (start) begin
      for (j = 0; j < N; j = j + 1) begin
        t = sat32($signed(a[32 * j +: 32]) + $signed(b[32 * j +: 32]));
        y[32 * j +: 32] <= t[31:0];
      end
      done <= 1'b1;
    end
  end
endmodule
