"""A build's ``quant/`` folder: the quantized model on disk (safetensors for the arrays, JSON for
the formats).

It holds one safetensors file per decoder layer (``layer-000.safetensors`` ...) plus
``global.safetensors`` (embedding, final norm, lm_head), so that writing and reading stream one
layer at a time. Each quantized matrix ``NAME`` is stored as its fields ``NAME/codes``,
``NAME/levels``, ``NAME/scale_m`` ... (:data:`maskc.romformat.FIELDS`); tensors kept in float
(norms, biases, skipped matrices) are stored under their own name as float32.
``quant/index.json`` lists every tensor with its file, shape, kind (``quantized`` or ``float``)
and format. :class:`QuantStore` is that folder opened, the object the later stages read.

Once the netlist is written, its tiles are the quantized matrices (the same fields, cut into
tiles): :meth:`QuantStore.move_to_netlist` drops the quantized arrays from ``quant/`` (its
files keep the float tensors), and quant/index.json (version 2) marks each quantized matrix
``"stored": "netlist"`` instead of naming a file. The store then reads such a matrix back from
the netlist (:meth:`maskc.netlist.Netlist.matrix`, validated), so every reader works on both
kinds of build: a complete build holds the codes once in netlist/ (and once as geometry in
layers/), and a build written before this (quant/index.json version 1) still reads.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from maskc.errors import InputError
from maskc.romformat import (
    FORMAT_KINDS,
    PERM,
    QuantFormat,
    QuantTensor,
    fields_of,
    from_arrays,
    is_permutation,
    read_tensor,
    unpermute_cols,
)
from maskc.safetensors_io import SafetensorsFile

INDEX = "quant/index.json"
#: quant/index.json's version: 1 every matrix's arrays in quant/, 2 quantized ones in the netlist
INDEX_VERSION = 2
#: An index entry's ``stored`` value for a matrix whose arrays are the netlist's tiles
IN_NETLIST = "netlist"


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
    fmt = QuantFormat.from_json(fmt_d, where, FORMAT_KINDS)
    return read_tensor(st, name, (shape[0], shape[1]), fmt, where, str(entry.get("method", "")))


class QuantStore:
    """A build's quantized model: ``index`` (quant/index.json's ``tensors``, in canonical order)
    and its tensors, read one at a time from files opened once; a matrix the index marks
    ``"stored": "netlist"`` is read from the build's netlist (``netlist``: the loaded one, or
    None to load it on first use)."""

    def __init__(self, build: Path, index: dict, netlist=None) -> None:
        self.build = Path(build)
        self.index = index
        self._files: dict[str, SafetensorsFile] = {}
        self._netlist = netlist

    def file(self, rel: str) -> SafetensorsFile:
        if rel not in self._files:
            self._files[rel] = SafetensorsFile(self.build / rel)
        return self._files[rel]

    def kind(self, name: str) -> str:
        return self.index[name]["kind"]

    def in_netlist(self, name: str) -> bool:
        """Whether quantized matrix ``name``'s arrays are the netlist's tiles (not in quant/)."""
        return self.index[name].get("stored") == IN_NETLIST

    def netlist(self):
        if self._netlist is None:
            from maskc.netlist import load_netlist

            self._netlist = load_netlist(self.build)
        return self._netlist

    def matrix(self, name: str) -> QuantTensor:
        """Quantized matrix ``name``, validated."""
        e = self.index[name]
        if self.in_netlist(name):
            return self._from_netlist(name, None)
        return load_quant(self.build / e["file"], self.file(e["file"]), name, e)

    def _from_netlist(self, name: str, rows: tuple[int, int] | None) -> QuantTensor:
        """Matrix ``name`` (or its rows ``a:b``) reassembled from the netlist's tiles, checked
        against its index entry."""
        e = self.index[name]
        nl = self.netlist()
        where = f"{self.build / INDEX}: tensor {name!r}"
        m = nl.matrices.get(name)
        if m is None:
            raise InputError(f"{where}: stored in the netlist, which has no such matrix")
        if m.get("shape") != e.get("shape") or m.get("format") != e.get("format"):
            raise InputError(f"{where}: shape or format differs from the netlist's matrix")
        q = nl.matrix(name, rows)
        q.method = str(e.get("method", ""))
        return q

    def input_perm(self, name: str) -> np.ndarray | None:
        """Matrix ``name``'s input permutation (int32 ``[C]``: its column ``j`` reads input
        ``perm[j]``), or None; read from quant/ or, once dropped, the netlist."""
        e = self.index[name]
        if not e.get(PERM):
            return None
        if self.in_netlist(name):
            return self.netlist().input_perm(name)
        st = self.file(e["file"])
        key = f"{name}/{PERM}"
        c = e["shape"][1]
        info = st.tensors.get(key)
        if info is None or info.dtype != "I32" or tuple(info.shape) != (c,):
            raise InputError(f"{self.build / e['file']}: {key} must be I32 [{c}]")
        p = st.read_raw(key).astype(np.int64)
        if not is_permutation(p, c):
            raise InputError(f"{self.build / e['file']}: {key} is not a permutation of {c}")
        return p

    def float(self, name: str) -> np.ndarray:
        """A tensor kept in float (a norm, a bias), as stored."""
        return self.file(self.index[name]["file"]).read(name)

    def move_to_netlist(self, netlist) -> None:
        """Drop the quantized arrays from quant/ now that ``netlist`` (the loaded netlist of
        this build, its matrices the same fields cut into tiles) holds them: each quant/ file
        is rewritten with its float tensors only (removed if it has none) and quant/index.json
        marks the quantized matrices ``"stored": "netlist"``. Works on one file at a time; the
        store reads those matrices from ``netlist`` afterwards."""
        from maskc.build import write_json
        from maskc.safetensors_io import write_safetensors

        for name, e in self.index.items():
            m = netlist.matrices.get(name) if e["kind"] == "quantized" else None
            if e["kind"] == "quantized" and (
                m is None or m["shape"] != e["shape"] or m["format"] != e["format"]
            ):
                raise ValueError(f"{name}: the netlist does not hold this quantized matrix")
        files = sorted({e["file"] for e in self.index.values() if "file" in e})
        for rel in files:
            floats = [
                n
                for n, e in self.index.items()
                if e.get("file") == rel and e["kind"] != "quantized"
            ]
            st = SafetensorsFile(self.build / rel)
            meta = dict(st.metadata or {})
            arrays = {n: st.read(n) for n in floats}
            self._files.pop(rel, None)
            tmp = self.build / (rel + ".tmp")
            if arrays:
                write_safetensors(tmp, arrays, meta)
                tmp.replace(self.build / rel)
            else:
                (self.build / rel).unlink()
        index = {}
        for name, e in self.index.items():
            if e["kind"] == "quantized":
                e = {k: v for k, v in e.items() if k != "file"} | {"stored": IN_NETLIST}
            index[name] = e
        write_json(self.build / INDEX, {"version": INDEX_VERSION, "tensors": index})
        self.index = index
        self._netlist = netlist

    def dequantized(self, name: str) -> np.ndarray:
        """Any tensor as float32: a quantized matrix's exact stored values, or the float.

        A large matrix is read, validated and dequantized in blocks of rows, so that only the
        float32 result is whole in memory (not its codes too)."""
        if self.kind(name) == "float":
            return self.float(name).astype(np.float32)
        r = self._rows(name)
        if r is None:
            return self._in_order(name, self.matrix(name).dequantize())
        out = None
        for a in range(0, r, DEQUANT_ROWS):
            part = self.dequantized_rows(name, a, min(a + DEQUANT_ROWS, r))
            if out is None:
                out = np.empty((r, part.shape[1]), dtype=np.float32)
            out[a : a + len(part)] = part
        return out

    def _rows(self, name: str) -> int | None:
        """The row count of a 2-d tensor's index entry (None if it has none)."""
        shape = self.index[name].get("shape")
        ok = isinstance(shape, list) and len(shape) == 2 and isinstance(shape[0], int)
        return shape[0] if ok and shape[0] > 0 else None

    def _in_order(self, name: str, w: np.ndarray) -> np.ndarray:
        """Dequantized ``w`` of matrix ``name`` in its inputs' order (the ROM holds the columns
        of a matrix with an input permutation permuted)."""
        p = self.input_perm(name)
        return w if p is None else unpermute_cols(w, p)

    def dequantized_rows(self, name: str, a: int, b: int) -> np.ndarray:
        """Rows ``a:b`` of :meth:`dequantized` ``(name)``, reading only those rows' fields
        (memory: the rows, not the matrix); in the inputs' order."""
        r = self._rows(name)
        if r is None or not 0 <= a <= b <= r:
            return self.dequantized(name)[a:b]
        if self.kind(name) == "float":
            return self._rom_rows(name, a, b, r)
        return self._in_order(name, self._rom_rows(name, a, b, r))

    def _rom_rows(self, name: str, a: int, b: int, r: int) -> np.ndarray:
        e = self.index[name]
        if self.kind(name) == "float":
            st = self.file(e["file"])
            info = st.tensors.get(name)
            if info is None or info.dtype != "F32" or list(info.shape) != e["shape"]:
                return self.float(name)[a:b].astype(np.float32)  # raises what is wrong
            with open(st.path, "rb") as f:
                return _read_rows(f, info, np.dtype(np.float32), a, b)
        if self.in_netlist(name):
            return self._from_netlist(name, (a, b)).dequantize()
        try:
            fmt = QuantFormat.from_json(e["format"], name, FORMAT_KINDS)
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
            return self.matrix(name).dequantize()[a:b]  # raises the error naming what is wrong
        arrays = {"levels": st.read_raw(f"{name}/levels")}
        if fmt.kind == "nvfp4":
            arrays["tensor_m"] = st.read_raw(f"{name}/tensor_m")
        with open(st.path, "rb") as f:
            for fd in fds:
                if fd.axis not in ("level", "tensor"):
                    arrays[fd.name] = _read_rows(f, infos[fd.name], fd.dtype, a, b)
        return from_arrays(name, (b - a, c), fmt, arrays, str(e.get("method", ""))).dequantize()


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
