"""A ROM matrix prepared for the emulator's exact integer product (kernels.py), and the
stacking of matrices that share their input into one kernel call."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from maskc.emulate import kernels as K
from maskc.emulate.kernels import GROUP as ACT_GROUP
from maskc.emulate.kernels import blocked
from maskc.errors import InputError
from maskc.romformat import QuantTensor

I64 = np.int64
#: the bound the loader enforces on a matrix's accumulator (far inside int64)
ACC_LIMIT = 1 << 53


@dataclass
class Matrix:
    """One matrix ready for exact evaluation (kernels.py, :func:`kernels.prepare_levels`).

    ``lev``/``packed``/``d``/``off``/``accum``: the stored levels and the group sums' integer
    type; ``msh``: int64 blocked ``[NB, Cp/32, 128]`` = ``scale_m * 2^(SMAX - scale_s)`` per
    activation group; ``zsh``: int64 ``[R, Cp/32]`` = ``zero_m * 2^(ZMAX - zero_s)``; ``ka``/``kb``:
    int64 ``[R]`` = ``SMAX - scale_e``, ``ZMAX - zero_e``."""

    name: str
    rows: int
    cols: int
    cp: int
    lev: np.ndarray
    packed: bool
    d: int
    off: int
    accum: np.ndarray  #: a 1-element array of the group sums' dtype (int32 or int64)
    msh: np.ndarray
    zsh: np.ndarray
    ka: np.ndarray
    kb: np.ndarray
    has_zero: bool
    q: QuantTensor | None  #: the stored matrix (the embedding reads rows of it)

    def same_storage(self, other: Matrix) -> bool:
        """Whether the two can run as one kernel call (stacked row blocks)."""
        return (
            self.packed == other.packed
            and self.d == other.d
            and self.off == other.off
            and self.cp == other.cp
            and self.accum.dtype == other.accum.dtype
            and self.lev.dtype == other.lev.dtype
            and self.has_zero == other.has_zero
        )


def prepare(q: QuantTensor) -> Matrix:
    """``q`` laid out for :func:`kernels.matmul`, after checking its accumulator bound."""
    f = q.fmt
    r, c = q.shape
    g = f.group_size
    if g % ACT_GROUP:
        raise InputError(f"{q.name}: group size {g} is not a multiple of {ACT_GROUP}")
    rep = g // ACT_GROUP  # activation groups per weight group
    lmax = int(np.abs(q.levels.astype(I64)).max())
    smax = (1 << f.scale_shift_bits) - 1
    mshift = q.scale_m.astype(I64) << (smax - q.scale_s.astype(I64))
    # |acc| <= sum_a mshift * 32 * lmax * 127 * 2^7 must stay < 2^53 (kernels.py)
    if int(mshift.sum(axis=1).max()) * rep * ACT_GROUP * lmax * 127 * 128 >= ACC_LIMIT:
        raise InputError(f"{q.name}: accumulator bound beyond the emulator's exact datapath")
    lev, packed, d, off, accum = K.prepare_levels(q.codes, q.levels)
    msh = blocked(np.repeat(mshift, rep, axis=1))
    if q.zero_m is not None:
        zmax = (1 << f.zero_shift_bits) - 1
        z = q.zero_m.astype(I64) << (zmax - q.zero_s.astype(I64))
        zsh = np.ascontiguousarray(np.repeat(z, rep, axis=1))
        kb = zmax - q.zero_e.astype(I64)
    else:
        zsh = np.zeros((r, 1), I64)
        kb = np.zeros(r, I64)
    return Matrix(
        q.name,
        r,
        c,
        f.padded_cols(c),
        lev,
        packed,
        d,
        off,
        np.zeros(1, accum),
        msh,
        zsh,
        smax - q.scale_e.astype(I64),
        kb,
        q.zero_m is not None,
        q,
    )


def stack(mats: list[Matrix], biases: list[np.ndarray | None]) -> tuple[Matrix, np.ndarray | None]:
    """Matrices of the same storage (:meth:`Matrix.same_storage`) as one, their row blocks one
    after the other (each padded to ``BLOCK_ROWS``), and their biases (int64, or None when
    none has one)."""
    br = K.BLOCK_ROWS
    total = sum(m.lev.shape[0] for m in mats) * br

    def rows_padded(arrs, width=None):
        shape = (total,) if width is None else (total, width)
        o = np.zeros(shape, I64)
        r = 0
        for m, a in zip(mats, arrs, strict=True):
            o[r : r + m.rows] = a
            r += m.lev.shape[0] * br
        return o

    m0 = mats[0]
    bias = None
    if any(b is not None for b in biases):
        bias = rows_padded(
            [
                np.zeros(m.rows, I64) if b is None else b.astype(I64)
                for m, b in zip(mats, biases, strict=True)
            ]
        )
    st = Matrix(
        "+".join(m.name for m in mats),
        total,
        m0.cols,
        m0.cp,
        np.ascontiguousarray(np.concatenate([m.lev for m in mats])),
        m0.packed,
        m0.d,
        m0.off,
        m0.accum,
        np.ascontiguousarray(np.concatenate([m.msh for m in mats])),
        rows_padded([m.zsh for m in mats], m0.zsh.shape[1]),
        rows_padded([m.ka for m in mats]),
        rows_padded([m.kb for m in mats]),
        m0.has_zero,
        None,
    )
    return st, bias
