"""GPTQ with activation order and static groups for the integer formats.

:func:`quantize_gptq_act`: every group's step and offset are fixed *before* the sweep, fitted
to the original weights by the weighted least-squares search of ``lsq`` (weights: the
calibration's mean squared input activations) and rounded to the hardware format; then the
columns are quantized in decreasing order of their Hessian diagonal (most active input first,
"act-order") and each column's rounding error is spread over the columns not yet quantized
through the upper Cholesky factor of the damped inverse Hessian (Frantar et al., 2022). With
static groups the ROM layout is unchanged (groups stay contiguous in the original column
order; no permutation is stored).

Damping: ``damp`` times each column's own Hessian diagonal (plus a floor of ``1e-6`` of the
mean diagonal for columns the calibration barely reached). A damping proportional to the *mean*
diagonal, as in the original recipe, is dominated by the few input channels with huge
activations of models like SmolLM2 and then leaves the error feedback almost nothing to do on
all the other columns.
"""

from __future__ import annotations

import numpy as np

from maskc.quantize.encode import encode_mantissa, uniform_levels
from maskc.quantize.methods import (
    _weights,
    assemble,
    feedback_sweep,
    grouped,
    nearest_level,
    quantize_gptq,
    search_groups,
)
from maskc.romformat import QuantFormat, QuantTensor, dequantize, fields_of, group_values

#: Method ``gptq`` works on ``H + shrink * diag(H)``: the input correlations the calibration
#: text shows, shrunk toward the diagonal, so the error feedback does not fit that text's
#: correlations too closely. How far was measured off SmolLM2's grid (docs/benchmarks.md, "4-bit
#: off the source grid", fourth and fifth looks; three seeds each): groups of 64 want 0.5
#: (1.072/1.119 of float32 unshrunk -> 1.049/1.077), groups of 32 want 1 (0.5: 1.026/1.054,
#: 1: 1.030/1.033, 2: 1.035/1.032; lsq 1.051/1.048). :func:`hessian_shrink` picks by group size.
HESSIAN_SHRINK = 0.5
#: the shrinkage for groups of 32 or fewer columns (:func:`hessian_shrink`)
SMALL_GROUP_SHRINK = 1.0


def hessian_shrink(group_size: int) -> float:
    """The shrinkage ``gptq`` applies for groups of ``group_size`` columns: finer groups fit
    their own ranges closely, and the feedback then does better damped further."""
    return SMALL_GROUP_SHRINK if group_size <= 32 else HESSIAN_SHRINK


def shrunk_hessian(hessian: np.ndarray, shrink: float) -> np.ndarray:
    """``H + shrink * diag(H)`` in float64 (``H`` itself for ``shrink = 0``): the Hessian both
    gptq methods, integer and FP4, sweep on."""
    h = np.asarray(hessian, dtype=np.float64)
    return h + shrink * np.diag(np.diag(h)) if shrink else h


