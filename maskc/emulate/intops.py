"""The integer primitives of docs/numerics.md on numpy int64 arrays.

Every function is exact integer arithmetic; the docstrings give the bound that keeps int64 from
overflowing. Shift amounts may be arrays (broadcast against the values).
"""

from __future__ import annotations

import numpy as np

I64 = np.int64
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
TERM_LIMIT = 1 << 40


def rsr(x: np.ndarray, k) -> np.ndarray:
    """Rounding shift right (round half up); ``k <= 0`` shifts left exactly (caller bounds)."""
    x = np.asarray(x, I64)
    k = np.asarray(k, I64)
    if k.ndim == 0:
        kk = int(k)
        if kk > 0:
            return (x + (1 << (kk - 1))) >> kk
        return x << -kk
    kp = np.maximum(k, 1)
    right = (x + (np.int64(1) << (kp - 1))) >> kp
    left = x << np.clip(-k, 0, 62)
    return np.where(k > 0, right, left)


def term(v: np.ndarray, k) -> np.ndarray:
    """``clamp(rsr(v, k), -2^40, 2^40)`` without int64 overflow for any ``k`` and |v| < 2^62."""
    v = np.asarray(v, I64)
    k = np.broadcast_to(np.asarray(k, I64), v.shape)
    s = np.clip(-k, 0, 41)  # left-shift amount where k <= 0
    lim = (np.int64(TERM_LIMIT) >> s) + 1
    left = np.clip(v, -lim, lim) << s
    kp = np.maximum(k, 1)
    right = (v + (np.int64(1) << (kp - 1))) >> kp
    return np.clip(np.where(k > 0, right, left), -TERM_LIMIT, TERM_LIMIT)


def sat32(x: np.ndarray) -> np.ndarray:
    return np.clip(x, INT32_MIN, INT32_MAX)


def rdiv(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``floor((2a + b) / (2b))`` for ``b > 0`` (|a| < 2^61)."""
    a = np.asarray(a, I64)
    b = np.asarray(b, I64)
    return (2 * a + b) // (2 * b)


def bitlen(a: np.ndarray) -> np.ndarray:
    """``bit_length`` of non-negative int64 values, exactly (float64 estimate, corrected)."""
    a = np.asarray(a, I64)
    _, e = np.frexp(a.astype(np.float64))
    e = e.astype(I64)
    # float rounding may round a value just below 2^n up to 2^n: correct downwards
    e = np.where((e > 0) & ((a >> np.maximum(e - 1, 0)) == 0), e - 1, e)
    return np.where(a == 0, 0, e)


#: elements of an act8 vector that share one shift (docs/numerics.md)
ACT_GROUP = 32
#: the largest per-group shift of an act8 vector
ACT_SMAX = 7


def q8(y: np.ndarray, f, group: int | None = ACT_GROUP):
    """Q8 over the last axis: ``y`` int64 ``[..., n]`` with ``f`` fraction bits (scalar or one per
    vector) -> ``(x [..., n] in [-127, 127], m [...], e [...], s [..., ngroups])``, all int64;
    element ``j`` of group ``a`` stands for ``x_j * m * 2^(e + s_a)``. ``group=None``: the whole
    vector is one group."""
    y = np.asarray(y, I64)
    n = y.shape[-1]
    g = n if group is None else group
    ng = -(-n // g)
    a = np.abs(y).max(axis=-1)
    k = np.maximum(bitlen(a) - 18, 0)
    yp = rsr(y, k[..., None])
    ap = np.abs(yp).max(axis=-1)
    m = (ap + 126) // 127
    pad = ng * g - n
    ypg = np.abs(yp)
    if pad:
        ypg = np.concatenate([ypg, np.zeros((*y.shape[:-1], pad), I64)], axis=-1)
    ag = ypg.reshape(*y.shape[:-1], ng, g).max(axis=-1)
    # delta: the largest in [0, 7] with ag * 2^delta <= ap (7 for an all-zero group)
    delta = np.full(ag.shape, ACT_SMAX, I64)
    for d in range(ACT_SMAX, 0, -1):
        delta = np.where((ag << d) > ap[..., None], d - 1, delta)
    s = ACT_SMAX - delta
    sh = np.repeat(delta, g, axis=-1)[..., :n]
    safe = np.where(m > 0, m, 1)
    x = rdiv(yp << sh, safe[..., None])
    zero = a == 0
    x = np.where(zero[..., None], 0, x)
    e = np.where(zero, 0, k - ACT_SMAX - np.asarray(f, I64))
    return x, np.where(zero, 0, m), e, np.where(zero[..., None], 0, s)
