"""Quantization methods: float matrix -> :class:`~maskc.romformat.QuantTensor`.

Every method works on the grouped view ``x`` of the matrix, float64 ``[R, NG, G]``, and finds a
float step ``s`` and offset ``m`` per group (``[R, NG, 1]``) and, for codebooks, the per-tensor
levels. :func:`finalize` then rounds ``s`` and ``m`` to the hardware mantissa format and assigns
every weight the nearest representable value *given the rounded step and offset*, so the codes
are always optimal for what the ROM actually stores.

Methods (``--method``):

* ``rtn``: round to nearest on the group's min-max range (asymmetric) or absmax (symmetric);
* ``lsq``: calibration-free error minimization in the style of llama.cpp's k-quants
  (``make_qkx2_quants``): try a ladder of candidate scales around min-max, fit step and offset by
  weighted least squares for each rounding, keep the best, then alternate round / fit. The
  weights of the squared error are the calibration importance (mean squared activation of each
  input column) when ``--calib`` is given, else uniform;
* ``gptq``: needs ``--calib``; GPTQ error feedback (Frantar et al. 2022) with the input Hessian
  of each matrix, each group's step/offset chosen by ``lsq`` on the error-updated weights.
"""

from __future__ import annotations

import numpy as np

from maskc.quantize.encode import encode_mantissa, uniform_levels
from maskc.quantize.fused import fit_update, round_products
from maskc.romformat import QuantFormat, QuantTensor, group_values

#: the methods of the integer formats
INT_METHODS = ("rtn", "lsq", "gptq")
#: every method name a setting may give: the integer formats' and the FP4 formats'
#: (:data:`maskc.quantize.fp4.METHODS`: ``ocp`` for mxfp4, ``nv`` for nvfp4, ``search`` and
#: ``gptq`` for both)
METHODS = (*INT_METHODS, "ocp", "nv", "search")


