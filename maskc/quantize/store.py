"""Quantized tensors on disk: safetensors for the arrays, JSON for their formats.

A build's ``quant/`` folder holds one safetensors file per decoder layer
(``layer-000.safetensors`` ...) plus ``global.safetensors`` (embedding, final norm, lm_head), so
that writing and reading stream one layer at a time. Each quantized matrix ``NAME`` is stored as
the arrays ``NAME/codes``, ``NAME/levels``, ``NAME/scale_m``, ``NAME/scale_e`` and, for
asymmetric formats, ``NAME/zero_m``, ``NAME/zero_e`` (dtypes and shapes in
:mod:`maskc.quantize.formats`); tensors kept in float (norms, biases, skipped matrices) are
stored under their own name as float32. ``quant/index.json`` lists every tensor with its file,
shape, kind (``quantized`` or ``float``) and format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maskc.errors import InputError
from maskc.quantize.formats import QuantFormat, QuantTensor
from maskc.safetensors_io import SafetensorsFile

FIELDS = ("codes", "levels", "scale_m", "scale_s", "scale_e", "zero_m", "zero_s", "zero_e")
_DTYPES = {
    "codes": "U8",
    "levels": "I16",
    "scale_m": "U16",
    "scale_s": "U8",
    "scale_e": "I8",
    "zero_m": "I16",
    "zero_s": "U8",
    "zero_e": "I8",
}


def file_for(layer: int | None) -> str:
    """Relative path of the safetensors file holding a layer's tensors (None: global)."""
    return "quant/global.safetensors" if layer is None else f"quant/layer-{layer:03d}.safetensors"


def arrays_of(q: QuantTensor) -> dict[str, np.ndarray]:
    """The arrays to store for ``q``, keyed ``NAME/field``."""
    out = {}
    for f in FIELDS:
        arr = getattr(q, f)
        if arr is not None:
            out[f"{q.name}/{f}"] = arr
    return out


def index_entry(q: QuantTensor, file: str) -> dict:
    return {
        "file": file,
        "kind": "quantized",
        "shape": list(q.shape),
        "method": q.method,
        "format": format_to_json(q.fmt),
    }


#: the fields of a :class:`QuantFormat` as JSON holds them (quant/index.json, netlist.json)
FORMAT_FIELDS = ("bits", "group_size", "scale_bits", "zero_bits", "level_bits",
                 "scale_shift_bits", "zero_shift_bits")  # fmt: skip


def format_to_json(f: QuantFormat) -> dict:
    return {k: getattr(f, k) for k in FORMAT_FIELDS}


def format_from_json(d: object, where: str) -> QuantFormat:
    """A ``format`` object read from an untrusted file: every field an integer, no unknown
    field, the format validated (InputError naming ``where`` and the field otherwise)."""
    if not isinstance(d, dict):
        raise InputError(f"{where}: 'format' must be an object")
    unknown = sorted(set(d) - set(FORMAT_FIELDS))
    if unknown:
        raise InputError(f"{where}: unknown format field {unknown[0]!r}")
    fmt = QuantFormat(**{k: _int_field(d, k, where) for k in FORMAT_FIELDS})
    fmt.validate(where)
    return fmt


def _int_field(d: dict, key: str, where: str) -> int:
    v = d.get(key)
    if not isinstance(v, int) or isinstance(v, bool):
        raise InputError(f"{where}: field {key!r} must be an integer")
    return v


def load_quant(path: Path, st: SafetensorsFile, name: str, entry: dict) -> QuantTensor:
    """Read and validate quantized tensor ``name`` from ``st`` using its index ``entry``."""
    where = f"{path}: tensor {name!r}"
    fmt_d = entry.get("format")
    shape = entry.get("shape")
    if not isinstance(fmt_d, dict) or not (
        isinstance(shape, list) and len(shape) == 2 and all(isinstance(s, int) for s in shape)
    ):
        raise InputError(f"{where}: index entry needs 'format' and a 2-d 'shape'")
    fmt = format_from_json(fmt_d, where)
    arrays = {}
    for f in FIELDS:
        key = f"{name}/{f}"
        if key not in st.tensors:
            arrays[f] = None
            continue
        info = st.tensors[key]
        if info.dtype != _DTYPES[f]:
            raise InputError(f"{where}: {f} must be {_DTYPES[f]}, found {info.dtype}")
        arrays[f] = st.read_raw(key)
    q = QuantTensor(name=name, shape=(shape[0], shape[1]), fmt=fmt,
                    method=str(entry.get("method", "")), **arrays)  # fmt: skip
    q.validate()
    return q
