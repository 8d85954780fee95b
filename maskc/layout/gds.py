"""The GDSII layer writer. GDSII has no repetitions, so the via layer uses a hierarchy of *word
cells*: 5 adjacent ROM slots (20 bits) are one reference to a word cell (named by its 20-bit
value in 4 base-32 characters); a word is a 2-slot cell plus a 3-slot cell; those place the 15
fixed *value cells* ``v1``..``vf`` holding a 4-bit cell's vias. One reference (28 bytes) per
20 stored bits, and only the words a build uses are defined. Written by a streaming writer
(:mod:`maskc.layout.gdsii`), tile by tile, in parallel parts that are then concatenated.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from maskc.layout import gdsii
from maskc.layout.banks import tile_name, tile_positions
from maskc.layout.geometry import CELL_BITS, Geometry
from maskc.layout.rom import TileRom, config_bits
from maskc.parallel import atomic_path, pool, remove_debris

#: tiles per GDS part (the unit of parallel writing and of progress)
PART_TILES = 48
#: ROM slots per GDS word cell, and how a word splits into a pair and a triple cell
WORD = 5
_B32 = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUV", np.uint8)


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


def _gds_tile_via(geo: Geometry, rom: TileRom) -> tuple[bytes, list[np.ndarray]]:
    """One tile's via cell (GDS bytes) and the word values it places (with repeats; the
    caller marks them in a table of all 2^20 words, much faster than ``np.unique``)."""
    out = [gdsii.begin_cell(tile_name(rom.pos))]
    used = []
    for area, grid in (("array", rom.array), ("scale", rom.scale)):
        w = _word_grid(grid)
        line, k = np.nonzero(w)
        vals = w[line, k]
        x, y = geo.slot_origin(area, line, k * WORD)
        out.append(gdsii.srefs(_word_names(vals), np.stack([x, y], 1)))
        used.append(vals)
    out.append(gdsii.end_cell())
    return b"".join(out), used


def _gds_tile_metal(geo: Geometry, rom: TileRom) -> bytes:
    cfg = geo.config_positions(config_bits(rom.config))
    nr = rom.block[1]
    return (
        gdsii.begin_cell(tile_name(rom.pos))
        + gdsii.rects(cfg, geo.cfg_len, geo.strap_w, geo.metal)
        + gdsii.aref("rowstrap", geo.ox, geo.oy, 1, nr, geo.row_strap_len, geo.cpy)
        + gdsii.end_cell()
    )


def _gds_library(geo: Geometry, words: np.ndarray, f) -> None:
    """Write the via layer's cell library to ``f``: the used word cells, the pair and triple
    cells they use and the 15 value cells."""
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
    used = np.zeros(1 << (4 * WORD), bool)
    cache: dict[str, dict] = {}
    with (
        atomic_path(via_path) as tv,
        atomic_path(metal_path) as tm,
        open(tv, "wb") as fv,
        open(tm, "wb") as fm,
    ):
        for name, i in tiles:
            if name not in cache:
                cache = {name: nl.tile_arrays(name)}
            rom = TileRom(cache[name], i, nl.matrices[name], fabric)
            geo.check_fits(rom.scale.shape[0], f"tile {tile_name(rom.pos)} ({name})")
            b, u = _gds_tile_via(geo, rom)
            fv.write(b)
            for vals in u:
                used[vals] = True
            fm.write(_gds_tile_metal(geo, rom))
    return np.flatnonzero(used)


def _gds_top(layer: str, bank: dict, geo: Geometry, positions: list) -> bytes:
    out = [gdsii.begin_cell(f"{layer.upper()}_{bank['top']}")]
    for pos in positions:
        out.append(gdsii.sref(tile_name(pos), pos[1] * geo.tpx, pos[2] * geo.tpy))
    out.append(gdsii.end_cell())
    return b"".join(out)


def write_gds(nl, fabric, banks, out_dir: Path, workers: int, progress) -> None:
    """Write every bank's ``via`` and ``metal`` GDSII files (``bank["files"]``) into
    ``out_dir``: parts of ``PART_TILES`` tiles in ``workers`` processes, then each file
    assembled from its parts, the cell library and the top cell."""
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
    args = [
        (str(nl.path), tl, str(parts / f"via.{b}.{p:05d}"), str(parts / f"metal.{b}.{p:05d}"))
        for b, p, tl in jobs
    ]
    if progress:
        progress.start("writing the via and metal layers (GDSII)", len(jobs))
    used = [np.zeros(1 << (4 * WORD), bool) for _ in banks]  # words each bank's tiles use
    with pool(workers) as ex:
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
                    origin = np.zeros((1, 2), np.int64)
                    strap = gdsii.rects(origin, geo.row_strap_len, geo.strap_w, geo.metal)
                    f.write(gdsii.begin_cell("rowstrap") + strap + gdsii.end_cell())
                f.write(_gds_top(layer, bank, geo, positions[b]))
                f.write(gdsii.end_lib())
    remove_debris(parts)  # temporary files of tasks killed and run again
    parts.rmdir()
