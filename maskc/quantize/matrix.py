"""One float matrix (or a row-stack of matrices that share their input) -> the ROM format, with
the method its setting names, and the error of the result."""

from __future__ import annotations

import math

import numpy as np

from maskc.quantize import fp4
from maskc.quantize.fp4gptq import quantize_fp4_gptq
from maskc.quantize.gptq import quantize_gptq_best
from maskc.quantize.methods import quantize_codebook, quantize_lsq, quantize_rtn
from maskc.quantize.profiles import format_for
from maskc.quantize.rules import QuantSetting
from maskc.romformat import QuantTensor, join_rows, split_rows

#: Rows quantized at once: bounds the working memory of large matrices (the embedding) to a
#: few times one block of rows. Results do not depend on it (rows are independent).
CHUNK_ROWS = 4096


def quantize_matrix(
    name: str,
    w: np.ndarray,
    setting: QuantSetting,
    importance: np.ndarray | None = None,
    hessian: np.ndarray | None = None,
    tensor_scale: np.float32 | None = None,
    row0: int = 0,
) -> QuantTensor:
    """Quantize float32 ``w`` ``[R, C]`` per ``setting`` (validated first: InputError naming
    ``name``).

    ``importance`` (float ``[C]``, mean squared input activation) weights the error of ``lsq``
    and of the FP4 ``search`` (and FP4 ``gptq``'s block scales); ``hessian`` (float64 ``[C, C]``)
    is required by ``gptq``;
    ``tensor_scale``: nvfp4's float32 tensor scale when ``w`` is a block of a matrix's rows
    (default: from ``w``); ``row0``: ``w``'s first row in the matrix (FP4's messages).
    """
    setting.check_quantizable(name)
    fmt = format_for(setting)
    fmt.validate(name)
    rows = w.shape[0]
    if fmt.fp4:
        if fmt.kind == "nvfp4" and tensor_scale is None:
            tensor_scale = fp4.nv_tensor_scale(w)
        parts = [
            quantize_fp4_gptq(
                name,
                w[r0 : r0 + CHUNK_ROWS],
                fmt.kind,
                hessian,
                importance,
                tensor_scale,
                row0 + r0,
            )
            if setting.method == "gptq"
            else fp4.quantize_fp4(
                name,
                w[r0 : r0 + CHUNK_ROWS],
                fmt.kind,
                setting.method,
                importance,
                tensor_scale,
                row0 + r0,
            )
            for r0 in range(0, rows, CHUNK_ROWS)
        ]
        q = parts[0] if len(parts) == 1 else join_rows(name, parts)
        q.validate()
        return q
    if rows > CHUNK_ROWS and not setting.codebook:
        # rtn, lsq and gptq treat rows independently: quantizing blocks of rows gives the same
        # codes and scales with the working memory of one block
        parts = [
            quantize_matrix(name, w[r0 : r0 + CHUNK_ROWS], setting, importance, hessian)
            for r0 in range(0, rows, CHUNK_ROWS)
        ]
        q = join_rows(name, parts)
        q.validate()
        return q
    if setting.codebook:
        q = quantize_codebook(name, w, fmt, setting.method, importance)
    elif setting.method == "rtn":
        q = quantize_rtn(name, w, fmt)
    elif setting.method == "lsq":
        q = quantize_lsq(name, w, fmt, importance)
    elif setting.method == "gptq":
        q = quantize_gptq_best(name, w, fmt, hessian, importance)
    else:  # rules.resolve validated the name against METHODS
        raise ValueError(f"unknown method {setting.method!r}")
    q.validate()
    return q


def quantize_stack(
    names: list[str],
    ws: list[np.ndarray],
    setting: QuantSetting,
    importance: np.ndarray | None = None,
    hessian: np.ndarray | None = None,
    tensor_scale: np.float32 | None = None,
    row0: int = 0,
) -> list[QuantTensor]:
    """Quantize matrices that share their input (same columns, same setting) in one pass.

    Every method here treats rows independently given the input statistics, so stacking the
    rows (q, k and v; gate and up) gives the same codes as quantizing each matrix alone, with
    a third of the per-column work for GPTQ. FP4 matrices are quantized one by one (nvfp4's
    tensor scale is each matrix's own; ``tensor_scale`` is for a single matrix's row block).
    """
    if len(ws) == 1:
        return [quantize_matrix(names[0], ws[0], setting, importance, hessian, tensor_scale, row0)]
    if setting.format != "int":
        return [
            quantize_matrix(n, w, setting, importance, hessian)
            for n, w in zip(names, ws, strict=True)
        ]
    q = quantize_matrix("+".join(names), np.concatenate(ws, axis=0), setting, importance, hessian)
    parts = split_rows(q, names, [w.shape[0] for w in ws])
    for p in parts:
        p.validate()
    return parts


def weight_metrics(w: np.ndarray, deq: np.ndarray, rows_per_block: int = 4096) -> dict[str, float]:
    """``rel_error`` = ||w - deq|| / ||w|| and ``snr_db`` = -20 log10(rel_error) (float64
    sums over blocks of rows); ``snr_db`` is None when the tensor is stored exactly, and
    ``rel_error`` None when an all-zero tensor is not (JSON has no infinity)."""
    num = den = 0.0
    for a in range(0, w.shape[0], rows_per_block):
        wb = w[a : a + rows_per_block].astype(np.float64)
        num += float(((wb - deq[a : a + rows_per_block]) ** 2).sum())
        den += float((wb**2).sum())
    num, den = math.sqrt(num), math.sqrt(den)
    rel = num / den if den else (0.0 if num == 0 else None)  # None: an all-zero tensor
    snr = -20 * math.log10(rel) if rel else None  # None: exact (or all zero)
    return {"rel_error": rel, "snr_db": snr}
