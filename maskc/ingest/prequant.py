"""Pre-quantized checkpoints: GPTQ, AWQ (GEMM), compressed-tensors ``pack-quantized`` and
MXFP4 (fused experts, :mod:`maskc.ingest.mxfp4`).

Reads one quantized linear layer at a time from a :class:`~maskc.safetensors_io.SafetensorsFile`
into integer codes, per-group scales and integer zero points (:class:`Imported`), checks every
shape, dtype and range (:class:`~maskc.errors.InputError`, exit 3, naming the tensor), computes
the format's own dequantization ``scale * (code - zero)`` (:func:`dequantize`) and maps the
layer onto the ROM format exactly (:func:`to_rom`) or refuses it. The formats, their sources and
the mapping are described in docs/import-design.md.

The ``quantization_config`` is read by :mod:`maskc.ingest.qconfig` (its names are re-exported
here). Codes and zeros are kept unsigned for every format: ``w = scale * (code - zero)`` with
``code`` in ``[0, 2**bits)``; compressed-tensors' signed values are stored with the offset
``2**(bits-1)`` already, and GPTQ v1's ``zero - 1`` is undone here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from maskc.errors import InputError, UnsupportedError
from maskc.ingest import mxfp4
from maskc.ingest.qconfig import (  # noqa: F401 - the schema's names, also used from here
    METHODS,
    Scheme,
    _suffix,
    modules,
    parse_config,
)
from maskc.romformat import EXP_MAX, EXP_MIN, QuantFormat, QuantTensor, from_arrays

#: AutoAWQ's order of the 8 output columns in one int32 word: nibble n is column AWQ_ORDER[n]
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
#: the ROM code widths an imported layer may have
ROM_BITS = (3, 4, 8)
SCALE_DTYPES = ("F16", "BF16", "F32")
_MAX_DIM = 1 << 24


@dataclass
class Imported:
    """One quantized linear layer as the checkpoint defines it: ``w = scale * (code - zero)``."""

    name: str  #: the Hugging Face weight's name, ``PREFIX.weight``
    shape: tuple[int, int]  #: ``[R, C]`` = ``[out, in]``
    bits: int
    group_size: int  #: ``C`` for per-channel checkpoints
    codes: np.ndarray | None  #: uint8 ``[R, C]``, values in ``[0, 2**bits)`` (None: not read)
    scale: np.ndarray  #: float64 ``[R, NG]`` (exact copies of the stored scales), >= 0
    zero: np.ndarray  #: int16 ``[R, NG]``
    g_idx: np.ndarray | None  #: int64 ``[C]``; None: ``i // group_size``
    method: str

    def groups(self) -> np.ndarray:
        """The group of every input column, int64 ``[C]``."""
        if self.g_idx is not None:
            return self.g_idx
        return np.arange(self.shape[1], dtype=np.int64) // self.group_size

    def trivial_groups(self) -> bool:
        """Each group is ``group_size`` consecutive columns (no activation-order permutation)."""
        return self.g_idx is None or bool(
            np.array_equal(self.g_idx, np.arange(self.shape[1]) // self.group_size)
        )


def _words(n: int, bits: int) -> int:
    """int32 words holding ``n`` codes of ``bits`` bits (3-bit: whole groups of 3 words)."""
    if bits == 3:
        return -(-n // 32) * 3
    return -(-n * bits // 32)


def _unpack(words: np.ndarray, bits: int, n: int) -> np.ndarray:
    """uint8 ``[..., n]``: codes stored least significant first in a little-endian stream of
    int32 ``words`` along the last axis (code ``j`` at stream bits ``bits*j``)."""
    u = np.ascontiguousarray(words).view(np.uint32)
    if 32 % bits == 0:
        shifts = np.arange(0, 32, bits, dtype=np.uint32)
        out = (u[..., None] >> shifts) & np.uint32((1 << bits) - 1)
        return out.reshape(*u.shape[:-1], -1)[..., :n].astype(np.uint8)
    # 3 bits: 32 codes in each 3 words (96 bits); read the stream bit by bit
    le = u.astype("<u4").view(np.uint8)
    stream = np.unpackbits(le, axis=-1, bitorder="little")
    stream = stream.reshape(*u.shape[:-1], -1, bits)
    weights = (1 << np.arange(bits)).astype(np.uint8)
    return (stream * weights).sum(axis=-1, dtype=np.uint8)[..., :n]


class _Reader:
    def __init__(self, st, prefix: str, where: str) -> None:
        self.st, self.prefix, self.where = st, prefix, where

    def info(self, suffix: str, dtypes: tuple[str, ...], ndim: int, optional: bool = False):
        name = self.prefix + suffix
        info = self.st.tensors.get(name)
        if info is None:
            if optional:
                return None
            raise InputError(f"{self.where}: tensor {name!r} is missing (the layer is quantized)")
        if info.dtype not in dtypes:
            raise InputError(
                f"{self.where}: tensor {name!r} must be {'/'.join(dtypes)}, found {info.dtype}"
            )
        if len(info.shape) != ndim or not all(0 < d <= _MAX_DIM for d in info.shape):
            raise InputError(
                f"{self.where}: tensor {name!r} must have {ndim} dimensions in [1, 2^24], got "
                f"shape {list(info.shape)}"
            )
        return info

    def shape(self, suffix: str, info, want: tuple[int, ...]) -> None:
        if tuple(info.shape) != want:
            raise InputError(
                f"{self.where}: tensor {self.prefix + suffix!r} has shape {list(info.shape)}, "
                f"expected {list(want)} for this layer"
            )

    def read(self, suffix: str) -> np.ndarray:
        return self.st.read_raw(self.prefix + suffix)


def read_module(st, prefix: str, scheme: Scheme, where: str, codes: bool = True) -> Imported:
    """Layer ``prefix`` of safetensors file ``st`` (named ``where`` in messages), unpacked.
    ``codes=False`` reads only the scales, zero points and ``g_idx`` (``codes`` is None): all
    :func:`rom_format` needs, for ``compile --plan-only``."""
    _check_bits(scheme, where)
    rd = _Reader(st, prefix, where)
    if scheme.method == "gptq":
        return _read_gptq(rd, scheme, codes)
    if scheme.method == "awq":
        return _read_awq(rd, scheme, codes)
    return _read_compressed(rd, scheme, codes)


#: the tensors of one quantized module, by format (besides an unquantized ``PREFIX.bias``)
MODULE_SUFFIXES = {
    "gptq": (".qweight", ".qzeros", ".scales", ".g_idx"),
    "awq": (".qweight", ".qzeros", ".scales"),
    "compressed-tensors": (
        ".weight_packed",
        ".weight_scale",
        ".weight_zero_point",
        ".weight_shape",
        ".weight_g_idx",
    ),
    "mxfp4": mxfp4.SUFFIXES,
}


def module_shape(st, prefix: str, scheme: Scheme, where: str) -> tuple[int, int]:
    """``[out, in]`` of layer ``prefix`` from its headers (compressed-tensors: its 2-value
    ``weight_shape``), without reading the codes; the other tensors are checked by
    :func:`read_module`."""
    _check_bits(scheme, where)
    rd = _Reader(st, prefix, where)
    if scheme.method == "compressed-tensors":
        si = rd.info(".weight_shape", ("I32", "I64"), 1)
        rd.shape(".weight_shape", si, (2,))
        r, c = (int(v) for v in rd.read(".weight_shape"))
        return r, c
    qw = rd.info(".qweight", ("I32",), 2)
    if scheme.method == "awq":
        return qw.shape[1] * 8, qw.shape[0]
    b = scheme.bits
    if (qw.shape[0] * 32) % b or (b == 3 and qw.shape[0] % 3):
        raise InputError(
            f"{where}: tensor {prefix + '.qweight'!r}: {qw.shape[0]} rows "
            f"do not pack whole {b}-bit input columns"
        )
    return qw.shape[1], qw.shape[0] * 32 // b


def _check_bits(scheme: Scheme, where: str) -> None:
    b = scheme.bits
    allowed = (4,) if scheme.method == "awq" else (2, 3, 4, 8)
    if b not in allowed:
        raise UnsupportedError(
            f"{where}: {scheme.method} with {b} bits is not supported "
            f"({', '.join(map(str, allowed))})"
        )


def _group_count(c: int, scheme: Scheme) -> tuple[int, int]:
    g = c if scheme.group_size == -1 else scheme.group_size
    return g, -(-c // g)


def _scales(rd: _Reader, suffix: str, info) -> np.ndarray:
    s = rd.read(suffix).astype(np.float64)
    bad = ~np.isfinite(s) | (s < 0)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(
            f"{rd.where}: tensor {rd.prefix + suffix!r} holds {float(s[idx])!r} at {list(idx)}; "
            "scales must be finite and not negative"
        )
    return s


def _g_idx(rd: _Reader, suffix: str, c: int, ng: int) -> np.ndarray | None:
    info = rd.info(suffix, ("I32", "I64"), 1, optional=True)
    if info is None:
        return None
    rd.shape(suffix, info, (c,))
    g = rd.read(suffix).astype(np.int64)
    if g.min() < 0 or g.max() >= ng:
        raise InputError(
            f"{rd.where}: tensor {rd.prefix + suffix!r} has group indices outside [0, {ng})"
        )
    return g


def _read_gptq(rd: _Reader, scheme: Scheme, with_codes: bool) -> Imported:
    b = scheme.bits
    qw = rd.info(".qweight", ("I32",), 2)
    rows_packed, r = qw.shape
    if (rows_packed * 32) % b or (b == 3 and rows_packed % 3):
        raise InputError(
            f"{rd.where}: tensor {rd.prefix + '.qweight'!r}: {rows_packed} rows "
            f"do not pack whole {b}-bit input columns"
        )
    c = rows_packed * 32 // b
    g, ng = _group_count(c, scheme)
    sc = rd.info(".scales", SCALE_DTYPES, 2)
    rd.shape(".scales", sc, (ng, r))
    qz = rd.info(".qzeros", ("I32",), 2)
    rd.shape(".qzeros", qz, (ng, _words(r, b)))
    g_idx = _g_idx(rd, ".g_idx", c, ng)
    codes = _unpack(rd.read(".qweight").T, b, c) if with_codes else None  # [R, C]
    zero = _unpack(rd.read(".qzeros"), b, r).T.astype(np.int16)  # [R, NG]
    if scheme.zero_plus_one:
        zero += 1
    scale = _scales(rd, ".scales", sc).T
    return Imported(
        rd.prefix + ".weight",
        (r, c),
        b,
        g,
        None if codes is None else np.ascontiguousarray(codes),
        np.ascontiguousarray(scale),
        np.ascontiguousarray(zero),
        g_idx,
        "gptq",
    )


def _awq_unorder(cols: np.ndarray) -> np.ndarray:
    """Undo AutoAWQ's interleaving along the last axis (a multiple of 8 columns)."""
    order = np.asarray(AWQ_ORDER)
    out = np.empty_like(cols)
    v = cols.reshape(*cols.shape[:-1], -1, 8)
    out.reshape(v.shape)[..., order] = v
    return out


