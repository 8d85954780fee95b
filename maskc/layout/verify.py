"""``maskc verify``: every via and strap of the layer files is extracted (:mod:`maskc.layout.read`),
each tile's ROM (cell values, scale-ROM bits) and configuration word are rebuilt from them and
compared with the netlist, bank by bank, in parallel processes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from maskc.layout.banks import iter_tiles, tile_name, tile_positions
from maskc.layout.geometry import CELL_BITS, Geometry
from maskc.layout.read import LayerFile, extract_metal, extract_tile
from maskc.layout.rom import TileRom, nibbles_to_bits, parse_config_bits, record_bits


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


def _verify_bank(
    nl, fabric, bank: dict, paths: dict[str, str], limit: int, part: int = 0, parts: int = 1
) -> list[str]:
    """Check the tiles of share ``part`` of ``parts`` of a bank; share 0 also checks the top
    cells (every tile of the bank placed at its site, no other tile cells)."""
    import re

    geo = Geometry(fabric)
    via = LayerFile(paths["via"], geo, geo.via, geo.size)
    metal = LayerFile(paths["metal"], geo, geo.metal, None)
    problems: list[str] = []
    expected = set()
    for name, meta, t, i in iter_tiles(nl, _split(bank["tiles"], part, parts)):
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
            bits = ", ".join(
                f"bit {b}: expected {want >> b & 1}, found {got >> b & 1}" for b in flip
            )
            problems.append(
                f"tile {tn} ({name}) cell ({r}, {k}): expected value {want}, found {got} ({bits})"
            )
        if not np.array_equal(sc, rom.scale):
            want = nibbles_to_bits(rom.scale, rom.scale.size * CELL_BITS)
            got = nibbles_to_bits(sc, sc.size * CELL_BITS)
            rb = record_bits(meta["format"], rom.groups)
            for b in np.nonzero(want != got)[0][:3].tolist():
                where = (
                    f"row {b // rb}'s record bit {b % rb}"
                    if b < geo.rows * rb
                    else f"level-table bit {b - geo.rows * rb}"
                )
                problems.append(
                    f"tile {tn} ({name}) scale ROM bit {b} ({where}): expected "
                    f"{int(want[b])}, found {int(got[b])}"
                )
        cfg_bits, rows, probs = extract_metal(straps, geo)
        problems += [f"tile {tn} ({name}): {p}" for p in probs]
        got_cfg = parse_config_bits(cfg_bits)
        if got_cfg != rom.config:
            diff = {k: (v, got_cfg[k]) for k, v in rom.config.items() if got_cfg[k] != v}
            problems.append(f"tile {tn} ({name}) configuration straps: expected/found {diff}")
        if rows != list(range(rom.block[1])):
            problems.append(
                f"tile {tn} ({name}): row straps on {len(rows)} rows, expected rows "
                f"0..{rom.block[1] - 1}"
            )
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


def _verify_bank_worker(
    nl_root: str, bank: dict, paths: dict, limit: int, part: int = 0, parts: int = 1
):
    from maskc.netlist import load_netlist

    nl = load_netlist(Path(nl_root).parent)
    try:
        return _verify_bank(nl, nl.fabric, bank, paths, limit, part, parts)
    except Exception as e:  # an unreadable layer file: gdstk raises plain errors
        return [f"{', '.join(Path(p).name for p in paths.values())}: unreadable ({e})"]


def verify_layers(nl, fabric, root, banks: list[dict], limit: int = 10, progress=None) -> list[str]:
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
    out = {}
    for name in sorted(nl.matrices):
        meta = nl.matrices[name]
        t = nl.tile_arrays(name)
        for i in range(meta["tiles"]):
            h = hashlib.sha256(name.encode())
            for k in (
                "block",
                "codes",
                "scale_m",
                "scale_s",
                "scale_e",
                "zero_m",
                "zero_s",
                "zero_e",
            ):
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
