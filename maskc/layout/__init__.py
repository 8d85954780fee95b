"""Stage 5, layout: the netlist's tiles -> the two customizable layers, and back (``maskc
verify``).

* **via layer** (programs the ROM): one via site per stored bit, via present means 1. A ROM
  cell's 4 bits are its first 4 sites; the scale ROM (every group's scale/zero fields, the row
  exponents, the level table) is a bit string packed into lines of 4-bit slots above the array
  (:mod:`maskc.layout.geometry`).
* **metal layer** (personalizes the base die): per tile, a strap per used cell row (the row's
  product-line enable) and the 64-bit configuration word (enabled, mode, layer, matrix kind,
  row/column block, rows, columns) as straps present/absent. It depends only on the placement,
  so two fine-tunes of one architecture give the same metal layer.

Files (``BUILD/layers/``): ``via.<ext>`` and ``metal.<ext>``, or per die/bank
``via.d<die>.b<k>.<ext>`` when the build is large, listed in ``layers/index.json``. Tiles are
cells named by their position (``T<die>_<x>_<y>``) under a top cell per file, so two builds on
one fabric have the same structure.

* **GDSII** has no repetitions, so the via layer uses a hierarchy of *word cells*: 5 adjacent
  ROM slots (20 bits) are one reference to a word cell (named by its 20-bit value in 4 base-32
  characters); a word is a 2-slot cell plus a 3-slot cell; those place the 15 fixed *value
  cells* ``v1``..``vf`` holding a 4-bit cell's vias. One reference (28 bytes) per 20 stored
  bits, and only the words a build uses are defined. Written by a streaming writer
  (:mod:`maskc.layout.gdsii`), tile by tile, in parallel parts.
* **OASIS** (gdstk) stores each tile's vias flat as one rectangle with an explicit repetition
  in row-major order on the layout grid, compressed: about one byte per weight.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from maskc.layout.geometry import CELL_BITS, Geometry
from maskc.layout.rom import (
    TileRom,
    bits_to_nibbles,
    cell_values,
    codes_from_cells,
    config_bits,
    nibbles_to_bits,
    record_bits,
    scale_bits,
)

__all__ = [
    "Geometry",
    "TileRom",
    "bits_to_nibbles",
    "cell_values",
    "codes_from_cells",
    "nibbles_to_bits",
    "record_bits",
    "scale_bits",
    "tile_hashes",
    "verify_build",
    "verify_layers",
    "write_layers",
]  # fmt: skip

#: ROM cells per OASIS file (bank): bounds the memory of writing and of reading back
BANK_CELLS = 1 << 24
#: tiles per GDS part (the unit of parallel writing and of progress)
PART_TILES = 48
#: ROM slots per GDS word cell, and how a word splits into a pair and a triple cell
WORD = 5
_B32 = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUV", np.uint8)


def tile_name(pos) -> str:
    d, x, y = (int(v) for v in pos)
    return f"T{d}_{x}_{y}"


def _tiles(nl, segments):
    """``(matrix name, meta, tile arrays, tile index)`` of every tile of ``segments``
    (``[[matrix, first tile, end tile], ...]``), in order."""
    t, cur = None, None
    for name, first, end in segments:
        if name != cur:
            t, cur = nl.tile_arrays(name), name
        for i in range(first, end):
            yield name, nl.matrices[name], t, i


def tile_positions(nl, segments):
    """``(matrix name, tile index, (die, x, y))`` of every tile of ``segments``, reading only
    the tiles' positions."""
    for name, first, end in segments:
        pos = nl.tile_arrays(name, ("pos",))["pos"]
        for i in range(first, end):
            yield name, i, tuple(int(v) for v in pos[i])


def plan_banks(nl, fabric, fmt: str) -> list[dict]:
    """Tiles in data-flow order, grouped per die (GDS) or per die into banks of at most
    ``BANK_CELLS`` cells (OASIS): ``[{"die", "tiles": [[matrix, first, end], ...], "stem",
    "top"}]``. One bank is named ``via``/``metal``; several ``via.d<die>.b<k>``."""
    order: list[str] = []
    for op in nl.doc["ops"]:
        n = op.get("matrix")
        if n is not None and n not in order:
            order.append(n)
    limit = BANK_CELLS // fabric.cells_per_tile if fmt == "oas" else None
    banks: list[dict] = []
    for n in order:
        dies = nl.tile_arrays(n, ("pos",))["pos"][:, 0].tolist()
        for i, die in enumerate(dies):
            last = banks[-1] if banks else None
            if last is None or last["die"] != die or (limit is not None and last["n"] >= limit):
                banks.append({"die": die, "tiles": [], "n": 0})
                last = banks[-1]
            seg = last["tiles"][-1] if last["tiles"] else None
            if seg is not None and seg[0] == n and seg[2] == i:
                seg[2] = i + 1
            else:
                last["tiles"].append([n, i, i + 1])
            last["n"] += 1
    for k, bank in enumerate(banks):
        bank["stem"] = "" if len(banks) == 1 else f".d{bank['die']}.b{k:03d}"
        bank["top"] = f"D{bank['die']}_B{k:03d}"
        del bank["n"]
    return banks


