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
    if k > 62:  # |v| < 2^62: the rounded quotient is 0 (an int64 shift of 64 or more is
        return np.int64(0)  # undefined; a row of tiny weights has scale_e -128: k near 180)
    if k > 0:
        r = (v + (np.int64(1) << (k - 1))) >> k
    else:
        s = min(-k, 41)
        lim = (np.int64(TERM_LIMIT) >> s) + 1
        r = min(max(v, -lim), lim) << s
    return min(max(r, -TERM_LIMIT), TERM_LIMIT)


#: the limbs of :func:`term_tm`: ``p = p1 * 2^31 + p0`` with ``0 <= p0 < 2^31``
LIMB = 31
LIMB_MASK = (1 << LIMB) - 1


@njit(cache=True, inline="always")
def term_tm(p, tm, k):  # pragma: no cover - compiled
    """``term(p * tm, k)`` exactly for ``|p| < 2^62`` and ``1 <= tm < 2^24`` (nvfp4's tensor
    mantissa, docs/numerics.md "FP4 matrices"), although ``|p * tm|`` reaches 2^86: in two
    int64 limbs. ``p = p1 * 2^31 + p0`` (``p1 = p >> 31``, ``|p1| < 2^31``; ``0 <= p0 < 2^31``),
    so ``V = p * tm = hi * 2^31 + lo`` with ``hi = p1 * tm + (p0 * tm >> 31)`` (``|hi| <
    2^55 + 2^24``) and ``lo = p0 * tm mod 2^31``. When ``|hi| < 2^31``, ``|V| < 2^62`` and
    :func:`term` takes it. Otherwise ``|V| >= 2^62``: with ``k <= 0`` the result saturates
    (``> 2^40``); with ``k > 87`` it is 0 (``|V| < 2^86 <= 2^(k-1)``); with ``32 <= k <= 87``
    ``rsr(V, k) = (hi + 2^(k-32)) >> (k - 31)`` (``lo < 2^31`` drops out of the floor);
    with ``1 <= k <= 31`` ``rsr(V, k) = hi * 2^c + ((lo + 2^(k-1)) >> k)``, ``c = 31 - k``,
    which saturates when ``|hi| >= 2^(41-c)`` (then ``|hi * 2^c| >= 2^41`` and the second
    part is below ``2^32``) and is below 2^42 otherwise."""
    p1 = p >> LIMB
    p0 = p & LIMB_MASK
    low = p0 * tm
    hi = p1 * tm + (low >> LIMB)
    lo = low & LIMB_MASK
    if -(np.int64(1) << LIMB) <= hi < (np.int64(1) << LIMB):
        return term((hi << LIMB) + lo, k)
    lim = np.int64(TERM_LIMIT)
    if k <= 0:
        return -lim if hi < 0 else lim
    if k > 87:
        return np.int64(0)
    if k >= 32:
        r = (hi + (np.int64(1) << (k - 32))) >> (k - 31)
    else:
        c = 31 - k
        if hi >= (np.int64(1) << (41 - c)):
            return lim
        if hi < -(np.int64(1) << (41 - c)):
            return -lim
        r = (hi << c) + ((lo + (np.int64(1) << (k - 1))) >> k)
    return min(max(r, -lim), lim)


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


@njit(cache=True, inline="always")
def act8_empty(t_n, n, group):  # pragma: no cover - compiled
    """Uninitialised act8 arrays for ``t_n`` rows of ``n`` values: codes ``x`` [T, n],
    mantissas ``m`` and exponents ``e`` [T], group shifts ``s`` [T, ceil(n / g)] (``g`` =
    ``group``, or the whole row when ``group`` <= 0)."""
    g = n if group <= 0 else group
    ng = (n + g - 1) // g
    return (np.empty((t_n, n), np.int64), np.empty(t_n, np.int64), np.empty(t_n, np.int64),
            np.empty((t_n, ng), np.int64))  # fmt: skip


@njit(cache=True)
def q8_rows(y, f, group):  # pragma: no cover - compiled
    """Q8 of every row of ``y`` [T, n] (``f`` [T] fraction bits), on the calling thread."""
    x, m, e, s = act8_empty(y.shape[0], y.shape[1], group)
    t_n = y.shape[0]
    for t in range(t_n):
        m[t], e[t] = q8_row(y[t], f[t], group, x[t], s[t])
    return x, m, e, s


