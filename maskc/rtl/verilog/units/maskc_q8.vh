// maskc base-die model: Q8(y, f, G) of docs/numerics.md ("Value types") as a Verilog function.
// The including module defines localparams Q8_N (elements), Q8_G (group; Q8_N for one group)
// and Q8_NG = ceil(Q8_N / Q8_G) before including this file (after maskc_prims.vh).
// y: Q8_N signed 64-bit integers, y[64*j +: 64]. Result, packed high to low:
//   {e (signed 16), m (12), s (3 * Q8_NG, s[3*a +: 3]), x (8 * Q8_N, x[8*j +: 8])}.
function automatic [16 + 12 + 3 * Q8_NG + 8 * Q8_N - 1:0] q8;
  input [64 * Q8_N - 1:0] q_y;
  input integer q_f;
  integer q_j, q_grp, q_k, q_d;
  reg signed [63:0] q_a, q_ap, q_ag, q_v, q_m;
  reg [8 * Q8_N - 1:0] q_xo;
  reg [3 * Q8_NG - 1:0] q_so;
  reg signed [15:0] q_eo;
  begin
    q_a = 0;
    for (q_j = 0; q_j < Q8_N; q_j = q_j + 1) begin
      q_v = abs64($signed(q_y[64 * q_j +: 64]));
      if (q_v > q_a) q_a = q_v;
    end
    q_xo = 0;
    q_so = 0;
    if (q_a == 0) begin
      q8 = 0;
    end else begin
      q_k = bitlen(q_a) - 18;
      if (q_k < 0) q_k = 0;
      q_ap = 0;
      for (q_j = 0; q_j < Q8_N; q_j = q_j + 1) begin
        q_v = abs64(rsr($signed(q_y[64 * q_j +: 64]), q_k));
        if (q_v > q_ap) q_ap = q_v;
      end
      q_m = (q_ap + 126) / 127;
      for (q_grp = 0; q_grp < Q8_NG; q_grp = q_grp + 1) begin
        q_ag = 0;
        for (q_j = q_grp * Q8_G; q_j < (q_grp + 1) * Q8_G && q_j < Q8_N; q_j = q_j + 1) begin
          q_v = abs64(rsr($signed(q_y[64 * q_j +: 64]), q_k));
          if (q_v > q_ag) q_ag = q_v;
        end
        q_d = 7;
        while (q_d > 0 && (q_ag <<< q_d) > q_ap) q_d = q_d - 1;
        q_so[3 * q_grp +: 3] = 7 - q_d;
        for (q_j = q_grp * Q8_G; q_j < (q_grp + 1) * Q8_G && q_j < Q8_N; q_j = q_j + 1)
          q_xo[8 * q_j +: 8] = rdiv(rsr($signed(q_y[64 * q_j +: 64]), q_k) <<< q_d, q_m);
      end
      q_eo = q_k - 7 - q_f;
      q8 = {q_eo, q_m[11:0], q_so, q_xo};
    end
  end
endfunction
