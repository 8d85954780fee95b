"""Stage 2, quantize: float matrices -> integer codes, levels and group scales in the chip's ROM
format (:mod:`maskc.romformat`).

* :mod:`~maskc.quantize.rules`: quant.toml and the per-tensor :class:`QuantSetting`;
* :mod:`~maskc.quantize.profiles`: the built-in profiles and the settings policy;
* :mod:`~maskc.quantize.methods`: rtn, lsq, the column-order gptq, codebooks;
  :mod:`~maskc.quantize.gptq`: method ``gptq`` (act-order, static groups, row-wise best);
  :mod:`~maskc.quantize.encode` their shared encoding helpers; :mod:`~maskc.quantize.matrix`:
  one matrix or row-stack;
* :mod:`~maskc.quantize.calibrate`: activation statistics on calibration text;
* :mod:`~maskc.quantize.driver`: a whole model into a build's quant/
  (:mod:`~maskc.quantize.store`), one layer at a time;
* :mod:`~maskc.quantize.report`: reports.json and its figure; :mod:`~maskc.quantize.inspect`.
* :mod:`~maskc.quantize.fp4`: the MXFP4/NVFP4 reference codec and the FP4 quantizer (issue
  21, docs/fp4-design.md); :mod:`~maskc.quantize.fp4gptq`: GPTQ on the FP4 grid.
"""

from maskc.quantize.driver import Calibration, QuantizedModel, choose_calibration, quantize_model
from maskc.quantize.matrix import quantize_matrix, quantize_stack, weight_metrics
from maskc.quantize.methods import METHODS
from maskc.quantize.profiles import (
    BUILTIN,
    BUILTIN_EMBED,
    MIXED_4BIT_ROLES,
    PROFILES,
    builtin_for_bits,
    format_for,
    resolve_settings,
)
from maskc.quantize.rules import QuantSetting
from maskc.quantize.store import QuantStore

__all__ = [
    "BUILTIN",
    "BUILTIN_EMBED",
    "METHODS",
    "MIXED_4BIT_ROLES",
    "PROFILES",
    "Calibration",
    "QuantSetting",
    "QuantStore",
    "QuantizedModel",
    "builtin_for_bits",
    "choose_calibration",
    "format_for",
    "quantize_matrix",
    "quantize_model",
    "quantize_stack",
    "resolve_settings",
    "weight_metrics",
]
