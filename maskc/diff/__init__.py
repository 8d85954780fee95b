"""Stage 8, diff: which mask bits change between two builds (``maskc diff-layers``).

Two builds on one fabric are compared tile site by tile site (a tile cell of the layer files is
a position on the die). The fast path never decodes a layer file: the manifests' per-tile
hashes skip every tile whose ROM did not change, and the rest are compared on the netlists'
ROM content, which ``maskc verify`` proves equal to the layer files and the manifests' file
hashes tie to them (a tampered file is exit 5). Where two tiles hold the same matrix block in
the same format, a stored bit is a via site in both, so vias added/removed are popcounts of
``B & ~A`` / ``A & ~B`` over the codes and scale fields, vectorized per matrix. Tiles whose
contents moved or changed format are compared cell by cell on their ROM grids.

Layer files given directly (``via.gds``, ``via.oas``, in a build folder whose manifest may be
missing) are decoded: every tile cell's shapes are read back and compared as sets, tile by
tile, so memory is one tile pair.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskc.errors import InputError, UsageError
from maskc.layout.rom import CONFIG_FIELDS, TileRom, config_bits, config_word, group_fields

LAYERS = ("via", "metal")
_TILE = re.compile(r"T(\d+)_(\d+)_(\d+)")


#: set bits of every 16-bit value
_POP16 = np.unpackbits(np.arange(1 << 16, dtype=">u2").view(np.uint8)).reshape(-1, 16).sum(1)
_POP16 = _POP16.astype(np.uint8)


def _popcount(a: np.ndarray) -> int:
    """Set bits of an array of values below 2^16 (nibble grids here)."""
    return int(_POP16[a.astype(np.uint16)].sum())


@dataclass
class _Side:
    """One build as diff sees it: its netlist, fabric, manifest tile hashes and, per tile site
    ``T<die>_<x>_<y>``, which matrix tile it holds."""

    path: Path
    nl: object
    fabric: object
    hashes: dict
    sites: dict  # tile name -> (matrix, index)


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
    return _Side(b.path, nl, nl.fabric, b.manifest.get("tiles", {}), sites)


def _small(nl, name: str, key: str) -> np.ndarray:
    """One small array (``pos``, ``block``) of a matrix's tiles, without reading the codes."""
    return nl.tile_arrays(name, (key,))[key]


def _new_layer(total_tiles: int) -> dict:
    return {"identical": True, "added": 0, "removed": 0, "changed_tiles": 0,
            "total_tiles": total_tiles, "shapes_a": 0, "tensors": {}, "tiles": {}}  # fmt: skip


def _count(rep: dict, tile: str, tensor: str | None, added: int, removed: int) -> None:
    rep["added"] += added
    rep["removed"] += removed
    if added or removed:
        rep["changed_tiles"] += 1
        rep["tiles"][tile] = added + removed
        if tensor is not None:
            t = rep["tensors"].setdefault(tensor, {"tensor": tensor, "changed_tiles": 0,
                                                   "vias_or_straps": 0})  # fmt: skip
            t["changed_tiles"] += 1
            t["vias_or_straps"] += added + removed


# -- the via layer from the netlists ------------------------------------------------------------


def _field_masks(meta: dict) -> list[tuple[str, int]]:
    """(field, width) of everything a tile's scale ROM stores besides the level table: the
    group fields of :func:`maskc.layout.rom.group_fields` and the row exponents."""
    f = meta["format"]
    exps = [("scale_e", 8)] + ([("zero_e", 8)] if f["zero_bits"] else [])
    return [(name, nb) for name, nb, _ in group_fields(f)] + exps


#: tiles compared at once (bounds memory to a few tiles' ROM whatever the matrix)
CHUNK = 8


