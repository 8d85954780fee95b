"""Reading layer files back: ``LayerFile`` opens a via or metal layer file (GDSII through
maskc's streaming reader, OASIS through gdstk) and flattens a tile cell's hierarchy and
repetitions into the corners of its shapes; ``extract_tile`` and ``extract_metal`` classify
those shapes by site: a tile's cell nibbles and scale-ROM nibbles, its configuration bits and
row straps. Used by ``maskc verify``, ``maskc render`` and ``maskc diff-layers``."""

from __future__ import annotations

import numpy as np

from maskc.layout.geometry import CELL_BITS, Geometry
from maskc.layout.rom import CONFIG_FIELDS


class _Flattener:
    """Lower-left corners (dbu) of every rectangle on one layer inside a cell, hierarchy
    flattened (each cell's result cached: a GDS word cell is expanded once)."""

    def __init__(self, layer: tuple[int, int], size: tuple[int, int] | None) -> None:
        self.layer, self.size = layer, size
        self.cache: dict[str, np.ndarray] = {}
        self.problems: list[str] = []

    def __call__(self, cell) -> np.ndarray:
        hit = self.cache.get(cell.name)
        if hit is not None:
            return hit
        parts = [np.zeros((0, 2), np.int64)]
        for q in cell.polygons:
            if (q.layer, q.datatype) != self.layer:
                continue
            pts = np.asarray(q.points)
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            if len(pts) != 4 or (self.size is not None and tuple(np.rint(hi - lo)) != self.size):
                at = tuple(np.rint(lo).astype(int).tolist())
                self.problems.append(f"cell {cell.name}: the shape at {at} is not a via")
            parts.append(_repeat(np.rint(lo)[None, :], q.repetition))
        groups: dict[str, list] = {}
        for ref in cell.references:
            child = ref.cell
            if isinstance(child, str):
                self.problems.append(f"cell {cell.name}: references missing cell {child}")
                continue
            if ref.rotation or ref.x_reflection or ref.magnification != 1:
                self.problems.append(
                    f"cell {cell.name}: reference to {child.name} is rotated, mirrored or magnified"
                )
                continue
            o = np.asarray(ref.origin, np.float64)[None, :]
            groups.setdefault(child.name, [child, []])[1].append(_repeat(o, ref.repetition))
        for child, origins in groups.values():
            sub = self(child)
            if len(sub):
                o = np.concatenate(origins)
                parts.append((sub[None, :, :] + o[:, None, :]).reshape(-1, 2))
        out = np.rint(np.concatenate(parts)).astype(np.int64)
        self.cache[cell.name] = out
        return out


def _repeat(base: np.ndarray, rep) -> np.ndarray:
    if rep is None or rep.size <= 1:
        return base
    return (base[:, None, :] + np.asarray(rep.get_offsets())[None, :, :]).reshape(-1, 2)


def extract_tile(vias: np.ndarray, geo: Geometry, lines: int):
    """Via corners of one tile cell -> ``(array nibbles [rows, cols], scale nibbles [lines,
    cols], problems)``: vias off every site, and sites with two vias, are problems."""
    problems: list[str] = []
    x, y = vias[:, 0], vias[:, 1]
    grids = []
    for area, nlines, pitch, y0 in (
        ("array", geo.rows, geo.cpy, geo.oy),
        ("scale", lines, geo.line_pitch, geo.scale_y),
    ):
        y_end = y0 + nlines * pitch
        sel = (y >= y0) & (y < y_end) & (x >= geo.ox) & (x < geo.ox + geo.cols * geo.cpx)
        dx, dy = x[sel] - geo.ox, y[sel] - y0
        k, line = dx // geo.cpx, dy // pitch
        off = np.stack([dx % geo.cpx, dy % pitch], 1)
        bit = np.full(len(k), -1)
        for p in range(CELL_BITS):
            bit[(off == geo.bit_off[p]).all(axis=1)] = p
        ok = bit >= 0
        if not ok.all():
            i = np.nonzero(~ok)[0][0]
            problems.append(f"via off-site at ({x[sel][i]}, {y[sel][i]}) in the {area}")
        idx = (line[ok] * geo.cols + k[ok]) * CELL_BITS + bit[ok]
        count = np.bincount(idx, minlength=nlines * geo.cols * CELL_BITS)
        for j in np.nonzero(count > 1)[0][:3].tolist():
            r, rest = divmod(j, geo.cols * CELL_BITS)
            problems.append(
                f"{area} line {r} cell {rest // CELL_BITS} bit {rest % CELL_BITS}: "
                "two vias on one site"
            )
        bits = (count > 0).reshape(nlines, geo.cols, CELL_BITS).astype(np.uint8)
        grids.append((bits << np.arange(CELL_BITS, dtype=np.uint8)).sum(axis=2).astype(np.uint8))
        x, y = x[~sel], y[~sel]
    if len(x):
        problems.append(f"{len(x)} via(s) outside the tile's ROM, first at ({x[0]}, {y[0]})")
    return grids[0], grids[1], problems


