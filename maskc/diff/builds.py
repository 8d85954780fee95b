"""The fast path: two build folders compared without decoding a layer file.

A matrix whose tiles file is byte-identical in both builds (the manifests' file hashes, which
:func:`maskc.build.open_build` checks against the files before anything is read) and whose
netlist entry is the same is skipped; the rest are compared on the netlists' ROM content,
which ``maskc verify`` proves equal to the layer files. Nothing rests on an unchecked claim:
the manifests' per-tile hash maps are not used here (``maskc verify`` checks them against the
tiles). Where two tiles hold the
same matrix block in the same format, a stored bit is a via site in both, so vias added/removed
are popcounts of ``B & ~A`` / ``A & ~B`` over the codes and scale fields, vectorized per matrix.
Tiles whose contents moved or changed format are compared cell by cell on their ROM grids. The
metal layer is each tile's configuration bits and used rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskc.diff.tally import POP16, Comparison, count, new_layer, popcount
from maskc.errors import InputError
from maskc.layout.rom import CONFIG_FIELDS, TileRom, config_bits, config_word
from maskc.romformat import QuantFormat, scale_rom_fields


@dataclass
class _Side:
    """One build as diff sees it: its netlist, fabric, the checked sha256 of every file and,
    per tile site ``T<die>_<x>_<y>``, which matrix tile it holds."""

    path: Path
    nl: object
    fabric: object
    files: dict  # relative path -> sha256, each checked against its file by open_build
    sites: dict  # tile name -> (matrix, index)

    def tiles_sha(self, name: str) -> str | None:
        """The checked sha256 of the tiles file holding matrix ``name``."""
        entry = self.files.get(f"netlist/{self.nl.matrices[name]['file']}")
        return entry.get("sha256") if isinstance(entry, dict) else None


def _open_build(path: Path) -> _Side:
    from maskc.build import open_build
    from maskc.layout import tile_name
    from maskc.netlist import load_netlist

    b = open_build(path)  # every file's hash: a corrupt build is exit 5
    if "layers/index.json" not in b.manifest["files"]:
        raise InputError(f"{b.path}: the build has no layers/ (recompile it with this maskc)")
    nl = load_netlist(b.path)
    sites = {}
    for name in nl.matrices:
        for i, pos in enumerate(_small(nl, name, "pos").tolist()):
            sites[tile_name(pos)] = (name, i)
    return _Side(b.path, nl, nl.fabric, b.manifest["files"], sites)


def _small(nl, name: str, key: str) -> np.ndarray:
    """One small array (``pos``, ``block``) of a matrix's tiles, without reading the codes."""
    return nl.tile_arrays(name, (key,))[key]


def diff_builds(pa: Path, pb: Path, progress=None) -> Comparison:
    """Build folders ``pa`` and ``pb`` (every file's hash checked first), both layers."""
    sa, sb = _open_build(pa), _open_build(pb)
    if sa.nl.doc["fabric"] != sb.nl.doc["fabric"]:
        return Comparison(False, sa.fabric.name, sb.fabric.name, {})
    if progress:
        progress.start("comparing the via layers", len(sb.sites))
    layers = {"via": _via_layer(sa, sb, progress), "metal": _metal_layer(sa, sb)}
    sites = tuple(sorted(set(sa.sites) | set(sb.sites)))
    boot = _boot_changed(sa.nl, sb.nl)
    from maskc.layout.tiles import site_owners

    info = site_owners(sb.nl)
    info |= {k: v for k, v in site_owners(sa.nl).items() if k not in info}
    return Comparison(True, sa.fabric.name, sb.fabric.name, layers, sb.fabric, sites, boot, info)


def _boot_changed(na, nb) -> tuple[str, ...]:
    """The SRAM boot image entries (maskc/boot.py) whose place or value differs between the
    two netlists (which ``maskc verify`` proves equal to each build's boot image)."""
    from maskc.boot import netlist_layout, netlist_values

    def entries(nl) -> dict:
        vals = netlist_values(nl)
        return {
            (d, e.name): (e.offset, e.dtype, vals[e.name].tobytes())
            for d, die in enumerate(netlist_layout(nl))
            for e in die
        }

    ea, eb = entries(na), entries(nb)
    return tuple(sorted({n for k, n in set(ea) | set(eb) if ea.get((k, n)) != eb.get((k, n))}))


