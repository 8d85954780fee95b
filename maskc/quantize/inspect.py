"""Read-only views of a build's quantized tensors, for ``maskc inspect BUILD [--tensor NAME]``."""

from __future__ import annotations

import numpy as np

from maskc.build import Build
from maskc.errors import InputError
from maskc.quantize.store import QuantStore
from maskc.romformat import group_values
from maskc.safetensors_io import SafetensorsFile


def quant_index(build: Build) -> dict:
    idx = build.json("quant/index.json")
    if not isinstance(idx, dict) or not isinstance(idx.get("tensors"), dict):
        raise InputError(f"{build.path}: quant/index.json must have a 'tensors' object")
    return idx["tensors"]


def tensor_detail(build: Build, name: str, sample: int = 8) -> dict:
    """Code histogram, step/offset statistics and a dequantized sample of tensor ``name``."""
    index = quant_index(build)
    if name not in index:
        close = [n for n in index if name in n][:3]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InputError(f"{build.path}: the build has no tensor {name!r}{hint}")
    e = index[name]
    if not isinstance(e, dict) or not (
        isinstance(e.get("file"), str) or (e.get("kind") == "quantized" and e.get("stored"))
    ):
        raise InputError(f"{build.path}: quant/index.json entry of {name!r} is malformed")
    if e.get("kind") == "float":
        w = SafetensorsFile(build.file(e["file"])).read(name).astype(np.float32)
        return {
            "name": name,
            "kind": "float",
            "shape": list(w.shape),
            "sample": [float(v) for v in w.reshape(-1)[:sample]],
        }
    if isinstance(e.get("file"), str):
        build.file(e["file"])  # a file the manifest lists
    q = QuantStore(build.path, index).matrix(name)  # from quant/ or the netlist's tiles
    c = q.shape[1]
    hist = np.bincount(q.codes[:, :c].reshape(-1), minlength=1 << q.fmt.bits)
    step = group_values(q.scale_m, q.scale_s, q.scale_e)
    deq = q.dequantize()
    out = {
        "name": name,
        "kind": "quantized",
        "shape": list(q.shape),
        "method": q.method,
        "format": e["format"],
        "bits_per_weight": q.fmt.bits_per_weight(*q.shape),
        "levels": [int(v) for v in q.levels],
        "code_histogram": [int(v) for v in hist],
        "step": _stats(step),
        "sample_row0": {
            "codes": [int(v) for v in q.codes[0, :sample]],
            "dequantized": [float(v) for v in deq[0, :sample]],
        },
    }
    if q.zero_m is not None:
        out["offset"] = _stats(group_values(q.zero_m, q.zero_s, q.zero_e))
    return out


def _stats(v: np.ndarray) -> dict:
    return {
        "min": float(v.min()),
        "median": float(np.median(v)),
        "max": float(v.max()),
        "groups": int(v.size),
    }