def extract_metal(shapes: np.ndarray, geo: Geometry) -> tuple[np.ndarray, list[int], list[str]]:
    """Strap corners of one metal tile cell -> (configuration bits, strapped rows, problems)."""
    nbits = sum(n for _, n in CONFIG_FIELDS)
    bits = np.zeros(nbits, np.uint8)
    rows: list[int] = []
    problems: list[str] = []
    for x, y in shapes.tolist():
        b, rem = divmod(y - geo.oy, geo.strap_pitch)
        r, rem2 = divmod(y - geo.oy, geo.cpy)
        if x == geo.cfg_x0 and rem == 0 and 0 <= b < nbits:
            bits[b] = 1
        elif x == geo.ox and rem2 == 0 and 0 <= r < geo.rows:
            rows.append(r)
        else:
            problems.append(f"metal strap off its slots at ({x}, {y})")
    return bits, sorted(rows), problems


class LayerFile:
    """One layer file read back: ``shapes(tile)`` flattened corners of the layer's shapes in a
    cell (``None`` if there is no such cell); ``placements(top)`` the top cell's references
    as ``(cell name, x, y, repeated)`` (``None`` if there is no such cell); ``problems``.
    GDSII goes through the streaming reader (:mod:`maskc.layout.gdsread`), OASIS through
    gdstk."""

    def __init__(self, path: str, geo: Geometry, layer: tuple[int, int], size) -> None:
        self.gds = path.endswith(".gds")
        if self.gds:
            from maskc.layout.gdsread import GdsFile, GdsFlattener

            self.f = GdsFile(path, geo.dbu_m)
            self.flat = GdsFlattener(self.f, layer, size)
            self.names = self.f.names
        else:
            import gdstk

            self.lib = gdstk.read_oas(path, unit=geo.dbu_m)
            self.cells = {c.name: c for c in self.lib.cells}
            self.flat = _Flattener(layer, None if size is None else (size, size))
            self.names = list(self.cells)

    @property
    def problems(self) -> list[str]:
        return self.flat.problems

    def shapes(self, name: str):
        if self.gds:
            i = self.f.index.get(name)
            return None if i is None else self.flat(i)
        c = self.cells.get(name)
        return None if c is None else self.flat(c)

    def placements(self, top: str):
        if self.gds:
            i = self.f.index.get(top)
            if i is None:
                return None
            child, origin = self.flat.refs(i)
            rep = bool((self.f.elements(i)[:, 0] == 2).any())
            return [
                (self.f.names[c] if c >= 0 else "?", int(x), int(y), rep)
                for c, (x, y) in zip(child.tolist(), origin.tolist(), strict=True)
            ]
        c = self.cells.get(top)
        if c is None:
            return None
        out = []
        for ref in c.references:
            x, y = (round(v) for v in ref.origin)
            rep = ref.repetition is not None and ref.repetition.size > 1
            out.append((ref.cell.name if hasattr(ref.cell, "name") else str(ref.cell), x, y, rep))
        return out

    def close(self) -> None:
        if self.gds:
            self.f.close()