def _read_awq(rd: _Reader, scheme: Scheme, with_codes: bool) -> Imported:
    sc = rd.info(".scales", SCALE_DTYPES, 2)
    r = sc.shape[1]
    qw = rd.info(".qweight", ("I32",), 2)
    c = qw.shape[0]
    g, ng = _group_count(c, scheme)
    rd.shape(".scales", sc, (ng, r))
    if r % 8:
        raise InputError(
            f"{rd.where}: tensor {rd.prefix + '.scales'!r}: {r} output columns "
            "are not a multiple of 8 (AWQ packs 8 per word)"
        )
    rd.shape(".qweight", qw, (c, r // 8))
    qz = rd.info(".qzeros", ("I32",), 2)
    rd.shape(".qzeros", qz, (ng, r // 8))
    codes = _awq_unorder(_unpack(rd.read(".qweight"), 4, r)).T if with_codes else None
    zero = _awq_unorder(_unpack(rd.read(".qzeros"), 4, r)).T.astype(np.int16)
    scale = _scales(rd, ".scales", sc).T
    return Imported(
        rd.prefix + ".weight",
        (r, c),
        4,
        g,
        None if codes is None else np.ascontiguousarray(codes),
        np.ascontiguousarray(scale),
        np.ascontiguousarray(zero),
        None,
        "awq",
    )


def _read_compressed(rd: _Reader, scheme: Scheme, with_codes: bool) -> Imported:
    b = scheme.bits
    if 32 % b:
        raise UnsupportedError(
            f"{rd.where}: compressed-tensors pack-quantized with {b} bits is not supported "
            "(2, 4, 8)"
        )
    si = rd.info(".weight_shape", ("I32", "I64"), 1)
    rd.shape(".weight_shape", si, (2,))
    r, c = (int(v) for v in rd.read(".weight_shape"))
    if not (0 < r <= _MAX_DIM and 0 < c <= _MAX_DIM):
        raise InputError(
            f"{rd.where}: tensor {rd.prefix + '.weight_shape'!r} holds [{r}, {c}]; "
            "each must be in [1, 2^24]"
        )
    g, ng = _group_count(c, scheme)
    wp = rd.info(".weight_packed", ("I32",), 2)
    rd.shape(".weight_packed", wp, (r, _words(c, b)))
    sc = rd.info(".weight_scale", SCALE_DTYPES, 2)
    rd.shape(".weight_scale", sc, (r, ng))
    if scheme.sym:
        if rd.info(".weight_zero_point", ("I32", "I8"), 2, optional=True) is not None:
            raise InputError(
                f"{rd.where}: tensor {rd.prefix + '.weight_zero_point'!r} is "
                "present but the config says symmetric"
            )
        zero = np.full((r, ng), 1 << (b - 1), dtype=np.int16)
    else:
        zp = rd.info(".weight_zero_point", ("I32",), 2)
        rd.shape(".weight_zero_point", zp, (_words(r, b), ng))
        zero = _unpack(rd.read(".weight_zero_point").T, b, r).T.astype(np.int16)
    codes = _unpack(rd.read(".weight_packed"), b, c) if with_codes else None
    g_idx = _g_idx(rd, ".weight_g_idx", c, ng)
    scale = _scales(rd, ".weight_scale", sc)
    return Imported(
        rd.prefix + ".weight",
        (r, c),
        b,
        g,
        codes,
        scale,
        np.ascontiguousarray(zero),
        g_idx,
        "compressed-tensors",
    )


#: the roles whose matrix reads an elementwise product (SwiGLU(gate, up)): a desc_act
#: permutation of its input columns folds into the rows of the two matrices that produce it
FOLD_ROLES = {
    "down_proj": ("gate_proj", "up_proj"),
    "expert_down_proj": ("expert_gate_proj", "expert_up_proj"),
    "shared_down_proj": ("shared_gate_proj", "shared_up_proj"),
}


def fold_perm(g_idx: np.ndarray, group_size: int) -> np.ndarray | None:
    """The input-column order that makes an activation-order ``g_idx`` consecutive groups of
    ``group_size`` (``perm``: new column ``j`` is old column ``perm[j]``, and ``g_idx[perm] ==
    j // group_size``); None when ``g_idx`` is not such a permutation (a group of another
    size)."""
    perm = np.argsort(g_idx, kind="stable")
    want = np.arange(len(g_idx)) // group_size
    return perm if np.array_equal(g_idx[perm], want) else None


def _group_sizes(g_idx: np.ndarray, ng: int) -> str:
    """The smallest and largest of the ``ng`` groups' sizes in ``g_idx``, e.g. ``"16..48"``."""
    counts = np.bincount(g_idx, minlength=ng)
    lo, hi = int(counts.min()), int(counts.max())
    return str(lo) if lo == hi else f"{lo}..{hi}"


def permute(t: Imported | mxfp4.MxImported, axis: str, perm: np.ndarray):
    """``t`` with its input columns (``axis`` ``"cols"``: codes and ``g_idx``) or its output
    rows (``"rows"``: codes, scales and zero points) in the order ``perm`` (a desc_act fold,
    docs/import-design.md): the same matrix, its rows or columns renumbered."""
    take = (lambda a: a[:, perm]) if axis == "cols" else (lambda a: a[perm])
    codes = None if t.codes is None else np.ascontiguousarray(take(t.codes))
    if isinstance(t, mxfp4.MxImported):
        return dataclasses.replace(t, codes=codes, scales=np.ascontiguousarray(t.scales[perm]))
    if axis == "cols":
        return dataclasses.replace(t, codes=codes, g_idx=t.groups()[perm])
    return dataclasses.replace(
        t,
        codes=codes,
        scale=np.ascontiguousarray(t.scale[perm]),
        zero=np.ascontiguousarray(t.zero[perm]),
    )


def dequantize(t: Imported | mxfp4.MxImported, rows_per_block: int = 4096) -> np.ndarray:
    """float32 ``[R, C]``: ``scale * (code - zero)`` computed exactly (float64; at most 33
    significant bits: a float32 scale times ``|code - zero| <= 2**8``) and rounded once (an
    MXFP4 expert: :func:`maskc.ingest.mxfp4.dequantize`)."""
    if isinstance(t, mxfp4.MxImported):
        return mxfp4.dequantize(t)
    r, c = t.shape
    gi = t.groups()
    out = np.empty((r, c), dtype=np.float32)
    for a in range(0, r, rows_per_block):
        z = min(a + rows_per_block, r)
        q = t.codes[a:z].astype(np.float64) - t.zero[a:z][:, gi]
        out[a:z] = t.scale[a:z][:, gi] * q
    return out


def _split(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``v = m * 2**k`` exactly with ``m`` an odd int64 (0 where ``v == 0``); and bitlen(|m|)."""
    f, e = np.frexp(v)
    m = np.rint(f * 2.0**53).astype(np.int64)  # exact: f has 53 significant bits
    k = e.astype(np.int64) - 53
    nz = m != 0
    low = np.where(nz, m & -m, 1)  # lowest set bit, a power of two <= 2**53
    tz = np.frexp(low.astype(np.float64))[1].astype(np.int64) - 1
    m = np.where(nz, m >> tz, 0)
    k = np.where(nz, k + tz, 0)
    blen = np.where(nz, np.frexp(np.abs(m).astype(np.float64))[1], 0).astype(np.int64)
    return m, k, blen


def _fit(v: np.ndarray, shift_bits: int, signed: bool):
    """The narrowest mantissa for ``v [R, NG]`` with ``shift_bits`` shift bits, and the fields.

    Returns ``(mantissa_bits, m, s, e, worst_row)``; ``mantissa_bits`` is None when a row
    cannot be held at all (its values span beyond the shift range and the int8 exponent)."""
    m, k, blen = _split(v)
    nz = m != 0
    smax = (1 << shift_bits) - 1
    big = np.iinfo(np.int64).max
    kmin = np.where(nz, k, big).min(axis=1)
    e = np.where(kmin == big, 0, np.minimum(kmin + smax, EXP_MAX))
    e = np.maximum(e, EXP_MIN)
    d = k - e[:, None]
    a = np.where(nz, np.maximum(d, 0), 0)
    s = np.where(nz, np.maximum(-d, 0), 0)
    need = np.where(nz, blen + a, 0).max(axis=1) + (1 if signed else 0)
    worst = int(np.argmax(need))
    if (s > smax).any():
        return None, None, None, None, int(np.argwhere(s > smax)[0][0])
    field = np.where(nz, m << a, 0)
    return int(need.max(initial=0)), field, s, e, worst


def _encode(v: np.ndarray, signed: bool, name: str, what: str):
    """The cheapest exact (mantissa bits, shift bits, m, s, e) for ``v``, or UnsupportedError."""
    best, worst = None, 0
    for sb in range(5):
        mb, m, s, e, w = _fit(v, sb, signed)
        if mb is None or mb > 16:
            worst = w
            continue
        mb = max(mb, 2)
        if best is None or mb + sb < best[0] + best[1]:
            best = (mb, sb, m, s, e)
    if best is None:
        row = np.abs(v[worst][v[worst] != 0])
        lo, hi = np.frexp(row.min())[1] - 1, np.frexp(row.max())[1] - 1
        raise UnsupportedError(
            f"{name}: row {worst}'s {what} span 2^{lo}..2^{hi}, more than the ROM's 16-bit "
            "mantissa and 4-bit shift hold exactly; maskc refuses to requantize an imported "
            "tensor (compile the float model instead)"
        )
    return best


#: the largest ROM group (romformat's)
MAX_ROM_GROUP = 4096


def rom_group_size(t: Imported, tile_rows: dict[int, int] | None = None) -> int | None:
    """The ROM group size for ``t``: the largest multiple of 32, at most 4096, such that every
    ROM group lies inside one checkpoint group (it divides the checkpoint's group size; any
    size for a per-channel layer, whose group is the whole row) and, given ``tile_rows``
    (weights per tile row of the fabric, by code bits), a tile row holds whole ROM groups.
    None when there is none."""
    per_channel = t.group_size >= t.shape[1]
    row = (tile_rows or {}).get(t.bits)
    top = MAX_ROM_GROUP if per_channel else min(t.group_size, MAX_ROM_GROUP)
    if row is not None:
        top = min(top, row)
    elif per_channel:  # no fabric: one group per row, or the fewest that cover it
        top = min(-(-t.shape[1] // 32) * 32, MAX_ROM_GROUP)
    for g in range(top // 32 * 32, 0, -32):
        if (per_channel or t.group_size % g == 0) and (row is None or row % g == 0):
            return g
    return None


def to_rom(t: Imported | mxfp4.MxImported, tile_rows: dict[int, int] | None = None) -> QuantTensor:
    """``t`` in the ROM format with the same value for every weight, or UnsupportedError
    naming the tensor and what does not fit (see docs/import-design.md); an MXFP4 expert in
    the ``mxfp4`` format (:func:`maskc.ingest.mxfp4.to_rom`). ``tile_rows``: the fabric's
    weights per tile row by code bits, which the ROM group must divide (None: any fabric's
    rows are taken to hold the checkpoint's groups)."""
    if isinstance(t, mxfp4.MxImported):
        return mxfp4.to_rom(t)
    fmt, arrays = _rom_groups(t, tile_rows)
    r, c = t.shape
    arrays["codes"] = np.zeros((r, fmt.padded_cols(c)), dtype=np.uint8)
    arrays["codes"][:, :c] = t.codes
    return from_arrays(t.name, (r, c), fmt, arrays, method="imported")


def rom_format(t: Imported, tile_rows: dict[int, int] | None = None) -> QuantFormat:
    """The ROM format :func:`to_rom` gives ``t``, from its scales, zero points and ``g_idx``
    alone (``t.codes`` may be None), with the same refusals."""
    return _rom_groups(t, tile_rows)[0]


def _rom_groups(
    t: Imported, tile_rows: dict[int, int] | None = None
) -> tuple[QuantFormat, dict[str, np.ndarray]]:
    """The ROM format of ``t`` and every field but ``codes`` (UnsupportedError naming the
    tensor when there is none)."""
    n, b = t.name, t.bits
    _r, c = t.shape
    if b not in ROM_BITS:
        raise UnsupportedError(
            f"{n}: {b}-bit codes have no ROM format (3, 4 or 8 bits); maskc refuses to "
            "requantize an imported tensor (compile the float model instead)"
        )
    if not t.trivial_groups():
        if fold_perm(t.g_idx, t.group_size) is None:
            sizes = _group_sizes(t.g_idx, t.scale.shape[1])
            raise UnsupportedError(
                f"{n}: g_idx does not give every group {t.group_size} input columns (group "
                f"sizes {sizes}); the ROM's groups are {t.group_size} "
                "consecutive inputs in some order, so this layer cannot be imported exactly "
                "(compile the float model instead)"
            )
        raise UnsupportedError(
            f"{n}: g_idx is an activation-order (desc_act) permutation; only a "
            "transformer-block matrix takes an input permutation (docs/numerics.md), so this "
            "layer cannot be imported exactly (compile the float model instead)"
        )
    g = rom_group_size(t, tile_rows)
    if g is None:
        if t.group_size % 32:
            raise UnsupportedError(
                f"{n}: group size {t.group_size} is not a multiple of 32, the chip's "
                "activation group; it cannot be imported exactly (compile the float model "
                "instead)"
            )
        row = (tile_rows or {}).get(b)
        raise UnsupportedError(
            f"{n}: no ROM group (a multiple of 32) both divides the checkpoint's group size "
            f"{t.group_size} and the fabric's {row}-weight tile row at {b} bits; it cannot be "
            "imported exactly on this fabric (compile the float model, or choose another "
            "--fabric)"
        )
    ngr = -(-c // g)
    gi = (np.arange(ngr) * g) // t.group_size  # each ROM group lies in checkpoint group gi
    scale = t.scale[:, gi]
    offset = scale * ((1 << (b - 1)) - t.zero[:, gi].astype(np.float64))  # exact: <= 33 bits
    sbits, sshift, sm, ss, se = _encode(scale, False, n, "scales")
    asym = bool(np.any(offset))
    arrays = {
        "levels": (np.arange(1 << b) - (1 << (b - 1))).astype(np.int16),
        "scale_m": sm.astype(np.uint16),
        "scale_s": ss.astype(np.uint8),
        "scale_e": se.astype(np.int8),
    }
    zbits = zshift = 0
    if asym:
        zbits, zshift, zm, zs, ze = _encode(offset, True, n, "offsets (scale * zero)")
        arrays |= {
            "zero_m": zm.astype(np.int16),
            "zero_s": zs.astype(np.uint8),
            "zero_e": ze.astype(np.int8),
        }
    fmt = QuantFormat(
        bits=b,
        group_size=g,
        scale_bits=sbits,
        zero_bits=zbits,
        level_bits=8 if b < 8 else 9,
        scale_shift_bits=sshift,
        zero_shift_bits=zshift,
    )
    return fmt, arrays