# -- the via layer from the netlists ------------------------------------------------------------


def _field_masks(meta: dict) -> list[tuple[str, int]]:
    """(field, width) of everything a tile's scale ROM stores besides the level table: the
    group fields and the row exponents (:func:`maskc.romformat.scale_rom_fields`)."""
    f = QuantFormat(**meta["format"])
    return [(x.name, x.rom_bits(f)) for x in scale_rom_fields(f)]


#: tiles compared at once (bounds memory to a few tiles' ROM whatever the matrix)
CHUNK = 8


def _pc(x: np.ndarray) -> np.ndarray:
    """Set bits per tile of values below 2^16: int64 [tiles]."""
    return POP16[x.astype(np.uint16)].reshape(len(x), -1).sum(axis=1, dtype=np.int64)


def _block_mask(block: np.ndarray, tr: int, w: int) -> np.ndarray:
    """bool [tiles, TR, W]: each tile's codes inside its block (padding excluded)."""
    r = np.arange(tr)[None, :, None] < block[:, 1][:, None, None]
    c = np.arange(w)[None, None, :] < block[:, 3][:, None, None]
    return r & c


def _fields(t: dict, meta: dict, sl: slice) -> list[np.ndarray]:
    """Every stored field of tiles ``sl`` masked to its width, [tiles, ...] each."""
    out = []
    for k, nb in _field_masks(meta):
        out.append(t[k][sl].astype(np.int64) & ((1 << nb) - 1))
    return out


def _matrix_bits(t: dict, meta: dict, ta: dict | None = None):
    """Per tile of one matrix: stored bits set (``ta`` None), or (added, removed) bits from
    ``ta`` to ``t`` (same format and blocks). int64 [tiles] arrays. The level table is in
    every tile's scale ROM."""
    n, tr, w = t["codes"].shape
    lb = meta["format"]["level_bits"]
    lv = t["levels"].astype(np.int64) & ((1 << lb) - 1)
    out = [np.zeros(n, np.int64), np.zeros(n, np.int64)]
    for s0 in range(0, n, CHUNK):
        sl = slice(s0, min(n, s0 + CHUNK))
        m = _block_mask(t["block"][sl], tr, w)
        cb, fb = t["codes"][sl], _fields(t, meta, sl)
        if ta is None:
            out[0][sl] = _pc(np.where(m, cb, 0)) + sum(_pc(f) for f in fb)
            continue
        ca, fa = ta["codes"][sl], _fields(ta, meta, sl)
        out[0][sl] = _pc(np.where(m, cb & ~ca, 0)) + sum(
            _pc(y & ~x) for x, y in zip(fa, fb, strict=True)
        )
        out[1][sl] = _pc(np.where(m, ca & ~cb, 0)) + sum(
            _pc(x & ~y) for x, y in zip(fa, fb, strict=True)
        )
    if ta is None:
        return out[0] + int(POP16[lv.astype(np.uint16)].sum())
    la = ta["levels"].astype(np.int64) & ((1 << lb) - 1)
    add = int(POP16[(lv & ~la).astype(np.uint16)].sum())
    rem = int(POP16[(la & ~lv).astype(np.uint16)].sum())
    return out[0] + add, out[1] + rem


def _grids(side: _Side, site: tuple | None, cache: dict):
    """(array, scale) nibble grids of a tile (zeros when the site is empty)."""
    if site is None:
        return None
    name, i = site
    if name not in cache:
        cache.clear()
        cache[name] = side.nl.tile_arrays(name)
    rom = TileRom(cache[name], i, side.nl.matrices[name], side.fabric)
    return rom.array, rom.scale


