"""Stage 2, quantize: float matrices -> integer codes, levels and group scales in the chip's format.

Public API:

* :class:`QuantFormat`, :class:`QuantTensor` (:mod:`maskc.quantize.formats`): the ROM format;
* :func:`format_for`: a resolved per-tensor :class:`~maskc.quantize.rules.QuantSetting` -> format;
* :func:`quantize_matrix`: one float32 matrix -> :class:`QuantTensor` with the chosen method;
* :func:`weight_metrics`: relative error and SNR of a quantized matrix;
* :data:`METHODS`, :data:`BUILTIN`, :data:`BUILTIN_EMBED`: method names and built-in settings
  (the defaults were chosen by measurement: see docs/benchmarks.md).
"""

from __future__ import annotations

import math

import numpy as np

from maskc.errors import InputError
from maskc.quantize.formats import QuantFormat, QuantTensor, dequantize
from maskc.quantize.methods import (
    METHODS,
    quantize_codebook,
    quantize_gptq,
    quantize_lsq,
    quantize_rtn,
)
from maskc.quantize.rules import QuantSetting

__all__ = [
    "BUILTIN",
    "BUILTIN_EMBED",
    "METHODS",
    "MIXED_4BIT_ROLES",
    "PROFILES",
    "QuantFormat",
    "QuantTensor",
    "builtin_for_bits",
    "dequantize",
    "format_for",
    "quantize_matrix",
    "quantize_stack",
    "weight_metrics",
]

#: Built-in profiles of the transformer-block matrices, by ``--bits`` (overridden field by field
#: by ``--group-size``/``--method``, ``[defaults]`` and rules). Chosen by measurement on
#: SmolLM2-135M (docs/benchmarks.md): at 4 bits, groups of 32 reproduce the model's own grid;
#: at 3 bits, groups of 64 with calibration-weighted least squares and the four most sensitive
#: matrix kinds kept at 4 bits (:data:`MIXED_4BIT_ROLES`) give the best ppl per ROM bit.
PROFILES = {
    4: QuantSetting(
        bits=4, group_size=32, method="lsq", codebook=False, symmetric=False, scale_bits=8
    ),
    3: QuantSetting(
        bits=3, group_size=64, method="lsq", codebook=False, symmetric=False, scale_bits=8
    ),
}
BUILTIN = PROFILES[4]
#: Matrix kinds a 3-bit build keeps at 4 bits unless ``--no-mixed`` (or a rule sets ``bits``).
MIXED_4BIT_ROLES = ("k_proj", "v_proj", "o_proj", "down_proj")
#: Built-in setting of the embedding and lm_head: 8-bit codes (two 4-bit cells per weight).
BUILTIN_EMBED = QuantSetting(
    bits=8, group_size=32, method="rtn", codebook=False, symmetric=False, scale_bits=8
)
#: Rows quantized at once: bounds the working memory of large matrices (the embedding) to a
#: few times one block of rows. Results do not depend on it (rows are independent).
CHUNK_ROWS = 4096
#: Per-group shift bits of the step and offset (small-float scales), by code width.
SHIFT_BITS = {2: 3, 3: 3, 4: 3, 8: 0}


def builtin_for_bits(bits: int) -> QuantSetting:
    """The built-in block profile for a ``--bits`` choice (3 or 4; other widths: the 4-bit
    profile with that width)."""
    if bits in PROFILES:
        return PROFILES[bits]
    return QuantSetting(**{**BUILTIN.to_json(), "bits": bits})


def format_for(setting: QuantSetting) -> QuantFormat:
    """The ROM format a setting asks for: asymmetric formats store a signed offset with as many
    mantissa bits as the step; symmetric ones store none."""
    sh = SHIFT_BITS[setting.bits]
    return QuantFormat(
        bits=setting.bits,
        group_size=setting.group_size,
        scale_bits=setting.scale_bits,
        zero_bits=0 if setting.symmetric else setting.scale_bits,
        level_bits=max(8, setting.bits + 1),
        scale_shift_bits=sh,
        zero_shift_bits=0 if setting.symmetric else sh,
    )


