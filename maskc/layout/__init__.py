"""Stage 5, layout (work in progress, not wired into the CLI): the netlist's tiles -> the two
customizable layers.

* via layer: one via site per stored bit, via present means 1: a ROM cell's 4 bits sit at its
  first 4 via sites (site ``p`` for bit ``p``), and every scale-ROM bit at its own site (one
  line of sites per tile row's record, then one line for the level table). Binary bit vias
  beat one-hot code vias in OASIS size (0.74 against 1.02 bytes per weight, measured on
  SmolLM2's gate_proj tile), because dense position lists have small, regular deltas;
* metal layer: per tile, a strap per used cell row (the row's product-line enable) and the
  tile's configuration word as straps present/absent at fixed slots (enabled, code width,
  layer, matrix kind, row block, column block). It depends only on the placement, so two
  fine-tunes of one architecture give the same metal layer.

Tiles are cells named by their position (``T<die>_<x>_<y>``) so two builds on one fabric share
their structure. In OASIS each tile's vias of one site are one rectangle with an explicit
repetition (``offsets``), about one byte per weight after the file's compression.
"""

from __future__ import annotations

import numpy as np

EMPTY = -1


def cell_values(codes: np.ndarray, rows: int, cols: int, bits: int, fabric) -> np.ndarray:
    """The 4-bit value of every cell of one tile, int16 ``[TR, columns]``, ``EMPTY`` where the
    tile holds no weight (padding). ``codes``: the tile's codes ``[TR, W]``; ``rows``/``cols``:
    the block's real rows and weights."""
    tr, ncell = fabric.tile.rows, fabric.tile.columns
    out = np.full((tr, ncell), EMPTY, np.int16)
    c = codes[:rows, :cols].astype(np.int16)
    if bits == 4 or (bits == 3 and fabric.tile.three_bit != "packed"):
        out[:rows, :cols] = c
    elif bits == 8:  # two cells per weight: high nibble, then low nibble
        out[:rows, 0 : 2 * cols : 2] = c >> 4
        out[:rows, 1 : 2 * cols : 2] = c & 15
    elif bits == 3:  # four 3-bit codes -> one 12-bit word -> three cells (high to low)
        n4 = -(-cols // 4)
        pad = np.zeros((rows, n4 * 4), np.int16)
        pad[:, :cols] = c
        q = pad.reshape(rows, n4, 4)
        word = (q[..., 0] << 9) | (q[..., 1] << 6) | (q[..., 2] << 3) | q[..., 3]
        used = -(-cols * 3 // 4)  # cells holding real bits
        trip = np.stack([word >> 8, (word >> 4) & 15, word & 15], axis=-1).reshape(rows, -1)
        out[:rows, :used] = trip[:, :used]
    else:
        raise ValueError(f"cell_values: bits must be 3, 4 or 8, got {bits}")
    return out


def codes_from_cells(cells: np.ndarray, rows: int, cols: int, bits: int, fabric) -> np.ndarray:
    """The inverse of :func:`cell_values`: the block's codes ``[rows, cols]`` (uint8)."""
    v = cells[:rows].astype(np.int16)
    if bits == 4 or (bits == 3 and fabric.tile.three_bit != "packed"):
        return v[:, :cols].astype(np.uint8)
    if bits == 8:
        return ((v[:, 0 : 2 * cols : 2] << 4) | v[:, 1 : 2 * cols : 2]).astype(np.uint8)
    n4 = -(-cols // 4)
    used = -(-cols * 3 // 4)
    trip = np.zeros((rows, n4 * 3), np.int16)
    trip[:, :used] = v[:, :used]
    t = trip.reshape(rows, n4, 3)
    word = (t[..., 0] << 8) | (t[..., 1] << 4) | t[..., 2]
    q = np.stack([word >> 9, (word >> 6) & 7, (word >> 3) & 7, word & 7], axis=-1)
    return q.reshape(rows, -1)[:, :cols].astype(np.uint8)


# -- scale ROM bits -----------------------------------------------------------------------------


def _fields(fmt: dict) -> list[tuple[str, int, bool]]:
    """Per-group fields of one tile row in ROM order: (name, bits, signed)."""
    out = [("scale_m", fmt["scale_bits"], False)]
    if fmt["scale_shift_bits"]:
        out.append(("scale_s", fmt["scale_shift_bits"], False))
    if fmt["zero_bits"]:
        out.append(("zero_m", fmt["zero_bits"], True))
        if fmt["zero_shift_bits"]:
            out.append(("zero_s", fmt["zero_shift_bits"], False))
    return out


def _to_bits(values: np.ndarray, nbits: int) -> np.ndarray:
    """Two's-complement ``nbits``-bit patterns of ``values`` (any shape) -> uint8 [..., nbits],
    most significant bit first."""
    v = values.astype(np.int64) & ((1 << nbits) - 1)
    shifts = np.arange(nbits - 1, -1, -1, dtype=np.int64)
    return ((v[..., None] >> shifts) & 1).astype(np.uint8)


def _from_bits(bits: np.ndarray, signed: bool) -> np.ndarray:
    n = bits.shape[-1]
    v = (bits.astype(np.int64) << np.arange(n - 1, -1, -1, dtype=np.int64)).sum(axis=-1)
    if signed:
        v = np.where(v >= 1 << (n - 1), v - (1 << n), v)
    return v


def scale_bits(t: dict, i: int, fmt: dict, tile_rows: int, groups: int) -> np.ndarray:
    """The scale-ROM bit string of tile ``i`` of a matrix (uint8, one entry per bit): per tile
    row, every group's fields (``_fields`` order), then the row exponents (8 bits each); after
    all rows, the level table (``level_bits`` per level)."""
    parts = [_to_bits(t[name][i][:, :groups], nb) for name, nb, _ in _fields(fmt)]
    rows = np.concatenate(parts, axis=-1).reshape(tile_rows, -1)
    ex = [_to_bits(t["scale_e"][i], 8)]
    if fmt["zero_bits"]:
        ex.append(_to_bits(t["zero_e"][i], 8))
    rows = np.concatenate([rows, *ex], axis=-1)
    levels = _to_bits(t["levels"], fmt["level_bits"]).reshape(-1)
    return np.concatenate([rows.reshape(-1), levels])


def record_bits(fmt: dict, groups: int) -> int:
    """Scale-ROM bits of one tile row: its groups' fields and its row exponents."""
    return groups * sum(nb for _, nb, _ in _fields(fmt)) + (16 if fmt["zero_bits"] else 8)


def parse_scale_bits(bits: np.ndarray, fmt: dict, tile_rows: int, groups: int) -> dict:
    """The inverse of :func:`scale_bits`: field arrays of one tile."""
    fields = _fields(fmt)
    per_group = sum(nb for _, nb, _ in fields)
    n_ex = 16 if fmt["zero_bits"] else 8
    per_row = groups * per_group + n_ex
    rows = bits[: tile_rows * per_row].reshape(tile_rows, per_row)
    out = {}
    g = rows[:, : groups * per_group].reshape(tile_rows, groups, per_group)
    k = 0
    for name, nb, signed in fields:
        out[name] = _from_bits(g[:, :, k : k + nb], signed)
        k += nb
    ex = rows[:, groups * per_group :]
    out["scale_e"] = _from_bits(ex[:, :8], True)
    if fmt["zero_bits"]:
        out["zero_e"] = _from_bits(ex[:, 8:16], True)
    lv = bits[tile_rows * per_row :]
    out["levels"] = _from_bits(lv.reshape(-1, fmt["level_bits"]), True)
    return out


# -- the tile configuration word (metal layer) --------------------------------------------------

#: (field, bits) of the 64-bit configuration word, most significant first
CONFIG_FIELDS = (("enabled", 1), ("mode", 2), ("layer", 8), ("role", 4), ("row_block", 12),
                 ("col_block", 12), ("rows", 12), ("cols", 13))  # fmt: skip
ROLES = ("embed", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
         "lm_head")  # fmt: skip
MODES = {3: 0, 4: 1, 8: 2}


def config_word(meta: dict, block: list[int], fabric) -> dict:
    """The configuration of one placed tile (what the metal straps encode)."""
    r0, nr, c0, nc = block
    tr = fabric.tile.rows
    w = fabric.weights_per_tile_row(meta["format"]["bits"])
    return {
        "enabled": 1,
        "mode": MODES[meta["format"]["bits"]],
        "layer": 255 if meta["layer"] is None else meta["layer"],
        "role": ROLES.index(meta["role"]),
        "row_block": r0 // tr,
        "col_block": c0 // w,
        "rows": nr,
        "cols": nc,
    }


def config_bits(cfg: dict) -> np.ndarray:
    return np.concatenate([_to_bits(np.array(cfg[k]), n) for k, n in CONFIG_FIELDS])


def parse_config_bits(bits: np.ndarray) -> dict:
    out, k = {}, 0
    for name, n in CONFIG_FIELDS:
        out[name] = int(_from_bits(bits[k : k + n], False))
        k += n
    return out


# -- geometry -----------------------------------------------------------------------------------


class Geometry:
    """Where things are inside a tile cell (dbu), from the fabric."""

    def __init__(self, fabric) -> None:
        g, v, m, t = fabric.geometry, fabric.layers.via, fabric.layers.metal, fabric.tile
        self.ox, self.oy = g.array_origin_x, g.array_origin_y
        self.cpx, self.cpy = g.cell_pitch_x, g.cell_pitch_y
        self.spx, self.spy = v.site_pitch_x, v.site_pitch_y
        self.sx, self.sy = v.sites_x, v.sites_y
        self.size = v.size
        self.tpx, self.tpy = g.tile_pitch_x, g.tile_pitch_y
        self.rows, self.cols = t.rows, t.columns
        #: scale-ROM bit sites: above the cell array, one cell pitch apart, site pitch grid
        self.bits_per_line = t.columns * v.sites_x
        self.scale_y = self.oy + (t.rows + 1) * g.cell_pitch_y
        self.via = (v.gds_layer, v.gds_datatype)
        self.metal = (m.gds_layer, m.gds_datatype)
        self.strap_w, self.strap_pitch = m.strap_width, m.strap_pitch
        #: configuration straps: left of the array, one per bit, strap_pitch apart
        self.cfg_x0 = max(0, self.ox - 8 * self.spx)
        self.cfg_len = 6 * self.spx

    def cell_sites(self, cells: np.ndarray) -> dict[int, np.ndarray]:
        """``{bit: int64 [n, 2] via positions}`` for a tile's cell values (bit p of every used
        cell whose value has it set)."""
        out = {}
        for bit in range(4):
            r, k = np.nonzero((cells >= 0) & ((cells >> bit) & 1 == 1))
            if len(r):
                x = self.ox + k.astype(np.int64) * self.cpx + (bit % self.sx) * self.spx
                y = self.oy + r.astype(np.int64) * self.cpy + (bit // self.sx) * self.spy
                out[bit] = np.stack([x, y], axis=1)
        return out

    def bit_sites(self, bits: np.ndarray, line: int) -> np.ndarray:
        """Via positions of the 1 bits of a scale-ROM bit string laid out ``line`` bits per
        line of sites (one tile row's record per line)."""
        b = np.nonzero(bits)[0].astype(np.int64)
        x = self.ox + (b % line) * self.spx
        y = self.scale_y + (b // line) * self.spy
        return np.stack([x, y], axis=1)


# -- writing ------------------------------------------------------------------------------------

#: GDS timestamps are fixed so the same inputs give the same bytes
TIMESTAMP = (2000, 1, 1, 0, 0, 0)


def _rect_rep(pos: np.ndarray, w: int, h: int, layer: tuple[int, int]):
    import gdstk

    # column-major order: scale-ROM bits of one record position repeat down the rows, and the
    # deltas compress better (measured: 0.84 against 0.86 B/weight on SmolLM2 layer 0, level 9)
    pos = pos[np.lexsort((pos[:, 1], pos[:, 0]))]
    x0, y0 = (int(v) for v in pos[0])
    r = gdstk.rectangle((x0, y0), (x0 + w, y0 + h), layer=layer[0], datatype=layer[1])
    if len(pos) > 1:
        r.repetition = gdstk.Repetition(offsets=(pos[1:] - pos[0]).astype(np.float64))
    return r


def tile_name(pos) -> str:
    d, x, y = (int(v) for v in pos)
    return f"T{d}_{x}_{y}"


#: ROM cells per layer file (bank): bounds the memory of writing and of reading back
BANK_CELLS = 1 << 24


def plan_banks(nl, fabric) -> list[dict]:
    """Whole matrices, in data-flow order, grouped per die into banks of at most ``BANK_CELLS``
    cells: ``[{"die", "matrices": [...], "stem"}]``; one bank is named ``via``/``metal``,
    several ``via.d<die>.b<k>``."""
    order: list[str] = []
    for op in nl.doc["ops"]:
        n = op.get("matrix")
        if n is not None and n not in order:
            order.append(n)
    die_of = {}
    for n in order:
        f = nl.path / nl.matrices[n]["file"]
        from maskc.safetensors_io import SafetensorsFile

        die_of[n] = int(SafetensorsFile(f).read_raw(f"{n}/pos")[0, 0])
    banks: list[dict] = []
    for n in order:
        cells = nl.matrices[n]["tiles"] * fabric.cells_per_tile
        last = banks[-1] if banks else None
        if last is None or last["die"] != die_of[n] or last["cells"] + cells > BANK_CELLS:
            banks.append({"die": die_of[n], "matrices": [], "cells": 0})
            last = banks[-1]
        last["matrices"].append(n)
        last["cells"] += cells
    for k, bank in enumerate(banks):
        bank["stem"] = "" if len(banks) == 1 else f".d{bank['die']}.b{k:03d}"
        bank["top"] = f"D{bank['die']}_B{k:03d}"
        del bank["cells"]
    return banks


def build_libraries(nl, fabric, bank: dict):
    """``(via Library, metal Library)`` of one bank: one tile cell per placed tile and a top
    cell (``VIA_<top>``, ``METAL_<top>``) placing them on the die."""
    import gdstk

    geo = Geometry(fabric)
    unit = fabric.geometry.dbu_nm * 1e-9
    via = gdstk.Library("maskc_via", unit=unit, precision=unit)
    metal = gdstk.Library("maskc_metal", unit=unit, precision=unit)
    top_v = via.new_cell(f"VIA_{bank['top']}")
    top_m = metal.new_cell(f"METAL_{bank['top']}")
    for name in bank["matrices"]:
        meta = nl.matrices[name]
        t = nl.tile_arrays(name)
        fmt = meta["format"]
        tr, w = meta["tile_shape"]
        groups = w // fmt["group_size"]
        for i in range(meta["tiles"]):
            pos = t["pos"][i]
            r0, nr, c0, nc = (int(v) for v in t["block"][i])
            cname = tile_name(pos)
            vc = via.new_cell(cname)
            cells = cell_values(t["codes"][i], nr, nc, fmt["bits"], fabric)
            for _val, p in sorted(geo.cell_sites(cells).items()):
                vc.add(_rect_rep(p, geo.size, geo.size, geo.via))
            sb = geo.bit_sites(scale_bits(t, i, fmt, tr, groups), record_bits(fmt, groups))
            if len(sb):
                vc.add(_rect_rep(sb, geo.size, geo.size, geo.via))
            mc = metal.new_cell(cname)
            cfg = config_bits(config_word(meta, [r0, nr, c0, nc], fabric))
            ones = np.nonzero(cfg)[0].astype(np.int64)
            cp = np.stack([np.full(len(ones), geo.cfg_x0), geo.oy + ones * geo.strap_pitch], 1)
            mc.add(_rect_rep(cp, geo.cfg_len, geo.strap_w, geo.metal))
            rows = np.arange(nr * geo.sy, dtype=np.int64)
            ry = geo.oy + (rows // geo.sy) * geo.cpy + (rows % geo.sy) * geo.spy
            rp = np.stack([np.full(len(ry), geo.ox), ry], 1)
            mc.add(_rect_rep(rp, geo.cols * geo.cpx, geo.strap_w, geo.metal))
            _, x, y = (int(v) for v in pos)
            top_v.add(gdstk.Reference(vc, (x * geo.tpx, y * geo.tpy)))
            top_m.add(gdstk.Reference(mc, (x * geo.tpx, y * geo.tpy)))
    return via, metal


def _write_bank(nl_root: str, fabric_json: dict, bank: dict, out_dir: str, fmt: str) -> None:
    """Write one bank's two files (run in a worker process)."""
    import datetime
    from pathlib import Path

    from maskc.netlist import load_netlist

    nl = load_netlist(Path(nl_root).parent)
    fabric = _fabric_from_json(fabric_json, nl_root)
    via, metal = build_libraries(nl, fabric, bank)
    for layer, lib in (("via", via), ("metal", metal)):
        p = Path(out_dir) / f"{layer}{bank['stem']}.{fmt}"
        if fmt == "oas":
            lib.write_oas(str(p), compression_level=6)
        else:
            lib.write_gds(str(p), timestamp=datetime.datetime(*TIMESTAMP))


def write_layers(nl, fabric, out_dir, fmt: str = "gds", workers: int | None = None,
                 progress=None) -> list[dict]:  # fmt: skip
    """Write every bank's ``via*.<fmt>`` and ``metal*.<fmt>`` into ``out_dir`` and
    ``index.json`` listing the banks; returns the banks (with their ``files``)."""
    import json
    import os
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context
    from pathlib import Path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    banks = plan_banks(nl, fabric)
    for bank in banks:
        bank["files"] = {layer: f"{layer}{bank['stem']}.{fmt}" for layer in ("via", "metal")}
    if progress:
        progress.start("writing the via and metal layers", len(banks))
    args = [(str(nl.path), nl.doc["fabric"], b, str(out_dir), fmt) for b in banks]
    n = min(len(banks), workers or os.cpu_count() or 1)
    if n <= 1:
        for a in args:
            _write_bank(*a)
            if progress:
                progress.advance(1)
    else:
        with ProcessPoolExecutor(n, mp_context=get_context("fork")) as ex:
            for _ in ex.map(_write_bank, *zip(*args, strict=True)):
                if progress:
                    progress.advance(1)
    index = [{k: b[k] for k in ("die", "top", "matrices", "files")} for b in banks]
    (out_dir / "index.json").write_text(json.dumps({"format": fmt, "banks": index}, indent=1,
                                                   sort_keys=True) + "\n")  # fmt: skip
    return banks


def _fabric_from_json(d: dict, where: str):
    from maskc.fabric import parse_fabric

    tables = {k: v for k, v in d.items() if k not in ("schema", "derived")}
    return parse_fabric(tables, f"{where}: fabric")


# -- reading back (maskc verify) ----------------------------------------------------------------


def _positions(poly) -> np.ndarray:
    """Lower-left corners of a polygon and all its repetitions, int64 [n, 2]."""
    base = np.asarray(poly.points).min(axis=0)
    pts = base[None, :]
    if poly.repetition is not None and poly.repetition.size > 1:
        # explicit offsets exclude the element itself (gdstk's convention)
        off = np.asarray(poly.repetition.offsets, dtype=np.float64)
        pts = np.vstack([pts, base[None, :] + off])
    return np.rint(pts).astype(np.int64)


def extract_tile(cell, geo: Geometry, line: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """From a via tile cell: each cell's value from its bit vias ``[rows, cols]`` (cells with
    no via read 0), the scale bits (indices of bit vias, ``line`` bits per line) and problems
    (vias off their sites, a via twice). Vectorized over every polygon's repetitions."""
    size = geo.rows * geo.cols * 4
    bits: list[np.ndarray] = []
    problems: list[str] = []
    polys = [q for q in cell.polygons if (q.layer, q.datatype) == geo.via]
    if polys:  # every via's lower-left corner, then classified all at once
        pos = np.concatenate([_positions(q) for q in polys])
    else:
        pos = np.zeros((0, 2), np.int64)
    x, y = pos[:, 0], pos[:, 1]
    sc = y >= geo.scale_y
    if sc.any():
        dx, dy = x[sc] - geo.ox, y[sc] - geo.scale_y
        ok = (dx % geo.spx == 0) & (dy % geo.spy == 0) & (dx >= 0) & (dx // geo.spx < line)
        if not ok.all():
            bad = np.nonzero(~ok)[0][0]
            problems.append(f"scale via off-site at ({x[sc][bad]}, {y[sc][bad]})")
        bits.append((dy[ok] // geo.spy) * line + dx[ok] // geo.spx)
    ar = ~sc
    dx, dy = x[ar] - geo.ox, y[ar] - geo.oy
    k, r = dx // geo.cpx, dy // geo.cpy
    sx, sy = dx % geo.cpx, dy % geo.cpy
    bit = (sy // geo.spy) * geo.sx + sx // geo.spx
    ok = ((k >= 0) & (k < geo.cols) & (r >= 0) & (r < geo.rows) & (sx % geo.spx == 0)
          & (sy % geo.spy == 0) & (bit < 4))  # fmt: skip
    if not ok.all():
        bad = np.nonzero(~ok)[0][0]
        problems.append(f"via off-site at ({x[ar][bad]}, {y[ar][bad]})")
    count = np.bincount(((r[ok] * geo.cols + k[ok]) * 4 + bit[ok]), minlength=size)
    count = count.reshape(geo.rows, geo.cols, 4)
    for r, k, b in np.argwhere(count > 1)[:3].tolist():
        problems.append(f"cell ({r}, {k}) bit {b} has two vias")
    cells = ((count > 0) * (1 << np.arange(4, dtype=np.int16))).sum(axis=2).astype(np.int16)
    allbits = np.concatenate(bits) if bits else np.zeros(0, np.int64)
    if len(np.unique(allbits)) != len(allbits):
        problems.append("a scale-ROM bit site has two vias")
    return cells, np.unique(allbits).astype(np.int64), problems


def extract_config(cell, geo: Geometry) -> tuple[np.ndarray, int]:
    """From a metal tile cell: the configuration bits and the number of row straps."""
    bits = np.zeros(sum(n for _, n in CONFIG_FIELDS), np.uint8)
    row_straps = 0
    for poly in cell.polygons:
        if (poly.layer, poly.datatype) != geo.metal:
            continue
        for x, y in _positions(poly).tolist():
            if x == geo.cfg_x0 and x < geo.ox:
                b = (y - geo.oy) // geo.strap_pitch
                if 0 <= b < len(bits) and (y - geo.oy) % geo.strap_pitch == 0:
                    bits[b] = 1
            else:
                row_straps += 1
    return bits, row_straps


def verify_layers(nl, fabric, root, banks: list[dict], limit: int = 10) -> list[str]:
    """Compare the layer files under ``root`` with the netlist, bank by bank (one bank in
    memory at a time): every tile's cells, scale bits, configuration and position. Returns the
    first ``limit`` mismatches (empty: everything matches)."""
    import os
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context
    from pathlib import Path

    args = [
        (str(nl.path), nl.doc["fabric"], b,
         {k: str(Path(root) / v) for k, v in b["files"].items()}, limit)
        for b in banks
    ]  # fmt: skip
    n = min(len(banks), os.cpu_count() or 1)
    if n <= 1:
        results = [_verify_bank_worker(*a) for a in args]
    else:  # banks are independent: one process each, memory one bank per process
        with ProcessPoolExecutor(n, mp_context=get_context("fork")) as ex:
            results = list(ex.map(_verify_bank_worker, *zip(*args, strict=True)))
    problems = [p for r in results for p in r]
    return problems[:limit]


def _verify_bank_worker(nl_root: str, fabric_json: dict, bank: dict, paths: dict, limit: int):
    from pathlib import Path

    from maskc.netlist import load_netlist

    nl = load_netlist(Path(nl_root).parent)
    return _verify_bank(nl, _fabric_from_json(fabric_json, nl_root), bank, paths, limit)


def _verify_bank(nl, fabric, bank: dict, paths: dict[str, str], limit: int) -> list[str]:
    import gdstk

    geo = Geometry(fabric)
    unit = fabric.geometry.dbu_nm * 1e-9  # read coordinates in database units
    libs = {}
    for layer, p in paths.items():
        read = gdstk.read_oas if p.endswith(".oas") else gdstk.read_gds
        libs[layer] = read(p, unit=unit)
    cells = {layer: {c.name: c for c in lib.cells} for layer, lib in libs.items()}
    problems: list[str] = []
    expected_names = set()
    for name in bank["matrices"]:
        meta = nl.matrices[name]
        t = nl.tile_arrays(name)
        fmt = meta["format"]
        tr, w = meta["tile_shape"]
        groups = w // fmt["group_size"]
        for i in range(meta["tiles"]):
            tn = tile_name(t["pos"][i])
            expected_names.add(tn)
            r0, nr, c0, nc = (int(v) for v in t["block"][i])
            vc, mc = cells["via"].get(tn), cells["metal"].get(tn)
            if vc is None or mc is None:
                problems.append(f"tile {tn} ({name}): missing from the layer files")
                continue
            want = np.maximum(cell_values(t["codes"][i], nr, nc, fmt["bits"], fabric), 0)
            got, bits, probs = extract_tile(vc, geo, record_bits(fmt, groups))
            problems += [f"tile {tn}: {p}" for p in probs]
            diff = np.argwhere(got != want)
            for r, k in diff[:limit].tolist():
                flip = int(got[r, k] ^ want[r, k])
                problems.append(f"tile {tn} ({name}) cell ({r}, {k}): expected value "
                                f"{int(want[r, k])}, found {int(got[r, k])} (bits "
                                f"{[b for b in range(4) if flip >> b & 1]} differ)")  # fmt: skip
            exp_bits = np.nonzero(scale_bits(t, i, fmt, tr, groups))[0]
            if not np.array_equal(bits, exp_bits):
                miss = np.setdiff1d(exp_bits, bits)[:3].tolist()
                extra = np.setdiff1d(bits, exp_bits)[:3].tolist()
                problems.append(f"tile {tn} ({name}) scale ROM: bits missing {miss}, extra {extra}")
            cfg_bits, n_row = extract_config(mc, geo)
            want_cfg = config_word(meta, [r0, nr, c0, nc], fabric)
            got_cfg = parse_config_bits(cfg_bits)
            if got_cfg != want_cfg:
                problems.append(f"tile {tn} ({name}) configuration straps: expected {want_cfg}, "
                                f"found {got_cfg}")  # fmt: skip
            if n_row != nr * geo.sy:
                problems.append(f"tile {tn}: {n_row} row straps, expected {nr * geo.sy}")
            if len(problems) >= limit:
                return problems[:limit]
    d = bank["die"]
    for layer in ("via", "metal"):
        seen = set()
        top_name = f"{layer.upper()}_{bank['top']}"
        for c in libs[layer].top_level():
            if c.name != top_name:
                problems.append(f"{layer}: unexpected top cell {c.name}")
                continue
            for ref in c.references:
                tn = ref.cell.name if hasattr(ref.cell, "name") else str(ref.cell)
                x, y = (round(v) for v in ref.origin)
                want = f"T{d}_{x // geo.tpx}_{y // geo.tpy}"
                if tn != want or x % geo.tpx or y % geo.tpy:
                    problems.append(f"{layer}: tile cell {tn} placed at ({x}, {y}), the site of "
                                    f"{want}")  # fmt: skip
                seen.add(tn)
        for tn in sorted(expected_names - seen):
            problems.append(f"{layer}: tile {tn} is not placed")
    return problems[:limit]


def tile_hashes(nl) -> dict[str, str]:
    """``{tile name: sha256}`` of every tile's ROM content (codes, group fields, row exponents,
    levels) and configuration, for the manifest."""
    import hashlib

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


def fabric_of(nl):
    """The fabric a netlist was placed on, rebuilt (and validated) from netlist.json."""
    return _fabric_from_json(nl.doc["fabric"], f"{nl.path}/netlist.json")


def verify_build(path, limit: int = 10) -> dict:
    """``maskc verify``: the layer files read back and compared with the netlist, then every
    file's manifest hash. Returns ``{"problems": [...], "tiles": n, "files": {...}}``."""
    from maskc.build import open_build, verify_hashes
    from maskc.errors import MaskcError
    from maskc.netlist import load_netlist

    b = open_build(path, check_hashes=False)
    nl = load_netlist(b.path)
    fab = fabric_of(nl)
    if "layers/index.json" not in b.manifest["files"]:
        from maskc.errors import InputError

        raise InputError(f"{b.path}: the build has no layers/ (recompile with this maskc)")
    index = b.json("layers/index.json")
    problems = []
    try:
        problems += verify_layers(nl, fab, b.path / "layers", index["banks"], limit)
    except MaskcError:
        raise
    except Exception as e:  # an unreadable layer file (gdstk raises plain errors)
        problems.append(f"layer files unreadable: {e}")
    try:
        verify_hashes(b.path, b.manifest["files"])
    except MaskcError as e:
        problems.append(str(e))
    paths = {f"layers/{f}": f for bank in index["banks"] for f in bank["files"].values()}
    tiles = sum(m["tiles"] for m in nl.matrices.values())
    return {"problems": problems[:limit], "tiles": tiles, "files": paths}
