"""The chip's ROM weight format: what one quantized matrix is, field by field.

This module is the one place that defines the format; the quantizers (``maskc.quantize``)
produce it, the quant store, the netlist and the layout store it, and the emulator reads it. It
depends on nothing but numpy (the chip shares no code with the compiler's quantizers).

A matrix ``W`` of shape ``[R, C]`` (Hugging Face ``[out_features, in_features]``) quantized with
``b`` bits and group size ``G`` along the input dimension is stored as the fields of
:data:`FIELDS`, each with its dtype, its axis and its range:

==========  =======  ================  ===========================================================
field       dtype    shape             meaning
==========  =======  ================  ===========================================================
``codes``   uint8    ``[R, Cp]``       the mask-ROM cells: values in ``[0, 2**b)``
``levels``  int16    ``[2**b]``        strictly increasing integers the codes select,
                                       ``|level| < 2**(level_bits-1)``
``scale_m`` uint16   ``[R, NG]``       unsigned ``scale_bits``-bit mantissa of each group's step
``scale_s`` uint8    ``[R, NG]``       the step's right shift, ``scale_shift_bits`` bits
``scale_e`` int8     ``[R]``           the row's step exponent
``zero_m``  int16    ``[R, NG]``       signed ``zero_bits``-bit mantissa of each group's offset
``zero_s``  uint8    ``[R, NG]``       the offset's shift, ``zero_shift_bits`` bits
``zero_e``  int8     ``[R]``           the row's offset exponent
``tensor_m`` uint32  ``[1]``           nvfp4 only: the tensor scale's 24-bit mantissa
==========  =======  ================  ===========================================================

``Cp = ceil(C / G) * G`` (padded columns hold code 0 and are ignored: the hardware feeds them
zero activations), ``NG = Cp / G``. The three ``zero_*`` fields exist only for asymmetric
formats (``zero_bits > 0``). The value of weight ``(r, j)`` in group ``g = j // G`` is, exactly::

    step[r, g]   = scale_m[r, g] * 2**(scale_e[r] - scale_s[r, g])
    offset[r, g] = zero_m[r, g]  * 2**(zero_e[r]  - zero_s[r, g])
    w[r, j]      = step[r, g] * levels[codes[r, j]] + offset[r, g]

Both products are integers times powers of two; :func:`dequantize` evaluates them in float64
(exact: ``|scale_m * level| < 2**31``) and rounds the sum once to float32.

Bits per weight counted against the ROM: ``b`` for the code,
``(scale_bits + scale_shift_bits + zero_bits + zero_shift_bits) / G`` for the group's fields,
``2 * 8 / C`` for the two row exponents, and ``2**b * level_bits / (R * C)`` for the level
table; padding codes are counted too (``b * Cp / C``) because they occupy cells.

FP4 (issue 21, docs/fp4-design.md): ``QuantFormat.kind`` ``"mxfp4"`` or ``"nvfp4"`` is one fixed
format each (:data:`FP4_FORMATS`): the cell holds the 4-bit E2M1 code, the level table is
:data:`E2M1_LEVELS` (twice the E2M1 values; not increasing), mxfp4's E8M0 block scale is
``2**(scale_e - scale_s)`` (``scale_m`` = 1, not stored), nvfp4's E4M3 block scale is the pair
``(scale_m, scale_s)`` and its float32 tensor scale ``tensor_m * 2**(scale_e - 4)`` enters as
one more factor of the step. So far only the library makes and reads them: netlist.json and
the quant store refuse an FP4 ``kind``.

A new field or a new ROM format changes this module (and docs/numerics.md) and nothing else
re-lists the fields: :data:`FIELDS` drives validation, the quant store, the netlist's tiles and
the layout's scale ROM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from maskc.errors import FitError, InputError

#: Exponent range of the per-row int8 exponents.
EXP_MIN, EXP_MAX = -128, 127
#: Bits of a row exponent in the scale ROM.
EXP_BITS = 8
#: Bits of nvfp4's per-tensor mantissa (a float32's 24-bit significand)
TENSOR_M_BITS = 24


@dataclass(frozen=True)
class QuantFormat:
    """How one matrix is stored. ``zero_bits == 0`` means symmetric (no offset)."""

    bits: int
    group_size: int
    scale_bits: int = 8
    zero_bits: int = 8
    level_bits: int = 8
    scale_shift_bits: int = 0
    zero_shift_bits: int = 0
    kind: str = "int"  #: ``"int"`` or an FP4 format of :data:`FP4_FORMATS`

    def validate(self, where: str = "format") -> None:
        if self.kind != "int":
            want = FP4_FORMATS.get(self.kind)
            if want is None:
                raise InputError(
                    f"{where}: format kind must be one of {', '.join(FORMAT_KINDS)}, "
                    f"got {self.kind!r}"
                )
            if self != want:
                raise InputError(
                    f"{where}: a {self.kind} format is exactly {want.describe()}, "
                    f"got {self.describe()}"
                )
            return
        if self.bits not in (2, 3, 4, 8):
            raise InputError(f"{where}: bits must be 2, 3, 4 or 8, got {self.bits}")
        if self.group_size < 1 or self.group_size > 4096:
            raise InputError(f"{where}: group_size must be in [1, 4096], got {self.group_size}")
        if not 2 <= self.scale_bits <= 16:
            raise InputError(f"{where}: scale_bits must be in [2, 16], got {self.scale_bits}")
        if self.zero_bits != 0 and not 2 <= self.zero_bits <= 16:
            raise InputError(f"{where}: zero_bits must be 0 or in [2, 16], got {self.zero_bits}")
        if not self.bits <= self.level_bits <= 16:
            raise InputError(f"{where}: level_bits must be in [bits, 16], got {self.level_bits}")
        for k in ("scale_shift_bits", "zero_shift_bits"):
            if not 0 <= getattr(self, k) <= 4:
                raise InputError(f"{where}: {k} must be in [0, 4], got {getattr(self, k)}")
        if self.zero_bits == 0 and self.zero_shift_bits:
            raise InputError(f"{where}: zero_shift_bits needs zero_bits > 0")

    def describe(self) -> str:
        """The format's numbers in one line (for messages)."""
        return ", ".join(f"{k} {getattr(self, k)}" for k in FORMAT_KEYS)

    @property
    def symmetric(self) -> bool:
        return self.zero_bits == 0

    @property
    def fp4(self) -> bool:
        return self.kind != "int"

    @property
    def shift_ref(self) -> int:
        """The datapath's shift reference: a group's factor is ``2**(shift_ref - scale_s)``
        (``SMAX = 2**scale_shift_bits - 1`` for integer formats and nvfp4, :data:`MX_SREF` for
        mxfp4, whose 8 shift bits would otherwise reach ``2**255``)."""
        return MX_SREF if self.kind == "mxfp4" else (1 << self.scale_shift_bits) - 1

    @property
    def group_field_bits(self) -> int:
        """Bits stored per group: step and offset mantissas and shifts."""
        return sum(f.rom_bits(self) for f in FIELDS if f.axis == "group")

    def padded_cols(self, cols: int) -> int:
        return -(-cols // self.group_size) * self.group_size

    def bits_per_weight(self, rows: int, cols: int) -> float:
        """ROM bits per real weight of an ``[rows, cols]`` matrix, everything included."""
        return self.rom_bits(rows, cols) / (rows * cols)

    def rom_bits(self, rows: int, cols: int) -> int:
        """Total ROM bits: codes (padding included), group fields, row exponents, levels."""
        cp = self.padded_cols(cols)
        count = {
            "weight": rows * cp,
            "group": rows * (cp // self.group_size),
            "row": rows,
            "level": 1 << self.bits,
            "tensor": 1,
        }
        return sum(count[f.axis] * f.rom_bits(self) for f in fields_of(self))

    def to_json(self) -> dict:
        """The format as quant/index.json and netlist.json hold it (``kind`` only when not
        ``"int"``, so integer formats read and hash as before)."""
        d = {k: getattr(self, k) for k in FORMAT_KEYS}
        if self.kind != "int":
            d["kind"] = self.kind
        return d

    @classmethod
    def from_json(cls, d: object, where: str, kinds: tuple[str, ...] = ("int",)) -> QuantFormat:
        """A ``format`` object read from an untrusted file: every key an integer (``kind`` a
        string, absent = ``"int"``), no unknown key, the format validated (InputError naming
        ``where`` and the key otherwise). ``kinds``: the kinds the caller can handle; another
        valid kind is refused as not supported there."""
        if not isinstance(d, dict):
            raise InputError(f"{where}: 'format' must be an object")
        unknown = sorted(set(d) - set(FORMAT_KEYS) - {"kind"})
        if unknown:
            raise InputError(f"{where}: unknown format field {unknown[0]!r}")
        kind = d.get("kind", "int")
        if kind not in FORMAT_KINDS:
            shown = repr(kind)[:40] if isinstance(kind, str) else type(kind).__name__
            raise InputError(
                f"{where}: format field 'kind' must be one of {', '.join(FORMAT_KINDS)}, "
                f"got {shown}"
            )
        if kind not in kinds:
            raise InputError(
                f"{where}: format kind {kind!r} is not supported here (this reader takes "
                f"{', '.join(kinds)}); rebuild with one of those"
            )
        values = {}
        for k in FORMAT_KEYS:
            v = d.get(k)
            if not isinstance(v, int) or isinstance(v, bool):
                raise InputError(f"{where}: field {k!r} must be an integer")
            values[k] = v
        fmt = cls(**values, kind=kind)
        fmt.validate(where)
        return fmt


#: the keys of a :class:`QuantFormat` in JSON, in the order they are written
FORMAT_KEYS = (
    "bits",
    "group_size",
    "scale_bits",
    "zero_bits",
    "level_bits",
    "scale_shift_bits",
    "zero_shift_bits",
)

#: the format kinds: integer levels, or FP4 (E2M1 codes with MX or NV block scales)
FORMAT_KINDS = ("int", "mxfp4", "nvfp4")
#: mxfp4's shift reference (docs/fp4-design.md, "The integer datapath"): the largest span of
#: block exponents in one row for which the accumulator stays below 2**53 / int64
MX_SREF = 19
#: the level table of both FP4 formats: twice the E2M1 value of each 4-bit code (OCP MX v1.0
#: §5.3.3: sign << 3 | magnitude code; magnitudes 0, .5, 1, 1.5, 2, 3, 4, 6; code 8 is -0)
E2M1_LEVELS = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.int16)
#: each FP4 kind's one format: mxfp4 = E8M0 per 32 as ``2**(scale_e - scale_s)`` (``scale_m``
#: is 1 and not stored, 8 shift bits); nvfp4 = E4M3 per 16 as a 4-bit mantissa and 4 shift
#: bits, and the float32 tensor scale's mantissa in ``tensor_m``
FP4_FORMATS = {
    "mxfp4": QuantFormat(4, 32, scale_bits=0, zero_bits=0, level_bits=5, scale_shift_bits=8,
                         kind="mxfp4"),
    "nvfp4": QuantFormat(4, 16, scale_bits=4, zero_bits=0, level_bits=5, scale_shift_bits=4,
                         kind="nvfp4"),
}  # fmt: skip


def _unsigned(bits: Callable[[QuantFormat], int]) -> Callable[[QuantFormat], tuple[int, int]]:
    return lambda f: (0, (1 << bits(f)) - 1)


def _signed(bits: Callable[[QuantFormat], int]) -> Callable[[QuantFormat], tuple[int, int]]:
    return lambda f: (-(1 << (bits(f) - 1)), (1 << (bits(f) - 1)) - 1)


@dataclass(frozen=True)
class Field:
    """One stored field of a quantized matrix.

    ``axis``: ``"weight"`` (``[R, Cp]``), ``"level"`` (``[2**bits]``), ``"group"``
    (``[R, NG]``), ``"row"`` (``[R]``) or ``"tensor"`` (``[1]``). ``rom_bits(fmt)``: bits
    each value takes in the ROM (0: not stored, e.g. ``scale_s`` without shift bits, kept as
    zeros in the arrays);
    ``limits(fmt)``: the inclusive value range; ``signed``: two's complement in the ROM;
    ``asymmetric``: present only when the format has an offset; ``kinds``: present only for
    these format kinds."""

    name: str
    dtype: np.dtype
    st_dtype: str  #: the safetensors dtype name
    axis: str
    signed: bool
    asymmetric: bool
    rom_bits: Callable[[QuantFormat], int]
    limits: Callable[[QuantFormat], tuple[int, int]]
    kinds: tuple[str, ...] | None = None  #: the format kinds that have it (None: all)

    def shape(self, fmt: QuantFormat, rows: int, cols: int) -> tuple[int, ...]:
        """The array shape for a ``[rows, cols]`` matrix (``cols`` unpadded)."""
        cp = fmt.padded_cols(cols)
        return {
            "weight": (rows, cp),
            "level": (1 << fmt.bits,),
            "group": (rows, cp // fmt.group_size),
            "row": (rows,),
            "tensor": (1,),
        }[self.axis]


def _level_limits(f: QuantFormat) -> tuple[int, int]:
    top = (1 << (f.level_bits - 1)) - 1
    return -top, top


#: Every field, in the order the quant store lists them.
FIELDS = (
    Field("codes", np.dtype(np.uint8), "U8", "weight", False, False, lambda f: f.bits,
          _unsigned(lambda f: f.bits)),
    Field("levels", np.dtype(np.int16), "I16", "level", True, False, lambda f: f.level_bits,
          _level_limits),
    Field("scale_m", np.dtype(np.uint16), "U16", "group", False, False, lambda f: f.scale_bits,
          lambda f: (1, 1) if f.scale_bits == 0 else (0, (1 << f.scale_bits) - 1)),
    Field("scale_s", np.dtype(np.uint8), "U8", "group", False, False,
          lambda f: f.scale_shift_bits, _unsigned(lambda f: f.scale_shift_bits)),
    Field("scale_e", np.dtype(np.int8), "I8", "row", True, False, lambda f: EXP_BITS,
          lambda f: (EXP_MIN, EXP_MAX)),
    Field("zero_m", np.dtype(np.int16), "I16", "group", True, True, lambda f: f.zero_bits,
          _signed(lambda f: f.zero_bits)),
    Field("zero_s", np.dtype(np.uint8), "U8", "group", False, True, lambda f: f.zero_shift_bits,
          _unsigned(lambda f: f.zero_shift_bits)),
    Field("zero_e", np.dtype(np.int8), "I8", "row", True, True, lambda f: EXP_BITS,
          lambda f: (EXP_MIN, EXP_MAX)),
    Field("tensor_m", np.dtype(np.uint32), "U32", "tensor", False, False,
          lambda f: TENSOR_M_BITS, lambda f: (1, (1 << TENSOR_M_BITS) - 1), kinds=("nvfp4",)),
)  # fmt: skip
FIELD = {f.name: f for f in FIELDS}
#: A tile's ROM content in the order the tile stores it: the cell array, each row's group
#: fields, the row exponents (the level table, shared by all tiles of a matrix, comes last).
_AXIS_ORDER = {"weight": 0, "group": 1, "row": 2, "level": 3, "tensor": 4}
TILE_FIELDS = tuple(
    f.name
    for f in sorted(FIELDS, key=lambda f: _AXIS_ORDER[f.axis])
    if f.axis not in ("level", "tensor")
)


def fields_of(fmt: QuantFormat) -> tuple[Field, ...]:
    """The fields a matrix of format ``fmt`` has (the offset's only when asymmetric,
    ``tensor_m`` only for nvfp4)."""
    return tuple(
        f
        for f in FIELDS
        if (fmt.zero_bits or not f.asymmetric) and (f.kinds is None or fmt.kind in f.kinds)
    )


def scale_rom_fields(fmt: QuantFormat) -> tuple[Field, ...]:
    """The per-row fields of a tile's scale ROM in ROM order: the group fields that take bits,
    then the row exponents."""
    rows = [f for f in fields_of(fmt) if f.axis in ("group", "row") and f.rom_bits(fmt)]
    return tuple(sorted(rows, key=lambda f: _AXIS_ORDER[f.axis]))


@dataclass
class QuantTensor:
    """One quantized matrix in the chip's format (the fields of :data:`FIELDS`)."""

    name: str
    shape: tuple[int, int]  #: the real (unpadded) ``[R, C]``
    fmt: QuantFormat
    codes: np.ndarray  #: uint8 [R, Cp]
    levels: np.ndarray  #: int16 [2**bits]
    scale_m: np.ndarray  #: uint16 [R, NG]
    scale_s: np.ndarray  #: uint8 [R, NG]
    scale_e: np.ndarray  #: int8 [R]
    zero_m: np.ndarray | None = None  #: int16 [R, NG] (None when symmetric)
    zero_s: np.ndarray | None = None  #: uint8 [R, NG]
    zero_e: np.ndarray | None = None  #: int8 [R]
    tensor_m: np.ndarray | None = None  #: uint32 [1] (nvfp4 only)
    method: str = "rtn"

    def validate(self) -> None:
        """Check every field's dtype, shape and range; raise InputError naming the tensor and
        field."""
        f, n = self.fmt, self.name
        f.validate(n)
        r, c = self.shape
        for fd in fields_of(f):
            arr = getattr(self, fd.name)
            shape = fd.shape(f, r, c)
            if arr is None:
                raise InputError(f"{n}: field {fd.name} is missing")
            if arr.dtype != fd.dtype or tuple(arr.shape) != shape:
                raise InputError(
                    f"{n}: field {fd.name} must be {fd.dtype} {list(shape)}, got "
                    f"{arr.dtype} {list(arr.shape)}"
                )
            lo, hi = fd.limits(f)
            if arr.size and (int(arr.min()) < lo or int(arr.max()) > hi):
                raise InputError(f"{n}: field {fd.name} has values outside [{lo}, {hi}]")
            if fd.axis == "level" and f.fp4:
                if not np.array_equal(arr, E2M1_LEVELS):
                    raise InputError(f"{n}: an {f.kind} level table must be the E2M1 table")
            elif fd.axis == "level" and np.any(np.diff(arr.astype(np.int32)) <= 0):
                raise InputError(f"{n}: levels must be strictly increasing")
        if f.symmetric and any(
            getattr(self, fd.name) is not None for fd in FIELDS if fd.asymmetric
        ):
            raise InputError(f"{n}: a symmetric format has no zero_m/zero_s/zero_e")
        if f.kind != "nvfp4" and self.tensor_m is not None:
            raise InputError(f"{n}: only an nvfp4 format has tensor_m")
        if f.kind == "nvfp4":
            _check_e4m3_pairs(self)
        cp = f.padded_cols(c)
        if cp > c and np.any(self.codes[:, c:]):
            raise InputError(f"{n}: padding codes (columns {c}..{cp - 1}) must be 0")
        if f.kind == "mxfp4":
            check_mx_span(self)

    def arrays(self) -> dict[str, np.ndarray]:
        """The stored fields, by name (absent offset fields left out)."""
        return {fd.name: getattr(self, fd.name) for fd in fields_of(self.fmt)}

    def rows(self, name: str, sl: slice) -> QuantTensor:
        """Rows ``sl`` as a matrix of its own (copies; the level table is shared)."""
        per_row = {
            fd.name: getattr(self, fd.name)[sl].copy()
            for fd in fields_of(self.fmt)
            if fd.axis not in ("level", "tensor")
        }
        n = len(range(*sl.indices(self.shape[0])))
        return QuantTensor(
            name=name,
            shape=(n, self.shape[1]),
            fmt=self.fmt,
            levels=self.levels.copy(),
            tensor_m=None if self.tensor_m is None else self.tensor_m.copy(),
            method=self.method,
            **per_row,
        )

    def dequantize(self) -> np.ndarray:
        """float32 ``[R, C]``: the exact value of every weight (see the module docstring)."""
        return dequantize(self)


def from_arrays(
    name: str, shape: tuple[int, int], fmt: QuantFormat, arrays: dict, method: str = ""
) -> QuantTensor:
    """A validated :class:`QuantTensor` from its fields by name (InputError otherwise)."""
    q = QuantTensor(
        name=name,
        shape=shape,
        fmt=fmt,
        method=method,
        **{fd.name: arrays.get(fd.name) for fd in FIELDS},
    )
    q.validate()
    return q


def join_rows(name: str, parts: list[QuantTensor]) -> QuantTensor:
    """Concatenate row blocks of one matrix (same format and levels) into one tensor."""
    first = parts[0]
    per_row = {
        fd.name: np.concatenate([getattr(p, fd.name) for p in parts], axis=0)
        for fd in fields_of(first.fmt)
        if fd.axis not in ("level", "tensor")
    }
    if any(not np.array_equal(p.tensor_m, first.tensor_m) for p in parts):
        raise ValueError(f"{name}: row blocks with different tensor_m cannot be joined")
    return QuantTensor(
        name=name,
        shape=(sum(p.shape[0] for p in parts), first.shape[1]),
        fmt=first.fmt,
        levels=first.levels,
        tensor_m=first.tensor_m,
        method=first.method,
        **per_row,
    )


def split_rows(q: QuantTensor, names: list[str], rows: list[int]) -> list[QuantTensor]:
    """Split a quantized row-stack of several matrices back into one tensor per matrix."""
    out, r0 = [], 0
    for name, r in zip(names, rows, strict=True):
        out.append(q.rows(name, slice(r0, r0 + r)))
        r0 += r
    return out


def group_values(m: np.ndarray, shift: np.ndarray, e: np.ndarray) -> np.ndarray:
    """float64 ``[R, NG]``: ``m * 2**(e[:, None] - shift)`` (exact)."""
    return m.astype(np.float64) * np.exp2(e.astype(np.float64)[:, None] - shift.astype(np.float64))


def dequantize(q: QuantTensor, rows_per_block: int = 4096) -> np.ndarray:
    """The weights ``q`` stores, float32 ``[R, C]`` (products exact in float64, one rounding).

    Works through blocks of rows so the float64 temporaries stay small for large matrices."""
    r, c = q.shape
    g = q.fmt.group_size
    lvl = q.levels.astype(np.float64)
    out = np.empty((r, c), dtype=np.float32)
    for a in range(0, r, rows_per_block):
        b = min(a + rows_per_block, r)
        step = group_values(q.scale_m[a:b], q.scale_s[a:b], q.scale_e[a:b])
        if q.tensor_m is not None:
            step *= float(q.tensor_m[0])  # exact: scale_m * tensor_m < 2**28
        w = np.repeat(step, g, axis=1)[:, :c] * lvl[q.codes[a:b, :c]]
        if q.zero_m is not None:
            off = group_values(q.zero_m[a:b], q.zero_s[a:b], q.zero_e[a:b])
            w += np.repeat(off, g, axis=1)[:, :c]
        out[a:b] = w
    return out


def read_tensor(
    st, name: str, shape: tuple[int, int], fmt: QuantFormat, where: str, method: str = ""
) -> QuantTensor:
    """Matrix ``name`` from a safetensors file holding its fields as ``NAME/<field>`` (the quant
    store's layout), dtypes checked before reading, validated."""
    arrays = {}
    for fd in FIELDS:
        key = f"{name}/{fd.name}"
        if key not in st.tensors:
            continue
        info = st.tensors[key]
        if info.dtype != fd.st_dtype:
            raise InputError(f"{where}: {fd.name} must be {fd.st_dtype}, found {info.dtype}")
        arrays[fd.name] = st.read_raw(key)
    return from_arrays(name, shape, fmt, arrays, method)


def _check_e4m3_pairs(q: QuantTensor) -> None:
    """nvfp4's ``(scale_m, scale_s)`` must be the canonical image of a finite E4M3 byte:
    normal ``scale_m >= 8``, ``scale_s`` in ``[0, 14]``; subnormal ``scale_m < 8`` with
    ``scale_s == 14``; ``(15, 0)`` (480) is E4M3's NaN."""
    m, s = q.scale_m.astype(np.int64), q.scale_s.astype(np.int64)
    bad = (s > 14) | ((m < 8) & (s != 14)) | ((m == 15) & (s == 0))
    if np.any(bad):
        r, g = (int(i) for i in np.argwhere(bad)[0])
        raise InputError(
            f"{q.name}: nvfp4 block scale (row {r}, block {g}: scale_m {int(m[r, g])}, "
            f"scale_s {int(s[r, g])}) is not a finite E4M3 value"
        )


def check_mx_span(q: QuantTensor, row0: int = 0) -> None:
    """mxfp4: every block holding a nonzero code has ``scale_s <= MX_SREF`` (its scale at most
    2**19 below its row's reference), or the accumulator bound fails (FitError, exit 4; rows
    counted from ``row0``: ``q`` may be a block of a matrix's rows)."""
    r = q.shape[0]
    g = q.fmt.group_size
    nz = (q.levels[q.codes] != 0).reshape(r, -1, g).any(axis=2)
    over = nz & (q.scale_s > MX_SREF)
    if np.any(over):
        i, b = (int(x) for x in np.argwhere(over)[0])
        raise FitError(
            f"{q.name}: mxfp4 row {row0 + i} block {b} has a scale 2^-{int(q.scale_s[i, b])} below "
            f"its row's largest, beyond the datapath's span of {MX_SREF} binades; use the "
            "integer format or nvfp4 for this tensor"
        )


#: a matrix's input permutation (docs/numerics.md, "Input permutation"): the array
#: ``NAME/input_perm`` (quant/), the params key ``NAME.input_perm`` (the netlist)
PERM = "input_perm"


def is_permutation(p: np.ndarray, n: int) -> bool:
    """Whether ``p`` (an integer array) is a permutation of ``range(n)``."""
    if p.shape != (n,) or (n and (p.min() < 0 or p.max() >= n)):
        return False
    seen = np.zeros(n, dtype=bool)
    seen[p] = True
    return bool(seen.all())


def unpermute_cols(arr: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """``w`` with ``w[:, perm] == arr``: a matrix stored in the input order ``perm`` (its column
    ``j`` reads input ``perm[j]``) in its inputs' order."""
    out = np.empty_like(arr)
    out[:, perm] = arr
    return out
