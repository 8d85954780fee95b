"""The OASIS layer writer: each tile's vias flat, one rectangle per line of via sites with an
explicit repetition along x, in coordinates of the layout grid, Huffman-coded in CBLOCKs
(maskc's own record writer, :mod:`maskc.layout.oasfile`); one bank's two files per worker
process."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maskc.layout.banks import iter_tiles, tile_name, tile_positions
from maskc.layout.geometry import CELL_BITS, Geometry
from maskc.layout.oasfile import HUFFMAN, MATCHING, OasisWriter
from maskc.layout.rom import TileRom, config_bits
from maskc.parallel import atomic_path, pool

#: DEFLATE (level, strategy) of the via and metal files' CBLOCKs: Huffman coding alone for the
#: via rows' near-random spacings, string matching for the small, regular metal files
#: (docs/layout.md; benchmarks/oas_deflate.py measures the choices)
VIA_DEFLATE, METAL_DEFLATE = HUFFMAN, MATCHING


def _via_rows(pos: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Via corners (dbu) -> their (x, y) in units of the layout grid, sorted by (y, x): the
    order :meth:`OasisWriter.rect_rows` writes as one record per line of sites. The general
    path, for fabrics where :class:`_FastVias` does not apply."""
    p = pos // grid
    if (np.diff(p[:, 1]) < 0).any() or ((np.diff(p[:, 1]) == 0) & (np.diff(p[:, 0]) <= 0)).any():
        p = p[np.lexsort((p[:, 0], p[:, 1]))]  # bits on several site rows (sites_x < 4)
    return p[:, 0], p[:, 1]


#: the via-site bits of a 4-bit slot value: bool [16, CELL_BITS]
_SLOT_BITS = ((np.arange(16)[:, None] >> np.arange(CELL_BITS)) & 1).astype(bool)


class _FastVias:
    """The same (x, y) as :func:`_via_rows` without building dbu positions, for fabrics whose
    4 bit sites lie on one site row in increasing x (``sites_x >= 4``, as on ``hc1``): then
    every line of a nibble grid is one line of sites, and the vias of a line are its set bits
    in (column, bit) order. One flat scan of the grid's bits, x from a per-(line, column, bit)
    table cached per grid shape."""

    def __init__(self, geo: Geometry, g: int) -> None:
        self.geo, self.g = geo, g
        self.tables: dict = {}
        cols = geo.cols
        x = geo.ox + np.arange(cols, dtype=np.int64)[:, None] * geo.cpx + geo.bit_off[:, 0]
        self.ok = bool((geo.bit_off[:, 1] == 0).all() and (np.diff(x.reshape(-1)) > 0).all())

    def _table(self, lines: int, cols: int) -> np.ndarray:
        t = self.tables.get((lines, cols))
        if t is None:
            geo = self.geo
            x = geo.ox + np.arange(cols, dtype=np.int64)[:, None] * geo.cpx + geo.bit_off[:, 0]
            t = np.tile((x // self.g).reshape(-1), lines)
            if len(self.tables) > 4:  # a bank holds few grid shapes; bound the memory anyway
                self.tables.clear()
            self.tables[(lines, cols)] = t
        return t

    def rows(self, area: str, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lines, cols = grid.shape
        idx = np.flatnonzero(_SLOT_BITS[grid])
        line = idx // (cols * CELL_BITS)
        _, y = self.geo.slot_origin(area, line, np.zeros(len(line), np.int64))
        return self._table(lines, cols)[idx], y // self.g


def _write_oas_bank(nl_root: str, bank: dict, out_dir: str) -> None:
    """Write one bank's two OASIS files (run in a worker process)."""
    from maskc.netlist import load_netlist

    nl = load_netlist(Path(nl_root).parent)
    fabric = nl.fabric
    geo = Geometry(fabric)
    g = geo.grid
    unit = 1e-6 / (geo.dbu_m * g)  # file units per micron
    fast = _FastVias(geo, g)
    places = [p for _, _, p in tile_positions(nl, bank["tiles"])]
    names = [tile_name(p) for p in places]
    with (
        atomic_path(Path(out_dir) / bank["files"]["via"]) as tv,
        atomic_path(Path(out_dir) / bank["files"]["metal"]) as tm,
        open(tv, "wb") as fv,
        open(tm, "wb") as fm,
    ):
        via = OasisWriter(fv, unit, [*names, f"VIA_{bank['top']}"], VIA_DEFLATE)
        metal = OasisWriter(fm, unit, [*names, f"METAL_{bank['top']}"], METAL_DEFLATE)
        for ref, (name, meta, t, i) in enumerate(iter_tiles(nl, bank["tiles"])):
            rom = TileRom(t, i, meta, fabric)
            geo.check_fits(rom.scale.shape[0], f"tile {names[ref]} ({name})")
            via.cell(ref)
            for area, grid in (("array", rom.array), ("scale", rom.scale)):
                if fast.ok:
                    x, y = fast.rows(area, grid)
                else:
                    x, y = _via_rows(geo.via_positions(area, grid), g)
                via.rect_rows(geo.via, geo.size // g, x, y)
            metal.cell(ref)
            cfg = geo.config_positions(config_bits(rom.config)) // g
            metal.rect_column(geo.metal, geo.cfg_len // g, geo.strap_w // g, cfg)
            rp = geo.row_strap_positions(rom.block[1]) // g
            metal.rect_column(geo.metal, geo.row_strap_len // g, geo.strap_w // g, rp)
        for w in (via, metal):
            w.cell(len(places))
            for ref, (_, x, y) in enumerate(places):
                w.placement(ref, x * geo.tpx // g, y * geo.tpy // g)
            w.close()


def write_oas(nl, banks, out_dir: Path, workers: int, progress) -> None:
    """Write every bank's ``via`` and ``metal`` OASIS files (``bank["files"]``) into
    ``out_dir``, a bank per worker process."""
    if progress:
        progress.start("writing the via and metal layers (OASIS)", len(banks))
    args = [(str(nl.path), b, str(out_dir)) for b in banks]
    with pool(min(len(banks), workers)) as ex:
        for _ in ex.map(_write_oas_bank, *zip(*args, strict=True)):
            if progress:
                progress.advance(1)
