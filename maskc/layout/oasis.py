"""The OASIS layer writer (gdstk): each tile's vias flat, one rectangle per line of via sites
with an explicit repetition along x, in coordinates of the layout grid, compressed (about one
byte per weight); one bank's two files per worker process."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maskc.layout.banks import iter_tiles, tile_name
from maskc.layout.geometry import CELL_BITS, Geometry
from maskc.layout.rom import TileRom, config_bits
from maskc.parallel import atomic_path, pool

#: zlib level of OASIS CBLOCKs: 4, measured against 6 on SmolLM2's banks, 1.8-2.5x less CPU for
#: files 6.8-7.0% larger (docs/layout.md); 5 saves less time, 9 quadruples it for 4% less
OAS_LEVEL = 4


def _rect_rep(pos: np.ndarray, w: int, h: int, layer: tuple[int, int], grid: int):
    """One rectangle repeated at every position of ``pos`` (dbu, kept in its order), in
    coordinates of the layout grid."""
    import gdstk

    p = pos // grid
    x0, y0 = (int(v) for v in p[0])
    r = gdstk.rectangle(
        (x0, y0), (x0 + w // grid, y0 + h // grid), layer=layer[0], datatype=layer[1]
    )
    if len(p) > 1:
        r.repetition = gdstk.Repetition(offsets=(p[1:] - p[0]).astype(np.float64))
    return r


#: the via-site bits of a 4-bit slot value: bool [16, CELL_BITS]
_SLOT_BITS = ((np.arange(16)[:, None] >> np.arange(CELL_BITS)) & 1).astype(bool)


def _via_rows(pos: np.ndarray, size: int, layer: tuple[int, int], grid: int) -> list:
    """Vias (dbu corners in row-major order) as one rectangle per line of sites, repeated
    along x: the smallest OASIS (horizontal repetitions with small, regular spacings compress
    best). The general path, for fabrics where :class:`_FastVias` does not apply."""
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


class _FastVias:
    """The same rectangles as :func:`_via_rows` without building the via positions, for
    fabrics whose 4 bit sites lie on one site row in increasing x (``sites_x >= 4``, as on
    ``hc1``): then every line of a nibble grid is one line of sites, and the vias of a line
    are its set bits in (column, bit) order. One flat scan of the grid's bits, line bounds by
    binary search, x from a per-(line, column, bit) table cached per grid shape, offsets of
    every line at once handed to gdstk as lists of floats (parsed much faster than arrays)."""

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

    def rows(self, area: str, grid: np.ndarray) -> list:
        import gdstk

        geo, g = self.geo, self.g
        lines, cols = grid.shape
        if not lines:
            return []
        idx = np.flatnonzero(_SLOT_BITS[grid])
        per_line = cols * CELL_BITS
        bounds = np.searchsorted(idx, np.arange(lines + 1, dtype=np.int64) * per_line)
        keep = np.flatnonzero(bounds[1:] > bounds[:-1])
        starts, ends = bounds[:-1][keep], bounds[1:][keep]
        _, y_line = geo.slot_origin(area, keep, np.zeros(len(keep), np.int64))
        x = self._table(lines, cols)[idx]
        x0 = x[starts]
        off = (x - np.repeat(x0, ends - starts)).astype(np.float64).tolist()
        s = geo.size // g
        lay, dt = geo.via
        out = []
        for a, b, xa, ya in zip(
            starts.tolist(), ends.tolist(), x0.tolist(), (y_line // g).tolist(), strict=True
        ):
            r = gdstk.rectangle((xa, ya), (xa + s, ya + s), layer=lay, datatype=dt)
            if b - a > 1:
                r.repetition = gdstk.Repetition(x_offsets=off[a + 1 : b])
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
    fast = _FastVias(geo, g)
    for name, meta, t, i in iter_tiles(nl, bank["tiles"]):
        rom = TileRom(t, i, meta, fabric)
        cname = tile_name(rom.pos)
        geo.check_fits(rom.scale.shape[0], f"tile {cname} ({name})")
        vc = via.new_cell(cname)
        if fast.ok:
            rects = fast.rows("array", rom.array) + fast.rows("scale", rom.scale)
        else:
            pos = np.concatenate(
                [geo.via_positions("array", rom.array), geo.via_positions("scale", rom.scale)]
            )
            rects = _via_rows(pos, geo.size, geo.via, g) if len(pos) else []
        if rects:
            vc.add(*rects)
        mc = metal.new_cell(cname)
        cfg = geo.config_positions(config_bits(rom.config))
        mc.add(_rect_rep(cfg, geo.cfg_len, geo.strap_w, geo.metal, g))
        rp = geo.row_strap_positions(rom.block[1])
        mc.add(_rect_rep(rp, geo.row_strap_len, geo.strap_w, geo.metal, g))
        _, x, y = rom.pos
        top_v.add(gdstk.Reference(vc, (x * geo.tpx // g, y * geo.tpy // g)))
        top_m.add(gdstk.Reference(mc, (x * geo.tpx // g, y * geo.tpy // g)))
    for layer, lib in (("via", via), ("metal", metal)):
        with atomic_path(Path(out_dir) / bank["files"][layer]) as tmp:
            lib.write_oas(tmp, compression_level=OAS_LEVEL)


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
