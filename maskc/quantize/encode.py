"""Encoding helpers the quantizers share: uniform level tables and the mantissa/shift/exponent
encoding of group steps and offsets into the ROM format of :mod:`maskc.romformat`."""

from __future__ import annotations

import numpy as np

from maskc.romformat import EXP_MAX, EXP_MIN


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