def damped_hinv(
    hessian: np.ndarray, cp: int, damp: float, order: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Upper Cholesky factor of the inverse of the damped Hessian in column ``order``.

    ``hessian`` ``[C, C]`` is zero-padded to ``[cp, cp]``; a column no input reached
    (``H[j, j] <= 0``) gets ``H[j, j] = 1`` and is reported dead. Returns ``(U, dead)``, ``U``
    ``[cp, cp]`` in the permuted order, ``dead`` ``bool [cp]`` in the original order."""
    c = hessian.shape[0]
    h = np.zeros((cp, cp), dtype=np.float64)
    h[:c, :c] = hessian
    d = np.diag(h).copy()
    dead = d <= 0
    live = d[~dead]
    floor = 1e-6 * float(live.mean()) if live.size else 1.0
    d = np.where(dead, 1.0, d)
    h[np.diag_indices(cp)] = d * (1.0 + damp) + floor
    h = h[np.ix_(order, order)]
    for _ in range(4):  # an ill-conditioned H: more damping until it factors
        try:
            return np.linalg.cholesky(np.linalg.inv(h)).T, dead
        except np.linalg.LinAlgError:
            h[np.diag_indices(cp)] += 10.0 * floor
            floor *= 10.0
    raise np.linalg.LinAlgError("gptq: the damped Hessian is not positive definite")


def static_groups(w: np.ndarray, fmt: QuantFormat, importance):
    """Each group's step and offset from the original weights (lsq's search weighted by
    ``importance``; symmetric formats: its step search), in the hardware format: ``(sm, ss, se,
    zm, zs, ze, step, off)``."""
    x = grouped(w, fmt.group_size)
    wt = np.broadcast_to(_weights(w.shape, fmt.group_size, importance), x.shape)
    s, m = search_groups(x, wt, fmt)
    sm, ss, se = encode_mantissa(
        np.maximum(s[..., 0], 0.0), fmt.scale_bits, False, fmt.scale_shift_bits
    )
    step = group_values(sm, ss, se)
    zm = zs = ze = None
    off = np.zeros_like(step)
    if fmt.zero_bits:
        zm, zs, ze = encode_mantissa(m[..., 0], fmt.zero_bits, True, fmt.zero_shift_bits)
        off = group_values(zm, zs, ze)
    return sm, ss, se, zm, zs, ze, step, off


def quantize_gptq_act(
    name: str,
    w: np.ndarray,
    fmt: QuantFormat,
    hessian: np.ndarray | None,
    importance: np.ndarray | None = None,
    damp: float = 0.01,
    act_order: bool = True,
) -> QuantTensor:
    """GPTQ with static groups and activation order (module docstring). ``w`` float ``[R, C]``,
    ``hessian`` float64 ``[C, C]`` = E[x x^T] of its inputs (required), ``importance`` ``[C]``
    (default: the Hessian's diagonal) weights the groups' step/offset fit."""
    if hessian is None:
        raise ValueError(f"{name}: gptq needs calibration statistics (--calib)")
    hessian = np.asarray(hessian, dtype=np.float64)
    if importance is None:
        importance = np.maximum(np.diag(hessian), 0.0)
    sm, ss, se, zm, zs, ze, step, off = static_groups(w, fmt, importance)
    codes = _sweep(w, fmt, hessian, step, off, damp, act_order)
    levels = uniform_levels(fmt.bits, fmt.symmetric).astype(np.float64)
    return assemble(name, w.shape, fmt, codes, levels, step, "gptq", sm, ss, se, zm, zs, ze)


def _sweep(w, fmt, hessian, step, off, damp, act_order):
    """One GPTQ sweep with fixed groups: the codes, uint8 ``[R, cp]``."""
    c = w.shape[1]
    g = fmt.group_size
    cp = fmt.padded_cols(c)
    levels = uniform_levels(fmt.bits, fmt.symmetric).astype(np.float64)
    diag = np.zeros(cp)
    diag[:c] = np.diag(hessian)
    order = np.argsort(-diag, kind="stable") if act_order else np.arange(cp)
    hinv, dead = damped_hinv(hessian, cp, damp, order)
    safe = np.where(step > 0, step, 1.0)

    def column(j, x, ahead):
        q = nearest_level((x - off[:, j // g]) / safe[:, j // g], levels)
        return q, step[:, j // g] * levels[q] + off[:, j // g]

    codes = feedback_sweep(w, cp, hinv, dead, order, column)
    codes[:, c:] = 0
    return codes


def output_error(w: np.ndarray, q: QuantTensor, hessian: np.ndarray) -> np.ndarray:
    """Each row's output error ``d H d^T`` (``d`` the row's weight error), float64 ``[R]``."""
    d = w.astype(np.float64) - dequantize(q).astype(np.float64)
    return np.einsum("ij,ij->i", d @ hessian, d)


def quantize_gptq_best(
    name: str,
    w: np.ndarray,
    fmt: QuantFormat,
    hessian: np.ndarray | None,
    importance: np.ndarray | None = None,
    shrink: float | None = None,
) -> QuantTensor:
    """Method ``gptq`` on the shrunk Hessian ``H + shrink * diag(H)`` (None: by the group size,
    :func:`hessian_shrink`):
    both GPTQ variants, each row from the one with the lower output error ``d H d^T``:
    :func:`quantize_gptq_act` (static groups, activation order, per-column damping: the better
    one where a few inputs dominate the Hessian, as for q/k/v, o and down) and
    :func:`~maskc.quantize.methods.quantize_gptq` (groups fitted on the error-updated weights in
    column order: often better for gate/up). Rows are independent (each row keeps its own
    exponents), so the choice keeps row stacking and row blocks exact."""
    if hessian is None:
        raise ValueError(f"{name}: gptq needs calibration statistics (--calib)")
    hessian = shrunk_hessian(hessian, hessian_shrink(fmt.group_size) if shrink is None else shrink)
    c = w.shape[1]
    a = quantize_gptq_act(name, w, fmt, hessian, importance)
    b = quantize_gptq(name, w, fmt, hessian, importance)
    take_b = output_error(w, b, hessian[:c, :c]) < output_error(w, a, hessian[:c, :c])
    for fd in fields_of(fmt):
        if fd.axis in ("level", "tensor"):
            continue
        va, vb = getattr(a, fd.name), getattr(b, fd.name)
        mask = take_b.reshape((-1,) + (1,) * (va.ndim - 1))
        setattr(a, fd.name, np.where(mask, vb, va).astype(va.dtype))
    return a
