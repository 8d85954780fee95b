"""Reading a netlist: :func:`load_netlist` validates ``BUILD/netlist`` before anything trusts it
(exit 3 naming the field otherwise), so ``verify``, ``inspect``, ``diff-layers`` and ``emulate``
all get the same checks; :class:`Netlist` reads its arrays on demand and reassembles a matrix
from its tiles."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maskc.errors import InputError
from maskc.fabric import Fabric
from maskc.ir import ModelArch
from maskc.netlist.check import check_netlist
from maskc.netlist.constants import CONTRACT, SIGNAL_FRAC, compile_luts
from maskc.netlist.ops import Op, check_dataflow, parse_ops
from maskc.romformat import (
    FIELD,
    FORMAT_KINDS,
    TILE_FIELDS,
    Field,
    QuantFormat,
    QuantTensor,
    fields_of,
)
from maskc.safetensors_io import WRITABLE, SafetensorsFile

FORMAT = "maskc-netlist"
#: 2: codes of 4 bits or fewer nibble-packed ``[n, TR, W // 2]``, 8-byte aligned (memory-mappable);
#: 3: the group fields in the smallest integer type holding their ROM bits (:func:`stored_dtype`)
#: 4: the SRAM plan starts with each die's params region (``sram.dies[].params``; the boot
#: image, maskc/boot.py)
#: 5: every matrix names its routed ``expert`` (null outside a mixture of experts); the ops of
#: mixtures of experts (route, experts, gate_scale) and per-head norms (head_norm)
#: 6: FP4 matrices (``format.kind`` mxfp4/nvfp4, groups of 16, ``NAME/tensor_m``) and input
#: permutations (``matrices[NAME].input_perm``: params key ``NAME.input_perm``); a netlist
#: with neither is written as version 5, byte for byte as before (:func:`version_for`)
VERSION = 6
#: the versions this maskc reads: 2 differs from 3 only in storing every field in its own dtype,
#: 3 from 4 in having no params region (such a build has no boot image: verify refuses it)
READS = (2, 3, 4, 5, 6)
#: the first version that may hold FP4 matrices
FP4_VERSION = 6
DIR = "netlist"
#: Activations are read in groups of this many elements; weight groups must be multiples.
ACT_GROUP = 32


def group_ok(fmt: QuantFormat) -> bool:
    """Whether a matrix's weight groups fit the activation groups: a multiple of
    :data:`ACT_GROUP`, or (FP4: nvfp4's 16) a divisor of it."""
    g = fmt.group_size
    return g % ACT_GROUP == 0 or (fmt.fp4 and ACT_GROUP % g == 0)


def version6_feature(matrices: dict) -> str | None:
    """The first version-6 feature these ``matrices`` entries use (an FP4 format, an input
    permutation), or None."""
    for m in matrices.values():
        if m["format"].get("kind", "int") != "int":
            return "FP4 matrices"
        if "input_perm" in m:
            return "input permutations"
    return None


def version_for(matrices: dict) -> int:
    """The version a netlist with these ``matrices`` entries is written as: 6 when one is FP4
    or has an input permutation (older readers refuse it by its version), else 5."""
    return VERSION if version6_feature(matrices) else FP4_VERSION - 1


#: Matrices of at most this many bits per code store two codes per byte (docs/netlist.md)
PACK_BITS = 4


def packed_width(bits: int, w: int) -> int:
    """Bytes per tile row of ``NAME/codes`` for ``bits``-bit codes and ``w`` weights per row."""
    return w // 2 if bits <= PACK_BITS else w


def stored_dtype(fd: Field, fmt: QuantFormat) -> np.dtype:
    """The dtype a tiles file stores field ``fd`` of a matrix of format ``fmt`` in: a group
    field of at most 8 ROM bits in one byte (int8 when signed, else uint8), every other field in
    its own dtype (:data:`maskc.romformat.FIELDS`). Readers get the field's dtype back
    (:meth:`Netlist.tile_arrays` widens on access)."""
    if fd.axis == "group" and fd.rom_bits(fmt) <= 8:
        return np.dtype(np.int8 if fd.signed else np.uint8)
    return fd.dtype


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """uint8 ``[..., W]`` codes -> the stored ``[..., W // 2]`` (cell ``2j`` in the low nibble,
    ``2j + 1`` in the high one) when ``bits <= 4``; 8-bit codes are stored as they are."""
    codes = np.asarray(codes, np.uint8)
    if bits > PACK_BITS:
        return codes
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def unpack_codes(packed: np.ndarray, w: int) -> np.ndarray:
    """The stored codes ``[..., W // 2]`` (or ``[..., W]``: 8-bit, returned as a copy) -> uint8
    ``[..., W]``, one code per byte."""
    p = np.asarray(packed)
    if p.shape[-1] == w:
        return np.array(p, np.uint8)
    out = np.empty((*p.shape[:-1], w), np.uint8)
    out[..., 0::2] = p & 15
    out[..., 1::2] = p >> 4
    return out


def packed_codes(src, name: str) -> np.ndarray:
    """The stored codes of matrix ``name`` as a read-only memory map (no copy): uint8
    ``[n, TR, W // 2]`` (``[n, TR, W]`` for 8-bit codes). ``src`` is a loaded :class:`Netlist`
    or the path of a tiles file."""
    if isinstance(src, Netlist):
        return src.packed_codes(name)
    return _memmap(SafetensorsFile(src), f"{name}/codes")


def _memmap(f: SafetensorsFile, key: str) -> np.ndarray:
    info = f.tensors.get(key)
    if info is None:
        raise InputError(f"{f.path}: no tile array {key!r}")
    if info.dtype not in WRITABLE:
        raise InputError(f"{f.path}: tile array {key!r} has dtype {info.dtype}")
    dt = WRITABLE[info.dtype]
    if info.nbytes == 0:
        return np.zeros(info.shape, dt)
    return np.memmap(f.path, dtype=dt, mode="r", offset=info.begin, shape=info.shape)


class TileCodes:
    """The codes of a matrix's tiles, unpacked on access: ``codes[i]`` (or a slice of tiles,
    with more indices after it) reads and unpacks only those tiles of the memory map."""

    def __init__(self, packed: np.ndarray, w: int) -> None:
        self.packed, self.w = packed, w
        self.shape = (*packed.shape[:-1], w)
        self.dtype = np.dtype(np.uint8)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx):
        rest = ()
        if isinstance(idx, tuple):
            idx, rest = idx[0], idx[1:]
        out = unpack_codes(self.packed[idx], self.w)
        if not rest:
            return out
        return out[rest] if isinstance(idx, int | np.integer) else out[(slice(None), *rest)]

    def __array__(self, dtype=None, copy=None):
        out = unpack_codes(self.packed, self.w)
        return out if dtype is None else out.astype(dtype)


