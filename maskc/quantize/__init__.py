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

from maskc.quantize.formats import QuantFormat, QuantTensor, dequantize
from maskc.quantize.methods import METHODS, quantize_gptq, quantize_lsq, quantize_rtn
from maskc.quantize.rules import QuantSetting

__all__ = [
    "BUILTIN",
    "BUILTIN_EMBED",
    "METHODS",
    "QuantFormat",
    "QuantTensor",
    "builtin_for_bits",
    "dequantize",
    "format_for",
    "quantize_matrix",
    "weight_metrics",
]

#: Built-in setting of the transformer-block matrices (overridden by flags, [defaults], rules).
BUILTIN = QuantSetting(
    bits=4, group_size=32, method="lsq", codebook=False, symmetric=False, scale_bits=8
)
#: Built-in setting of the embedding and lm_head: 8-bit codes (two 4-bit cells per weight).
BUILTIN_EMBED = QuantSetting(
    bits=8, group_size=32, method="rtn", codebook=False, symmetric=False, scale_bits=8
)
#: Per-group shift bits of the step and offset (small-float scales), by code width.
SHIFT_BITS = {2: 3, 3: 3, 4: 3, 8: 0}


def builtin_for_bits(bits: int) -> QuantSetting:
    """The built-in block setting for a ``--bits`` choice (only ``bits`` differs today)."""
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
    if setting.method == "rtn":
        q = quantize_rtn(name, w, fmt)
    elif setting.method == "lsq":
        q = quantize_lsq(name, w, fmt, importance)
    elif setting.method == "gptq":
        q = quantize_gptq(name, w, fmt, hessian, importance)
    else:  # rules.resolve validated the name against METHODS
        raise ValueError(f"unknown method {setting.method!r}")
    q.validate()
    return q


def weight_metrics(w: np.ndarray, deq: np.ndarray) -> dict[str, float]:
    """``rel_error`` = ||w - deq|| / ||w|| and ``snr_db`` = -20 log10(rel_error)."""
    w64 = w.astype(np.float64)
    num = float(np.sqrt(((w64 - deq.astype(np.float64)) ** 2).sum()))
    den = float(np.sqrt((w64**2).sum()))
    rel = num / den if den else (0.0 if num == 0 else math.inf)
    snr = -20 * math.log10(rel) if rel > 0 else math.inf
    return {"rel_error": rel, "snr_db": snr}
