"""What the chip can represent: the ranges of weights and config numbers that ingest accepts.

Every value a model brings in is checked against these ranges before anything is compiled
(config.json by :meth:`maskc.ir.ModelArch.validate`, every tensor by
:meth:`maskc.ingest.Model.read`); a value outside is refused with an
:class:`~maskc.errors.InputError` naming the tensor or field, the value and the range. The
reasons, one per range, are in docs/numerics.md ("What the chip can represent").

Depends on nothing but the standard library and numpy, so both ``maskc.ir`` and
``maskc.ingest`` can use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from maskc.errors import InputError

#: The signal range (docs/numerics.md): an int32 with 12 fraction bits holds less than 2^19.
SIGNAL_LIMIT = 2.0**19


@dataclass(frozen=True)
class Range:
    """A closed or half-open interval ``lo .. hi`` for a config number, with its text."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, v: float) -> bool:
        if not math.isfinite(v):
            return False
        above = v > self.lo if self.lo_open else v >= self.lo
        below = v < self.hi if self.hi_open else v <= self.hi
        return above and below

    def text(self) -> str:
        return (
            ("(" if self.lo_open else "[")
            + f"{_num(self.lo)}, {_num(self.hi)}"
            + (")" if self.hi_open else "]")
        )


def _num(v: float) -> str:
    """``2^k`` for the powers of two the ranges use, the number otherwise."""
    if v > 0:
        k = math.log2(v)
        if k == int(k) and abs(k) >= 4:
            return f"2^{int(k)}"
    return f"{v:g}"


#: config.json numbers, by field (``rope_scaling.*`` for the llama3 scaling's fields)
CONFIG_RANGES = {
    # eps_d = round(D * eps * 2^40) is nonzero, and below 2^63 (int64) for every D <= 2^24
    "rms_norm_eps": Range(2.0**-40, 0.25),
    # above 1 the frequencies fall; up to 2^64 theta and 2 pi / inv_freq are finite in float32
    # (inv_freq is float32, as in transformers) and the faster 47% of every head's pairs keep
    # a nonzero phase step (1 / 2^32 of a turn per position)
    "rope_theta": Range(1.0, 2.0**64, lo_open=True),
    # llama3 scaling stretches the context (factor >= 1, as transformers requires) to at most
    # the 2^24 positions a config may declare
    "rope_scaling.factor": Range(1.0, 2.0**24),
    # wavelength thresholds original_max_position_embeddings / factor; within 2^+-24 the
    # float32 smoothing (high - low in the denominator) stays finite
    "rope_scaling.low_freq_factor": Range(2.0**-24, 2.0**24),
    "rope_scaling.high_freq_factor": Range(2.0**-24, 2.0**24),
}


def check_number(v: float, field: str, where: str) -> None:
    """InputError unless config number ``field`` = ``v`` is in its range."""
    r = CONFIG_RANGES[field]
    if v not in r:
        raise InputError(
            f"{where}: field {field!r} = {v!r} is outside what the chip can represent: "
            f"it must be in {r.text()} (docs/numerics.md)"
        )


#: Largest magnitude (exclusive) of every weight tensor, by role: the signal range. Embedding
#: rows and biases are read into signals; a matrix weight or a norm weight beyond it saturates
#: the signal it produces from any activation element of 1 (every RMS-normalized vector has
#: one at least that large).
WEIGHT_LIMIT = SIGNAL_LIMIT


def check_tensor(arr: np.ndarray, name: str, where: str) -> None:
    """InputError unless every value of float32 ``arr`` (tensor ``name``, already checked
    finite) has a magnitude below :data:`WEIGHT_LIMIT`; names the first offending index."""
    if not arr.size:
        return
    hi, lo = float(arr.max()), float(arr.min())
    if hi < WEIGHT_LIMIT and lo > -WEIGHT_LIMIT:
        return
    bad = np.abs(arr) >= WEIGHT_LIMIT
    first = np.unravel_index(int(np.argmax(bad.reshape(-1))), arr.shape)
    v = float(arr[first])
    raise InputError(
        f"{where}: tensor {name!r} has {int(np.count_nonzero(bad))} value(s) the chip cannot "
        f"represent, first {v:.6g} at index {tuple(int(i) for i in first)}; weights must have "
        f"a magnitude below 2^19 = {int(WEIGHT_LIMIT):,} (docs/numerics.md)"
    )
