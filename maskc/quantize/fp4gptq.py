"""GPTQ for the FP4 formats (issue 21): method ``gptq`` with ``mxfp4`` / ``nvfp4``.

The integer formats' GPTQ (:func:`maskc.quantize.methods.quantize_gptq`; Frantar et al., 2022)
with the FP4 grid: columns are quantized one by one, left to right, in blocks of 128, and each
column's rounding error is spread over the columns not yet quantized through the upper Cholesky
factor of the damped inverse input Hessian (:func:`~maskc.quantize.methods.gptq_hinv`). When the
sweep reaches the first column of a format block (32 columns for mxfp4, 16 for nvfp4) the
block's scale is chosen from the *error-updated* weights of the block, as the integer GPTQ fits
each group's step: by the format's recipe and the neighbour search (:func:`maskc.quantize.fp4.
encode` with ``search``, weighted by the calibration's mean squared activations). Each weight's
code is then the E2M1 rounding (:func:`~maskc.quantize.fp4.e2m1_encode`: nearest, ties to even,
saturating at 6) of the updated weight divided by its block's scale, exactly; nvfp4's float32
tensor scale is fixed before the sweep from the original matrix (the whole matrix's when ``w``
is a block of its rows, as the streamed quantizer's pre-pass gives it).

For nvfp4 (:data:`ACT_ORDER`), as in the integer gptq
(:func:`maskc.quantize.gptq.quantize_gptq_best`), a second sweep runs in activation order:
every block's scale fixed first by the calibrated search on the original weights, the columns
in decreasing order of their Hessian diagonal with per-column damping
(:func:`~maskc.quantize.gptq.damped_hinv`, through the integer gptq's
:func:`~maskc.quantize.methods.feedback_sweep`); each row is taken from the sweep with the lower
output error ``d H d^T`` on the shrunk Hessian. Rows keep their own scales, so the choice keeps
row blocks exact.

The result is the same ROM content :func:`~maskc.quantize.fp4.quantize_fp4` produces for the
scales and codes chosen (:func:`~maskc.quantize.fp4.mx_quant` / ``nv_quant``: validated, the MX
span checked). Rows are independent given the Hessian, so a matrix may be quantized in blocks of
rows (the streamed quantizer's ``CHUNK_ROWS``) with the same result.
"""

from __future__ import annotations

import numpy as np

from maskc import romformat
from maskc.quantize import fp4
from maskc.quantize.gptq import damped_hinv, hessian_shrink, shrunk_hessian
from maskc.quantize.methods import feedback_sweep, gptq_hinv

#: Whether gptq also runs the act-order sweep (and keeps the better per row), by format:
#: measured off SmolLM2's grid on three seeds (docs/benchmarks.md, "4-bit off the source grid",
#: sixth look), nvfp4 1.070 / 1.129 of float32 with the column sweep alone -> 1.066 / 1.109,
#: mxfp4 1.161 / 1.291 -> 1.145 / 1.302 (better on the calibration text's book, worse on the
#: other text: not taken)
ACT_ORDER = {"mxfp4": False, "nvfp4": True}


