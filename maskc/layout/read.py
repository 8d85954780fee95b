"""Reading the layers back (``maskc verify``): every via and strap of the layer files is
extracted with gdstk, each tile's ROM (cell values, scale-ROM bits) and configuration word are
rebuilt from them and compared with the netlist, bank by bank, in parallel processes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from maskc.layout.geometry import CELL_BITS, Geometry
from maskc.layout.rom import (
    CONFIG_FIELDS,
    TileRom,
    nibbles_to_bits,
    parse_config_bits,
    record_bits,
)


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
                self.problems.append(f"cell {cell.name}: reference to {child.name} is rotated, "
                                     "mirrored or magnified")  # fmt: skip
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
    for area, nlines, pitch, y0 in (("array", geo.rows, geo.cpy, geo.oy),
                                    ("scale", lines, geo.line_pitch, geo.scale_y)):  # fmt: skip
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
            problems.append(f"{area} line {r} cell {rest // CELL_BITS} bit {rest % CELL_BITS}: "
                            "two vias on one site")  # fmt: skip
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


class _Layer:
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
            return [(self.f.names[c] if c >= 0 else "?", int(x), int(y), rep)
                    for c, (x, y) in zip(child.tolist(), origin.tolist(), strict=True)]  # fmt: skip
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


def _split(segments: list, part: int, parts: int) -> list:
    """Part ``part`` of ``parts`` contiguous shares of a bank's tile segments."""
    flat = [(n, i) for n, a, b in segments for i in range(a, b)]
    lo, hi = len(flat) * part // parts, len(flat) * (part + 1) // parts
    out: list[list] = []
    for n, i in flat[lo:hi]:
        if out and out[-1][0] == n and out[-1][2] == i:
            out[-1][2] = i + 1
        else:
            out.append([n, i, i + 1])
    return out


def _verify_bank(nl, fabric, bank: dict, paths: dict[str, str], limit: int,
                 part: int = 0, parts: int = 1) -> list[str]:  # fmt: skip
    """Check the tiles of share ``part`` of ``parts`` of a bank; share 0 also checks the top
    cells (every tile of the bank placed at its site, no other tile cells)."""
    import re

    geo = Geometry(fabric)
    via = _Layer(paths["via"], geo, geo.via, geo.size)
    metal = _Layer(paths["metal"], geo, geo.metal, None)
    problems: list[str] = []
    expected = set()
    from maskc.layout import _tiles, tile_name, tile_positions

    for name, meta, t, i in _tiles(nl, _split(bank["tiles"], part, parts)):
        rom = TileRom(t, i, meta, fabric)
        tn = tile_name(rom.pos)
        vias, straps = via.shapes(tn), metal.shapes(tn)
        if vias is None or straps is None:
            problems.append(f"tile {tn} ({name}): missing from the layer files")
            continue
        arr, sc, probs = extract_tile(vias, geo, rom.scale.shape[0])
        problems += [f"tile {tn} ({name}): {p}" for p in probs]
        for r, k in np.argwhere(arr != rom.array)[:limit].tolist():
            want, got = int(rom.array[r, k]), int(arr[r, k])
            flip = [b for b in range(CELL_BITS) if (want ^ got) >> b & 1]
            bits = ", ".join(f"bit {b}: expected {want >> b & 1}, found {got >> b & 1}"
                             for b in flip)  # fmt: skip
            problems.append(f"tile {tn} ({name}) cell ({r}, {k}): expected value {want}, "
                            f"found {got} ({bits})")  # fmt: skip
        if not np.array_equal(sc, rom.scale):
            want = nibbles_to_bits(rom.scale, rom.scale.size * CELL_BITS)
            got = nibbles_to_bits(sc, sc.size * CELL_BITS)
            rb = record_bits(meta["format"], rom.groups)
            for b in np.nonzero(want != got)[0][:3].tolist():
                where = (f"row {b // rb}'s record bit {b % rb}" if b < geo.rows * rb
                         else f"level-table bit {b - geo.rows * rb}")  # fmt: skip
                problems.append(f"tile {tn} ({name}) scale ROM bit {b} ({where}): expected "
                                f"{int(want[b])}, found {int(got[b])}")  # fmt: skip
        cfg_bits, rows, probs = extract_metal(straps, geo)
        problems += [f"tile {tn} ({name}): {p}" for p in probs]
        got_cfg = parse_config_bits(cfg_bits)
        if got_cfg != rom.config:
            diff = {k: (v, got_cfg[k]) for k, v in rom.config.items() if got_cfg[k] != v}
            problems.append(f"tile {tn} ({name}) configuration straps: expected/found {diff}")
        if rows != list(range(rom.block[1])):
            problems.append(f"tile {tn} ({name}): row straps on {len(rows)} rows, expected rows "
                            f"0..{rom.block[1] - 1}")  # fmt: skip
        if len(problems) >= limit:
            return problems[:limit]
    problems += [f"{p} (via layer)" for p in via.problems[:3]]
    problems += [f"{p} (metal layer)" for p in metal.problems[:3]]
    d = bank["die"]
    expected |= {tile_name(pos) for _n, _i, pos in tile_positions(nl, bank["tiles"])}
    for layer, lay in (("via", via), ("metal", metal)):
        if part:
            lay.close()
            continue
        top_name = f"{layer.upper()}_{bank['top']}"
        refs = lay.placements(top_name)
        if refs is None:
            problems.append(f"{layer}: no top cell {top_name}")
            refs = []
        seen = set()
        for tn, x, y, rep in refs:
            want = f"T{d}_{x // geo.tpx}_{y // geo.tpy}"
            if tn != want or x % geo.tpx or y % geo.tpy or rep:
                problems.append(f"{layer}: tile cell {tn} placed at ({x}, {y}), the site of {want}")
            seen.add(tn)
        for tn in sorted(expected - seen):
            problems.append(f"{layer}: tile {tn} is not placed")
        for tn in sorted(n for n in lay.names if re.fullmatch(r"T\d+_\d+_\d+", n)):
            if tn not in expected:
                problems.append(f"{layer}: unexpected tile cell {tn}")
        lay.close()
    return problems[:limit]


