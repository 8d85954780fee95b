"""Validated, lazy reading and deterministic writing of safetensors files.

Why not just ``safetensors.safe_open``? Model files are untrusted input. This reader checks the
whole header before any tensor is touched and turns every defect into a one-line
:class:`~maskc.errors.InputError` that names the file and tensor: header length absurd or past
the end of the file, header not UTF-8 JSON, unknown or unsupported dtype, shape not a list of
non-negative integers, byte size inconsistent with the shape, offsets out of range, overlapping,
or leaving holes (the format forbids holes). Tensors are then read one at a time with a single
``readinto`` of exactly their bytes, so memory is bounded by the largest tensor, never the file.

Format (https://github.com/huggingface/safetensors): ``u64 little-endian N``, ``N`` bytes of JSON
``{"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets": [begin, end]}}``, then
the data buffer; offsets are relative to the start of the buffer; all values little-endian.
"""

from __future__ import annotations

import functools
import json
import math
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskc.errors import InputError, UnsupportedError
from maskc.fsutil import open_regular
from maskc.textparse import ParseError, json_loads

#: Largest header accepted (the reference implementation's limit is 100 MB).
MAX_HEADER_BYTES = 100_000_000
#: Largest single tensor accepted, in elements (2^36 = 64 G elements).
MAX_TENSOR_ELEMENTS = 1 << 36


@functools.cache
def _bf16() -> np.dtype:
    import ml_dtypes  # ~0.5 s to import: only when a BF16 tensor is read or written

    return np.dtype(ml_dtypes.bfloat16)


class _DtypeTable(Mapping):
    """safetensors dtype name -> numpy dtype, with BF16's made on first use: reading an
    integer netlist (the emulator's start-up) never imports ml_dtypes."""

    def __init__(self, fixed: dict[str, np.dtype], lazy: tuple[str, ...] = ("BF16",)):
        self._fixed = fixed
        self._lazy = lazy

    def __getitem__(self, key: str) -> np.dtype:
        if key in self._lazy:
            return _bf16()
        return self._fixed[key]

    def __contains__(self, key: object) -> bool:
        return key in self._fixed or key in self._lazy

    def __iter__(self):
        yield from self._fixed
        yield from self._lazy

    def __len__(self) -> int:
        return len(self._fixed) + len(self._lazy)


#: dtypes maskc reads as weights -> little-endian numpy dtype.
SUPPORTED_DTYPES: Mapping[str, np.dtype] = _DtypeTable(
    {"F32": np.dtype("<f4"), "F16": np.dtype("<f2")}
)
#: dtypes valid in the format but not accepted as weights -> bytes per element.
OTHER_DTYPES: dict[str, float] = {
    "F64": 8,
    "I64": 8,
    "U64": 8,
    "I32": 4,
    "U32": 4,
    "I16": 2,
    "U16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "F6_E2M3": 0.75,
    "F6_E3M2": 0.75,
    "F4": 0.5,
}
#: dtypes the writer accepts (weights plus the integer types netlists use).
WRITABLE: Mapping[str, np.dtype] = _DtypeTable(
    {
        "F32": np.dtype("<f4"),
        "F16": np.dtype("<f2"),
        "F64": np.dtype("<f8"),
        "I64": np.dtype("<i8"),
        "I32": np.dtype("<i4"),
        "I16": np.dtype("<i2"),
        "I8": np.dtype("i1"),
        "U8": np.dtype("u1"),
        "U16": np.dtype("<u2"),
        "U32": np.dtype("<u4"),
        "U64": np.dtype("<u8"),
        "BOOL": np.dtype("?"),
    }
)