class TileField:
    """A per-tile field stored narrower than its dtype (:func:`stored_dtype`), widened on
    access: ``field[i]`` (or any index) reads only those elements of the memory map."""

    def __init__(self, stored: np.ndarray, dtype: np.dtype) -> None:
        self.stored, self.dtype, self.shape = stored, np.dtype(dtype), stored.shape

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx):
        return np.asarray(self.stored[idx]).astype(self.dtype)

    def __array__(self, dtype=None, copy=None):
        out = np.asarray(self.stored).astype(self.dtype)
        return out if dtype is None else out.astype(dtype)


def tiles_file(layer: int | None) -> str:
    return "tiles/global.safetensors" if layer is None else f"tiles/layer-{layer:03d}.safetensors"


@dataclass
class Netlist:
    """An opened, validated netlist: ``doc`` is netlist.json, arrays are read on demand;
    ``arch``, ``fabric`` and ``ops`` are the typed model architecture, base die and dataflow it
    records."""

    path: Path
    doc: dict
    arch: ModelArch
    fabric: Fabric
    ops: list[Op]
    _files: dict = field(default_factory=dict, repr=False)
    _plans: dict = field(default_factory=dict, repr=False)

    _maps: dict = field(default_factory=dict, repr=False)

    def release(self, name: str) -> None:
        """Unmap matrix ``name``'s tile arrays (the pages read through them stop counting in
        this process's resident memory); they are mapped again when next read."""
        self._maps.pop(name, None)

    @property
    def matrices(self) -> dict:
        return self.doc["matrices"]

    def params(self) -> dict[str, np.ndarray]:
        f = SafetensorsFile(self.path / "params.safetensors")
        return {k: f.read_raw(k) for k in sorted(f.tensors)}

    def input_perm(self, name: str) -> np.ndarray | None:
        """Matrix ``name``'s input permutation (int64 ``[C]``: its column ``j`` reads input
        ``perm[j]``; checked at load), or None."""
        key = self.matrices[name].get("input_perm")
        if key is None:
            return None
        return SafetensorsFile(self.path / "params.safetensors").read_raw(key).astype(np.int64)

    def _file(self, name: str) -> SafetensorsFile:
        file = self.path / self.matrices[name]["file"]
        f = self._files.get(file)
        if f is None:
            f = self._files[file] = SafetensorsFile(file)
        return f

    def packed_codes(self, name: str) -> np.ndarray:
        """Matrix ``name``'s stored codes, a read-only memory map (see :func:`packed_codes`),
        checked against its shape ``[tiles, TR, W // 2]`` (``W`` for 8-bit codes)."""
        m = self.matrices[name]
        tr, w = m["tile_shape"]
        want = (m["tiles"], tr, packed_width(m["format"]["bits"], w))
        p = _memmap(self._file(name), f"{name}/codes")
        if tuple(p.shape) != want:
            raise InputError(
                f"{self.path}: matrix {name}: tile array 'codes' is shaped {list(p.shape)}, "
                f"netlist version {VERSION} stores {list(want)}; recompile"
            )
        return p

    def tile_arrays(self, name: str, keys: tuple[str, ...] | None = None) -> dict:
        """The arrays of matrix ``name`` (``pos``, ``block``, ``levels``, ``codes``, ...), or
        only ``keys`` of them, as read-only memory maps: indexing a tile reads only its bytes.
        ``codes`` is a :class:`TileCodes` (unpacked one code per byte on access), a field stored
        narrower than its dtype a :class:`TileField` (widened on access)."""
        f = self._file(name)
        fmt = QuantFormat.from_json(
            self.matrices[name]["format"], f"{self.path}: {name}", FORMAT_KINDS
        )
        out: dict = {}
        for k in keys or ("pos", "block", "levels", "tensor_m", *TILE_FIELDS):
            key = f"{name}/{k}"
            if key not in f.tensors:
                continue
            if k == "codes":
                out[k] = TileCodes(self.packed_codes(name), self.matrices[name]["tile_shape"][1])
                continue
            out[k] = a = _memmap(f, key)
            fd = FIELD.get(k)
            if fd is None or fd.axis in ("level", "tensor"):
                continue
            want = stored_dtype(fd, fmt) if self.doc["version"] >= 3 else fd.dtype
            if a.dtype != want:
                raise InputError(
                    f"{self.path}: matrix {name}: tile array {k!r} is {a.dtype}, netlist "
                    f"version {self.doc['version']} stores {want}; recompile"
                )
            if want != fd.dtype:
                out[k] = TileField(a, fd.dtype)
        return out

    def matrix(self, name: str, rows: tuple[int, int] | None = None) -> QuantTensor:
        """Matrix ``name`` reassembled from its tiles, validated (every field, and the tiles
        covering the matrix exactly once); with ``rows = (a, b)`` only its rows ``a:b`` (see
        :meth:`matrix_rows`)."""
        mapped = name in self._maps
        a, b = (0, self.matrices[name]["shape"][0]) if rows is None else rows
        q = self.matrix_rows(name, a, b)
        if not mapped:
            self.release(name)
        return q

    def matrix_rows(self, name: str, lo: int, hi: int) -> QuantTensor:
        """Rows ``lo:hi`` of matrix ``name`` (a QuantTensor named ``name``, shaped
        ``[hi - lo, cols]``), validated like :meth:`matrix`, reading only the tiles that hold
        those rows from the memory maps: a whole matrix can be read in row blocks in bounded
        memory. The tile placement (every tile inside the matrix, the tiles covering it exactly
        once) is checked once per matrix."""
        plan = self._tile_plan(name)
        fmt, where = plan["fmt"], plan["where"]
        t = self._maps.get(name)
        if t is None:
            t = self._maps[name] = self.tile_arrays(name)
        r, c = self.matrices[name]["shape"]
        if not 0 <= lo < hi <= r:
            raise ValueError(f"rows {lo}:{hi} outside matrix {name} ({r} rows)")
        g = fmt.group_size
        cp = fmt.padded_cols(c)
        ng = cp // g
        per_tile = plan["per_tile"]
        n = hi - lo
        whole = {"weight": (n, cp), "group": (n, ng), "row": (n,)}
        out = {fd.name: np.zeros(whole[fd.axis], t[fd.name].dtype) for fd in per_tile}
        order, starts, blocks = plan["order"], plan["starts"], plan["blocks"]
        # the tiles whose rows meet lo:hi start in (lo - tile rows, hi)
        first = int(np.searchsorted(starts, lo - plan["tile_rows"], side="right"))
        last = int(np.searchsorted(starts, hi, side="left"))
        for i in order[first:last].tolist():
            r0, nr, c0, nc = blocks[i]
            a, b = max(r0, lo), min(r0 + nr, hi)
            if a >= b:
                continue
            k = -(-nc // g)
            g0 = c0 // g
            for fd in per_tile:
                src = t[fd.name][i, a - r0 : b - r0]
                dst = out[fd.name][a - lo : b - lo]
                if fd.axis == "weight":
                    dst[:, c0 : c0 + k * g] = src[:, : k * g]
                elif fd.axis == "group":
                    dst[:, g0 : g0 + k] = src[:, :k]
                elif c0 == 0:  # the row exponents: every tile of a row block holds them
                    dst[:] = src
                elif not np.array_equal(dst, src):
                    raise InputError(f"{where}: tile {i} disagrees on the row exponents {fd.name}")
        levels = None if t.get("levels") is None else np.array(t["levels"])
        tm = None if t.get("tensor_m") is None else np.array(t["tensor_m"])
        q = QuantTensor(name=name, shape=(n, c), fmt=fmt, levels=levels, tensor_m=tm, **out)
        q.validate()
        return q

    def _tile_plan(self, name: str) -> dict:
        """Matrix ``name``'s format and checked tile placement, cached: ``blocks`` ``[r0, nr,
        c0, nc]`` per tile, ``order`` the tiles sorted by first row and ``starts`` those first
        rows."""
        cache = self._plans
        if name in cache:
            return cache[name]
        m = self.matrices[name]
        t = self.tile_arrays(name)
        where = f"{self.path}: matrix {name}"
        fmt = QuantFormat.from_json(m["format"], where, FORMAT_KINDS)
        r, c = m["shape"]
        g = fmt.group_size
        cp = fmt.padded_cols(c)
        ng = cp // g
        tr, w = m["tile_shape"]
        n = m["tiles"]
        per_tile = [fd for fd in fields_of(fmt) if fd.axis not in ("level", "tensor")]
        tile_shape = {"weight": (n, tr, w), "group": (n, tr, w // g), "row": (n, tr)}
        need = {"pos": (n, 3), "block": (n, 4), **{fd.name: tile_shape[fd.axis] for fd in per_tile}}
        for k, shape in need.items():
            if k not in t or tuple(t[k].shape) != shape:
                raise InputError(f"{where}: tile array {k!r} missing or not shaped {list(shape)}")
        blocks = np.asarray(t["block"]).tolist()
        covered = np.zeros((r, ng), bool)
        for i, (r0, nr, c0, nc) in enumerate(blocks):
            if not (
                r0 >= 0
                and 1 <= nr <= tr
                and r0 + nr <= r
                and c0 >= 0
                and 1 <= nc <= w
                and c0 + nc <= c
                and c0 % g == 0
            ):
                raise InputError(f"{where}: tile {i} has an invalid block {[r0, nr, c0, nc]}")
            k = -(-nc // g)
            g0 = c0 // g
            if covered[r0 : r0 + nr, g0 : g0 + k].any():
                raise InputError(f"{where}: tile {i} overlaps another tile")
            covered[r0 : r0 + nr, g0 : g0 + k] = True
        if not covered.all():
            raise InputError(f"{where}: the tiles do not cover the whole matrix")
        _check_acc_bits(where, m, fmt, t, blocks)
        order = np.argsort(np.array([b[0] for b in blocks], np.int64), kind="stable")
        plan = {
            "fmt": fmt,
            "where": where,
            "per_tile": per_tile,
            "blocks": blocks,
            "order": order,
            "starts": np.array([blocks[i][0] for i in order.tolist()], np.int64),
            "tile_rows": tr,
        }
        cache[name] = plan
        return plan


def _check_acc_bits(where: str, m: dict, fmt: QuantFormat, t: dict, blocks: list) -> None:
    """netlist.json's ``acc_bits`` of a matrix: the bits of its worst-case ``|A|`` (docs/
    numerics.md), recomputed from the tiles' step fields as the writer computes it (its
    ``s_bound``, from the level table, is checked at load). Works through the tiles in chunks
    (bounded memory)."""
    g, sref = fmt.group_size, fmt.shift_ref
    rows = np.zeros(m["shape"][0], np.int64)
    blk = np.asarray(blocks, np.int64).reshape(-1, 4)
    tr, ng = m["tile_shape"][0], m["tile_shape"][1] // g
    for a in range(0, len(blk), 256):
        b = min(a + 256, len(blk))
        sm = np.asarray(t["scale_m"][a:b]).astype(np.int64)
        sh = np.clip(sref - np.asarray(t["scale_s"][a:b]).astype(np.int64), 0, sref)
        groups = np.arange(ng)[None, :] < -(-blk[a:b, 3:4] // g)  # the block's groups
        per_row = ((sm << sh) * groups[:, None, :]).sum(axis=2)  # [tiles, TR]
        used = np.arange(tr)[None, :] < blk[a:b, 1:2]  # the block's rows
        np.add.at(rows, (blk[a:b, 0:1] + np.arange(tr)[None, :])[used], per_row[used])
    acc_bits = (int(rows.max(initial=0)) * m["s_bound"]).bit_length() + 1
    if m["acc_bits"] != acc_bits:
        raise InputError(
            f"{where}: acc_bits = {m['acc_bits']} in netlist.json, its tiles' step fields give "
            f"{acc_bits}; recompile"
        )


def _check_matrix_entry(p: Path, name: str, m: object) -> None:
    """A ``matrices`` entry of netlist.json: its format, shapes and tile count well-typed."""
    where = f"{p}: matrix {name}"
    if not isinstance(m, dict):
        raise InputError(f"{where}: must be an object")
    QuantFormat.from_json(m.get("format"), where, FORMAT_KINDS)

    def positive_ints(key: str, n: int | None) -> None:
        v = m.get(key)
        v = [v] if n is None else v
        if not (
            isinstance(v, list)
            and len(v) == (n or 1)
            and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v)
        ):
            want = f"{n} positive integers" if n else "a positive integer"
            raise InputError(f"{where}: field {key!r} must be {want}")

    positive_ints("shape", 2)
    positive_ints("tile_shape", 2)
    positive_ints("tiles", None)
    bits, w = m["format"]["bits"], m["tile_shape"][1]
    if bits <= PACK_BITS and w % 2:
        raise InputError(f"{where}: {w} weights per tile row: {bits}-bit codes are packed in pairs")


def _check_base_die_tables(pf, where: str) -> None:
    """The base die's fixed tables (rsqrt, cos, exp2, sigmoid) are not model data: the copy in
    params.safetensors must be exactly the contract's (docs/numerics.md), or exit 3."""
    for name, want in compile_luts().items():
        t = pf.tensors.get(name)
        if t is None:
            raise InputError(f"{where}: the base die's table {name} is missing; recompile")
        got = pf.read_raw(name)
        if got.shape != want.shape or not np.array_equal(got.astype(np.int64), want):
            raise InputError(
                f"{where}: {name} is not the base die's table (docs/numerics.md): the base die "
                "hard-wires it, a build cannot change it; recompile"
            )


def load_netlist(build_path: Path) -> Netlist:
    """Open ``BUILD/netlist`` and validate its structure, its ops and their dataflow, then
    netlist.json as a whole (:func:`maskc.netlist.check.check_netlist`: every field against the
    others, the fabric and the files beside it); exit 3 naming the field otherwise.

    Call after :func:`maskc.build.open_build` has checked the hashes."""
    root = Path(build_path) / DIR
    p = root / "netlist.json"
    if not p.is_file():
        raise InputError(f"{build_path}: the build has no netlist (recompile with this maskc)")
    from maskc.ingest.config import read_json_file

    doc = read_json_file(p, "netlist/netlist.json", max_bytes=1 << 30)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputError(f"{p}: not a maskc netlist")
    if type(doc.get("version")) is not int or doc["version"] not in READS:
        raise InputError(
            f"{p}: netlist version {doc.get('version')!r}; this maskc reads versions "
            f"{', '.join(map(str, READS))}; recompile"
        )
    num = doc.get("numerics")
    if (
        not isinstance(num, dict)
        or num.get("contract") != CONTRACT
        or num.get("signal_frac") != SIGNAL_FRAC
    ):
        raise InputError(f"{p}: numerics contract differs from version {CONTRACT}; recompile")
    for key in ("architecture", "matrices", "ops", "sram"):
        if key not in doc:
            raise InputError(f"{p}: field {key!r} is missing")
    mats = doc["matrices"]
    if not isinstance(mats, dict) or not isinstance(doc["ops"], list):
        raise InputError(f"{p}: 'matrices' must be an object and 'ops' a list")
    for name, m in mats.items():
        _check_matrix_entry(p, name, m)
    tok = doc.get("tokenizer")
    if tok is not None:
        tf = Path(str(tok.get("file", ""))) if isinstance(tok, dict) else Path("")
        if tf.is_absolute() or ".." in tf.parts or not (root / tf).is_file():
            raise InputError(f"{p}: tokenizer file {tf} is not in the netlist")
    for name, m in mats.items():
        mf = Path(str(m.get("file", "")))
        if mf.is_absolute() or ".." in mf.parts or not (root / mf).is_file():
            raise InputError(f"{p}: matrix {name}: file {m.get('file')!r} is not in the netlist")
    arch = ModelArch.from_json(doc["architecture"], f"{p}: architecture")
    if (arch.moe is not None or arch.qk_norm) and doc.get("version", 0) < 5:
        raise InputError(
            f"{p}: architecture {arch.architecture} needs netlist version 5 (its ops), this "
            f"netlist is version {doc.get('version')}; recompile"
        )
    fabric = Fabric.from_json(doc.get("fabric"), str(p))
    pf = SafetensorsFile(root / "params.safetensors")
    params = {k: v.shape for k, v in pf.tensors.items()}
    _check_base_die_tables(pf, str(p.parent / "params.safetensors"))
    ops = parse_ops(doc["ops"], str(p), mats, params)
    check_dataflow(ops, mats, params, arch, str(p))
    files = check_netlist(p, doc, arch, fabric, ops, pf)
    return Netlist(root, doc, arch, fabric, ops, _files=files)