# -- GDSII --------------------------------------------------------------------------------------


def _word_grid(grid: np.ndarray) -> np.ndarray:
    """Nibble grid ``[lines, columns]`` -> 20-bit word values ``[lines, ceil(columns / 5)]``
    (first slot in the most significant nibble)."""
    lines, cols = grid.shape
    nw = -(-cols // WORD)
    pad = np.zeros((lines, nw * WORD), np.int64)
    pad[:, :cols] = grid
    q = pad.reshape(lines, nw, WORD)
    w = np.zeros((lines, nw), np.int64)
    for j in range(WORD):
        w = (w << 4) | q[..., j]
    return w


def _word_names(words: np.ndarray) -> np.ndarray:
    """uint8 ``[n, 4]``: each 20-bit word's name, 4 base-32 digits."""
    d = np.stack([(words >> s) & 31 for s in (15, 10, 5, 0)], 1)
    return _B32[d]


def _word_name(w: int) -> str:
    return bytes(_word_names(np.array([w]))[0]).decode()


def _gds_tile_via(geo: Geometry, rom: TileRom) -> tuple[bytes, np.ndarray]:
    """One tile's via cell (GDS bytes) and the word values it uses."""
    from maskc.layout import gdsii

    out = [gdsii.begin_cell(tile_name(rom.pos))]
    used = []
    for area, grid in (("array", rom.array), ("scale", rom.scale)):
        w = _word_grid(grid)
        line, k = np.nonzero(w)
        vals = w[line, k]
        x, y = geo.slot_origin(area, line, k * WORD)
        out.append(gdsii.srefs(_word_names(vals), np.stack([x, y], 1)))
        used.append(np.unique(vals))
    out.append(gdsii.end_cell())
    return b"".join(out), np.unique(np.concatenate(used))


def _gds_tile_metal(geo: Geometry, rom: TileRom) -> bytes:
    from maskc.layout import gdsii

    cfg = geo.config_positions(config_bits(rom.config))
    nr = rom.block[1]
    return (gdsii.begin_cell(tile_name(rom.pos))
            + gdsii.rects(cfg, geo.cfg_len, geo.strap_w, geo.metal)
            + gdsii.aref("rowstrap", geo.ox, geo.oy, 1, nr, geo.row_strap_len, geo.cpy)
            + gdsii.end_cell())  # fmt: skip


def _gds_library(geo: Geometry, words: np.ndarray, f) -> None:
    """Write the via layer's cell library to ``f``: the used word cells, the pair and triple
    cells they use and the 15 value cells."""
    from maskc.layout import gdsii

    out: list[bytes] = []
    pairs, triples = np.unique(words >> 12), np.unique(words & 0xFFF)
    names = _word_names(words)
    for w, nm in zip(words.tolist(), names, strict=True):
        out.append(gdsii.begin_cell(bytes(nm).decode()))
        if w >> 12:
            out.append(gdsii.sref(f"p{w >> 12:02x}", 0, 0))
        if w & 0xFFF:
            out.append(gdsii.sref(f"q{w & 0xFFF:03x}", 2 * geo.cpx, 0))
        out.append(gdsii.end_cell())
        if len(out) > 1 << 16:
            f.write(b"".join(out))
            out.clear()
    for prefix, vals, n in (("p", pairs, 2), ("q", triples, 3)):
        for v in vals.tolist():
            if not v:
                continue
            out.append(gdsii.begin_cell(f"{prefix}{v:0{n}x}"))
            for j in range(n):
                nib = (v >> 4 * (n - 1 - j)) & 15
                if nib:
                    out.append(gdsii.sref(f"v{nib:x}", j * geo.cpx, 0))
            out.append(gdsii.end_cell())
    for nib in range(1, 16):
        p = np.array([b for b in range(CELL_BITS) if nib >> b & 1])
        vias = gdsii.rects(geo.bit_off[p], geo.size, geo.size, geo.via)
        out.append(gdsii.begin_cell(f"v{nib:x}") + vias + gdsii.end_cell())
    f.write(b"".join(out))


def _gds_part(nl_root: str, tiles: list, via_path: str, metal_path: str):
    """Write the via and metal cells of ``tiles`` (``[(matrix, index)]``) to two part files;
    return the word values they use (run in a worker process)."""
    from maskc.netlist import load_netlist

    nl = load_netlist(Path(nl_root).parent)
    fabric = nl.fabric
    geo = Geometry(fabric)
    used = [np.zeros(0, np.int64)]
    cache: dict[str, dict] = {}
    with open(via_path, "wb") as fv, open(metal_path, "wb") as fm:
        for name, i in tiles:
            if name not in cache:
                cache = {name: nl.tile_arrays(name)}
            rom = TileRom(cache[name], i, nl.matrices[name], fabric)
            geo.check_fits(rom.scale.shape[0], f"tile {tile_name(rom.pos)} ({name})")
            b, u = _gds_tile_via(geo, rom)
            fv.write(b)
            used.append(u)
            fm.write(_gds_tile_metal(geo, rom))
    return np.unique(np.concatenate(used))


def _gds_top(layer: str, bank: dict, geo: Geometry, positions: list) -> bytes:
    from maskc.layout import gdsii

    out = [gdsii.begin_cell(f"{layer.upper()}_{bank['top']}")]
    for pos in positions:
        out.append(gdsii.sref(tile_name(pos), pos[1] * geo.tpx, pos[2] * geo.tpy))
    out.append(gdsii.end_cell())
    return b"".join(out)


def _write_gds(nl, fabric, banks, out_dir: Path, workers: int, progress) -> None:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from maskc.layout import gdsii

    geo = Geometry(fabric)
    jobs = []  # (bank index, part index, tiles)
    positions: list[list] = [[] for _ in banks]
    for b, bank in enumerate(banks):
        tiles = []
        for name, i, pos in tile_positions(nl, bank["tiles"]):
            tiles.append((name, i))
            positions[b].append(pos)
        for k in range(0, len(tiles), PART_TILES):
            jobs.append((b, k // PART_TILES, tiles[k : k + PART_TILES]))
    parts = out_dir / ".parts"
    parts.mkdir(exist_ok=True)
    args = [(str(nl.path), tl, str(parts / f"via.{b}.{p:05d}"),
             str(parts / f"metal.{b}.{p:05d}")) for b, p, tl in jobs]  # fmt: skip
    if progress:
        progress.start("writing the via and metal layers (GDSII)", len(jobs))
    used = [np.zeros(1 << (4 * WORD), bool) for _ in banks]  # words each bank's tiles use
    with ProcessPoolExecutor(max(1, workers), mp_context=get_context("fork")) as ex:
        for (b, _p, _tl), u in zip(jobs, ex.map(_gds_part, *zip(*args, strict=True)), strict=True):
            used[b][u] = True
            if progress:
                progress.advance(1)
    for b, bank in enumerate(banks):
        mine = [a for (bb, _p, _t), a in zip(jobs, args, strict=True) if bb == b]
        words = np.flatnonzero(used[b])
        for layer, col in (("via", 2), ("metal", 3)):
            with open(out_dir / bank["files"][layer], "wb") as f:
                f.write(gdsii.header(f"maskc_{layer}", geo.dbu_m))
                for a in mine:
                    with open(a[col], "rb") as part:
                        while chunk := part.read(1 << 24):
                            f.write(chunk)
                    os.unlink(a[col])
                if layer == "via":
                    _gds_library(geo, words, f)
                else:
                    f.write(gdsii.begin_cell("rowstrap")
                            + gdsii.rects(np.zeros((1, 2), np.int64), geo.row_strap_len,
                                          geo.strap_w, geo.metal) + gdsii.end_cell())  # fmt: skip
                f.write(_gds_top(layer, bank, geo, positions[b]))
                f.write(gdsii.end_lib())
    parts.rmdir()


# -- OASIS --------------------------------------------------------------------------------------


def _rect_rep(pos: np.ndarray, w: int, h: int, layer: tuple[int, int], grid: int):
    """One rectangle repeated at every position of ``pos`` (dbu, kept in its order), in
    coordinates of the layout grid."""
    import gdstk

    p = pos // grid
    x0, y0 = (int(v) for v in p[0])
    r = gdstk.rectangle((x0, y0), (x0 + w // grid, y0 + h // grid), layer=layer[0],
                        datatype=layer[1])  # fmt: skip
    if len(p) > 1:
        r.repetition = gdstk.Repetition(offsets=(p[1:] - p[0]).astype(np.float64))
    return r


def _via_rows(pos: np.ndarray, size: int, layer: tuple[int, int], grid: int) -> list:
    """Vias (dbu corners in row-major order) as one rectangle per line of sites, repeated
    along x: the smallest OASIS (horizontal repetitions with small, regular spacings compress
    best) and the fastest to build."""
    import gdstk

    p = pos // grid
    if (np.diff(p[:, 1]) < 0).any() or ((np.diff(p[:, 1]) == 0) & (np.diff(p[:, 0]) <= 0)).any():
        p = p[np.lexsort((p[:, 0], p[:, 1]))]  # bits on several site rows (sites_x < 4)
    s = size // grid
    cut = np.flatnonzero(np.diff(p[:, 1])) + 1
    out = []
    for a, b in zip(np.r_[0, cut].tolist(), np.r_[cut, len(p)].tolist(), strict=True):
        x0, y0 = int(p[a, 0]), int(p[a, 1])
        r = gdstk.rectangle((x0, y0), (x0 + s, y0 + s), layer=layer[0], datatype=layer[1])
        if b - a > 1:
            r.repetition = gdstk.Repetition(x_offsets=(p[a + 1 : b, 0] - x0).astype(np.float64))
        out.append(r)
    return out


def _write_oas_bank(nl_root: str, bank: dict, out_dir: str) -> None:
    """Write one bank's two OASIS files (run in a worker process)."""
    import gdstk

    from maskc.netlist import load_netlist

    nl = load_netlist(Path(nl_root).parent)
    fabric = nl.fabric
    geo = Geometry(fabric)
    g = geo.grid
    unit = geo.dbu_m * g
    via = gdstk.Library("maskc_via", unit=unit, precision=unit)
    metal = gdstk.Library("maskc_metal", unit=unit, precision=unit)
    top_v = via.new_cell(f"VIA_{bank['top']}")
    top_m = metal.new_cell(f"METAL_{bank['top']}")
    for name, meta, t, i in _tiles(nl, bank["tiles"]):
        rom = TileRom(t, i, meta, fabric)
        cname = tile_name(rom.pos)
        geo.check_fits(rom.scale.shape[0], f"tile {cname} ({name})")
        vc = via.new_cell(cname)
        pos = np.concatenate([geo.via_positions("array", rom.array),
                              geo.via_positions("scale", rom.scale)])  # fmt: skip
        if len(pos):
            vc.add(*_via_rows(pos, geo.size, geo.via, g))
        mc = metal.new_cell(cname)
        cfg = geo.config_positions(config_bits(rom.config))
        mc.add(_rect_rep(cfg, geo.cfg_len, geo.strap_w, geo.metal, g))
        rp = geo.row_strap_positions(rom.block[1])
        mc.add(_rect_rep(rp, geo.row_strap_len, geo.strap_w, geo.metal, g))
        _, x, y = rom.pos
        top_v.add(gdstk.Reference(vc, (x * geo.tpx // g, y * geo.tpy // g)))
        top_m.add(gdstk.Reference(mc, (x * geo.tpx // g, y * geo.tpy // g)))
    for layer, lib in (("via", via), ("metal", metal)):
        lib.write_oas(str(Path(out_dir) / bank["files"][layer]), compression_level=OAS_LEVEL)


#: zlib level of OASIS CBLOCKs
OAS_LEVEL = 6


def write_layers(nl, fabric, out_dir, fmt: str = "gds", workers: int | None = None,
                 progress=None) -> list[dict]:  # fmt: skip
    """Write the via and metal layer files of every bank into ``out_dir`` and ``index.json``
    listing them; returns the banks (with their ``files``)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    banks = plan_banks(nl, fabric, fmt)
    for bank in banks:
        bank["files"] = {layer: f"{layer}{bank['stem']}.{fmt}" for layer in ("via", "metal")}
    workers = workers or os.cpu_count() or 1
    if fmt == "gds":
        _write_gds(nl, fabric, banks, out_dir, workers, progress)
    else:
        if progress:
            progress.start("writing the via and metal layers (OASIS)", len(banks))
        args = [(str(nl.path), b, str(out_dir)) for b in banks]
        with ProcessPoolExecutor(min(len(banks), workers), mp_context=get_context("fork")) as ex:
            for _ in ex.map(_write_oas_bank, *zip(*args, strict=True)):
                if progress:
                    progress.advance(1)
    index = [{k: b[k] for k in ("die", "top", "tiles", "files")} for b in banks]
    (out_dir / "index.json").write_text(json.dumps({"format": fmt, "banks": index}, indent=1,
                                                   sort_keys=True) + "\n")  # fmt: skip
    return banks


from maskc.layout.read import tile_hashes, verify_build, verify_layers  # noqa: E402
