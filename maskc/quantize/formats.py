"""The chip's weight format: integer codes in groups, a per-tensor level table, and per-group
scale and offset stored as integer mantissas with a per-row power-of-two exponent.

For a matrix ``W`` of shape ``[R, C]`` (Hugging Face ``[out_features, in_features]``) quantized
with ``b`` bits and group size ``G`` along the input dimension:

* the input dimension is padded to ``Cp = ceil(C / G) * G``; padded columns hold code 0 and are
  ignored (the hardware feeds them zero activations);
* ``codes``   ``uint8  [R, Cp]``  values in ``[0, 2**b)``: what the mask-ROM cells store;
* ``levels``  ``int16  [2**b]``   strictly increasing integers, ``|level| < 2**(level_bits-1)``:
  the value each code selects (uniform asymmetric ``c``; uniform symmetric ``c - 2**(b-1)``;
  or a fitted non-uniform codebook). In a ROM that selects precomputed products, levels cost
  nothing per weight;
* ``scale_m`` ``uint16 [R, NG]``  unsigned ``scale_bits``-bit mantissa of each group's step;
* ``scale_s`` ``uint8  [R, NG]``  the group's right shift of the step, ``scale_shift_bits``
  bits (all zero when ``scale_shift_bits == 0``): a small float with no implicit bit;
* ``scale_e`` ``int8   [R]``      the row's scale exponent;
* ``zero_m``  ``int16  [R, NG]``  signed ``zero_bits``-bit mantissa of each group's offset
  (asymmetric formats only; absent when ``zero_bits == 0``);
* ``zero_s``  ``uint8  [R, NG]``  the offset's shift (``zero_shift_bits`` bits);
* ``zero_e``  ``int8   [R]``      the row's offset exponent.

The value of weight ``(r, j)`` in group ``g = j // G`` is, exactly::

    step[r, g]   = scale_m[r, g] * 2**(scale_e[r] - scale_s[r, g])
    offset[r, g] = zero_m[r, g]  * 2**(zero_e[r]  - zero_s[r, g])
    w[r, j]      = step[r, g] * levels[codes[r, j]] + offset[r, g]

Both products are integers times powers of two; :func:`dequantize` evaluates them in float64
(exact: ``|scale_m * level| < 2**31``) and rounds the sum once to float32.

Bits per weight counted against the ROM: ``b`` for the code,
``(scale_bits + scale_shift_bits + zero_bits + zero_shift_bits) / G`` for the group's fields,
``2 * 8 / C`` for the two row exponents, and
``2**b * level_bits / (R * C)`` for the level table; padding codes are counted too
(``b * Cp / C``) because they occupy cells.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from maskc.errors import InputError

#: Exponent range of the per-row int8 exponents.
EXP_MIN, EXP_MAX = -128, 127


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

    def validate(self, where: str = "format") -> None:
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

    @property
    def symmetric(self) -> bool:
        return self.zero_bits == 0

    @property
    def group_field_bits(self) -> int:
        """Bits stored per group: step and offset mantissas and shifts."""
        return self.scale_bits + self.scale_shift_bits + self.zero_bits + self.zero_shift_bits

    def padded_cols(self, cols: int) -> int:
        return -(-cols // self.group_size) * self.group_size

    def bits_per_weight(self, rows: int, cols: int) -> float:
        """ROM bits per real weight of an ``[rows, cols]`` matrix, everything included."""
        return self.rom_bits(rows, cols) / (rows * cols)

    def rom_bits(self, rows: int, cols: int) -> int:
        """Total ROM bits: codes (padding included), mantissas, row exponents, level table."""
        cp = self.padded_cols(cols)
        ng = cp // self.group_size
        return (
            rows * cp * self.bits
            + rows * ng * self.group_field_bits
            + rows * 8 * (2 if self.zero_bits else 1)
            + (1 << self.bits) * self.level_bits
        )


@dataclass
class QuantTensor:
    """One quantized matrix in the chip's format (arrays as described in the module docstring)."""

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
    method: str = "rtn"

    def validate(self) -> None:
        """Check dtypes, shapes and ranges; raise InputError naming the tensor and field."""
        f, n = self.fmt, self.name
        f.validate(n)
        r, c = self.shape
        cp = f.padded_cols(c)
        ng = cp // f.group_size

        def check(field: str, arr, dtype, shape, lo, hi) -> None:
            if arr is None:
                raise InputError(f"{n}: field {field} is missing")
            if arr.dtype != np.dtype(dtype) or tuple(arr.shape) != tuple(shape):
                raise InputError(
                    f"{n}: field {field} must be {np.dtype(dtype)} {list(shape)}, got "
                    f"{arr.dtype} {list(arr.shape)}"
                )
            if arr.size and (int(arr.min()) < lo or int(arr.max()) > hi):
                raise InputError(f"{n}: field {field} has values outside [{lo}, {hi}]")

        check("codes", self.codes, np.uint8, (r, cp), 0, (1 << f.bits) - 1)
        lb = 1 << (f.level_bits - 1)
        check("levels", self.levels, np.int16, (1 << f.bits,), -lb + 1, lb - 1)
        if np.any(np.diff(self.levels.astype(np.int32)) <= 0):
            raise InputError(f"{n}: levels must be strictly increasing")
        check("scale_m", self.scale_m, np.uint16, (r, ng), 0, (1 << f.scale_bits) - 1)
        check("scale_s", self.scale_s, np.uint8, (r, ng), 0, (1 << f.scale_shift_bits) - 1)
        check("scale_e", self.scale_e, np.int8, (r,), EXP_MIN, EXP_MAX)
        if f.zero_bits:
            zb = 1 << (f.zero_bits - 1)
            check("zero_m", self.zero_m, np.int16, (r, ng), -zb, zb - 1)
            check("zero_s", self.zero_s, np.uint8, (r, ng), 0, (1 << f.zero_shift_bits) - 1)
            check("zero_e", self.zero_e, np.int8, (r,), EXP_MIN, EXP_MAX)
        elif any(a is not None for a in (self.zero_m, self.zero_s, self.zero_e)):
            raise InputError(f"{n}: a symmetric format has no zero_m/zero_s/zero_e")
        if cp > c and np.any(self.codes[:, c:]):
            raise InputError(f"{n}: padding codes (columns {c}..{cp - 1}) must be 0")

    def dequantize(self) -> np.ndarray:
        """float32 ``[R, C]``: the exact value of every weight (see the module docstring)."""
        return dequantize(self)


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
        w = np.repeat(step, g, axis=1)[:, :c] * lvl[q.codes[a:b, :c]]
        if q.zero_m is not None:
            off = group_values(q.zero_m[a:b], q.zero_s[a:b], q.zero_e[a:b])
            w += np.repeat(off, g, axis=1)[:, :c]
        out[a:b] = w
    return out


