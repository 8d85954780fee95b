"""The emulator's fixed-function units (docs/numerics.md): embedding rows, RMSNorm, RoPE,
SwiGLU, the KV cache's Q8 and attention, residual adds, as numba-compiled integer loops on the
primitives of :mod:`maskc.emulate.kernels` (whose bounds they share).

The row-wise units have two variants: ``*_rows`` on the calling thread (decode's single row
never wakes a thread) and ``*_rows_par`` with the rows in parallel (prefill, from
``kernels.PARALLEL_MIN_ROWS`` rows); both compute the same integers.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from maskc.emulate.kernels import (
    GROUP,
    INT32_MIN,
    PARALLEL_MIN_ROWS,
    act8_empty,
    bitlen,
    exp_weight,
    q8_row,
    q8_rows,
    q8_rows_par,
    rsr,
    sat32,
    term,
)


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
    t_n = h.shape[0]
    x, m, e, s = act8_empty(t_n, h.shape[1], GROUP)  # rmsnorm_row writes every element
    for t in range(t_n):
        m[t], e[t] = rmsnorm_row(h[t], gamma, gamma_frac, eps_d, f, rsqrt_lut, x[t], s[t])
    return x, m, e, s


@njit(cache=True, parallel=True)
def rmsnorm_rows_par(h, gamma, gamma_frac, eps_d, f, rsqrt_lut):  # pragma: no cover - compiled
    """:func:`rmsnorm_rows` with the rows in parallel."""
    t_n = h.shape[0]
    x, m, e, s = act8_empty(t_n, h.shape[1], GROUP)  # rmsnorm_row writes every element
    for t in prange(t_n):
        m[t], e[t] = rmsnorm_row(h[t], gamma, gamma_frac, eps_d, f, rsqrt_lut, x[t], s[t])
    return x, m, e, s


@njit(cache=True)
def rmsnorm_pre_rows(h, gamma, gamma_frac, eps_d, f, rsqrt_lut):  # pragma: no cover - compiled
    """RMSNorm of every row up to the vector its act8 is made from: ``(y [T, D], fraction bits
    [T])`` with ``Q8(y[t], f[t], 32)`` :func:`rmsnorm_rows`' act8 (docs/numerics.md; a matrix
    with an input permutation quantizes ``y`` gathered)."""
    t_n, d = h.shape
    y = np.zeros((t_n, d), np.int64)
    fr = np.zeros(t_n, np.int64)
    for t in range(t_n):
        a = 0
        for j in range(d):
            a = max(a, abs(h[t, j]))
        p = max(bitlen(a) - 15, 0)
        ss = np.int64(0)
        for j in range(d):
            u = rsr(h[t, j], p)
            y[t, j] = u
            ss += u * u
        v = ss + rsr(np.int64(eps_d), 40 - 2 * f + 2 * p)
        if v == 0:  # Q8 of zeros: x = 0, m = 0, e = 0
            y[t, :] = 0
            continue
        k = (bitlen(v) - 1) // 2
        r = rsqrt_lut[rsr(v, 2 * k - 8) - 256]
        for j in range(d):
            y[t, j] = y[t, j] * r * gamma[j]
        fr[t] = gamma_frac + 16 + k
    return y, fr


@njit(cache=True)
def swiglu_pre_rows(g, u, f, sig_lut):  # pragma: no cover - compiled
    """SwiGLU of every row before its Q8 (the ``h`` of docs/numerics.md, ``f`` fraction bits)."""
    t_n, n = g.shape
    h = np.empty((t_n, n), np.int64)
    for t in range(t_n):
        swiglu_row(g[t], u[t], f, sig_lut, h[t])
    return h


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
    h = swiglu_pre_rows(g, u, f, sig_lut)
    return q8_rows(h, np.full(h.shape[0], f, np.int64), GROUP)


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
def attention_kv_job(
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
    """The ``heads / kvh`` query heads sharing kv head ``job % kvh``, of row ``job // kvh``,
    into ``out``: each head exactly as docs/numerics.md computes it alone, the cached keys and
    values read once for the group (grouped-query attention)."""
    group = heads // kvh
    t = job // kvh
    kv = job % kvh
    p = positions[t]
    lo = 0 if window <= 0 else max(0, p - window + 1)
    n = p + 1 - lo
    qv = np.empty(hd, np.int64)
    xq = np.empty((group, hd), np.int64)
    mq = np.empty(group, np.int64)
    eq = np.empty(group, np.int64)
    sq = np.empty(1, np.int64)
    for g in range(group):
        h = kv * group + g
        for i in range(hd):
            qv[i] = q[t, h * hd + i] * inv_sqrt_hd
        mq[g], e = q8_row(qv, f + 16, 0, xq[g], sq)
        eq[g] = e + sq[0]
    z = np.empty((group, n), np.int64)
    zmax = np.full(group, np.int64(INT32_MIN) - 1)
    for k in range(n):
        tt = lo + k
        kmv = km[kv, tt]
        kev = ke[kv, tt]
        for g in range(group):
            d = np.int64(0)
            for i in range(hd):
                d += xq[g, i] * kx[kv, tt, i]
            zz = sat32(rsr(d * mq[g] * kmv, -(eq[g] + kev) - f))
            z[g, k] = zz
            zmax[g] = max(zmax[g], zz)
    pr = np.empty((group, n), np.int64)
    tot = np.zeros(group, np.int64)
    emax = np.int64(-(1 << 62))
    for k in range(n):
        for g in range(group):
            pr[g, k] = exp_weight(zmax[g] - z[g, k], log2e, f, exp2_lut)
            tot[g] += pr[g, k]
        if vm[kv, lo + k] != 0:  # all-zero value vectors do not set the exponent
            emax = max(emax, ve[kv, lo + k])
    if emax == -(1 << 62):
        emax = 0
    r = np.empty(group, np.int64)
    for g in range(group):
        r[g] = (np.int64(1) << 46) // tot[g]
    o = np.zeros((group, hd), np.int64)
    for k in range(n):
        tt = lo + k
        if vm[kv, tt] == 0:
            continue
        for g in range(group):
            wt = rsr(rsr(pr[g, k] * r[g], 31) * vm[kv, tt], emax - ve[kv, tt])
            if wt != 0:
                for i in range(hd):
                    o[g, i] += wt * vx[kv, tt, i]
    for g in range(group):
        h = kv * group + g
        for i in range(hd):
            out[t, h * hd + i] = sat32(rsr(o[g, i], 15 - emax - f))


@njit(cache=True)
def attention_rows(
    q, positions, heads, kvh, hd, window, f, inv_sqrt_hd, log2e, exp2_lut, kx, km, ke, vx, vm, ve
):  # pragma: no cover - compiled
    """Attention of every query row over the cache (docs/numerics.md); signal [T, heads*hd].
    ``window`` <= 0: no sliding window. On the calling thread (``attention_rows_par``: the
    (row, kv head) jobs in parallel)."""
    t_n = q.shape[0]
    out = np.empty((t_n, heads * hd), np.int64)
    for job in range(t_n * kvh):
        attention_kv_job(
            job, q, positions, heads, kvh, hd, window, f, inv_sqrt_hd, log2e, exp2_lut,
            kx, km, ke, vx, vm, ve, out,
        )  # fmt: skip
    return out


@njit(cache=True, parallel=True)
def attention_rows_par(
    q, positions, heads, kvh, hd, window, f, inv_sqrt_hd, log2e, exp2_lut, kx, km, ke, vx, vm, ve
):  # pragma: no cover - compiled
    """Attention of every query row over the cache (docs/numerics.md); signal [T, heads*hd].
    ``window`` <= 0: no sliding window. The (row, kv head) jobs in parallel."""
    t_n = q.shape[0]
    out = np.empty((t_n, heads * hd), np.int64)
    for job in prange(t_n * kvh):
        attention_kv_job(
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


def gather(a, perm: np.ndarray | None):
    """The act8 a matrix with input permutation ``perm`` reads (docs/numerics.md, "Input
    permutation"): ``Q8(y[:, perm], f, 32)`` of the vectors the :class:`~maskc.emulate.chip.Act8`
    ``a`` was made from; ``a`` itself without one."""
    if perm is None:
        return a
    from maskc.emulate.chip import Act8

    fn = q8_rows_par if a.y.shape[0] >= PARALLEL_MIN_ROWS else q8_rows
    return Act8(*fn(np.ascontiguousarray(a.y[:, perm]), a.f, GROUP))


def same_perm(p: np.ndarray | None, q: np.ndarray | None) -> bool:
    """Whether two input permutations (or their absence) are the same: one gathered input."""
    return (p is None and q is None) or (p is not None and q is not None and np.array_equal(p, q))
