// maskc BASE-DIE MODEL (fixed-function silicon, not personalization): RMSNorm -> act8
// (docs/numerics.md "RMSNorm -> act8"). Behavioural: computes the whole vector in the clock
// edge after `start`, outputs registered, `done` pulses in the same edge's cycle.
// RSQRT_HEX: lut.rsqrt (769 int32); GAMMA_HEX: the op's gamma (D int16), both $readmemh files.
/* verilator lint_off WIDTH */  // deliberate: sign extension and truncation of integers
module maskc_rmsnorm #(
  parameter D = 64,
  parameter F = 12,
  parameter GAMMA_FRAC = 11,
  parameter [63:0] EPS_D = 0,
  parameter RSQRT_HEX = "tables/lut_rsqrt.hex",
  parameter GAMMA_HEX = "params/gamma.hex"
) (
  input  wire clk,
  input  wire rst,
  input  wire start,
  input  wire [32 * D - 1:0] h,
  output reg  [8 * D - 1:0] x,
  output reg  [3 * ((D + 31) / 32) - 1:0] s,
  output reg  [11:0] m,
  output reg  signed [15:0] e,
  output reg  done
);
  localparam Q8_N = D;
  localparam Q8_G = 32;
  localparam Q8_NG = (D + 31) / 32;
`include "maskc_prims.vh"
`include "maskc_q8.vh"

  reg [31:0] rsqrt_lut [0:768];
  reg [15:0] gamma [0:D - 1];
  initial begin
    $readmemh(RSQRT_HEX, rsqrt_lut);
    $readmemh(GAMMA_HEX, gamma);
  end

  integer j, p, k, i;
  reg signed [63:0] a, v, ss, u, r, eps;
  reg [64 * D - 1:0] y;
  always @(posedge clk) begin
    done <= 1'b0;
    if (rst) begin
      x <= 0; s <= 0; m <= 0; e <= 0;
    end else if (start) begin
      a = 0;
      for (j = 0; j < D; j = j + 1) begin
        v = abs64($signed(h[32 * j +: 32]));
        if (v > a) a = v;
      end
      p = bitlen(a) - 15;
      if (p < 0) p = 0;
      ss = 0;
      for (j = 0; j < D; j = j + 1) begin
        u = rsr($signed(h[32 * j +: 32]), p);
        ss = ss + u * u;
      end
      eps = EPS_D;
      v = ss + rsr(eps, 40 - 2 * F + 2 * p);
      if (v == 0) begin
        {e, m, s, x} <= 0;
      end else begin
        k = (bitlen(v) - 1) / 2;
        i = rsr(v, 2 * k - 8) - 256;
        r = $signed({1'b0, rsqrt_lut[i]});
        for (j = 0; j < D; j = j + 1)
          y[64 * j +: 64] = rsr($signed(h[32 * j +: 32]), p) * r * $signed(gamma[j]);
        {e, m, s, x} <= q8(y, GAMMA_FRAC + 16 + k);
      end
      done <= 1'b1;
    end
  end
endmodule
