// maskc BASE-DIE MODEL (fixed-function silicon, not personalization): RoPE, Hugging Face
// rotate_half pairs (docs/numerics.md "RoPE") with lut.cos (16384 int16, COS_HEX) and the
// op's rope.phase_step (HD/2 values < 2^32, PHASE_HEX). Behavioural, one clock edge.
/* verilator lint_off WIDTH */  // deliberate: sign extension and truncation of integers
module maskc_rope #(
  parameter HEADS = 4,
  parameter HD = 16,
  parameter PB = 16,
  parameter COS_HEX = "tables/lut_cos.hex",
  parameter PHASE_HEX = "tables/rope_phase_step.hex"
) (
  input  wire clk,
  input  wire rst,
  input  wire start,
  input  wire [PB - 1:0] pos,
  input  wire [32 * HEADS * HD - 1:0] y,
  output reg  [32 * HEADS * HD - 1:0] out,
  output reg  done
);
`include "maskc_prims.vh"
  localparam HALF = HD / 2;
  reg [15:0] cos_lut [0:16383];
  reg [31:0] phase_step [0:HALF - 1];
  initial begin
    $readmemh(COS_HEX, cos_lut);
    $readmemh(PHASE_HEX, phase_step);
  end

  integer i, hh;
  reg [63:0] phase, n;
  reg signed [63:0] c, sn, av, bv, t;
  always @(posedge clk) begin
    done <= 1'b0;
    if (rst) begin
      out <= 0;
    end else if (start) begin
      for (i = 0; i < HALF; i = i + 1) begin
        phase = ({{(64 - PB){1'b0}}, pos} * {32'd0, phase_step[i]}) & 64'hFFFFFFFF;
        n = ((phase + 64'd131072) >> 18) & 64'h3FFF;
        c = $signed(cos_lut[n]);
        sn = $signed(cos_lut[(n - 64'd4096) & 64'h3FFF]);
        for (hh = 0; hh < HEADS; hh = hh + 1) begin
          av = $signed(y[32 * (hh * HD + i) +: 32]);
          bv = $signed(y[32 * (hh * HD + i + HALF) +: 32]);
          t = sat32(rsr(av * c - bv * sn, 14));
          out[32 * (hh * HD + i) +: 32] <= t[31:0];
          t = sat32(rsr(bv * c + av * sn, 14));
          out[32 * (hh * HD + i + HALF) +: 32] <= t[31:0];
        end
      end
      done <= 1'b1;
    end
  end
endmodule