def _verify_bank_worker(nl_root: str, bank: dict, paths: dict, limit: int, part: int = 0,
                        parts: int = 1):  # fmt: skip
    from maskc.netlist import load_netlist

    nl = load_netlist(Path(nl_root).parent)
    try:
        return _verify_bank(nl, nl.fabric, bank, paths, limit, part, parts)
    except Exception as e:  # an unreadable layer file: gdstk raises plain errors
        return [f"{', '.join(Path(p).name for p in paths.values())}: unreadable ({e})"]


def verify_layers(nl, fabric, root, banks: list[dict], limit: int = 10,
                  progress=None) -> list[str]:  # fmt: skip
    """Compare the layer files under ``root`` with the netlist: every tile's cells, scale bits,
    configuration and position, in parallel processes (an OASIS bank per process; a GDSII file,
    memory-mapped, shared by all). Returns the first ``limit`` mismatches (empty: all match)."""
    import os
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    workers = os.cpu_count() or 1
    args = []
    for b in banks:
        paths = {k: str(Path(root) / v) for k, v in b["files"].items()}
        parts = workers if paths["via"].endswith(".gds") and len(banks) < workers else 1
        for k in range(parts):
            args.append((str(nl.path), b, paths, limit, k, parts))
    n = min(len(args), workers)
    if progress:
        progress.start("reading the layers back and comparing them with the netlist", len(args))
    results = []
    if n <= 1:
        for a in args:
            results.append(_verify_bank_worker(*a))
            if progress:
                progress.advance(1)
    else:
        with ProcessPoolExecutor(n, mp_context=get_context("fork")) as ex:
            for r in ex.map(_verify_bank_worker, *zip(*args, strict=True)):
                results.append(r)
                if progress:
                    progress.advance(1)
    return [p for r in results for p in r][:limit]


def tile_hashes(nl) -> dict[str, str]:
    """``{tile name: sha256}`` of every tile's ROM content (codes, group fields, row exponents,
    levels) and block, for the manifest."""
    from maskc.layout import tile_name

    out = {}
    for name in sorted(nl.matrices):
        meta = nl.matrices[name]
        t = nl.tile_arrays(name)
        for i in range(meta["tiles"]):
            h = hashlib.sha256(name.encode())
            for k in ("block", "codes", "scale_m", "scale_s", "scale_e", "zero_m", "zero_s",
                      "zero_e"):  # fmt: skip
                if k in t:
                    h.update(np.ascontiguousarray(t[k][i]).view(np.uint8).data)
            h.update(np.ascontiguousarray(t["levels"]).view(np.uint8).data)
            out[tile_name(t["pos"][i])] = h.hexdigest()
    return dict(sorted(out.items()))


def verify_build(path, limit: int = 10, progress=None) -> dict:
    """``maskc verify``: the layer files read back and compared with the netlist, then every
    file's manifest hash. Returns ``{"problems": [...], "tiles": n, "files": [...]}``."""
    from maskc.build import open_build, verify_hashes
    from maskc.errors import InputError, MaskcError
    from maskc.netlist import load_netlist

    b = open_build(path, check_hashes=False)
    nl = load_netlist(b.path)
    fab = nl.fabric
    if "layers/index.json" not in b.manifest["files"]:
        raise InputError(f"{b.path}: the build has no layers/ (recompile it with this maskc)")
    index = b.json("layers/index.json")
    problems = verify_layers(nl, fab, b.path / "layers", index["banks"], limit, progress)
    try:
        verify_hashes(b.path, b.manifest["files"])
    except MaskcError as e:
        problems.append(str(e))
    files = sorted(f"layers/{f}" for bank in index["banks"] for f in bank["files"].values())
    tiles = sum(m["tiles"] for m in nl.matrices.values())
    return {"problems": problems[:limit], "tiles": tiles, "files": files}
