"""A ROM matrix prepared for the emulator's exact integer product (kernels.py), read from the
netlist's tiles one row block at a time, and the stacking of matrices that share their input
into one kernel call.

Two layouts, one per kernel (:mod:`maskc.emulate.backend`):

* numba (kernels.py): row blocks of 128, ``lev`` ``[NB, Cp, 64]`` packed codes or
  ``[NB, Cp, 128]`` int8/int16 levels, ``msh`` ``[NB, Cp/G, 128]``, ``zsh`` ``[R, Cp/G]``;
* C (``_kern.c``): tiles of 16 rows, ``lev`` ``[NT, Cp/32, lines, 64]`` holding
  ``u = level - lmin`` (0..255) four weights of a row per 32-bit lane, two per byte when every
  ``u < 16`` (4 lines per activation group, else 8); ``msh``/``zsh`` ``[NT, Cp/G, 16]``;
  ``ka``/``kb`` int32 ``[NT * 16]``.

FP4 matrices (``mxfp4``/``nvfp4``, docs/numerics.md "FP4 matrices"): the factors use the
format's shift reference ``SREF`` (``msh = scale_m << (SREF - scale_s)``, int32; 0 for an
all-zero mxfp4 block beyond it), nvfp4's weight groups of 16 give ``msh`` two columns per
activation group (``half``) and its tensor mantissa is ``kt`` per row. The E2M1 level table is
not affine (and spans 25 values), so: numba stores the levels as int8 (1 B per weight, plus
``msh`` 4 B per (row, weight group): 1.125 B/weight for mxfp4, 1.25 for nvfp4); the C layout
stores the 4-bit codes themselves two per byte (``packed``, 0.5 B per weight) with the
16-entry table ``lut`` of their levels (0.625 B/weight for mxfp4, 0.75 for nvfp4).

Resident memory per weight (4-bit, g32, the defaults): ``lev`` 0.5 B (two codes per byte), the
scale factors ``msh`` 2 B per (row, weight group) and the offsets ``zsh`` 2 B per (row, weight
group): 0.625 B per weight. Loading holds one row block of one matrix unpacked at a time
(:data:`LOAD_ROWS` rows)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from maskc.emulate import backend
from maskc.emulate import kernels as K
from maskc.emulate.kernels import GROUP as ACT_GROUP
from maskc.emulate.kernels import blocked
from maskc.errors import InputError
from maskc.romformat import FORMAT_KINDS, QuantFormat

I64 = np.int64
#: the bound the loader enforces on a matrix's accumulator (far inside int64)
ACC_LIMIT = 1 << 53
#: rows of a matrix unpacked at once while loading (a multiple of kernels.BLOCK_ROWS)
LOAD_ROWS = 32 * K.BLOCK_ROWS
#: rows per tile of the C kernel's layout
TILE = 16


def factor_dtype(bits: int) -> type:
    """The narrowest of int16/int32/int64 holding every value of magnitude below ``2^bits``."""
    return np.int16 if bits <= 15 else np.int32 if bits <= 31 else np.int64


def scale_dtype(f: QuantFormat) -> type:
    """``scale_m << (SREF - scale_s)`` < ``2^(scale_bits + SREF)`` (unsigned mantissa; SREF =
    SMAX but for mxfp4, whose implicit ``scale_m = 1`` counts as 1 bit): at most 2^31
    (scale_bits <= 16, SMAX <= 15; mxfp4 2^20), so int16 or int32; int16 for the default
    formats (8 + 7 = 15 bits), int32 for FP4."""
    return factor_dtype(max(f.scale_bits, 1) + f.shift_ref)


def zero_dtype(f: QuantFormat) -> type:
    """``|zero_m << (ZMAX - zero_s)|`` <= ``2^(zero_bits - 1 + ZMAX)`` (signed mantissa): below
    2^31, int16 when ``zero_bits - 1 + ZMAX <= 14``."""
    return factor_dtype(f.zero_bits + (1 << f.zero_shift_bits) - 1)


@dataclass
class Matrix:
    """One matrix ready for exact evaluation (kernels.py, :func:`kernels.prepare_levels`).

    ``lev``/``packed``/``d``/``off``: the stored levels (see :func:`kernels.prepare_levels`);
    ``msh``: blocked ``[NB, Cp/G, 128]`` = ``scale_m * 2^(SMAX - scale_s)`` per (row, weight
    group of ``G = rep * 32``), :func:`scale_dtype`; ``zsh``: ``[R, Cp/G]`` =
    ``zero_m * 2^(ZMAX - zero_s)``, :func:`zero_dtype`; ``ka``/``kb``: int64 ``[R]`` =
    ``SMAX - scale_e``, ``ZMAX - zero_e``. ``tile``: rows per block (128: numba layout;
    16: the C kernel's, with ``lmin`` the lowest level; see the module docstring).

    FP4 (module docstring): SREF in place of SMAX in ``msh`` and ``ka``; ``half``: weight
    groups of 16 (``msh`` per half activation group, ``rep`` 1); ``kt``: the tensor mantissa
    per row (nvfp4; numba int64 ``[R]``, C int32 ``[NT * 16]``), None when 1; ``lut``: C
    layout of FP4, ``lev`` holds the packed 4-bit codes and ``lut`` (int8 ``[16]``) their
    levels."""

    name: str
    rows: int
    cols: int
    cp: int
    lev: np.ndarray
    packed: bool
    d: int
    off: int
    msh: np.ndarray
    zsh: np.ndarray
    ka: np.ndarray
    kb: np.ndarray
    has_zero: bool
    rep: int  #: activation groups per weight group
    tile: int = K.BLOCK_ROWS
    lmin: int = 0
    half: bool = False
    kt: np.ndarray | None = None
    lut: np.ndarray | None = None

    @property
    def fp4(self) -> bool:
        """Any of the FP4 datapath's differences (half groups, tensor mantissa, code table):
        not stored in the layout cache."""
        return self.half or self.kt is not None or self.lut is not None

    @property
    def c(self) -> bool:
        """Laid out for the C kernel."""
        return self.tile == TILE

    @property
    def padded_rows(self) -> int:
        return self.lev.shape[0] * self.tile

    def same_storage(self, other: Matrix) -> bool:
        """Whether the two can run as one kernel call (stacked row blocks)."""
        return (
            self.tile == other.tile
            and self.lmin == other.lmin
            and self.packed == other.packed
            and self.d == other.d
            and self.off == other.off
            and self.cp == other.cp
            and self.rep == other.rep
            and self.lev.dtype == other.lev.dtype
            and self.msh.dtype == other.msh.dtype
            and self.zsh.dtype == other.zsh.dtype
            and self.has_zero == other.has_zero
            and self.half == other.half
            and (self.kt is None) == (other.kt is None)
            and (self.lut is None) == (other.lut is None)
            and (self.lut is None or np.array_equal(self.lut, other.lut))
        )

    def __post_init__(self) -> None:
        # read-only, like the layout cache's memory maps: numba compiles kernels.matmul per
        # argument type, and read-only is part of an array's type (one kernel per storage
        # kind, whichever way the matrix came; the kernels never write these)
        if not self.c:
            for a in (self.lev, self.msh, self.zsh, self.ka, self.kb, self.kt):
                if a is not None:
                    a.flags.writeable = False

    def arrays(self) -> tuple[np.ndarray, ...]:
        return self.lev, self.msh, self.zsh, self.ka, self.kb


def tiles(u: np.ndarray, packed: bool) -> np.ndarray:
    """``u`` uint8 ``[n, Cp]`` (n a multiple of :data:`TILE`) in the C kernel's layout
    ``[n / 16, Cp / 32, lines, 64]``: byte ``4 r + i`` of quad ``q`` of an activation group is
    ``u[r, 4 q + i]``; packed: quads ``2 l`` and ``2 l + 1`` are the low and high nibbles of
    line ``l``."""
    n, cp = u.shape
    a = u.reshape(n // TILE, TILE, cp // ACT_GROUP, 8, 4).transpose(0, 2, 3, 1, 4)
    a = a.reshape(n // TILE, cp // ACT_GROUP, 8, TILE * 4)
    if packed:
        a = a[:, :, 0::2] | (a[:, :, 1::2] << 4)
    return np.ascontiguousarray(a)


def row_tiles(a: np.ndarray) -> np.ndarray:
    """``[n, W]`` per-row factors -> ``[n / 16, W, 16]`` (the C kernel's layout)."""
    n, w = a.shape
    return np.ascontiguousarray(a.reshape(n // TILE, TILE, w).transpose(0, 2, 1))


def prepare(nl, name: str, load_rows: int = LOAD_ROWS) -> Matrix:
    """Matrix ``name`` of netlist ``nl`` laid out for :func:`kernels.matmul`, read ``load_rows``
    rows at a time (:meth:`maskc.netlist.Netlist.matrix_rows`), after checking its
    accumulator bound. The result does not depend on ``load_rows``."""
    if load_rows <= 0 or load_rows % K.BLOCK_ROWS:
        raise ValueError(f"load_rows must be a positive multiple of {K.BLOCK_ROWS}")
    r, c = nl.matrices[name]["shape"]
    f = QuantFormat.from_json(
        nl.matrices[name]["format"], f"{nl.path}: matrix {name}", kinds=FORMAT_KINDS
    )
    g = f.group_size
    half = g == ACT_GROUP // 2 and f.kind == "nvfp4"  # two weight groups per activation group
    if g % ACT_GROUP and not half:
        raise InputError(f"{name}: group size {g} is not a multiple of {ACT_GROUP}")
    rep = 1 if half else g // ACT_GROUP  # activation groups per weight group
    # the kernels read whole activation groups: groups of 16 pad to a multiple of 32 (the
    # extra weight group has code 0 and factor 0)
    cp = -(-f.padded_cols(c) // ACT_GROUP) * ACT_GROUP
    ngw = cp // g
    nb = -(-r // K.BLOCK_ROWS)
    sref = f.shift_ref
    zmax = (1 << f.zero_shift_bits) - 1
    has_zero = f.zero_bits > 0
    q0 = nl.matrix_rows(name, 0, 1)
    levels = q0.levels.astype(I64)  # per matrix
    tm = _tensor_m(name, f, q0)
    if backend.use_c() and int(levels.max()) - int(levels.min()) <= 255:
        return _prepare_c(nl, name, load_rows, f, r, c, cp, rep, levels, half, tm)
    msh = np.zeros((nb, ngw, K.BLOCK_ROWS), scale_dtype(f))
    zsh = np.zeros((r, ngw) if has_zero else (r, 1), zero_dtype(f))
    ka = np.zeros(r, I64)
    kb = np.zeros(r, I64)
    lev = None
    worst = 0
    for lo in range(0, r, load_rows):
        hi = min(r, lo + load_rows)
        q = nl.matrix_rows(name, lo, hi)
        nl.release(name)  # the tiles' pages read so far leave this process's resident set
        b0, b1 = lo // K.BLOCK_ROWS, -(-hi // K.BLOCK_ROWS)
        mshift = _pad_cols(step_factors(q, sref, lo), ngw)
        worst = max(worst, int(mshift.sum(axis=1).max()))
        msh[b0:b1] = blocked(mshift.astype(msh.dtype))
        ka[lo:hi] = sref - q.scale_e.astype(I64)
        if has_zero:
            zsh[lo:hi] = q.zero_m.astype(I64) << (zmax - q.zero_s.astype(I64))
            kb[lo:hi] = zmax - q.zero_e.astype(I64)
        part, packed, d, off = K.prepare_levels(_pad_cols(q.codes, cp), q.levels)
        if lev is None:
            lev = np.empty((nb, *part.shape[1:]), part.dtype)
            lmax = int(np.abs(q.levels.astype(I64)).max())
        del q
        lev[b0:b1] = part
    _check_bound(name, worst, g, lmax)
    if half and off:  # kernels._block's half groups leave out the offset sum (E2M1: off 0)
        raise InputError(f"{name}: a level table with groups of 16 must be centred on 0")
    kt = None if tm is None else np.full(r, tm, I64)
    return Matrix(name, r, c, cp, lev, packed, d, off, msh, zsh, ka, kb, has_zero, rep,
                  half=half, kt=kt)  # fmt: skip


def _tensor_m(name: str, f: QuantFormat, q) -> int | None:
    """nvfp4's tensor mantissa (1 <= tm < 2^24; romformat validated it), None otherwise."""
    if f.kind != "nvfp4":
        return None
    if q.tensor_m is None:
        raise InputError(f"{name}: an nvfp4 matrix without its tensor_m")
    return int(q.tensor_m[0])


def step_factors(q, sref: int, lo: int = 0) -> np.ndarray:
    """int64 ``[n, NG]``: ``scale_m << (SREF - scale_s)`` of the rows ``q`` (the first at row
    ``lo`` of its matrix), 0 for a group beyond ``SREF``, which must hold only zero levels
    (an mxfp4 block far below its row's largest: docs/numerics.md "FP4 matrices")."""
    s = q.scale_s.astype(I64)
    over = s > sref
    out = q.scale_m.astype(I64) << np.where(over, 0, sref - s)
    if np.any(over):
        g = q.fmt.group_size
        nz = (q.levels[q.codes] != 0).reshape(q.codes.shape[0], -1, g).any(axis=2)
        bad = over & nz
        if np.any(bad):
            i, b = (int(v) for v in np.argwhere(bad)[0])
            raise InputError(
                f"{q.name}: row {lo + i} group {b} has scale_s {int(s[i, b])} beyond the "
                f"datapath's reference {sref} with nonzero codes; recompile"
            )
        out[over] = 0
    return out


def _pad_cols(a: np.ndarray, width: int) -> np.ndarray:
    """``a`` ``[n, w]`` with zero columns up to ``width`` (itself when ``w == width``)."""
    if a.shape[1] == width:
        return a
    out = np.zeros((a.shape[0], width), a.dtype)
    out[:, : a.shape[1]] = a
    return out


def _check_bound(name: str, worst: int, g: int, lmax: int) -> None:
    """|acc| <= sum_g mshift * G * lmax * 127 * 2^7 must stay < 2^53 (kernels.py)."""
    if worst * g * lmax * 127 * 128 >= ACC_LIMIT:
        raise InputError(f"{name}: accumulator bound beyond the emulator's exact datapath")


def _prepare_c(nl, name, load_rows, f, r, c, cp, rep, levels, half, tm) -> Matrix:
    """:func:`prepare` for the C kernel: weights stored as ``u = level - lmin`` (0..255), or
    for FP4 the codes themselves with the table ``lut`` of their levels."""
    ngw = cp // f.group_size
    nt = -(-r // TILE)
    sref = f.shift_ref
    zmax = (1 << f.zero_shift_bits) - 1
    has_zero = f.zero_bits > 0
    lut = None
    if f.fp4:  # the 4-bit code is the stored value; _kern.c looks its level up
        lut = levels.astype(np.int8)
        lmin = 0
        u_of_code = np.arange(16, dtype=np.uint8)
        packed = True
    else:
        lmin = int(levels.min())
        u_of_code = (levels - lmin).astype(np.uint8)
        packed = int(levels.max()) - lmin < 16
    lines = 4 if packed else 8
    lev = np.empty((nt, cp // ACT_GROUP, lines, TILE * 4), np.uint8)
    msh = np.zeros((nt, ngw, TILE), scale_dtype(f))
    zsh = np.zeros((nt, ngw if has_zero else 1, TILE), zero_dtype(f))
    ka = np.zeros(nt * TILE, np.int32)
    kb = np.zeros(nt * TILE, np.int32)
    worst = 0
    for lo in range(0, r, load_rows):
        hi = min(r, lo + load_rows)
        n = -(-(hi - lo) // TILE) * TILE
        t0, t1 = lo // TILE, lo // TILE + n // TILE
        q = nl.matrix_rows(name, lo, hi)
        nl.release(name)
        u = np.zeros((n, cp), np.uint8)
        u[: hi - lo] = u_of_code[_pad_cols(q.codes, cp)]
        lev[t0:t1] = tiles(u, packed)
        del u
        mshift = np.zeros((n, ngw), I64)
        mshift[: hi - lo] = _pad_cols(step_factors(q, sref, lo), ngw)
        worst = max(worst, int(mshift.sum(axis=1).max()))
        msh[t0:t1] = row_tiles(mshift.astype(msh.dtype))
        ka[lo:hi] = sref - q.scale_e.astype(I64)
        if has_zero:
            z = np.zeros((n, ngw), I64)
            z[: hi - lo] = q.zero_m.astype(I64) << (zmax - q.zero_s.astype(I64))
            zsh[t0:t1] = row_tiles(z.astype(zsh.dtype))
            kb[lo:hi] = zmax - q.zero_e.astype(I64)
        del q
    _check_bound(name, worst, f.group_size, int(np.abs(levels).max()))
    kt = None if tm is None else np.full(nt * TILE, tm, np.int32)  # tm < 2^24
    return Matrix(name, r, c, cp, lev, packed, 1, lmin, msh, zsh, ka, kb, has_zero, rep, TILE,
                  lmin, half, kt, lut)  # fmt: skip


def stack(mats: list[Matrix], biases: list[np.ndarray | None]) -> tuple[Matrix, np.ndarray | None]:
    """Matrices of the same storage (:meth:`Matrix.same_storage`) as one, their row blocks one
    after the other (each padded to ``BLOCK_ROWS``), and their biases (int64, or None when
    none has one). The members' arrays become views of the stacked ones (no second copy)."""
    m0 = mats[0]
    br = m0.tile
    total = sum(m.lev.shape[0] for m in mats) * br

    def rows_padded(arrs, dtype, width=None):
        shape = (total,) if width is None else (total, width)
        o = np.zeros(shape, dtype)
        r = 0
        for m, a in zip(mats, arrs, strict=True):
            o[r : r + m.rows] = a
            r += m.lev.shape[0] * br
        return o

    bias = None
    if any(b is not None for b in biases):
        bias = rows_padded(
            [
                np.zeros(m.rows, I64) if b is None else b.astype(I64)
                for m, b in zip(mats, biases, strict=True)
            ],
            I64,
        )
    st = Matrix(
        "+".join(m.name for m in mats),
        total,
        m0.cols,
        m0.cp,
        np.concatenate([m.lev for m in mats]),
        m0.packed,
        m0.d,
        m0.off,
        np.concatenate([m.msh for m in mats]),
        np.concatenate([m.zsh for m in mats])
        if m0.c
        else rows_padded([m.zsh for m in mats], m0.zsh.dtype, m0.zsh.shape[1]),
        np.concatenate([m.ka for m in mats]) if m0.c else rows_padded([m.ka for m in mats], I64),
        np.concatenate([m.kb for m in mats]) if m0.c else rows_padded([m.kb for m in mats], I64),
        m0.has_zero,
        m0.rep,
        m0.tile,
        m0.lmin,
        m0.half,
        None
        if m0.kt is None
        else np.concatenate([m.kt for m in mats])
        if m0.c
        else rows_padded([m.kt for m in mats], I64),
        m0.lut,
    )
    b = r = 0
    for m in mats:  # the members read their rows of the stack
        nb = m.lev.shape[0]
        m.lev = st.lev[b : b + nb]
        m.msh = st.msh[b : b + nb]
        if m.c:
            m.zsh = st.zsh[b : b + nb]
            m.ka = st.ka[r : r + nb * br]
            m.kb = st.kb[r : r + nb * br]
            if m.kt is not None:
                m.kt = st.kt[r : r + nb * br]
        else:
            m.zsh = st.zsh[r : r + m.rows]
            m.ka = st.ka[r : r + m.rows]
            m.kb = st.kb[r : r + m.rows]
            if m.kt is not None:
                m.kt = st.kt[r : r + m.rows]
        b += nb
        r += nb * br
    return st, bias