def quantize_matrix(
    name: str,
    w: np.ndarray,
    setting: QuantSetting,
    importance: np.ndarray | None = None,
    hessian: np.ndarray | None = None,
) -> QuantTensor:
    """Quantize float32 ``w`` ``[R, C]`` per ``setting``.

    ``importance`` (float ``[C]``, mean squared input activation) weights the error of ``lsq``;
    ``hessian`` (float64 ``[C, C]``) is required by ``gptq``.
    """
    fmt = format_for(setting)
    fmt.validate(name)
    rows = w.shape[0]
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
        if setting.method == "gptq" or setting.symmetric:
            raise InputError(
                f"{name}: codebook = true works with methods rtn and lsq and asymmetric formats"
            )
        q = quantize_codebook(name, w, fmt, setting.method, importance)
    elif setting.method == "rtn":
        q = quantize_rtn(name, w, fmt)
    elif setting.method == "lsq":
        q = quantize_lsq(name, w, fmt, importance)
    elif setting.method == "gptq":
        q = quantize_gptq(name, w, fmt, hessian, importance)
    else:  # rules.resolve validated the name against METHODS
        raise ValueError(f"unknown method {setting.method!r}")
    q.validate()
    return q


def join_rows(name: str, parts: list[QuantTensor]) -> QuantTensor:
    """Concatenate row blocks of one matrix (same format and levels) into one tensor."""
    first = parts[0]

    def cat(field: str):
        arrays = [getattr(p, field) for p in parts]
        return None if arrays[0] is None else np.concatenate(arrays, axis=0)

    return QuantTensor(
        name=name,
        shape=(sum(p.shape[0] for p in parts), first.shape[1]),
        fmt=first.fmt,
        codes=cat("codes"),
        levels=first.levels,
        scale_m=cat("scale_m"),
        scale_s=cat("scale_s"),
        scale_e=cat("scale_e"),
        zero_m=cat("zero_m"),
        zero_s=cat("zero_s"),
        zero_e=cat("zero_e"),
        method=first.method,
    )


def split_rows(q: QuantTensor, names: list[str], rows: list[int]) -> list[QuantTensor]:
    """Split a quantized row-stack of several matrices back into one tensor per matrix.

    Every per-row and per-group field is sliced by rows; the level table is shared.
    """
    out, r0 = [], 0
    for name, r in zip(names, rows, strict=True):
        sl = slice(r0, r0 + r)
        out.append(
            QuantTensor(
                name=name,
                shape=(r, q.shape[1]),
                fmt=q.fmt,
                codes=q.codes[sl].copy(),
                levels=q.levels.copy(),
                scale_m=q.scale_m[sl].copy(),
                scale_s=q.scale_s[sl].copy(),
                scale_e=q.scale_e[sl].copy(),
                zero_m=None if q.zero_m is None else q.zero_m[sl].copy(),
                zero_s=None if q.zero_s is None else q.zero_s[sl].copy(),
                zero_e=None if q.zero_e is None else q.zero_e[sl].copy(),
                method=q.method,
            )
        )
        r0 += r
    return out


def quantize_stack(
    names: list[str],
    ws: list[np.ndarray],
    setting: QuantSetting,
    importance: np.ndarray | None = None,
    hessian: np.ndarray | None = None,
) -> list[QuantTensor]:
    """Quantize matrices that share their input (same columns, same setting) in one pass.

    Every method here treats rows independently given the input statistics, so stacking the
    rows (q, k and v; gate and up) gives the same codes as quantizing each matrix alone, with
    a third of the per-column work for GPTQ.
    """
    if len(ws) == 1:
        return [quantize_matrix(names[0], ws[0], setting, importance, hessian)]
    q = quantize_matrix("+".join(names), np.concatenate(ws, axis=0), setting, importance, hessian)
    parts = split_rows(q, names, [w.shape[0] for w in ws])
    for p in parts:
        p.validate()
    return parts


def weight_metrics(w: np.ndarray, deq: np.ndarray, rows_per_block: int = 4096) -> dict[str, float]:
    """``rel_error`` = ||w - deq|| / ||w|| and ``snr_db`` = -20 log10(rel_error) (float64
    sums over blocks of rows)."""
    num = den = 0.0
    for a in range(0, w.shape[0], rows_per_block):
        wb = w[a : a + rows_per_block].astype(np.float64)
        num += float(((wb - deq[a : a + rows_per_block]) ** 2).sum())
        den += float((wb**2).sum())
    num, den = math.sqrt(num), math.sqrt(den)
    rel = num / den if den else (0.0 if num == 0 else math.inf)
    snr = -20 * math.log10(rel) if rel > 0 else math.inf
    return {"rel_error": rel, "snr_db": snr}
