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

import math
from pathlib import Path

import numpy as np

from maskc.errors import InputError
from maskc.romformat import QuantFormat, QuantTensor, fields_of, from_arrays, read_tensor
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
        """Any tensor as float32: a quantized matrix's exact stored values, or the float.

        A large matrix is read, validated and dequantized in blocks of rows, so that only the
        float32 result is whole in memory (not its codes too)."""
        if self.kind(name) == "float":
            return self.float(name).astype(np.float32)
        e = self.index[name]
        r = e["shape"][0] if isinstance(e.get("shape"), list) and e["shape"] else 0
        if not isinstance(r, int) or r <= DEQUANT_ROWS:
            return self.matrix(name).dequantize()
        try:
            fmt = QuantFormat.from_json(e["format"], name)
            st = self.file(e["file"])
            c = e["shape"][1]
            fds = list(fields_of(fmt))
            infos = {fd.name: st.tensors[f"{name}/{fd.name}"] for fd in fds}
            if any(
                infos[fd.name].dtype != fd.st_dtype
                or tuple(infos[fd.name].shape) != fd.shape(fmt, r, c)
                for fd in fds
            ):
                raise KeyError(name)
        except (KeyError, TypeError, InputError):
            return self.matrix(name).dequantize()  # raises the error naming what is wrong
        levels = st.read_raw(f"{name}/levels")
        out = np.empty((r, c), dtype=np.float32)
        with open(st.path, "rb") as f:
            for a in range(0, r, DEQUANT_ROWS):
                b = min(a + DEQUANT_ROWS, r)
                arrays = {"levels": levels}
                for fd in fds:
                    if fd.axis != "level":
                        arrays[fd.name] = _read_rows(f, infos[fd.name], fd.dtype, a, b)
                q = from_arrays(name, (b - a, c), fmt, arrays, str(e.get("method", "")))
                out[a:b] = q.dequantize()
        return out


#: Rows of a matrix dequantized at once by QuantStore.dequantized.
DEQUANT_ROWS = 4096


def _read_rows(f, info, dtype: np.dtype, a: int, b: int) -> np.ndarray:
    """Rows ``a:b`` of the 2-d (or 1-d) tensor ``info`` of the open file ``f``."""
    shape = tuple(info.shape)
    if info.end - info.begin != math.prod(shape) * dtype.itemsize or not shape:
        raise InputError(f"{f.name}: tensor {info.name!r} has the wrong size")
    row = math.prod(shape[1:]) * dtype.itemsize
    out = np.empty((b - a, *shape[1:]), dtype=dtype)
    f.seek(info.begin + a * row)
    if f.readinto(memoryview(out.reshape(-1).view(np.uint8))) != out.nbytes:
        raise InputError(f"{f.name}: tensor {info.name!r}: file ended early")
    return out
