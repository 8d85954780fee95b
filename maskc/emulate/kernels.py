"""The emulator's arithmetic: numerics contract version 1 (docs/numerics.md) as compiled loops.

Every function here is integer arithmetic on int64 scalars, written to read like the document,
JIT-compiled by numba (cached on disk after the first run). Vectors are processed a token (row)
at a time; the heavy loops run in parallel over independent rows or heads. The bounds quoted in
docs/numerics.md keep every int64 intermediate from overflowing.

Everything, the matrix product included, is integer arithmetic: no floating point touches a
value. The product is ``acc[t, r] = sum_a msh[a, r] * (sum_{j in a} lev[j, r] * x[t, j]) * 2^s_a``
over activation groups ``a`` of 32 (``msh`` is per weight group, shared by its activation
groups), with the act8 codes ``|x| <= 127`` and group shifts ``s_a <= 7``:

* a group's sum (before its shift) is at most ``32 * 127 * max|stored level|``: for
  nibble-packed codes stored centred (``code - 8``, ``|.| <= 8``) 32512 < 2^15, accumulated in
  int16 lanes; for int8/int16-stored levels below 2^27, in int32 (see "matrices" below);
* ``acc`` is int64; the loader checks per matrix that its worst case is below 2^53.

Weights stay packed codes or int8/int16 levels in memory, laid out in blocks of 128 output
rows, each ``[Cp, 128]`` (packed: ``[Cp, 64]``) contiguous (:func:`blocked`): the inner loop
runs over contiguous rows and a block streams from memory in order, and stays in cache while
every token of a batch uses it.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import cgutils, types
from numba.extending import intrinsic

GROUP = 32  #: activation group (docs/numerics.md, act8)
ACT_SMAX = 7  #: largest act8 group shift
BLOCK_ROWS = 128
PARALLEL_MIN_MACS = 1 << 17  #: smaller products run on one thread (thread start-up dominates)
#: the row-wise units (norms, SwiGLU, Q8, attention) run their ``*_par`` variant (rows in
#: parallel) from this many rows (prefill); decode's single row never wakes a thread
PARALLEL_MIN_ROWS = 16
INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
TERM_LIMIT = 1 << 40
#: weight rows (``lev[b, j]``) the product prefetches ahead: 4 KiB of packed codes
PREFETCH_ROWS = 64


# -- primitives ---------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def rsr(x, k):  # pragma: no cover - compiled
    """Rounding shift right (round half up); k <= 0 shifts left."""
    if k > 0:
        return (x + (np.int64(1) << (k - 1))) >> k
    return x << (-k)


@njit(cache=True, inline="always")
def term(v, k):  # pragma: no cover - compiled
    """clamp(rsr(v, k), -2^40, 2^40), overflow-free for |v| < 2^62."""
    if k > 0:
        r = (v + (np.int64(1) << (k - 1))) >> k
    else:
        s = min(-k, 41)
        lim = (np.int64(TERM_LIMIT) >> s) + 1
        r = min(max(v, -lim), lim) << s
    return min(max(r, -TERM_LIMIT), TERM_LIMIT)


@njit(cache=True, inline="always")
def sat32(x):  # pragma: no cover - compiled
    return min(max(x, INT32_MIN), INT32_MAX)


@njit(cache=True, inline="always")
def rdiv(a, b):  # pragma: no cover - compiled
    """floor((2a + b) / (2b)), b > 0."""
    return (2 * a + b) // (2 * b)


#: the shift of :func:`rdiv_magic`'s reciprocal
RDIV_SHIFT = 34


@njit(cache=True, inline="always")
def rdiv_magic(b):  # pragma: no cover - compiled
    """The reciprocal of ``2 b`` that :func:`rdiv_by` multiplies with: ``ceil(2^34 / (2 b))``."""
    return ((np.int64(1) << RDIV_SHIFT) + 2 * b - 1) // (2 * b)


@njit(cache=True, inline="always")
def rdiv_by(a, b, magic):  # pragma: no cover - compiled
    """:func:`rdiv` ``(a, b)`` by a multiply and a shift, for ``1 <= b <= 2^12`` and
    ``|2 a + b| < 2^21`` (Q8's divisions: ``|a| <= 2^18``, ``b = m < 2^12``): with
    ``M = ceil(2^34 / d)``, ``d = 2 b <= 2^13``, ``floor(n * M / 2^34) = floor(n / d)`` for
    every ``0 <= n < 2^21`` (Granlund and Montgomery, 1994: ``M d - 2^34 < d <= 2^(34 - 21)``),
    and ``n * M < 2^21 * 2^33`` fits int64. Negative numerators use ``floor(n / d) =
    -floor((d - 1 - n) / d)``. A division takes tens of cycles; this is what lets Q8 run
    at the speed of the rest."""
    n = 2 * a + b
    if n >= 0:
        return (n * magic) >> RDIV_SHIFT
    return -(((2 * b - 1 - n) * magic) >> RDIV_SHIFT)


@njit(cache=True, inline="always")
def bitlen(a):  # pragma: no cover - compiled
    n = 0
    while a > 0:
        a >>= 1
        n += 1
    return n


@njit(cache=True, inline="always")
def exp_weight(delta, log2e, f, exp2_lut):  # pragma: no cover - compiled
    """``2^15 * e^(-delta * 2^-f)`` for ``delta >= 0`` by the base-2 table: the softmax weight of
    attention and of sampling (docs/numerics.md)."""
    w = rsr(delta * log2e, f + 6)
    wi = w >> 10
    return rsr(np.int64(exp2_lut[w & 1023]), wi) if wi < 32 else np.int64(0)


@njit(cache=True)
def exp_weights(deltas, log2e, f, exp2_lut):  # pragma: no cover - compiled
    """:func:`exp_weight` of every element of ``deltas`` (int64 [n])."""
    out = np.empty(deltas.shape[0], np.int64)
    for i in range(deltas.shape[0]):
        out[i] = exp_weight(deltas[i], log2e, f, exp2_lut)
    return out


@njit(cache=True)
def q8_row(y, f, group, x, s):  # pragma: no cover - compiled
    """Q8 of one vector ``y`` (int64 [n], ``f`` fraction bits) into ``x`` [n] and ``s`` [ng];
    returns ``(m, e)``. ``group`` <= 0: the whole vector is one group."""
    n = y.shape[0]
    g = n if group <= 0 else group
    ng = (n + g - 1) // g
    a = 0
    for j in range(n):
        a = max(a, abs(y[j]))
    if a == 0:
        x[:n] = 0
        s[:ng] = 0
        return np.int64(0), np.int64(0)
    k = max(bitlen(a) - 18, 0)
    ap = 0
    for j in range(n):
        ap = max(ap, abs(rsr(y[j], k)))
    m = (ap + 126) // 127  # 1 <= m <= 2065: rdiv_by's range
    magic = rdiv_magic(m)
    for grp in range(ng):
        lo = grp * g
        hi = min(n, lo + g)
        ag = 0
        for j in range(lo, hi):
            ag = max(ag, abs(rsr(y[j], k)))
        d = ACT_SMAX
        while d > 0 and (ag << d) > ap:
            d -= 1
        s[grp] = ACT_SMAX - d
        for j in range(lo, hi):
            x[j] = rdiv_by(rsr(y[j], k) << d, m, magic)
    return m, k - ACT_SMAX - f


@njit(cache=True)
def q8_rows(y, f, group):  # pragma: no cover - compiled
    """Q8 of every row of ``y`` [T, n] (``f`` [T] fraction bits), on the calling thread."""
    t_n, n = y.shape
    g = n if group <= 0 else group
    ng = (n + g - 1) // g
    x = np.empty((t_n, n), np.int64)
    s = np.empty((t_n, ng), np.int64)
    m = np.empty(t_n, np.int64)
    e = np.empty(t_n, np.int64)
    for t in range(t_n):
        m[t], e[t] = q8_row(y[t], f[t], group, x[t], s[t])
    return x, m, e, s


@njit(cache=True, parallel=True)
def q8_rows_par(y, f, group):  # pragma: no cover - compiled
    """:func:`q8_rows` with the rows in parallel (see :data:`PARALLEL_MIN_ROWS`)."""
    t_n, n = y.shape
    g = n if group <= 0 else group
    ng = (n + g - 1) // g
    x = np.empty((t_n, n), np.int64)
    s = np.empty((t_n, ng), np.int64)
    m = np.empty(t_n, np.int64)
    e = np.empty(t_n, np.int64)
    for t in prange(t_n):
        m[t], e[t] = q8_row(y[t], f[t], group, x[t], s[t])
    return x, m, e, s


# -- matrices -----------------------------------------------------------------------------------
#
# A matrix is stored for the kernel as ``lev`` (see :func:`prepare_levels`): either 4-bit codes
# packed two per byte (``packed``; rows r and r + 64 of a block share a byte) when the level
# table is affine, ``level = off + d * code``; or ``level - off`` in int8 / int16. Either way
# a group's sum of levels times inputs is ``d * S' + off' * gs`` where ``S'`` is the sum over
# the stored values (packed: ``code - 8``, ``off' = off + 8 * d``) and ``gs`` the group's sum of
# inputs. The act8 group shift is applied to the group's sum, ``S' = (sum lev * x) << s_a``,
# so the sum runs over the act8 codes themselves (``|x| <= 127``):
#
# * packed: ``|sum (code - 8) * x| <= 32 * 8 * 127 = 32512 < 2^15``: int16 lanes (twice the
#   lanes of int32 per vector instruction);
# * int8 / int16 stored levels: ``|sum lev * x| <= 32 * 2^15 * 127 < 2^27``: int32.


@intrinsic
def _prefetch(typingctx, arr, offset):  # pragma: no cover - compiled
    """Hint the CPU to load element ``offset`` of C-contiguous ``arr`` (flat) into the caches:
    llvm.prefetch, which never faults (an address past the end is harmless). A matrix's
    codes stream from memory once per token in decode; fetching ahead overlaps that with the
    arithmetic (about 2x on a 30 MB matrix at one token, measured)."""

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
            "llvm.prefetch.p0i8",
        )
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), i8p)
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(arr, types.int64), codegen


@njit(cache=True, boundscheck=False, inline="always")
def _block(
    lev, packed, narrow, d, off, x8, sh, g0, msh, rep, acc, b, t0, t1, s16, s32, p32, q32, sb
):  # pragma: no cover
    """acc[t, :] (int64 [T, 128]) for tokens t0..t1 of row block b. ``s16``/``s32`` the group
    sums' scratch (int16 for packed codes, int32 otherwise: see above), ``sb`` int64 [128].

    ``acc = d * A + off' * B`` with ``A = sum_a (msh * S_a) << s_a`` and ``B = sum_a (msh * g0_a)
    << s_a`` (``g0_a`` the group's sum of act8 codes, ``|g0_a| <= 32 * 127 < 2^12``): for packed
    codes ``|msh * S_a| < 2^15 * 2^15`` fits the int32 products LLVM makes of it when ``msh``
    is int16 (:func:`maskc.emulate.prepared.scale_dtype`). Each of ``d * A`` and
    ``off' * B`` is at most ``(|off| + 16 |d|) / lmax < 3.2`` times the accumulator bound the
    loader checks (2^53): exact in int64."""
    cp = x8.shape[1]
    ng = cp // GROUP
    n = BLOCK_ROWS
    half = n // 2
    offc = off + 8 * d if packed else off
    for t in range(t0, t1):
        for r in range(n):
            acc[t, r] = 0
            sb[r] = 0
        for a in range(ng):
            sa = sh[t, a]
            mr = msh[b, a // rep]
            ga = g0[t, a]
            if packed:
                for r in range(n):
                    s16[r] = 0
                for j in range(a * GROUP, a * GROUP + GROUP):
                    _prefetch(lev, (np.int64(b) * cp + j + PREFETCH_ROWS) * half)
                    xj = x8[t, j]
                    lr = lev[b, j]
                    for r in range(half):
                        v = lr[r]
                        s16[r] += np.int16((v & 15) - 8) * xj
                        s16[r + half] += np.int16((v >> 4) - 8) * xj
                if narrow:  # int16 x int16 products stored as int32: int32 multiplies
                    for r in range(n):
                        p32[r] = mr[r] * s16[r]
                        q32[r] = mr[r] * ga
                    for r in range(n):
                        acc[t, r] += np.int64(p32[r]) << sa
                        sb[r] += np.int64(q32[r]) << sa
                else:
                    for r in range(n):
                        acc[t, r] += (np.int64(mr[r]) * s16[r]) << sa
                        sb[r] += (np.int64(mr[r]) * ga) << sa
            else:
                for r in range(n):
                    s32[r] = 0
                for j in range(a * GROUP, a * GROUP + GROUP):
                    for k in range(0, n, 32):  # 128 int8 or int16 levels: 2 or 4 lines
                        _prefetch(lev, (np.int64(b) * cp + j + PREFETCH_ROWS) * n + k)
                    xj = np.int32(x8[t, j])
                    lr = lev[b, j]
                    for r in range(n):
                        s32[r] += np.int32(lr[r]) * xj
                for r in range(n):
                    acc[t, r] += (np.int64(mr[r]) * s32[r]) << sa
                    sb[r] += (np.int64(mr[r]) * ga) << sa
        for r in range(n):
            acc[t, r] = d * acc[t, r] + offc * sb[r]


@njit(cache=True, boundscheck=False, inline="always")
def _block_out(lev, packed, narrow, d, off, x8, sh, g0, msh, rep, out, b):  # pragma: no cover
    """Row block ``b`` of the product into ``out[:, b * 128 : (b + 1) * 128]``, with its own
    scratch (so blocks can run on any thread)."""
    n = BLOCK_ROWS
    s16 = np.empty(n, np.int16)
    s32 = np.empty(n, np.int32)
    p32 = np.empty(n, np.int32)
    q32 = np.empty(n, np.int32)
    sb = np.empty(n, np.int64)
    acc = np.empty((x8.shape[0], n), np.int64)
    _block(
        lev, packed, narrow, d, off, x8, sh, g0, msh, rep, acc, b, 0, x8.shape[0],
        s16, s32, p32, q32, sb,
    )  # fmt: skip
    out[:, b * n : (b + 1) * n] = acc


@njit(cache=True, boundscheck=False)
def _product(lev, packed, narrow, d, off, x8, sh, g0, msh, rep, parallel):  # pragma: no cover
    t_n = x8.shape[0]
    nb = lev.shape[0]
    out = np.empty((t_n, nb * BLOCK_ROWS), np.int64)
    if parallel:
        _product_par(lev, packed, narrow, d, off, x8, sh, g0, msh, rep, out)
    else:
        for b in range(nb):
            _block_out(lev, packed, narrow, d, off, x8, sh, g0, msh, rep, out, b)
    return out


@njit(cache=True, parallel=True, boundscheck=False)
def _product_par(lev, packed, narrow, d, off, x8, sh, g0, msh, rep, out):  # pragma: no cover
    for b in prange(lev.shape[0]):
        _block_out(lev, packed, narrow, d, off, x8, sh, g0, msh, rep, out, b)


@njit(cache=True, boundscheck=False)
def matmul(
    x,
    s,
    m,
    e,
    lev,
    packed,
    narrow,
    d,
    off,
    msh,
    rep,
    ka,
    zsh,
    kb,
    bias,
    has_zero,
    has_bias,
    f,
    rows,
    parallel,
):  # pragma: no cover - compiled
    """act8 (x [T, C], s [T, ng], m [T], e [T]) times one matrix -> signal int64 [T, rows]
    (docs/numerics.md, "Matrix-vector product"). ``msh`` per (row, weight group of ``rep``
    activation groups); ``zsh`` [R, Cp / (32 rep)]. ``narrow``: ``msh`` is int16 (its
    products with the packed codes' group sums are int32, see :func:`_block`)."""
    t_n, c = x.shape
    cp = lev.shape[1]
    ng = cp // GROUP
    x8 = np.zeros((t_n, cp), np.int16)  # the act8 codes, |x| <= 127
    sh = np.zeros((t_n, ng), np.int64)
    g0 = np.zeros((t_n, ng), np.int64)  # the group's sum of x
    gs = np.zeros((t_n, ng), np.int64)  # the group's sum of x * 2^s
    for t in range(t_n):
        for a in range(ng):
            if a * GROUP < c:
                sh[t, a] = s[t, a]
        for j in range(c):
            x8[t, j] = x[t, j]
            g0[t, j // GROUP] += x[t, j]
        for a in range(ng):
            gs[t, a] = g0[t, a] << sh[t, a]
    acc = _product(lev, packed, narrow, d, off, x8, sh, g0, msh, rep, parallel)
    y = np.empty((t_n, rows), np.int64)
    ngw = zsh.shape[1]
    gw = np.zeros(ngw, np.int64)
    for t in range(t_n):
        if has_zero:
            gw[:] = 0
            for a in range(ng):
                gw[a // rep] += gs[t, a]
        for r in range(rows):
            v = term(acc[t, r] * m[t], ka[r] - e[t] - f)
            if has_zero:
                bsum = np.int64(0)
                for a in range(ngw):
                    bsum += np.int64(zsh[r, a]) * gw[a]
                v += term(bsum * m[t], kb[r] - e[t] - f)
            if has_bias:
                v += bias[r]
            y[t, r] = sat32(v)
    return y


@njit(cache=True, parallel=True)
def lora_add(x, s, m, e, a_codes, a_m, a_e, b_codes, b_m, b_e, f, acc):  # pragma: no cover
    """Adds one LoRA adapter's ``d`` to ``acc`` (int64 [T, R]) for the act8 input (x [T, C],
    s [T, ng], m [T], e [T]) — docs/numerics.md, "LoRA adapters in SRAM". The right shifts
    are capped at 62: ``|t * m_a * a_m| < 2^61`` there, so a longer shift also gives 0."""
    t_n, c = x.shape
    r = a_codes.shape[0]
    rows = b_codes.shape[0]
    for t in prange(t_n):
        u = np.empty(r, np.int64)
        for k in range(r):
            acc_t = np.int64(0)
            for j in range(c):
                acc_t += (x[t, j] << s[t, j // GROUP]) * np.int64(a_codes[k, j])
            u[k] = sat32(term(acc_t * m[t] * a_m[k], min(-(e[t] + a_e[k]) - f, 62)))
        xu = np.empty(r, np.int64)
        su = np.empty(1, np.int64)
        mu, eu = q8_row(u, f, 0, xu, su)
        big_e = eu + su[0]
        for i in range(rows):
            v = np.int64(0)
            for k in range(r):
                v += xu[k] * np.int64(b_codes[i, k])
            acc[t, i] += term(v * mu * b_m[i], min(-(big_e + b_e[i]) - f, 62))


def blocked(a: np.ndarray) -> np.ndarray:
    """``[R, K]`` -> ``[ceil(R / 128), K, 128]`` (rows padded with zeros), contiguous."""
    r, k = a.shape
    nb = -(-r // BLOCK_ROWS)
    out = np.zeros((nb * BLOCK_ROWS, k), a.dtype)
    out[:r] = a
    return np.ascontiguousarray(out.reshape(nb, BLOCK_ROWS, k).transpose(0, 2, 1))


def prepare_levels(codes: np.ndarray, levels: np.ndarray):
    """``(lev, packed, d, off)`` for a matrix's ``codes`` [R, Cp] (R a multiple of
    ``BLOCK_ROWS``, or the whole matrix) and level table (see "matrices" above for the bounds):

    * affine levels (``level = off + d * code``) with codes below 16: nibble-packed codes
      ``[NB, Cp, 64]``, rows r (low nibble) and r + 64 (high) of a block in one byte;
    * otherwise ``level - off`` (``off`` centres the table) as int8 or int16."""
    lv = levels.astype(np.int64)
    k = np.arange(len(lv))
    if len(lv) <= 16 and len(lv) >= 2 and np.array_equal(lv, lv[0] + (lv[1] - lv[0]) * k):
        blk = blocked(codes.astype(np.uint8))
        half = BLOCK_ROWS // 2
        packed = (blk[:, :, :half] | (blk[:, :, half:] << 4)).astype(np.uint8)
        return np.ascontiguousarray(packed), True, int(lv[1] - lv[0]), int(lv[0])
    off = int((lv.min() + lv.max() + 1) // 2)
    stored = lv - off  # in [-2^15, 2^15) for level_bits <= 16
    dt = np.int8 if stored.min() >= -128 and stored.max() <= 127 else np.int16
    return blocked(stored.astype(dt)[codes]), False, 1, off


# -- fixed-function units -----------------------------------------------------------------------


@njit(cache=True)
def embed_rows(
    ids, codes, levels, sm, ss, se, zm, zs, ze, g, smax, zmax, has_zero, c, f
):  # pragma: no cover
    """Rows ``ids`` of the embedding, exactly, as signals [T, c]."""
    out = np.empty((ids.shape[0], c), np.int64)
    for t in range(ids.shape[0]):
        row = ids[t]
        for j in range(c):
            a = j // g
            v = term(
                np.int64(sm[row, a]) * levels[codes[row, j]] << (smax - ss[row, a]),
                smax - se[row] - f,
            )
            if has_zero:
                v += term(np.int64(zm[row, a]) << (zmax - zs[row, a]), zmax - ze[row] - f)
            out[t, j] = sat32(v)
    return out


@njit(cache=True)
def embed_rows_tiled(
    ids, lev, packed, lmin, msh, zsh, ka, kb, has_zero, rep, c, f
):  # pragma: no cover - compiled
    """:func:`embed_rows` read from a matrix prepared for the C kernel (prepared.py's tiled
    layout: ``level = lmin + u``, ``msh = scale_m << (SMAX - scale_s)``, ``ka = SMAX -
    scale_e``, ``zsh``/``kb`` likewise), the same integers: ``(sm * L) << k == (sm << k) * L``.
    A tied embedding needs no second read of its tiles."""
    out = np.empty((ids.shape[0], c), np.int64)
    for t in range(ids.shape[0]):
        row = ids[t]
        tile = row // 16
        rr = row % 16
        for j in range(c):
            a = j // GROUP
            q = (j % GROUP) // 4
            i = rr * 4 + j % 4
            if packed:
                u = (np.int64(lev[tile, a, q >> 1, i]) >> (4 * (q & 1))) & 15
            else:
                u = np.int64(lev[tile, a, q, i])
            w = a // rep
            v = term(np.int64(msh[tile, w, rr]) * (lmin + u), ka[row] - f)
            if has_zero:
                v += term(np.int64(zsh[tile, w, rr]), kb[row] - f)
            out[t, j] = sat32(v)
    return out


@njit(cache=True, inline="always")
def rmsnorm_row(h, gamma, gamma_frac, eps_d, f, rsqrt_lut, x, s):  # pragma: no cover
    """RMSNorm of one row ``h`` into act8 ``x``/``s``; returns ``(m, e)``."""
    d = h.shape[0]
    a = 0
    for j in range(d):
        a = max(a, abs(h[j]))
    p = max(bitlen(a) - 15, 0)
    u = np.empty(d, np.int64)
    ss = np.int64(0)
    for j in range(d):
        u[j] = rsr(h[j], p)
        ss += u[j] * u[j]
    v = ss + rsr(np.int64(eps_d), 40 - 2 * f + 2 * p)
    if v == 0:
        x[:] = 0
        s[:] = 0
        return np.int64(0), np.int64(0)
    k = (bitlen(v) - 1) // 2
    i = rsr(v, 2 * k - 8) - 256
    r = rsqrt_lut[i]
    for j in range(d):
        u[j] = u[j] * r * gamma[j]
    return q8_row(u, gamma_frac + 16 + k, GROUP, x, s)


@njit(cache=True)
def rmsnorm_rows(h, gamma, gamma_frac, eps_d, f, rsqrt_lut):  # pragma: no cover - compiled
    """RMSNorm of every row -> act8 (x, m, e, s)."""
    t_n, d = h.shape
    ng = (d + GROUP - 1) // GROUP
    x = np.zeros((t_n, d), np.int64)
    s = np.zeros((t_n, ng), np.int64)
    m = np.zeros(t_n, np.int64)
    e = np.zeros(t_n, np.int64)
    for t in range(t_n):
        m[t], e[t] = rmsnorm_row(h[t], gamma, gamma_frac, eps_d, f, rsqrt_lut, x[t], s[t])
    return x, m, e, s


@njit(cache=True, parallel=True)
def rmsnorm_rows_par(h, gamma, gamma_frac, eps_d, f, rsqrt_lut):  # pragma: no cover - compiled
    """:func:`rmsnorm_rows` with the rows in parallel."""
    t_n, d = h.shape
    ng = (d + GROUP - 1) // GROUP
    x = np.zeros((t_n, d), np.int64)
    s = np.zeros((t_n, ng), np.int64)
    m = np.zeros(t_n, np.int64)
    e = np.zeros(t_n, np.int64)
    for t in prange(t_n):
        m[t], e[t] = rmsnorm_row(h[t], gamma, gamma_frac, eps_d, f, rsqrt_lut, x[t], s[t])
    return x, m, e, s


@njit(cache=True)
def rope_rows(y, heads, hd, positions, phase_step, cos_lut):  # pragma: no cover - compiled
    """RoPE (rotate_half pairs) of every row at its position."""
    t_n = y.shape[0]
    half = hd // 2
    out = np.empty_like(y)
    for t in range(t_n):
        pos = np.uint64(positions[t])
        for i in range(half):
            phase = (pos * np.uint64(phase_step[i])) & np.uint64(0xFFFFFFFF)
            n = np.int64((phase + np.uint64(1 << 17)) >> np.uint64(18)) & 0x3FFF
            c = np.int64(cos_lut[n])
            sn = np.int64(cos_lut[(n - 4096) & 0x3FFF])
            for h in range(heads):
                a = y[t, h * hd + i]
                b = y[t, h * hd + i + half]
                out[t, h * hd + i] = sat32(rsr(a * c - b * sn, 14))
                out[t, h * hd + i + half] = sat32(rsr(b * c + a * sn, 14))
    return out


@njit(cache=True, inline="always")
def swiglu_row(g, u, f, sig_lut, h):  # pragma: no cover - compiled
    for j in range(g.shape[0]):
        idx = min(max(rsr(g[j], f - 8), -4096), 4095) + 4096
        sl = rsr(g[j] * sig_lut[idx], 15)
        h[j] = sat32(rsr(sl * u[j], f))


@njit(cache=True)
def swiglu_rows(g, u, f, sig_lut):  # pragma: no cover - compiled
    t_n, n = g.shape
    h = np.empty((t_n, n), np.int64)
    for t in range(t_n):
        swiglu_row(g[t], u[t], f, sig_lut, h[t])
    return q8_rows(h, np.full(t_n, f, np.int64), GROUP)


@njit(cache=True, parallel=True)
def swiglu_rows_par(g, u, f, sig_lut):  # pragma: no cover - compiled
    t_n, n = g.shape
    h = np.empty((t_n, n), np.int64)
    for t in prange(t_n):
        swiglu_row(g[t], u[t], f, sig_lut, h[t])
    return q8_rows_par(h, np.full(t_n, f, np.int64), GROUP)


@njit(cache=True)
def kv_store(val, kvh, hd, f, cx, cm, ce, start):  # pragma: no cover - compiled
    """Quantize each kv head of every row (Q8, one group) into the cache at ``start + t``."""
    x = np.empty(hd, np.int64)
    s = np.empty(1, np.int64)
    for t in range(val.shape[0]):
        for h in range(kvh):
            m, e = q8_row(val[t, h * hd : (h + 1) * hd], f, 0, x, s)
            for i in range(hd):
                cx[h, start + t, i] = x[i]
            cm[h, start + t] = m
            ce[h, start + t] = e + s[0]


@njit(cache=True, inline="always")
def attention_job(
    job,
    q,
    positions,
    heads,
    kvh,
    hd,
    window,
    f,
    inv_sqrt_hd,
    log2e,
    exp2_lut,
    kx,
    km,
    ke,
    vx,
    vm,
    ve,
    out,
):  # pragma: no cover - compiled
    """One (query row, head) of :func:`attention_rows` into ``out``."""
    group = heads // kvh
    t = job // heads
    h = job % heads
    kv = h // group
    p = positions[t]
    lo = 0 if window <= 0 else max(0, p - window + 1)
    n = p + 1 - lo
    qv = np.empty(hd, np.int64)
    for i in range(hd):
        qv[i] = q[t, h * hd + i] * inv_sqrt_hd
    xq = np.empty(hd, np.int64)
    sq = np.empty(1, np.int64)
    mq, eq = q8_row(qv, f + 16, 0, xq, sq)
    eq += sq[0]
    z = np.empty(n, np.int64)
    zmax = np.int64(INT32_MIN) - 1
    for k in range(n):
        tt = lo + k
        d = np.int64(0)
        for i in range(hd):
            d += xq[i] * kx[kv, tt, i]
        zz = sat32(rsr(d * mq * km[kv, tt], -(eq + ke[kv, tt]) - f))
        z[k] = zz
        zmax = max(zmax, zz)
    pr = np.empty(n, np.int64)
    tot = np.int64(0)
    emax = np.int64(-(1 << 62))
    for k in range(n):
        pr[k] = exp_weight(zmax - z[k], log2e, f, exp2_lut)
        tot += pr[k]
        if vm[kv, lo + k] != 0:  # all-zero value vectors do not set the exponent
            emax = max(emax, ve[kv, lo + k])
    if emax == -(1 << 62):
        emax = 0
    r = (np.int64(1) << 46) // tot
    o = np.zeros(hd, np.int64)
    for k in range(n):
        tt = lo + k
        if vm[kv, tt] == 0:
            continue
        wt = rsr(rsr(pr[k] * r, 31) * vm[kv, tt], emax - ve[kv, tt])
        if wt != 0:
            for i in range(hd):
                o[i] += wt * vx[kv, tt, i]
    for i in range(hd):
        out[t, h * hd + i] = sat32(rsr(o[i], 15 - emax - f))


@njit(cache=True)
def attention_rows(
    q, positions, heads, kvh, hd, window, f, inv_sqrt_hd, log2e, exp2_lut, kx, km, ke, vx, vm, ve
):  # pragma: no cover - compiled
    """Attention of every query row over the cache (docs/numerics.md); signal [T, heads*hd].
    ``window`` <= 0: no sliding window. On the calling thread (``attention_rows_par``: the
    (row, head) jobs in parallel)."""
    t_n = q.shape[0]
    out = np.empty((t_n, heads * hd), np.int64)
    for job in range(t_n * heads):
        attention_job(
            job, q, positions, heads, kvh, hd, window, f, inv_sqrt_hd, log2e, exp2_lut,
            kx, km, ke, vx, vm, ve, out,
        )  # fmt: skip
    return out


@njit(cache=True, parallel=True)
def attention_rows_par(
    q, positions, heads, kvh, hd, window, f, inv_sqrt_hd, log2e, exp2_lut, kx, km, ke, vx, vm, ve
):  # pragma: no cover - compiled
    """Attention of every query row over the cache (docs/numerics.md); signal [T, heads*hd].
    ``window`` <= 0: no sliding window. The (row, head) jobs in parallel."""
    t_n = q.shape[0]
    out = np.empty((t_n, heads * hd), np.int64)
    for job in prange(t_n * heads):
        attention_job(
            job, q, positions, heads, kvh, hd, window, f, inv_sqrt_hd, log2e, exp2_lut,
            kx, km, ke, vx, vm, ve, out,
        )  # fmt: skip
    return out


@njit(cache=True)
def add_rows(a, b):  # pragma: no cover - compiled
    out = np.empty_like(a)
    for t in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[t, j] = sat32(a[t, j] + b[t, j])
    return out