def _pc(x: np.ndarray) -> np.ndarray:
    """Set bits per tile of values below 2^16: int64 [tiles]."""
    return _POP16[x.astype(np.uint16)].reshape(len(x), -1).sum(axis=1, dtype=np.int64)


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
        return out[0] + int(_POP16[lv.astype(np.uint16)].sum())
    la = ta["levels"].astype(np.int64) & ((1 << lb) - 1)
    add = int(_POP16[(lv & ~la).astype(np.uint16)].sum())
    rem = int(_POP16[(la & ~lv).astype(np.uint16)].sum())
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
        added += _popcount(pb & ~pa)
        removed += _popcount(pa & ~pb)
    return added, removed


def _via_layer(a: _Side, b: _Side, progress=None) -> dict:
    rep = _new_layer(len(b.sites))
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
        if all(a.hashes.get(n) is not None and a.hashes.get(n) == b.hashes.get(n) for n in names):
            fast.update(names)
            if progress:
                progress.advance(len(names))
            continue
        tb = b.nl.tile_arrays(name)
        add, rem = _matrix_bits(tb, meta, ta)
        for n, x, y in zip(names, add.tolist(), rem.tolist(), strict=True):
            _count(rep, n, name, x, y)
        fast.update(names)
        if progress:
            progress.advance(len(names))
    rest = sorted((set(a.sites) | set(b.sites)) - fast)
    ca: dict = {}
    cb: dict = {}
    for n in rest:  # moved, new, removed or re-formatted tiles: cell by cell
        ha, hb = a.hashes.get(n), b.hashes.get(n)
        sa, sb = a.sites.get(n), b.sites.get(n)
        ga = _grids(a, sa, ca)
        if sa is not None:
            rep["shapes_a"] += sum(_popcount(g) for g in ga)
        if ha is not None and ha == hb and sa is not None and sb is not None:
            continue
        x, y = _grid_diff(ga, _grids(b, sb, cb))
        _count(rep, n, (sb or sa)[0], x, y)
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
    rep = _new_layer(len(b.sites))
    ca, cb = _configs(a), _configs(b)
    nbits = sum(n for _, n in CONFIG_FIELDS)
    empty = (np.zeros(nbits, np.uint8), 0)
    for n in sorted(set(ca) | set(cb)):
        (ba, ra), (bb, rb) = ca.get(n, empty), cb.get(n, empty)
        if n in ca:
            rep["shapes_a"] += int(ba.sum()) + ra
        added = int((bb & ~ba & 1).sum()) + max(0, rb - ra)
        removed = int((ba & ~bb & 1).sum()) + max(0, ra - rb)
        _count(rep, n, (b.sites.get(n) or a.sites.get(n))[0], added, removed)
    return rep


# -- layer files, decoded -----------------------------------------------------------------------


def _file_side(path: Path):
    """(layer name, netlist, fabric) of a layer file inside a build folder's ``layers/``."""
    from maskc.netlist import load_netlist

    if path.suffix not in (".gds", ".oas") or not path.is_file():
        raise InputError(f"{path}: not a build folder or a .gds/.oas layer file")
    layer = path.name.split(".")[0]
    if layer not in LAYERS:
        raise InputError(f"{path}: not a maskc layer file (names start with via or metal)")
    build = path.parent.parent
    if path.parent.name != "layers" or not (build / "netlist" / "netlist.json").is_file():
        raise InputError(f"{path}: a layer file is read with its fabric, from the build's "
                         "netlist/ beside layers/; none found")  # fmt: skip
    nl = load_netlist(build)
    return layer, nl, nl.fabric


