"""The elementwise inner loops of ``lsq``'s search, fused (numba): the same IEEE operations in
the same order as the numpy expressions they replace (methods.py keeps those as the
reference), in one pass over memory instead of one pass per operation.

Only elementwise arithmetic is fused: every float32 group sum still goes through numpy's
``einsum`` (its SIMD summation order is numpy's), so the codes and scales are bit-identical.
No fast-math: LLVM neither reassociates nor contracts a product and a sum into an FMA.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def round_products(x, off, scale, n, wt, ones, q, a, aq, ax):  # pragma: no cover (jitted)
    """For float32 ``x`` ``[R, NG, G]`` and per-group ``off``, ``scale`` ``[R, NG, 1]``:
    ``q = clip(rint((x - off) * scale), 0, n)`` (numpy's clip: max then min), ``a = wt * q``
    (left as ``q`` when ``ones``), ``aq = a * q``, ``ax = a * x``; all float32."""
    rr, ng, g = x.shape
    zero = np.float32(0.0)
    top = np.float32(n)
    for r in range(rr):
        for j in range(ng):
            o = off[r, j, 0]
            sc = scale[r, j, 0]
            for k in range(g):
                xv = x[r, j, k]
                v = np.float32(np.float32(xv - o) * sc)
                v = np.rint(v)
                v = v if v > zero else zero
                v = v if v < top else top
                q[r, j, k] = v
                if ones:
                    av = v
                else:
                    av = np.float32(wt[r, j, k] * v)
                    a[r, j, k] = av
                aq[r, j, k] = np.float32(av * v)
                ax[r, j, k] = np.float32(av * xv)


@njit(cache=True, nogil=True)
def fit_update(sw, sx, sxx, sl, sll, slx, best_s, best_m, best_e):  # pragma: no cover (jitted)
    """Least-squares ``(s, m)`` and weighted error ``e`` of one rounding from its float64
    group sums (all ``[R, NG, 1]``), kept in ``best_*`` where ``e < best_e``: lsq_search's
    ``fit`` and update, operation for operation."""
    rr, ng, _ = sw.shape
    for r in range(rr):
        for j in range(ng):
            w0 = sw[r, j, 0]
            x1 = sx[r, j, 0]
            l1 = sl[r, j, 0]
            l2 = sll[r, j, 0]
            lx = slx[r, j, 0]
            det = w0 * l2 - l1 * l1
            p = w0 * l2
            ok = det > 1e-9 * (p if p > 1e-300 else 1e-300)
            if ok:
                s = (w0 * lx - l1 * x1) / det
                m = (l2 * x1 - l1 * lx) / det
            else:
                s = 0.0
                m = x1 / (w0 if w0 > 1e-300 else 1e-300)
            e = (
                sxx[r, j, 0]
                - 2.0 * s * lx
                - 2.0 * m * x1
                + s * s * l2
                + 2.0 * s * m * l1
                + m * m * w0
            )
            if e < best_e[r, j, 0]:
                best_s[r, j, 0] = s
                best_m[r, j, 0] = m
                best_e[r, j, 0] = e
