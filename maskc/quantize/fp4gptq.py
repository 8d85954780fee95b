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

The result is the same ROM content :func:`~maskc.quantize.fp4.quantize_fp4` produces for the
scales and codes chosen (:func:`~maskc.quantize.fp4.mx_quant` / ``nv_quant``: validated, the MX
span checked). Rows are independent given the Hessian, so a matrix may be quantized in blocks of
rows (the streamed quantizer's ``CHUNK_ROWS``) with the same result.
"""

from __future__ import annotations

import numpy as np

from maskc import romformat
from maskc.quantize import fp4
from maskc.quantize.gptq import hessian_shrink, shrunk_hessian
from maskc.quantize.methods import gptq_hinv

#: columns of one GPTQ block (the lazy batch update of Frantar et al.): a multiple of both
#: FP4 blocks, so a format block never straddles two GPTQ blocks
GPTQ_BLOCK = 128


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
) -> romformat.QuantTensor:
    """Matrix ``w`` (float ``[R, C]``) in FP4 ROM format ``kind`` by GPTQ (module docstring).

    ``hessian``: float64 ``[C, C]`` = E[x x^T] of the matrix's inputs (required);
    ``importance``: ``[C]`` mean squared activations weighting the block-scale search (None:
    uniform); ``tensor_scale`` (nvfp4): the whole matrix's float32 tensor scale when ``w`` is a
    block of its rows (default: ``w``'s own); ``row0``: ``w``'s first row in the matrix (the
    MX span's message); ``shrink``: the sweep runs on ``H + shrink * diag(H)`` (None: by the
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
    cp = -(-c // bs) * bs
    hessian = shrunk_hessian(hessian, hessian_shrink(bs) if shrink is None else shrink)
    hinv, dead = gptq_hinv(hessian, cp, damp)
    wq = np.zeros((r, cp), dtype=np.float64)
    wq[:, :c] = w
    wq[:, dead] = 0.0  # no input reaches these columns (padding, or never activated)
    wt = np.zeros(cp)
    wt[:c] = 1.0 if importance is None else np.asarray(importance, dtype=np.float64)
    ts = None
    if kind == "nvfp4":  # fixed first, from the original matrix
        ts = fp4.nv_tensor_scale(w) if tensor_scale is None else np.float32(tensor_scale)
    codes = np.zeros((r, cp), dtype=np.uint8)
    scales = np.zeros((r, cp // bs), dtype=np.uint8)
    step = safe = None
    for i1 in range(0, cp, GPTQ_BLOCK):
        i2 = min(i1 + GPTQ_BLOCK, cp)
        w1 = wq[:, i1:i2].copy()
        err = np.zeros_like(w1)
        hi = hinv[i1:i2, i1:i2]
        for k in range(i2 - i1):
            col = i1 + k
            if col % bs == 0:  # a format block starts: its scale from the updated weights
                _, sb, _ = fp4.encode(w1[:, k : k + bs], kind, True, wt[col : col + bs], ts)
                scales[:, col // bs] = sb[:, 0]
                if kind == "mxfp4":
                    step = fp4.e8m0_decode(sb[:, 0])
                else:  # exact: 4 x 24 significant bits; a zero scale stores zeros
                    step = fp4.e4m3_decode(sb[:, 0]) * float(ts)
                safe = np.where(step > 0, step, 1.0)
            x = w1[:, k]
            q = fp4.e2m1_encode(x, safe)  # exact: float64 against 3 x 28 significant bits
            q[step == 0] = 0
            if col >= c:
                q[:] = 0
            codes[:, col] = q
            e = (x - fp4.e2m1_decode(q) * step) / hi[k, k]
            w1[:, k:] -= np.outer(e, hi[k, k:])
            err[:, k] = e
        wq[:, i2:] -= err @ hinv[i1:i2, i2:]
    if kind == "mxfp4":
        return fp4.mx_quant(name, (r, c), codes, scales, "gptq", row0)
    return fp4.nv_quant(name, (r, c), codes, scales, ts, "gptq")