def _diff_files(pa: Path, pb: Path, progress=None) -> dict:
    from maskc.layout import Geometry
    from maskc.layout.read import LayerFile as _Layer

    la, nla, fa = _file_side(pa)
    lb, nlb, fb = _file_side(pb)
    if la != lb:
        raise UsageError(f"{pa} is a {la} layer and {pb} a {lb} layer: compare like with like")
    if nla.doc["fabric"] != nlb.doc["fabric"]:
        return {"base": False, "fabric_a": fa.name, "fabric_b": fb.name, "layers": {}}
    geo = Geometry(fa)
    spec = (geo.via, geo.size) if la == "via" else (geo.metal, None)
    try:
        xa, xb = _Layer(str(pa), geo, *spec), _Layer(str(pb), geo, *spec)
    except Exception as e:  # gdstk and the GDS reader raise plain errors on a broken file
        from maskc.errors import VerifyError

        raise VerifyError(f"{pa} / {pb}: unreadable layer file ({e})") from e
    tiles = sorted({n for n in [*xa.names, *xb.names] if _TILE.fullmatch(n)})
    owner = {}
    for nl in (nla, nlb):
        from maskc.layout import tile_name

        for name in nl.matrices:
            for pos in nl.tile_arrays(name, ("pos",))["pos"].tolist():
                owner.setdefault(tile_name(pos), name)
    rep = _new_layer(len([n for n in xb.names if _TILE.fullmatch(n)]))
    if progress:
        progress.start(f"decoding the {la} layers", len(tiles))
    for n in tiles:
        sa, sb = xa.shapes(n), xb.shapes(n)
        ka = _keys(sa)
        kb = _keys(sb)
        rep["shapes_a"] += len(ka)
        _count(rep, n, owner.get(n), len(np.setdiff1d(kb, ka)), len(np.setdiff1d(ka, kb)))
        if progress:
            progress.advance(1)
    problems = xa.problems + xb.problems
    xa.close()
    xb.close()
    if problems:
        from maskc.errors import VerifyError

        raise VerifyError(f"{pa} / {pb}: {problems[0]}")
    return {"base": True, "fabric_a": fa.name, "fabric_b": fb.name, "layers": {la: rep},
            "fabric": fa, "sites": tiles}  # fmt: skip


def _keys(corners) -> np.ndarray:
    if corners is None or not len(corners):
        return np.zeros(0, np.int64)
    c = np.asarray(corners, np.int64)
    return np.unique((c[:, 0] << 32) + (c[:, 1] & 0xFFFFFFFF))


# -- the command --------------------------------------------------------------------------------


def diff_layers(a, b, progress=None, top: int = 5) -> dict:
    """``maskc diff-layers A B``: A and B are two build folders or two layer files. Returns the
    JSON document of docs/diff.md (``identical``, ``verdict``, ``layers`` ...)."""
    pa, pb = Path(a), Path(b)
    if pa.is_dir() != pb.is_dir():
        raise UsageError(f"{a} and {b}: give two build folders or two layer files")
    if pa.is_dir():
        sa, sb = _open_build(pa), _open_build(pb)
        fab = sb.fabric
        if sa.nl.doc["fabric"] != sb.nl.doc["fabric"]:
            res = {"base": False, "fabric_a": sa.fabric.name, "fabric_b": sb.fabric.name,
                   "layers": {}}  # fmt: skip
        else:
            if progress:
                progress.start("comparing the via layers", len(sb.sites))
            layers = {"via": _via_layer(sa, sb, progress), "metal": _metal_layer(sa, sb)}
            res = {"base": True, "fabric_a": sa.fabric.name, "fabric_b": sb.fabric.name,
                   "layers": layers, "sites": sorted(set(sa.sites) | set(sb.sites))}  # fmt: skip
    else:
        res = _diff_files(pa, pb, progress)
        fab = res.pop("fabric", None)
    return _finish(res, str(a), str(b), top, fab)


