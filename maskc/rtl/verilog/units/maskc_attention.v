// maskc BASE-DIE MODEL (fixed-function silicon, not personalization): one layer's attention
// with its KV cache SRAM (docs/numerics.md "Attention"): on `start` it quantizes the position's
// keys and values per kv head (Q8, one group) into the cache at `pos`, then every query head
// attends over the visible positions (causal, optional sliding WINDOW > 0) with the base-2
// softmax (lut.exp2, EXP2_HEX). The cache is CTX positions deep; positions must arrive in
// order from 0 (a new sequence restarts at 0). Behavioural, one clock edge.
/* verilator lint_off WIDTH */  // deliberate: sign extension and truncation of integers
module maskc_attention #(
  parameter HEADS = 4,
  parameter KVH = 2,
  parameter HD = 16,
  parameter CTX = 256,
  parameter PB = 9,
  parameter WINDOW = 0,
  parameter F = 12,
  parameter INV_SQRT_HD = 16384,
  parameter LOG2E = 94548,
  parameter EXP2_HEX = "tables/lut_exp2.hex"
) (
  input  wire clk,
  input  wire rst,
  input  wire start,
  input  wire [PB - 1:0] pos,
  input  wire [32 * HEADS * HD - 1:0] q,
  input  wire [32 * KVH * HD - 1:0] k,
  input  wire [32 * KVH * HD - 1:0] v,
  output reg  [32 * HEADS * HD - 1:0] out,
  output reg  done
);
  localparam Q8_N = HD;
  localparam Q8_G = HD;
  localparam Q8_NG = 1;
  localparam QW = 16 + 12 + 3 + 8 * HD;
`include "maskc_prims.vh"
`include "maskc_q8.vh"

  reg [31:0] exp2_lut [0:1023];
  initial $readmemh(EXP2_HEX, exp2_lut);

  // the KV cache SRAM: int8 codes, and per vector the mantissa and exponent E = e + s_0
  reg [7:0] kx [0:KVH * CTX * HD - 1];
  reg [7:0] vx [0:KVH * CTX * HD - 1];
  reg [11:0] km [0:KVH * CTX - 1];
  reg [11:0] vm [0:KVH * CTX - 1];
  reg signed [15:0] ke [0:KVH * CTX - 1];
  reg signed [15:0] ve [0:KVH * CTX - 1];

  function automatic signed [63:0] exp_weight;
    input signed [63:0] delta;
    reg signed [63:0] w, wi;
    begin
      w = rsr(delta * LOG2E, F + 6);
      wi = w >>> 10;
      if (wi < 32) exp_weight = rsr($signed({32'd0, exp2_lut[w[9:0]]}), wi);
      else exp_weight = 0;
    end
  endfunction

  integer hh, kv, i, t, p, lo, base;
  reg [QW - 1:0] qq;
  reg [64 * HD - 1:0] vec;
  reg signed [63:0] mq, eq, dd, zz, zmax, tot, r, emax, wt, pr, o_i;
  reg signed [63:0] z [0:CTX - 1];
  reg signed [63:0] o [0:HD - 1];
  always @(posedge clk) begin
    done <= 1'b0;
    if (rst) begin
      out <= 0;
    end else if (start) begin
      p = pos;
      // store this position's keys and values
      for (kv = 0; kv < KVH; kv = kv + 1) begin
        for (i = 0; i < HD; i = i + 1) vec[64 * i +: 64] = $signed(k[32 * (kv * HD + i) +: 32]);
        qq = q8(vec, F);
        for (i = 0; i < HD; i = i + 1) kx[(kv * CTX + p) * HD + i] = qq[8 * i +: 8];
        km[kv * CTX + p] = qq[8 * HD + 3 +: 12];
        ke[kv * CTX + p] = $signed(qq[8 * HD + 15 +: 16]) + $signed({1'b0, qq[8 * HD +: 3]});
        for (i = 0; i < HD; i = i + 1) vec[64 * i +: 64] = $signed(v[32 * (kv * HD + i) +: 32]);
        qq = q8(vec, F);
        for (i = 0; i < HD; i = i + 1) vx[(kv * CTX + p) * HD + i] = qq[8 * i +: 8];
        vm[kv * CTX + p] = qq[8 * HD + 3 +: 12];
        ve[kv * CTX + p] = $signed(qq[8 * HD + 15 +: 16]) + $signed({1'b0, qq[8 * HD +: 3]});
      end
      lo = (WINDOW > 0 && p - WINDOW + 1 > 0) ? p - WINDOW + 1 : 0;
      for (hh = 0; hh < HEADS; hh = hh + 1) begin
        kv = hh / (HEADS / KVH);
        base = kv * CTX;
        for (i = 0; i < HD; i = i + 1)
          vec[64 * i +: 64] = $signed(q[32 * (hh * HD + i) +: 32]) * INV_SQRT_HD;
        qq = q8(vec, F + 16);
        mq = qq[8 * HD + 3 +: 12];
        eq = $signed(qq[8 * HD + 15 +: 16]) + $signed({1'b0, qq[8 * HD +: 3]});
        zmax = -64'sd2147483649;
        for (t = lo; t <= p; t = t + 1) begin
          dd = 0;
          for (i = 0; i < HD; i = i + 1)
            dd = dd + $signed(qq[8 * i +: 8]) * $signed(kx[(base + t) * HD + i]);
          zz = sat32(rsr(dd * mq * km[base + t], -(eq + ke[base + t]) - F));
          z[t] = zz;
          if (zz > zmax) zmax = zz;
        end
        tot = 0;
        emax = -(64'sd1 <<< 62);
        for (t = lo; t <= p; t = t + 1) begin
          tot = tot + exp_weight(zmax - z[t]);
          if (vm[base + t] != 0 && ve[base + t] > emax) emax = ve[base + t];
        end
        if (emax == -(64'sd1 <<< 62)) emax = 0;
        r = (64'sd1 <<< 46) / tot;
        for (i = 0; i < HD; i = i + 1) o[i] = 0;
        for (t = lo; t <= p; t = t + 1) begin
          if (vm[base + t] != 0) begin
            pr = exp_weight(zmax - z[t]);
            wt = rsr(rsr(pr * r, 31) * vm[base + t], emax - ve[base + t]);
            for (i = 0; i < HD; i = i + 1)
              o[i] = o[i] + wt * $signed(vx[(base + t) * HD + i]);
          end
        end
        for (i = 0; i < HD; i = i + 1) begin
          o_i = sat32(rsr(o[i], 15 - emax - F));
          out[32 * (hh * HD + i) +: 32] <= o_i[31:0];
        end
      end
      done <= 1'b1;
    end
  end
endmodule