def quantize_fp4_gptq(
    name: str,
    w: np.ndarray,
    kind: str,
    hessian: np.ndarray | None,
    importance: np.ndarray | None = None,
    tensor_scale: np.float32 | None = None,
    row0: int = 0,
    damp: float = 0.01,
    shrink: float | None = None,
    act_order: bool | None = None,
) -> romformat.QuantTensor:
    """Matrix ``w`` (float ``[R, C]``) in FP4 ROM format ``kind`` by GPTQ (module docstring):
    the column sweep, and with ``act_order`` (None: :data:`ACT_ORDER` of the format) the
    act-order sweep too, each row from the one with the lower output error ``d H d^T`` (``H``
    shrunk).

    ``hessian``: float64 ``[C, C]`` = E[x x^T] of the matrix's inputs (required);
    ``importance``: ``[C]`` mean squared activations weighting the block-scale search (None:
    uniform); ``tensor_scale`` (nvfp4): the whole matrix's float32 tensor scale when ``w`` is a
    block of its rows (default: ``w``'s own); ``row0``: ``w``'s first row in the matrix (the
    MX span's message); ``shrink``: the sweeps run on ``H + shrink * diag(H)`` (None: by the
    block size, :func:`~maskc.quantize.gptq.hessian_shrink`, as the integer gptq; off SmolLM2's
    grid mxfp4 went from 1.32/2.00 of float32 unshrunk to 1.13/1.27). Raises FitError for an
    mxfp4 row whose scales span more than 19 binades, as :func:`~maskc.quantize.fp4.
    quantize_fp4` does."""
    if hessian is None:
        raise ValueError(f"{name}: gptq needs calibration statistics (--calib)")
    if kind not in fp4.METHODS:
        raise ValueError(f"{name}: {kind!r} is not an FP4 format")
    r, c = w.shape
    bs = fp4.MX_BLOCK if kind == "mxfp4" else fp4.NV_BLOCK
    hessian = shrunk_hessian(hessian, hessian_shrink(bs) if shrink is None else shrink)
    wt = np.zeros(-(-c // bs) * bs)
    wt[:c] = 1.0 if importance is None else np.asarray(importance, dtype=np.float64)
    ts = None
    if kind == "nvfp4":  # fixed first, from the original matrix
        ts = fp4.nv_tensor_scale(w) if tensor_scale is None else np.float32(tensor_scale)
    codes, scales = _column_sweep(w, kind, hessian, wt, ts, damp)
    if ACT_ORDER[kind] if act_order is None else act_order:
        ca, sa = _act_sweep(w, kind, hessian, wt, ts, damp)
        h = hessian[:c, :c]
        take = _row_error(w, ca, sa, kind, ts, h) < _row_error(w, codes, scales, kind, ts, h)
        codes = np.where(take[:, None], ca, codes)
        scales = np.where(take[:, None], sa, scales)
    if kind == "mxfp4":
        return fp4.mx_quant(name, (r, c), codes, scales, "gptq", row0)
    return fp4.nv_quant(name, (r, c), codes, scales, ts, "gptq")


def _steps(scales: np.ndarray, kind: str, ts) -> np.ndarray:
    """Each block's step, float64 ``[R, NB]`` (exact: 4 x 24 significant bits for nvfp4)."""
    if kind == "mxfp4":
        return fp4.e8m0_decode(scales)
    return fp4.e4m3_decode(scales) * float(ts)


def _row_error(w, codes, scales, kind, ts, h) -> np.ndarray:
    """Each row's output error ``d H d^T`` of the FP4 codes and block scales, float64 ``[R]``."""
    c = w.shape[1]
    if kind == "mxfp4":
        deq = fp4.mx_decode(codes, scales, c)
    else:
        deq = fp4.nv_decode(codes, scales, ts, c)
    d = np.asarray(w, dtype=np.float64) - deq
    return np.einsum("ij,ij->i", d @ h, d)


def _act_sweep(w, kind, hessian, wt, ts, damp):
    """The integer gptq's act-order variant on the FP4 grid: every block's scale fixed before
    the sweep by the calibrated search on the original weights, the columns quantized in
    decreasing order of their Hessian diagonal with per-column damping
    (:func:`~maskc.quantize.gptq.damped_hinv`). Returns ``(codes [R, Cp], scales [R, NB])``."""
    c = w.shape[1]
    cp = len(wt)
    bs = fp4.MX_BLOCK if kind == "mxfp4" else fp4.NV_BLOCK
    _, scales, _ = fp4.encode(w, kind, True, wt[:c], ts)
    step = _steps(scales, kind, ts)
    safe = np.where(step > 0, step, 1.0)
    diag = np.zeros(cp)
    diag[:c] = np.diag(hessian)
    order = np.argsort(-diag, kind="stable")
    hinv, dead = damped_hinv(hessian, cp, damp, order)

    def column(j, x, ahead):
        q = fp4.e2m1_encode(x, safe[:, j // bs])  # exact, as in the column sweep
        q[step[:, j // bs] == 0] = 0
        if j >= c:
            q[:] = 0
        return q, fp4.e2m1_decode(q) * step[:, j // bs]

    return feedback_sweep(w, cp, hinv, dead, order, column), scales


def _column_sweep(w, kind, hessian, wt, ts, damp):
    """Columns left to right, each block's scale from the error-updated weights when the sweep
    reaches it (module docstring). Returns ``(codes [R, Cp], scales [R, NB])``."""
    r, c = w.shape
    cp = len(wt)
    bs = fp4.MX_BLOCK if kind == "mxfp4" else fp4.NV_BLOCK
    hinv, dead = gptq_hinv(hessian, cp, damp)
    scales = np.zeros((r, cp // bs), dtype=np.uint8)
    step = safe = None

    def column(col, x, ahead):
        nonlocal step, safe
        if col % bs == 0:  # a format block starts: its scale from the updated weights
            _, sb, _ = fp4.encode(ahead(bs), kind, True, wt[col : col + bs], ts)
            scales[:, col // bs] = sb[:, 0]
            step = _steps(sb[:, 0], kind, ts)  # a zero scale stores zeros
            safe = np.where(step > 0, step, 1.0)
        q = fp4.e2m1_encode(x, safe)  # exact: float64 against 3 x 28 significant bits
        q[step == 0] = 0
        if col >= c:
            q[:] = 0
        return q, fp4.e2m1_decode(q) * step

    return feedback_sweep(w, cp, hinv, dead, np.arange(cp), column), scales