def _finish(res: dict, a: str, b: str, top: int, fabric) -> dict:
    doc = {"a": a, "b": b, "fabric_a": res["fabric_a"], "fabric_b": res["fabric_b"]}
    if not res["base"]:
        doc |= {"identical": False, "same_base_die": False,
                "verdict": f"different base die: A is built for fabric {res['fabric_a']!r} and B "
                           f"for {res['fabric_b']!r} (or the same name with other geometry); the "
                           "builds are for different chips, so their masks are not compared",
                "layers": {}, "masks_to_remake": None}  # fmt: skip
        return doc
    layers = {}
    for name, rep in res["layers"].items():
        changed = rep["added"] + rep["removed"]
        tensors = sorted(rep["tensors"].values(), key=lambda t: (-t["vias_or_straps"], t["tensor"]))
        layers[name] = {
            "identical": changed == 0, "added": rep["added"], "removed": rep["removed"],
            "changed_tiles": rep["changed_tiles"], "total_tiles": rep["total_tiles"],
            "shapes_in_a": rep["shapes_a"],
            "changed_fraction": round(changed / rep["shapes_a"], 6) if rep["shapes_a"] else
            (0.0 if not changed else 1.0),
            "top_tensors": tensors[:top], "tiles": rep["tiles"],
        }  # fmt: skip
    remake = [n for n, rep in layers.items() if not rep["identical"]]
    if not remake:
        verdict = "identical: same base die, no mask changes"
    else:
        parts = []
        for n in remake:
            rep = layers[n]
            ch = rep["added"] + rep["removed"]
            pct = 100 * rep["changed_fraction"]
            parts.append(f"the {n} mask changes in {ch:,} shapes ({pct:.3g}% of them), "
                         f"{rep['changed_tiles']:,} of {rep['total_tiles']:,} tiles")  # fmt: skip
        kept = [n for n in layers if n not in remake]
        names = {("via",): "via mask only", ("metal",): "metal mask only"}
        what = names.get(tuple(remake), " and ".join(remake) + " masks")
        verdict = (f"{what} to re-make: {'; '.join(parts)}"
                   + (f"; the {' and '.join(kept)} mask is reused" if kept else ""))  # fmt: skip
    doc |= {"identical": not remake, "same_base_die": True, "verdict": verdict,
            "masks_to_remake": remake, "layers": layers}  # fmt: skip
    doc["_fabric"] = fabric
    doc["_sites"] = res.get("sites", [])
    return doc


def heatmap_png(doc: dict, path) -> None:
    """Per-tile changes (vias + straps) over each die's tile grid."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    fab = doc.get("_fabric")
    per: dict[int, dict] = {}
    for rep in doc["layers"].values():
        for n, v in rep["tiles"].items():
            d, x, y = (int(g) for g in _TILE.fullmatch(n).groups())
            per.setdefault(d, {})
            per[d][x, y] = per[d].get((x, y), 0) + v
    dies = sorted(per) or [0]
    cols = fab.die.tile_columns if fab is not None else 1 + max(
        (x for d in per.values() for x, _ in d), default=0)  # fmt: skip
    rows = fab.die.tile_rows if fab is not None else 1 + max(
        (y for d in per.values() for _, y in d), default=0)  # fmt: skip
    fig = Figure(figsize=(6 * len(dies), 5.5), dpi=100)
    axes = fig.subplots(1, len(dies), squeeze=False)[0]
    used = [tuple(int(g) for g in _TILE.fullmatch(n).groups()) for n in doc.get("_sites", [])]
    for ax, d in zip(axes, dies, strict=True):
        bg = np.full((rows, cols), np.nan)
        for dd, x, y in used:
            if dd == d and x < cols and y < rows:
                bg[y, x] = 1.0
        ax.imshow(bg, origin="lower", cmap="Greys", vmin=0, vmax=5, interpolation="nearest")
        grid = np.full((rows, cols), np.nan)
        for (x, y), v in per.get(d, {}).items():
            grid[y, x] = v
        top = max(2, np.nanmax(grid) if per.get(d) else 2)
        im = ax.imshow(grid, origin="lower", cmap="magma_r", interpolation="nearest",
                       norm=LogNorm(vmin=1, vmax=top))  # fmt: skip
        ax.set_title(f"die {d}: changed shapes per tile ({len(per.get(d, {})):,} changed tiles; "
                     "grey: unchanged tiles)", fontsize=9)  # fmt: skip
        ax.set_xlabel("tile x")
        ax.set_ylabel("tile y")
        fig.colorbar(im, ax=ax, shrink=0.8)
    import textwrap

    fig.suptitle(textwrap.fill(doc["verdict"], 70 * len(dies)), fontsize=8)
    fig.savefig(Path(path), metadata={"Software": None})