@dataclass(frozen=True)
class TensorInfo:
    """Header entry of one tensor: where its bytes are and what they mean."""

    name: str
    dtype: str  #: safetensors dtype string, e.g. "BF16"
    shape: tuple[int, ...]
    begin: int  #: absolute file offset of the first byte
    end: int  #: absolute file offset one past the last byte

    @property
    def parameters(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


class SafetensorsFile:
    """A validated safetensors file; tensors are read lazily, one at a time.

    ``SafetensorsFile(path)`` reads and validates only the header. ``read(name)`` returns the
    tensor in its stored dtype (numpy, ``ml_dtypes.bfloat16`` for BF16) as a fresh array.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.metadata: dict[str, str] = {}
        self.tensors: dict[str, TensorInfo] = {}
        self._parse_header()

    def _err(self, msg: str) -> InputError:
        return InputError(f"{self.path}: {msg}")

    def _parse_header(self) -> None:
        try:
            with open_regular(self.path, "safetensors file") as f:
                size = os.fstat(f.fileno()).st_size
                head = f.read(8)
                if len(head) < 8:
                    raise self._err(
                        f"not a safetensors file: {size} bytes, shorter than the 8-byte header "
                        "length (truncated?)"
                    )
                (n,) = struct.unpack("<Q", head)
                if n > MAX_HEADER_BYTES:
                    raise self._err(
                        f"header length {n} is absurd (limit {MAX_HEADER_BYTES} bytes); "
                        "the file is corrupt or not safetensors"
                    )
                if 8 + n > size:
                    raise self._err(
                        f"header length {n} runs past the end of the {size}-byte file (truncated?)"
                    )
                raw = f.read(n)
        except OSError as e:
            raise self._err(f"cannot read: {e.strerror or e}") from None
        try:
            header = json_loads(raw)
        except ParseError as e:
            if e.key is not None:
                raise self._err(f"header names tensor {e.key!r} twice") from None
            raise self._err(f"header is not valid UTF-8 JSON ({e.detail})") from None
        if not isinstance(header, dict):
            raise self._err("header must be a JSON object")
        base = 8 + n
        buffer_len = size - base
        meta = header.pop("__metadata__", {})
        if meta is None:
            meta = {}
        if not isinstance(meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
        ):
            raise self._err("__metadata__ must map strings to strings")
        self.metadata = dict(meta)
        spans = []
        for name, entry in header.items():
            info = self._check_entry(name, entry, base, buffer_len)
            self.tensors[name] = info
            spans.append((info.begin, info.end, name))
        spans.sort()
        pos = base
        for begin, end, name in spans:
            if begin < pos:
                raise self._err(f"tensor {name!r} overlaps the previous tensor's bytes")
            if begin > pos:
                raise self._err(
                    f"{begin - pos} unindexed bytes before tensor {name!r} (holes are not allowed)"
                )
            pos = end
        if pos != size:
            raise self._err(
                f"{size - pos} bytes after the last tensor are not indexed by the header"
            )

    def _check_entry(self, name: str, entry: object, base: int, buffer_len: int) -> TensorInfo:
        if not name:
            raise self._err("empty tensor name in header")
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise self._err(
                f"tensor {name!r}: header entry must have exactly dtype, shape, data_offsets"
            )
        dtype, shape, offs = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or (
            dtype not in SUPPORTED_DTYPES and dtype not in OTHER_DTYPES
        ):
            raise self._err(f"tensor {name!r}: unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise self._err(f"tensor {name!r}: shape must be a list of non-negative integers")
        if len(shape) > 8:
            raise self._err(f"tensor {name!r}: {len(shape)} dimensions (at most 8 supported)")
        count = math.prod(shape)
        if count > MAX_TENSOR_ELEMENTS:
            raise self._err(f"tensor {name!r}: declared shape {shape} is implausibly large")
        if not (
            isinstance(offs, list)
            and len(offs) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offs)
        ):
            raise self._err(f"tensor {name!r}: data_offsets must be two non-negative integers")
        begin, end = offs
        if begin > end or end > buffer_len:
            raise self._err(
                f"tensor {name!r}: data_offsets [{begin}, {end}] out of range of the "
                f"{buffer_len}-byte data buffer (truncated file?)"
            )
        itemsize = (
            SUPPORTED_DTYPES[dtype].itemsize if dtype in SUPPORTED_DTYPES else OTHER_DTYPES[dtype]
        )
        if end - begin != math.ceil(count * itemsize):
            raise self._err(
                f"tensor {name!r}: {end - begin} bytes stored but shape {shape} of {dtype} "
                f"needs {math.ceil(count * itemsize)}"
            )
        return TensorInfo(name, dtype, tuple(shape), base + begin, base + end)

    def read(self, name: str) -> np.ndarray:
        """Weight tensor ``name`` in its stored dtype (F32/F16/BF16 only), shape as declared.

        Memory: this tensor only. Other dtypes raise :class:`UnsupportedError`.
        """
        info = self.tensors[name]
        if info.dtype not in SUPPORTED_DTYPES:
            raise UnsupportedError(
                f"{self.path}: tensor {name!r} has dtype {info.dtype}; maskc reads F32, F16 and "
                "BF16 weights (convert the checkpoint to one of these)"
            )
        return self.read_raw(name)

    def read_raw(self, name: str, index: int | None = None) -> np.ndarray:
        """Tensor ``name`` in any dtype maskc writes (weights and netlist integer arrays);
        with ``index``, only ``tensor[index]`` (one slice along the first axis: e.g. one
        expert of a fused ``[E, ...]`` tensor)."""
        info = self.tensors[name]
        if info.dtype not in WRITABLE:
            raise UnsupportedError(
                f"{self.path}: tensor {name!r} has unreadable dtype {info.dtype}"
            )
        shape, begin, nbytes = info.shape, info.begin, info.nbytes
        if index is not None:
            if not info.shape or not 0 <= index < info.shape[0]:
                raise ValueError(f"{name}: index {index} outside the first axis")
            shape = info.shape[1:]
            nbytes = info.nbytes // info.shape[0]
            begin += index * nbytes
        out = np.empty(shape, dtype=WRITABLE[info.dtype])
        try:
            with open_regular(self.path, "safetensors file") as f:
                f.seek(begin)
                got = f.readinto(memoryview(out.reshape(-1).view(np.uint8)))
        except OSError as e:
            raise self._err(f"cannot read tensor {name!r}: {e.strerror or e}") from None
        if got != nbytes:
            raise self._err(f"tensor {name!r}: file ended early (truncated while reading?)")
        return out


def _header_bytes(
    entries: list[tuple[str, str, tuple[int, ...]]],
    metadata: dict[str, str] | None,
    align: int = 1,
) -> tuple[bytes, list[int]]:
    """The 8-byte length + JSON header of ``entries`` ``(name, dtype, shape)``, sorted by name
    (the deterministic format both writers share: compact JSON, ASCII, padded with spaces to a
    multiple of 8 bytes), and each sorted entry's byte size plus the zero bytes before it
    (``align > 1``: a tensor whose data would not start at a multiple of ``align`` is preceded
    by a U8 tensor ``<name>:pad`` of those zero bytes)."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in sorted(metadata.items())}
    offset = 0
    sizes = []
    for name, dtype, shape in sorted(entries):
        if name == "__metadata__" or not name:
            raise ValueError(f"write_safetensors: invalid tensor name {name!r}")
        if name in header:
            raise ValueError(f"write_safetensors: tensor {name!r} given twice")
        if dtype not in WRITABLE:
            raise TypeError(f"write_safetensors: tensor {name!r} has unsupported dtype {dtype}")
        nbytes = math.prod(shape) * WRITABLE[dtype].itemsize
        pad = -offset % align
        if pad:
            header[f"{name}:pad"] = {
                "dtype": "U8",
                "shape": [pad],
                "data_offsets": [offset, offset + pad],
            }
            offset += pad
        header[name] = {
            "dtype": dtype,
            "shape": [int(d) for d in shape],
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
        sizes.append(pad + nbytes)
    blob = json.dumps(header, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()
    blob += b" " * (-len(blob) % 8)
    return struct.pack("<Q", len(blob)) + blob, sizes


def _dtype_name(arr: np.ndarray, name: str) -> str:
    """The safetensors dtype string of ``arr`` (TypeError when it has none)."""
    by_np = {v: k for k, v in WRITABLE.items()}
    dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    if dt not in by_np:
        raise TypeError(f"write_safetensors: tensor {name!r} has unsupported dtype {dt}")
    return by_np[dt]


def write_safetensors(
    path: str | os.PathLike,
    tensors: dict[str, np.ndarray],
    metadata: dict[str, str] | None = None,
    align: int = 1,
) -> None:
    """Write ``tensors`` to ``path`` deterministically (sorted names, 8-byte aligned header).

    ``align > 1`` starts every tensor's bytes at a file offset that is a multiple of ``align``
    (so it can be memory-mapped as its dtype): a tensor that would not is preceded by a U8
    padding tensor named ``<name>:pad`` (the format allows no unindexed bytes).

    Accepts numpy float32/float16/float64, ``ml_dtypes.bfloat16`` and integer/bool arrays.
    The output is readable by the ``safetensors`` library and by :class:`SafetensorsFile`.
    """
    arrays = {}
    for name in sorted(tensors):
        if name == "__metadata__" or not name:
            raise ValueError(f"write_safetensors: invalid tensor name {name!r}")
        arr = np.asarray(tensors[name])
        arrays[name] = np.ascontiguousarray(arr, dtype=WRITABLE[_dtype_name(arr, name)])
    entries = [(n, _dtype_name(a, n), a.shape) for n, a in arrays.items()]
    head, sizes = _header_bytes(entries, metadata, align)
    with open(path, "wb") as f:
        f.write(head)
        for arr, size in zip(arrays.values(), sizes, strict=True):
            f.write(bytes(size - arr.nbytes))
            f.write(arr.reshape(-1).view(np.uint8).data)


class SafetensorsWriter:
    """A safetensors file written as a stream: the header first (every name, dtype and shape
    known up front), then each tensor's bytes appended in sorted-name order, in as many pieces
    as the caller likes. Memory: one piece. The file is byte-identical to
    :func:`write_safetensors` of the same tensors and metadata.

    ``entries``: ``(name, dtype, shape)`` with ``dtype`` a safetensors string (``"BF16"``...).
    :meth:`write` takes rows (or any leading slice) of the current tensor, C-ordered;
    :meth:`close` checks that every tensor got exactly its bytes. Use as a context manager::

        with SafetensorsWriter(path, [("a", "F32", (4, 8))], {"format": "pt"}) as w:
            for block in blocks:
                w.write("a", block)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        entries: list[tuple[str, str, tuple[int, ...]]],
        metadata: dict[str, str] | None = None,
    ) -> None:
        head, sizes = _header_bytes(entries, metadata)
        self.path = Path(path)
        self._order = [
            (n, d, nbytes) for (n, d, _), nbytes in zip(sorted(entries), sizes, strict=True)
        ]
        self._index = 0
        self._written = 0
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        self._file.write(head)
        self._advance()

    def write(self, name: str, piece: np.ndarray) -> None:
        """Append ``piece`` (the next elements of tensor ``name``, in its dtype) to the file.

        Raises ValueError when ``name`` is not the tensor due next (sorted order), the piece
        has another dtype, or it runs past the tensor's declared size."""
        if self._index >= len(self._order):
            raise ValueError(f"SafetensorsWriter {self.path}: every tensor is complete")
        want, dtype, nbytes = self._order[self._index]
        if name != want:
            raise ValueError(
                f"SafetensorsWriter {self.path}: got {name!r}, expected {want!r} (sorted order)"
            )
        arr = np.asarray(piece)
        if _dtype_name(arr, name) != dtype:
            raise ValueError(f"SafetensorsWriter {self.path}: {name!r} is {dtype}, got {arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=WRITABLE[dtype])
        if self._written + arr.nbytes > nbytes:
            raise ValueError(f"SafetensorsWriter {self.path}: {name!r} gets more than its bytes")
        self._file.write(arr.reshape(-1).view(np.uint8).data)
        self._written += arr.nbytes
        self._advance()

    def _advance(self) -> None:
        """Move past every complete tensor (zero-size tensors complete at once)."""
        while self._index < len(self._order) and self._written == self._order[self._index][2]:
            self._index += 1
            self._written = 0

    def close(self) -> None:
        """Close the file; ValueError if a tensor is incomplete (the file is then invalid)."""
        if self._file.closed:
            return
        self._file.close()
        self._advance()
        if self._index < len(self._order):
            name, _, nbytes = self._order[self._index]
            raise ValueError(
                f"SafetensorsWriter {self.path}: tensor {name!r} got {self._written} of "
                f"{nbytes} bytes"
            )

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._file.close()