def uniform_levels(bits: int, symmetric: bool) -> np.ndarray:
    """int16 ``[2**bits]``: ``0..2**bits-1`` (asymmetric) or ``-2**(bits-1)..2**(bits-1)-1``."""
    lv = np.arange(1 << bits, dtype=np.int16)
    return lv - (1 << (bits - 1)) if symmetric else lv


def encode_mantissa(
    values: np.ndarray, bits: int, signed: bool, shift_bits: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encode float ``[R, NG]`` values as mantissa, per-group shift and per-row exponent.

    Returns ``(mantissa int64 [R, NG], shift uint8 [R, NG], exponent int8 [R])`` with
    ``mantissa * 2**(exponent - shift) ~= values``. The row exponent is the smallest that keeps
    the row's largest magnitude in mantissa range (``[0, 2**bits)`` unsigned,
    ``[-2**(bits-1), 2**(bits-1))`` signed); each group's shift is then the largest in
    ``[0, 2**shift_bits)`` that keeps its own mantissa in range, so small groups keep precision.
    Rounding is half to even.
    """
    v = np.asarray(values, dtype=np.float64)
    top = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    lo = -(top + 1) if signed else 0
    a = np.abs(v)
    amax = a.max(axis=1)
    with np.errstate(divide="ignore"):
        e = np.where(amax > 0, np.ceil(np.log2(np.where(amax > 0, amax, 1.0) / top)), 0.0)
    e = np.clip(e, EXP_MIN, EXP_MAX)
    smax = (1 << shift_bits) - 1
    for _ in range(2):  # a second pass fixes the rare log2 rounding that overflows by one
        if smax:
            with np.errstate(divide="ignore"):
                sh = np.floor(np.log2(top / np.maximum(a, 1e-300))) + e[:, None]
            sh = np.clip(sh, 0, smax)
        else:
            sh = np.zeros_like(v)
        m = np.rint(v / np.exp2(e[:, None] - sh))
        over = (m > top) | (m < lo)
        if not over.any():
            break
        e = np.where(over.any(axis=1), np.clip(e + 1, EXP_MIN, EXP_MAX), e)
    m = np.clip(m, lo, top)
    return m.astype(np.int64), sh.astype(np.uint8), e.astype(np.int8)


def bits_per_weight_total(items: list[tuple[QuantFormat, int, int]]) -> float:
    """Average ROM bits per weight over ``(format, rows, cols)`` items, weighted by size."""
    bits = sum(f.rom_bits(r, c) for f, r, c in items)
    n = sum(r * c for _, r, c in items)
    return bits / n if n else math.nan
