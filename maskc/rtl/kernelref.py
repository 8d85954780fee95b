"""The emulator's kernels as the reference the RTL is compared with (cosimulation tests and
``benchmarks/rtl_tiles.py``): a matrix's product and an embedding's rows, computed by exactly
the code ``maskc emulate`` runs (:mod:`maskc.emulate.kernels`, the C kernel when the emulator
uses it), never by the RTL generator's code."""

from __future__ import annotations

import numpy as np

from maskc.emulate import kernels as K
from maskc.emulate import units as U
from maskc.emulate.backend import _kern
from maskc.emulate.prepared import prepare

I64 = np.int64


def matmul(nl, name: str, x, s, m, e, bias: np.ndarray | None = None) -> np.ndarray:
    """act8 ``x`` int ``[T, C]``, ``s`` ``[T, ceil(C/32)]``, ``m``/``e`` ``[T]`` times matrix
    ``name`` (plus ``bias``) -> the signals int64 ``[T, R]``, as ``maskc emulate`` computes
    them (maskc/emulate/chip.py, ``Chip.matmul``)."""
    x, s = np.ascontiguousarray(x, I64), np.ascontiguousarray(s, I64)
    m, e = np.ascontiguousarray(m, I64), np.ascontiguousarray(e, I64)
    f = nl.doc["numerics"]["signal_frac"]
    mat = prepare(nl, name)
    t = x.shape[0]
    if mat.c:
        b = np.zeros(1, I64)
        if bias is not None:
            b = np.zeros(mat.padded_rows, I64)
            b[: len(bias)] = bias
        h = _kern.matrix(
            mat.lev, mat.packed, mat.lev.shape[0], mat.msh.shape[1], mat.rep, mat.lmin,
            mat.msh.dtype == np.int16, mat.msh, mat.zsh.dtype == np.int16, mat.zsh,
            mat.has_zero, mat.ka, mat.kb, b, bias is not None, mat.rows, mat.cp,
            mat.lut, mat.half, mat.kt,
        )  # fmt: skip
        y = np.empty((t, mat.rows), I64)
        _kern.matmul(x, s, m, e, x.shape[1], f, h, y, None)
        return y
    b = np.zeros(1, I64) if bias is None else np.asarray(bias, I64)
    return K.matmul(
        x, s, m, e, mat.lev, mat.packed, mat.msh.dtype == np.int16, mat.d, mat.off, mat.msh,
        mat.rep, mat.ka, mat.zsh, mat.kb, b, mat.has_zero, bias is not None, f, mat.rows,
        False, mat.half, mat.kt,
    )  # fmt: skip


def embed(nl, name: str, tokens) -> np.ndarray:
    """Rows ``tokens`` of embedding ``name`` as signals int64 ``[T, C]`` (the emulator's
    ``embed_rows``, read through :meth:`Netlist.matrix_rows`)."""
    ids = np.asarray(tokens, I64)
    uniq, where = np.unique(ids, return_inverse=True)
    rows = [nl.matrix_rows(name, int(i), int(i) + 1) for i in uniq.tolist()]
    q = rows[0]
    fm = q.fmt
    z = q.zero_m is not None

    def cat(k):
        return np.concatenate([getattr(r, k) for r in rows])

    return U.embed_rows(
        np.asarray(where, I64).reshape(-1), cat("codes"), q.levels.astype(I64), cat("scale_m"),
        cat("scale_s"), cat("scale_e").astype(I64),
        cat("zero_m") if z else np.zeros((1, 1), np.int16),
        cat("zero_s") if z else np.zeros((1, 1), np.uint8),
        cat("zero_e").astype(I64) if z else np.zeros(1, I64),
        fm.group_size, (1 << fm.scale_shift_bits) - 1, (1 << fm.zero_shift_bits) - 1, z,
        q.shape[1], nl.doc["numerics"]["signal_frac"],
    )  # fmt: skip