def _grid_diff(ga, gb) -> tuple[int, int]:
    """Vias added/removed between two tiles' nibble grids (either may be None: empty)."""
    added = removed = 0
    for k in range(2):
        a = ga[k] if ga is not None else None
        b = gb[k] if gb is not None else None
        rows = max(0 if a is None else a.shape[0], 0 if b is None else b.shape[0])
        cols = (a if a is not None else b).shape[1]
        pa, pb = np.zeros((rows, cols), np.uint8), np.zeros((rows, cols), np.uint8)
        if a is not None:
            pa[: a.shape[0]] = a
        if b is not None:
            pb[: b.shape[0]] = b
        added += popcount(pb & ~pa)
        removed += popcount(pa & ~pb)
    return added, removed


def _via_layer(a: _Side, b: _Side, progress=None) -> dict:
    rep = new_layer(len(b.sites))
    fast = set()
    for name, meta in b.nl.matrices.items():
        ma = a.nl.matrices.get(name)
        if ma is None or ma["format"] != meta["format"] or ma["tile_shape"] != meta["tile_shape"]:
            continue
        pa, pb = _small(a.nl, name, "pos"), _small(b.nl, name, "pos")
        ba, bb = _small(a.nl, name, "block"), _small(b.nl, name, "block")
        if not (np.array_equal(pa, pb) and np.array_equal(ba, bb)):
            continue
        from maskc.layout import tile_name

        names = [tile_name(p) for p in pb.tolist()]
        ta = a.nl.tile_arrays(name)
        rep["shapes_a"] += int(_matrix_bits(ta, ma).sum())
        same_file = a.tiles_sha(name) is not None and a.tiles_sha(name) == b.tiles_sha(name)
        if same_file and ma == meta:  # the same bytes at the same offsets: the same tiles
            fast.update(names)
            if progress:
                progress.advance(len(names))
            continue
        tb = b.nl.tile_arrays(name)
        add, rem = _matrix_bits(tb, meta, ta)
        for n, x, y in zip(names, add.tolist(), rem.tolist(), strict=True):
            count(rep, n, name, x, y)
        fast.update(names)
        if progress:
            progress.advance(len(names))
    rest = sorted((set(a.sites) | set(b.sites)) - fast)
    ca: dict = {}
    cb: dict = {}
    for n in rest:  # moved, new, removed or re-formatted tiles: cell by cell
        sa, sb = a.sites.get(n), b.sites.get(n)
        ga = _grids(a, sa, ca)
        if sa is not None:
            rep["shapes_a"] += sum(popcount(g) for g in ga)
        x, y = _grid_diff(ga, _grids(b, sb, cb))
        count(rep, n, (sb or sa)[0], x, y)
    return rep


# -- the metal layer from the netlists ----------------------------------------------------------


def _configs(side: _Side) -> dict:
    """tile name -> (configuration bits, used rows)."""
    from maskc.layout import tile_name

    out = {}
    for name, meta in side.nl.matrices.items():
        pos_all, blocks = _small(side.nl, name, "pos"), _small(side.nl, name, "block")
        for pos, blk in zip(pos_all.tolist(), blocks.tolist(), strict=True):
            out[tile_name(pos)] = (config_bits(config_word(meta, blk, side.fabric)), blk[1])
    return out


def _metal_layer(a: _Side, b: _Side) -> dict:
    rep = new_layer(len(b.sites))
    ca, cb = _configs(a), _configs(b)
    nbits = sum(n for _, n in CONFIG_FIELDS)
    empty = (np.zeros(nbits, np.uint8), 0)
    for n in sorted(set(ca) | set(cb)):
        (ba, ra), (bb, rb) = ca.get(n, empty), cb.get(n, empty)
        if n in ca:
            rep["shapes_a"] += int(ba.sum()) + ra
        added = int((bb & ~ba & 1).sum()) + max(0, rb - ra)
        removed = int((ba & ~bb & 1).sum()) + max(0, ra - rb)
        count(rep, n, (b.sites.get(n) or a.sites.get(n))[0], added, removed)
    return rep