@njit(cache=True, parallel=True)
def q8_rows_par(y, f, group):  # pragma: no cover - compiled
    """:func:`q8_rows` with the rows in parallel (see :data:`PARALLEL_MIN_ROWS`)."""
    x, m, e, s = act8_empty(y.shape[0], y.shape[1], group)
    t_n = y.shape[0]
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
    lev, packed, narrow, d, off, x8, sh, g0, msh, rep, g16, acc, b, t0, t1, s16, s32, p32, q32, sb
):  # pragma: no cover
    """acc[t, :] (int64 [T, 128]) for tokens t0..t1 of row block b. ``s16``/``s32`` the group
    sums' scratch (int16 for packed codes, int32 otherwise: see above), ``sb`` int64 [128].

    ``g16`` (nvfp4: weight groups of 16, int8/int16 levels, ``off`` 0): ``msh`` has two
    columns per activation group, ``2a`` for its first 16 elements and ``2a + 1`` for the
    rest; each half's sum (``|.| <= 16 * 127 * 12``, int32) is multiplied by its own factor
    (``< 2^19``) and the two added before the group's shift: ``acc = A``.

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
            mr = msh[b, (2 * a if g16 else a) // rep]
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
            elif g16:
                for r in range(n):
                    s32[r] = 0
                    p32[r] = 0
                for j in range(a * GROUP, a * GROUP + GROUP):
                    for k in range(0, n, 32):
                        _prefetch(lev, (np.int64(b) * cp + j + PREFETCH_ROWS) * n + k)
                    xj = np.int32(x8[t, j])
                    lr = lev[b, j]
                    if j < a * GROUP + GROUP // 2:
                        for r in range(n):
                            s32[r] += np.int32(lr[r]) * xj
                    else:
                        for r in range(n):
                            p32[r] += np.int32(lr[r]) * xj
                m0 = msh[b, 2 * a]
                m1 = msh[b, 2 * a + 1]
                for r in range(n):
                    acc[t, r] += (np.int64(m0[r]) * s32[r] + np.int64(m1[r]) * p32[r]) << sa
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
def _block_out(lev, packed, narrow, d, off, x8, sh, g0, msh, rep, half, out, b):  # pragma: no cover
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
        lev, packed, narrow, d, off, x8, sh, g0, msh, rep, half, acc, b, 0, x8.shape[0],
        s16, s32, p32, q32, sb,
    )  # fmt: skip
    out[:, b * n : (b + 1) * n] = acc


@njit(cache=True, boundscheck=False)
def _product(lev, packed, narrow, d, off, x8, sh, g0, msh, rep, half, parallel):  # pragma: no cover
    t_n = x8.shape[0]
    nb = lev.shape[0]
    out = np.empty((t_n, nb * BLOCK_ROWS), np.int64)
    if parallel:
        _product_par(lev, packed, narrow, d, off, x8, sh, g0, msh, rep, half, out)
    else:
        for b in range(nb):
            _block_out(lev, packed, narrow, d, off, x8, sh, g0, msh, rep, half, out, b)
    return out


@njit(cache=True, parallel=True, boundscheck=False)
def _product_par(lev, packed, narrow, d, off, x8, sh, g0, msh, rep, half, out):  # pragma: no cover
    for b in prange(lev.shape[0]):
        _block_out(lev, packed, narrow, d, off, x8, sh, g0, msh, rep, half, out, b)


def _ro(a):
    """``a`` as a read-only view (itself when it is read-only already)."""
    if a is None or not a.flags.writeable:
        return a
    v = a.view()
    v.flags.writeable = False
    return v


def matmul(
    x, s, m, e, lev, packed, narrow, d, off, msh, rep, ka, zsh, kb, bias, has_zero, has_bias, f,
    rows, parallel, half, kt,
):  # fmt: skip
    """:func:`_matmul` (the product; its docstring) with the matrix's arrays read-only. numba
    compiles a kernel per argument type and read-only is part of an array's type: the layout
    cache (:mod:`layoutcache`) hands out read-only memory maps and :class:`prepared.Matrix`
    makes its arrays read-only too, so one kernel serves each storage kind (~10 s of
    compilation each); a caller's own writable arrays get read-only views here. The
    activations and the bias are fresh writable arrays in every call."""
    return _matmul(
        x, s, m, e, _ro(lev), packed, narrow, d, off, _ro(msh), rep, _ro(ka), _ro(zsh), _ro(kb),
        bias, has_zero, has_bias, f, rows, parallel, half, _ro(kt),
    )  # fmt: skip


@njit(cache=True, boundscheck=False)
def _matmul(
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
    half,
    kt,
):  # pragma: no cover - compiled
    """act8 (x [T, C], s [T, ng], m [T], e [T]) times one matrix -> signal int64 [T, rows]
    (docs/numerics.md, "Matrix-vector product"). ``msh`` per (row, weight group of ``rep``
    activation groups); ``zsh`` [R, Cp / (32 rep)]. ``narrow``: ``msh`` is int16 (its
    products with the packed codes' group sums are int32, see :func:`_block`). FP4 ("FP4
    matrices"): ``half`` weight groups of 16 (:func:`_block`); ``kt`` int64 [R], nvfp4's
    tensor mantissa per row, enters the rounding exactly (:func:`term_tm`)."""
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
    acc = _product(lev, packed, narrow, d, off, x8, sh, g0, msh, rep, half, parallel)
    y = np.empty((t_n, rows), np.int64)
    ngw = zsh.shape[1]
    gw = np.zeros(ngw, np.int64)
    for t in range(t_n):
        if has_zero:
            gw[:] = 0
            for a in range(ng):
                gw[a // rep] += gs[t, a]
        for r in range(rows):
            if kt is None:
                v = term(acc[t, r] * m[t], ka[r] - e[t] - f)
            else:
                v = term_tm(acc[t, r] * m[t], kt[r], ka[r] - e[t] - f)
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
