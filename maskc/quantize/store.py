"""A build's ``quant/`` folder: the quantized model on disk (safetensors for the arrays, JSON for
the formats).

It holds one safetensors file per decoder layer (``layer-000.safetensors`` ...) plus
``global.safetensors`` (embedding, final norm, lm_head), so that writing and reading stream one
layer at a time. Each quantized matrix ``NAME`` is stored as its fields ``NAME/codes``,
``NAME/levels``, ``NAME/scale_m`` ... (:data:`maskc.romformat.FIELDS`); tensors kept in float
(norms, biases, skipped matrices) are stored under their own name as float32.
``quant/index.json`` lists every tensor with its file, shape, kind (``quantized`` or ``float``)
and format. :class:`QuantStore` is that folder opened, the object the later stages read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maskc.errors import InputError
from maskc.romformat import QuantFormat, QuantTensor, read_tensor
from maskc.safetensors_io import SafetensorsFile

INDEX = "quant/index.json"


def file_for(layer: int | None) -> str:
    """Relative path of the safetensors file holding a layer's tensors (None: global)."""
    return "quant/global.safetensors" if layer is None else f"quant/layer-{layer:03d}.safetensors"


def arrays_of(q: QuantTensor) -> dict[str, np.ndarray]:
    """The arrays to store for ``q``, keyed ``NAME/field``."""
    return {f"{q.name}/{k}": v for k, v in q.arrays().items()}


def index_entry(q: QuantTensor, file: str) -> dict:
    return index_entry_of(q.fmt, q.method, q.shape, file)


def index_entry_of(fmt: QuantFormat, method: str, shape, file: str) -> dict:
    """quant/index.json's entry of a quantized matrix."""
    return {
        "file": file,
        "kind": "quantized",
        "shape": list(shape),
        "method": method,
        "format": fmt.to_json(),
    }


def load_quant(path: Path, st: SafetensorsFile, name: str, entry: dict) -> QuantTensor:
    """Read and validate quantized tensor ``name`` from ``st`` using its index ``entry``."""
    where = f"{path}: tensor {name!r}"
    fmt_d = entry.get("format")
    shape = entry.get("shape")
    if not isinstance(fmt_d, dict) or not (
        isinstance(shape, list) and len(shape) == 2 and all(isinstance(s, int) for s in shape)
    ):
        raise InputError(f"{where}: index entry needs 'format' and a 2-d 'shape'")
    fmt = QuantFormat.from_json(fmt_d, where)
    return read_tensor(st, name, (shape[0], shape[1]), fmt, where, str(entry.get("method", "")))


class QuantStore:
    """A build's quantized model: ``index`` (quant/index.json's ``tensors``, in canonical order)
    and its tensors, read one at a time from files opened once."""

    def __init__(self, build: Path, index: dict) -> None:
        self.build = Path(build)
        self.index = index
        self._files: dict[str, SafetensorsFile] = {}

    def file(self, rel: str) -> SafetensorsFile:
        if rel not in self._files:
            self._files[rel] = SafetensorsFile(self.build / rel)
        return self._files[rel]

    def kind(self, name: str) -> str:
        return self.index[name]["kind"]

    def matrix(self, name: str) -> QuantTensor:
        """Quantized matrix ``name``, validated."""
        e = self.index[name]
        return load_quant(self.build / e["file"], self.file(e["file"]), name, e)

    def float(self, name: str) -> np.ndarray:
        """A tensor kept in float (a norm, a bias), as stored."""
        return self.file(self.index[name]["file"]).read(name)

    def dequantized(self, name: str) -> np.ndarray:
        """Any tensor as float32: a quantized matrix's exact stored values, or the float."""
        if self.kind(name) == "float":
            return self.float(name).astype(np.float32)
        return self.matrix(name).dequantize()
