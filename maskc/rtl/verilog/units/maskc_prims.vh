// maskc base-die model: the primitives of docs/numerics.md ("Primitives") as Verilog functions.
// Included inside each base-die unit module. Behavioural: models fixed silicon for simulation.
// Every argument and result is a signed 64-bit integer; the units keep their values below
// 2^62 in magnitude (the bounds docs/numerics.md states), where these are exact.

// rsr(x, k): rounding shift right (round half up); k <= 0 shifts left.
function automatic signed [63:0] rsr;
  input signed [63:0] f_x;
  input integer f_k;
  begin
    if (f_k <= 0) rsr = f_x <<< (-f_k);
    else if (f_k >= 63) rsr = 64'sd0;  // |f_x| < 2^62: floor((f_x + 2^(f_k-1)) / 2^f_k) is 0
    else rsr = (f_x + (64'sd1 <<< (f_k - 1))) >>> f_k;
  end
endfunction

// sat32(x): clamp to [-2^31, 2^31 - 1].
function automatic signed [63:0] sat32;
  input signed [63:0] f_x;
  begin
    if (f_x > 64'sd2147483647) sat32 = 64'sd2147483647;
    else if (f_x < -64'sd2147483648) sat32 = -64'sd2147483648;
    else sat32 = f_x;
  end
endfunction

// bitlen(a): bits of a >= 0 (0 for 0).
function automatic integer bitlen;
  input signed [63:0] f_a;
  integer f_i;
  begin
    bitlen = 0;
    for (f_i = 0; f_i < 63; f_i = f_i + 1)
      if (f_a[f_i]) bitlen = f_i + 1;
  end
endfunction

function automatic signed [63:0] abs64;
  input signed [63:0] f_a;
  begin
    abs64 = (f_a < 0) ? -f_a : f_a;
  end
endfunction

// rdiv(a, b) = floor((2a + b) / (2b)), b > 0, with floor (not truncating) division.
function automatic signed [63:0] rdiv;
  input signed [63:0] f_a;
  input signed [63:0] f_b;
  reg signed [63:0] f_n;
  begin
    f_n = 2 * f_a + f_b;
    if (f_n >= 0) rdiv = f_n / (2 * f_b);
    else rdiv = -((2 * f_b - 1 - f_n) / (2 * f_b));
  end
endfunction