def grouped(w: np.ndarray, g: int) -> np.ndarray:
    """float64 ``[R, NG, G]`` view of ``w`` ``[R, C]`` with zero-padded columns."""
    r, c = w.shape
    cp = -(-c // g) * g
    x = np.zeros((r, cp), dtype=np.float64)
    x[:, :c] = w
    return x.reshape(r, cp // g, g)


def grouped32(w: np.ndarray, g: int) -> np.ndarray:
    """float32 ``[R, NG, G]`` grouped view of float32 ``w`` (a view when no padding is needed):
    the same values as :func:`grouped`, which every method only reads (a float32 weight minus
    a float64 offset is computed in float64 either way)."""
    r, c = w.shape
    if w.dtype != np.float32:
        return grouped(w, g)
    if c % g == 0:
        return np.ascontiguousarray(w).reshape(r, c // g, g)
    cp = -(-c // g) * g
    x = np.zeros((r, cp), dtype=np.float32)
    x[:, :c] = w
    return x.reshape(r, cp // g, g)


def column_mask(c: int, g: int) -> np.ndarray:
    """float64 ``[1, NG, G]``: 1 for real columns, 0 for padding (padding never counts)."""
    cp = -(-c // g) * g
    m = np.zeros(cp)
    m[:c] = 1.0
    return m.reshape(1, cp // g, g)


def nearest_level(u: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Index of the nearest of the sorted ``levels`` for each ``u`` (ties to the lower)."""
    lv = levels.astype(np.float64)
    n = len(lv) - 1
    if lv[0] == 0 and np.array_equal(lv, np.arange(n + 1)):
        # levels 0..n: the cuts are k + 0.5, and the number of cuts below u is
        # clip(ceil(u - 0.5), 0, n) (u - 0.5 is exact wherever it matters: u >= 0.25, Sterbenz;
        # below, it stays <= 0 and clips to 0): what searchsorted gives, in a few passes
        t = np.subtract(u, 0.5)
        np.ceil(t, out=t)
        np.clip(t, 0, n, out=t)
        return t.astype(np.uint8)
    cut = (lv[1:] + lv[:-1]) / 2
    return np.searchsorted(cut, u, side="left").astype(np.uint8)


def ls_fit(x, wt, lv, s0, m0):
    """Weighted least squares ``x ~ s * lv + m`` per group (last axis); singular -> s0, m0."""
    sw = wt.sum(-1, keepdims=True)
    sl = (wt * lv).sum(-1, keepdims=True)
    sll = (wt * lv * lv).sum(-1, keepdims=True)
    sx = (wt * x).sum(-1, keepdims=True)
    slx = (wt * lv * x).sum(-1, keepdims=True)
    det = sw * sll - sl * sl
    ok = det > 1e-12 * np.maximum(sw * sll, 1e-300)
    safe = np.where(ok, det, 1.0)
    s = np.where(ok, (sw * slx - sl * sx) / safe, s0)
    m = np.where(ok, (sll * sx - sl * slx) / safe, m0)
    return s, m


def range_init(x: np.ndarray, wt: np.ndarray, bits: int, symmetric: bool):
    """RTN step/offset per group from the range of the real (weighted > 0) columns."""
    real = wt > 0
    if real.all():  # no padding, nothing masked: the plain min/max (exact, in x's dtype)
        mn = x.min(-1, keepdims=True).astype(np.float64)
        mx = x.max(-1, keepdims=True).astype(np.float64)
    else:
        big = np.finfo(np.float64).max
        mn = np.where(real, x, big).min(-1, keepdims=True)
        mx = np.where(real, x, -big).max(-1, keepdims=True)
        mn = np.where(mn == big, 0.0, mn)
        mx = np.where(mx == -big, 0.0, mx)
    if symmetric:
        half = 1 << (bits - 1)
        # levels -half .. half-1: cover both the most negative and the most positive weight
        s = np.maximum(-mn / half, mx / max(half - 1, 1))
        return s, np.zeros_like(s)
    n = (1 << bits) - 1
    return (mx - mn) / n, mn


def _gsum(a: np.ndarray) -> np.ndarray:
    """Sum over the last (group) axis, keeping it: float32 ``[R, NG, G]`` -> float64 ``[R, NG, 1]``.

    einsum's reduction is several times faster than ``sum(dtype=float64)`` here; float32
    accumulation over one group (at most a few hundred terms) is ample for fitting."""
    return np.einsum("rgk->rg", a)[..., None].astype(np.float64)


def inverse_step(step: np.ndarray) -> np.ndarray:
    """``1 / step`` where the step is positive (0 elsewhere), at most ``1e30``: finite when
    cast to float32 even for a group of subnormal weights."""
    return np.where(step > 0, 1.0 / np.maximum(step, 1e-30), 0.0)


def lsq_search(x, wt, bits: int, nstep: int = 20, iters: int = 3, fused: bool = True):
    """k-quants-style asymmetric search: float (s, m) ``[R, NG, 1]`` minimizing weighted error.

    Candidate steps form a ladder around the min-max step (``range / (n - 1 + 0.1 i)``); for each
    candidate rounding ``q`` the least-squares ``(s, m)`` and its weighted error come in closed
    form from five weighted sums; the best is kept, then refined by alternating round and fit.
    ``fused``: the elementwise loops run as the kernels of :mod:`maskc.quantize.fused` (same
    operations, same results; False: the numpy expressions below).
    """
    n = (1 << bits) - 1
    x = np.ascontiguousarray(x, dtype=np.float32)
    wt = np.ascontiguousarray(np.broadcast_to(wt, x.shape), dtype=np.float32)
    s0, mn = range_init(x, wt, bits, symmetric=False)
    s0, mn = s0.astype(np.float32), mn.astype(np.float32)
    rng = np.maximum(s0 * n, np.float32(1e-30))
    xm = x - mn
    sw = _gsum(wt)
    wx = wt * x
    sx = _gsum(wx)
    sxx = _gsum(wx * x)
    q = np.empty_like(x)
    wq_buf = np.empty_like(x)
    tmp = np.empty_like(x)

    ones = bool((wt == 1).all())  # uniform weights, no padding: wt * q is q (exactly)

    def fit(q):
        """Least-squares (s, m) for rounding q and its weighted squared error."""
        wq = q if ones else np.multiply(wt, q, out=wq_buf)
        sl = _gsum(wq)
        sll = _gsum(np.multiply(wq, q, out=tmp))
        slx = _gsum(np.multiply(wq, x, out=tmp))
        det = sw * sll - sl * sl
        ok = det > 1e-9 * np.maximum(sw * sll, 1e-300)
        safe = np.where(ok, det, 1.0)
        s = np.where(ok, (sw * slx - sl * sx) / safe, 0.0)
        m = np.where(ok, (sll * sx - sl * slx) / safe, sx / np.maximum(sw, 1e-300))
        e = sxx - 2 * s * slx - 2 * m * sx + s * s * sll + 2 * s * m * sl + m * m * sw
        return s, m, e

    def round_to(scale, offset_x):
        """q = clip(rint(offset_x * scale), 0, n) into the preallocated buffer."""
        np.multiply(offset_x, scale, out=q)
        np.rint(q, out=q)
        return np.clip(q, 0, n, out=q)

    best_s, best_m = s0.astype(np.float64), mn.astype(np.float64)
    if fused:
        del xm
        ax = np.empty_like(x)
        scale0 = (1.0 / np.maximum(s0, np.float32(1e-30))).astype(np.float32)
        round_products(x, mn, scale0, n, wt, ones, q, wq_buf, tmp, ax)
        d2 = (s0 * q + mn - x) ** 2
        best_e = _gsum(d2 if ones else wt * d2)
        del d2

        def step(scale, off):
            round_products(x, off, scale.astype(np.float32), n, wt, ones, q, wq_buf, tmp, ax)
            sl, sll, slx = _gsum(q if ones else wq_buf), _gsum(tmp), _gsum(ax)
            fit_update(sw, sx, sxx, sl, sll, slx, best_s, best_m, best_e)

        for i in range(nstep + 1):
            step(np.float32(n - 1.0 + 0.1 * i) / rng, mn)
        for _ in range(iters):
            step(inverse_step(best_s).astype(np.float32), best_m.astype(np.float32))
        return best_s, best_m
    round_to(1.0 / np.maximum(s0, np.float32(1e-30)), xm)
    d2 = (s0 * q + mn - x) ** 2
    best_e = _gsum(d2 if ones else wt * d2)
    del d2
    for i in range(nstep + 1):
        s, m, e = fit(round_to(np.float32(n - 1.0 + 0.1 * i) / rng, xm))
        better = e < best_e
        best_s, best_m, best_e = (
            np.where(better, s, best_s),
            np.where(better, m, best_m),
            np.where(better, e, best_e),
        )
    for _ in range(iters):
        inv = inverse_step(best_s).astype(np.float32)
        s, m, e = fit(round_to(inv, x - best_m.astype(np.float32)))
        better = e < best_e
        best_s, best_m, best_e = (
            np.where(better, s, best_s),
            np.where(better, m, best_m),
            np.where(better, e, best_e),
        )
    return best_s, best_m


def symmetric_search(x, wt, bits: int, reach: float = 0.9, n: int = 19, iters: int = 2):
    """Weighted least-squares step of a symmetric group (levels ``-h .. h-1``, ``h =
    2**(bits-1)``; offset 0), after k-quants' ``make_qx_quants``, for an unsigned step:
    candidate inverse steps ``(k + d) / |a|`` for ``n`` offsets ``d`` from ``-reach`` to
    ``reach`` levels (``a`` the group's largest magnitude, ``k = h`` if it is negative, ``h - 1``
    if positive: ``d = 0`` puts it on the end level); for each rounding the least-squares step
    and its error in closed form; the best kept, then refined by rounding with it. Returns
    float64 ``(s, 0)`` ``[R, NG, 1]``, never worse in weighted error than :func:`range_init`'s
    step. The ladder stays within a level of the end level on purpose: a wider one (steps from
    0.3 to 1.3 times the end level's) wins on the weighted error by clipping the largest weights
    and loses in perplexity (SmolLM2 off its grid by noise, seed 0, g32: 1.23x / 1.28x against
    1.10x / 1.03x float32; docs/benchmarks.md)."""
    half = 1 << (bits - 1)
    x = np.ascontiguousarray(x, dtype=np.float32)
    wt = np.ascontiguousarray(np.broadcast_to(wt, x.shape), dtype=np.float32)
    xm = np.where(wt > 0, x, np.float32(0))
    a = np.take_along_axis(xm, np.abs(xm).argmax(-1)[..., None], -1).astype(np.float64)
    k = np.where(a < 0, float(half), float(half - 1))
    mag = np.abs(a)
    sxx = _gsum(wt * x * x)

    def fit(inv):
        q = np.clip(np.rint(x * inv.astype(np.float32)), -half, half - 1)
        wq = wt * q
        sxq, sqq = _gsum(wq * x), _gsum(wq * q)
        s = np.maximum(np.where(sqq > 0, sxq / np.where(sqq > 0, sqq, 1.0), 0.0), 0.0)
        return s, sxx - 2 * s * sxq + s * s * sqq

    best_s, best_e = fit(inverse_step(range_init(x, wt, bits, True)[0]))
    for d in np.linspace(-reach, reach, n):
        s, e = fit(inverse_step(mag / (k + d)))
        better = e < best_e
        best_s, best_e = np.where(better, s, best_s), np.where(better, e, best_e)
    for _ in range(iters):
        s, e = fit(inverse_step(best_s))
        better = e < best_e
        best_s, best_e = np.where(better, s, best_s), np.where(better, e, best_e)
    return best_s, np.zeros_like(best_s)


def search_groups(x, wt, fmt: QuantFormat):
    """The weighted least-squares ``(s, m)`` of groups ``x`` for ``fmt``: :func:`lsq_search`,
    or :func:`symmetric_search` for a symmetric format (lsq's and gptq's group fits)."""
    if fmt.symmetric:
        return symmetric_search(x, wt, fmt.bits)
    return lsq_search(x, wt, fmt.bits)


def finalize(
    name: str,
    w_shape: tuple[int, int],
    x: np.ndarray,
    s: np.ndarray,
    m: np.ndarray,
    fmt: QuantFormat,
    levels: np.ndarray,
    method: str,
) -> QuantTensor:
    """Round float step ``s`` and offset ``m`` (``[R, NG, 1]``) to the hardware format, then give
    every weight the nearest value representable with the rounded step/offset and ``levels``."""
    r, c = w_shape
    s = np.maximum(s[..., 0], 0.0)
    sm, ss, se = encode_mantissa(s, fmt.scale_bits, False, fmt.scale_shift_bits)
    step = group_values(sm, ss, se)
    if fmt.zero_bits:
        zm, zs, ze = encode_mantissa(m[..., 0], fmt.zero_bits, True, fmt.zero_shift_bits)
        off = group_values(zm, zs, ze)
    else:
        zm = zs = ze = None
        off = np.zeros_like(step)
    safe = np.where(step > 0, step, 1.0)[..., None]
    u = (x - off[..., None]) / safe
    codes = nearest_level(u, levels)
    return assemble(
        name, (r, c), fmt, codes.reshape(r, -1), levels, step, method, sm, ss, se, zm, zs, ze
    )


def assemble(
    name, shape, fmt, codes, levels, step, method, sm, ss, se, zm=None, zs=None, ze=None
) -> QuantTensor:
    """Build the :class:`QuantTensor` with canonical ROM content: padding cells hold code 0,
    and a group whose step is zero (it represents only its offset) stores the code of the level
    closest to zero, whatever the method picked. ``step``: float ``[R, NG]``."""
    r, c = shape
    zero_code = np.uint8(np.argmin(np.abs(levels.astype(np.int64))))
    zero_step = np.repeat(step <= 0, fmt.group_size, axis=1)
    codes = np.where(zero_step, zero_code, codes).astype(np.uint8)
    codes[:, c:] = 0
    return QuantTensor(
        name=name,
        shape=(r, c),
        fmt=fmt,
        codes=np.ascontiguousarray(codes),
        levels=levels.astype(np.int16),
        scale_m=sm.astype(np.uint16),
        scale_s=ss,
        scale_e=se,
        zero_m=None if zm is None else zm.astype(np.int16),
        zero_s=zs,
        zero_e=ze,
        method=method,
    )


def quantize_rtn(name: str, w: np.ndarray, fmt: QuantFormat, importance=None) -> QuantTensor:
    """Round to nearest. ``w``: float32 ``[R, C]``."""
    x = grouped32(w, fmt.group_size)
    wt = np.broadcast_to(column_mask(w.shape[1], fmt.group_size), x.shape)
    s, m = range_init(x, wt, fmt.bits, fmt.symmetric)
    levels = uniform_levels(fmt.bits, fmt.symmetric)
    return finalize(name, w.shape, x, s, m, fmt, levels, "rtn")


def _weights(w_shape, g, importance):
    """Error weights ``[1, NG, G]`` from per-input-column importance (or uniform); 0 on padding."""
    mask = column_mask(w_shape[1], g)
    if importance is None:
        return mask
    imp = np.zeros(mask.size)
    imp[: w_shape[1]] = np.asarray(importance, dtype=np.float64)
    imp = imp.reshape(mask.shape)
    return mask * (imp + 1e-12 * max(float(imp.max()), 1e-30))


def magnitude_weights(x: np.ndarray, wt: np.ndarray) -> np.ndarray:
    """Element error weights without activation statistics, as llama.cpp's k-quants weigh a
    group (``make_qkx2_quants``): ``rms(group) + |x|``, divided by ``rms(group)``, times the
    mask ``wt`` (0 on padding).
    The large weights of a group then keep their values instead of being clipped for the many
    small ones: off SmolLM2's source grid, 4-bit g32 lsq goes from 1.21x/1.44x float32
    perplexity to 1.10x/1.08x with it (docs/benchmarks.md "4-bit off the source grid")."""
    xm = np.where(wt > 0, x, 0.0).astype(np.float64)
    n = np.maximum((wt > 0).sum(-1, keepdims=True), 1)
    rms = np.sqrt((xm**2).sum(-1, keepdims=True) / n)
    # divided by the group's rms (each group is fitted alone, so a factor per group changes
    # nothing): weights in [1, 1 + sqrt(G)] for any scale of w, never subnormal
    rel = np.divide(np.abs(xm), rms, out=np.zeros_like(xm), where=rms > 0)
    return (wt * (1.0 + rel)).astype(np.float32)


def quantize_lsq(name: str, w: np.ndarray, fmt: QuantFormat, importance=None) -> QuantTensor:
    """k-quants-style least-squares search: :func:`lsq_search` (asymmetric formats) or
    :func:`symmetric_search`. ``importance``: ``[C]`` (the mean squared input activation: each
    column's error weighted by it), or None (each element's error weighted by its magnitude,
    :func:`magnitude_weights`)."""
    x = grouped32(w, fmt.group_size)
    wt = np.broadcast_to(_weights(w.shape, fmt.group_size, importance), x.shape)
    if importance is None:
        wt = magnitude_weights(x, wt)
    s, m = search_groups(x, wt, fmt)
    return finalize(name, w.shape, x, s, m, fmt, uniform_levels(fmt.bits, fmt.symmetric), "lsq")


def snap(
    v: np.ndarray, bits: int, signed: bool, shift_bits: int, e: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Round values ``v`` ``[R]`` to mantissa/shift pairs under fixed row exponents ``e`` ``[R]``
    (saturating). Returns ``(mantissa int64 [R], shift uint8 [R])``."""
    top = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    lo = -(top + 1) if signed else 0
    smax = (1 << shift_bits) - 1
    ef = e.astype(np.float64)
    if smax:
        with np.errstate(divide="ignore"):
            sh = np.floor(np.log2(top / np.maximum(np.abs(v), 1e-300))) + ef
        sh = np.clip(sh, 0, smax)
    else:
        sh = np.zeros_like(ef)
    m = np.clip(np.rint(v / np.exp2(ef - sh)), lo, top)
    return m.astype(np.int64), sh.astype(np.uint8)


def gptq_hinv(hessian: np.ndarray, cp: int, damp: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """GPTQ's factor of the inverse Hessian: ``hessian`` ``[C, C]`` zero-padded to ``[cp, cp]``,
    a column no input ever reached (``H[j, j] <= 0``, padding too) given ``H[j, j] = 1``, then
    ``damp`` times the mean diagonal added to the diagonal. Returns ``(U, dead)``: the upper
    triangular Cholesky factor of ``H^-1`` ``[cp, cp]`` and the dead columns ``bool [cp]``
    (their weights are zeroed: no input reaches them)."""
    c = hessian.shape[0]
    h = np.zeros((cp, cp), dtype=np.float64)
    h[:c, :c] = hessian
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    h[np.diag_indices(cp)] += damp * float(np.mean(np.diag(h)))
    return np.linalg.cholesky(np.linalg.inv(h)).T, dead


#: columns of one lazy-update block of the GPTQ sweep (:func:`feedback_sweep`)
GPTQ_BLOCK = 128


def feedback_sweep(w, cp, hinv, dead, order, column) -> np.ndarray:
    """GPTQ's sweep over the columns of ``w`` ``[R, C]`` (zero-padded to ``cp``; ``dead``
    columns zeroed) in ``order``, ``hinv`` the upper Cholesky factor of the damped inverse
    Hessian in that order (:func:`gptq_hinv`, :func:`maskc.quantize.gptq.damped_hinv`):
    ``column(j, x, ahead)`` quantizes column ``j`` (an index in the original order) of the
    error-updated weights ``x`` ``[R]`` and returns its codes and their values; ``ahead(n)``
    gives the current weights of the next ``n`` columns in sweep order from ``j`` on (those of
    the lazy block updated, those after it not yet; fewer at the end), for a sweep that fits a
    group when it reaches the group's first column. The rounding error goes to the columns not
    yet quantized, in blocks of :data:`GPTQ_BLOCK` (lazy batch updates). Returns the codes,
    uint8 ``[R, cp]`` in the original column order. The integer gptq's two sweeps and FP4 gptq's
    two run on it."""
    r, c = w.shape
    wq = np.zeros((r, cp), dtype=np.float64)
    wq[:, :c] = w
    wq[:, dead] = 0.0
    wq = wq[:, order]
    codes = np.zeros((r, cp), dtype=np.uint8)
    for i1 in range(0, cp, GPTQ_BLOCK):
        i2 = min(i1 + GPTQ_BLOCK, cp)
        w1 = wq[:, i1:i2].copy()
        err = np.zeros_like(w1)
        hi = hinv[i1:i2, i1:i2]
        for k in range(i2 - i1):

            def ahead(n, k=k, i2=i2, w1=w1):
                near = w1[:, k : k + n]
                if near.shape[1] == n or i2 == cp:
                    return near.copy()
                return np.concatenate([near, wq[:, i2 : i2 + n - near.shape[1]]], axis=1)

            x = w1[:, k]
            q, v = column(order[i1 + k], x, ahead)
            codes[:, order[i1 + k]] = q
            e = (x - v) / hi[k, k]
            w1[:, k:] -= np.outer(e, hi[k, k:])
            err[:, k] = e
        wq[:, i2:] -= err @ hinv[i1:i2, i2:]
    return codes


def quantize_gptq(
    name: str,
    w: np.ndarray,
    fmt: QuantFormat,
    hessian: np.ndarray | None,
    importance: np.ndarray | None = None,
    damp: float = 0.01,
) -> QuantTensor:
    """GPTQ (Frantar et al., 2022): quantize column by column, spreading each column's rounding
    error over the not-yet-quantized columns through the inverse input Hessian
    (:func:`feedback_sweep`, in column order).

    ``hessian``: float64 ``[C, C]`` = E[x x^T] of this matrix's inputs. Each group's step and
    offset are fitted (``lsq``'s search weighted by ``importance``; symmetric formats:
    :func:`symmetric_search`) on the error-updated weights when the
    group starts and rounded to the hardware format right away (row exponents fixed up front from
    the original weights with 2x headroom), so codes are assigned against the values the ROM
    stores and nothing is re-rounded afterwards.
    """
    if hessian is None:
        raise ValueError(f"{name}: gptq needs calibration statistics (--calib)")
    r, c = w.shape
    g = fmt.group_size
    cp = fmt.padded_cols(c)
    ng = cp // g
    levels = uniform_levels(fmt.bits, fmt.symmetric).astype(np.float64)
    hinv, dead = gptq_hinv(hessian, cp, damp)
    imp = _weights((r, c), g, importance).reshape(-1)  # [Cp]

    # Row exponents from the original weights' group ranges, with 2x headroom for the updates.
    x0 = grouped(w, g)
    s0, m0 = range_init(x0, np.broadcast_to(column_mask(c, g), x0.shape), fmt.bits, fmt.symmetric)
    _, _, se = encode_mantissa(2.0 * s0[..., 0], fmt.scale_bits, False)
    ze = None
    if fmt.zero_bits:
        _, _, ze = encode_mantissa(2.0 * m0[..., 0], fmt.zero_bits, True)

    sm = np.zeros((r, ng), dtype=np.int64)
    ss = np.zeros((r, ng), dtype=np.uint8)
    zm = np.zeros((r, ng), dtype=np.int64) if fmt.zero_bits else None
    zs = np.zeros((r, ng), dtype=np.uint8) if fmt.zero_bits else None
    step = off = None

    def column(col, x, ahead):
        nonlocal step, off
        if col % g == 0:  # a group starts: fitted on the error-updated weights
            gi = col // g
            xg = ahead(g)[:, None, :]
            wt = np.broadcast_to(imp[col : col + g], xg.shape)
            s, m = search_groups(xg, wt, fmt)
            sm[:, gi], ss[:, gi] = snap(
                np.maximum(s[:, 0, 0], 0), fmt.scale_bits, False, fmt.scale_shift_bits, se
            )
            step = sm[:, gi] * np.exp2(se.astype(np.float64) - ss[:, gi])
            if fmt.zero_bits:
                zm[:, gi], zs[:, gi] = snap(
                    m[:, 0, 0], fmt.zero_bits, True, fmt.zero_shift_bits, ze
                )
                off = zm[:, gi] * np.exp2(ze.astype(np.float64) - zs[:, gi])
            else:
                off = np.zeros(r)
        u = (x - off) / np.where(step > 0, step, 1.0)
        q = nearest_level(u, levels)
        if col >= c:
            q[:] = 0
        return q, step * levels[q] + off

    codes = feedback_sweep(w, cp, hinv, dead, np.arange(cp), column)
    step_all = sm * np.exp2(se.astype(np.float64)[:, None] - ss)
    return assemble(name, (r, c), fmt, codes, levels, step_all, "gptq", sm, ss, se, zm, zs, ze)


def fit_codebook(
    x: np.ndarray,
    wt: np.ndarray,
    s: np.ndarray,
    m: np.ndarray,
    bits: int,
    level_bits: int,
    rounds: int = 4,
    iters: int = 12,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-tensor non-uniform integer levels, fitted to the weights (weighted 1-D k-means).

    Starts from the asymmetric groups ``x ~ s * q + m`` (``q`` in ``0..n``); the normalized
    values ``u = (x - m) / s`` of the whole tensor are clustered into ``2**bits`` centres, which
    are scaled to integers of ``level_bits`` bits (``L = round(c * K)``, ``K`` the largest
    factor that fits); each group's step becomes ``s / K`` and step and offset are refitted by
    least squares for the new assignment. Returns ``(levels int16, s, m)``.
    """
    n = (1 << bits) - 1
    top = (1 << (level_bits - 1)) - 1
    k = top // n  # integer levels spanning 0 .. n*k <= top
    lv = np.arange(n + 1, dtype=np.float64) * k
    s = s / k
    for _ in range(rounds):
        u = ((x - m) / np.where(s > 0, s, 1.0)).reshape(-1)
        ww = np.broadcast_to(wt, x.shape).reshape(-1).astype(np.float64)
        c = lv.copy()
        for _ in range(iters):
            idx = np.searchsorted((c[1:] + c[:-1]) / 2, u)
            num = np.bincount(idx, ww * u, minlength=n + 1)
            den = np.bincount(idx, ww, minlength=n + 1)
            c = np.sort(np.where(den > 0, num / np.maximum(den, 1e-300), c))
        c = np.clip(np.rint(c), -top, top)
        for j in range(1, n + 1):  # integer levels must stay strictly increasing
            if c[j] <= c[j - 1]:
                c[j] = c[j - 1] + 1
        if c[-1] > top:  # pathological: fall back to the uniform grid
            c = np.arange(n + 1, dtype=np.float64) * k
        lv = c
        idx = np.searchsorted((lv[1:] + lv[:-1]) / 2, (x - m) / np.where(s > 0, s, 1.0))
        s, m = ls_fit(x, wt, lv[idx], s, m)
    return lv.astype(np.int16), s, m


def quantize_codebook(
    name: str, w: np.ndarray, fmt: QuantFormat, method: str, importance=None
) -> QuantTensor:
    """``rtn`` or ``lsq`` start, then a per-tensor fitted codebook (asymmetric formats)."""
    x = grouped(w, fmt.group_size)
    wt = np.broadcast_to(_weights(w.shape, fmt.group_size, importance), x.shape)
    if method == "lsq":
        s, m = lsq_search(x, wt, fmt.bits)
    else:
        s, m = range_init(x, wt, fmt.bits, symmetric=False)
    levels, s, m = fit_codebook(x, wt, s, m, fmt.bits, fmt.level_bits)
    return finalize(name, w.shape, x, s, m, fmt, levels, method)
