"""``maskc verify``: every via and strap of the layer files is extracted (:mod:`maskc.layout.read`),
each tile's cells, scale ROM and configuration word are *decoded* into values and compared with
the netlist's arrays, bank by bank, in parallel processes.

Verify never re-encodes the netlist with the writers' encoders (``TileRom``, ``cell_values``,
``scale_bits``, ``config_word``): an encoder bug would be in the layers and in the expected
value alike. It decodes with the decoders of :mod:`maskc.layout.rom`, written from the formats,
and compares values:

* cells -> codes (:func:`codes_from_cells`) of the tile's block, against the netlist's codes;
  a via on a padding bit (:func:`cell_data_bits`) is a mismatch;
* the scale-ROM bit string -> every tile row's group fields, row exponents and the level table
  (:func:`parse_scale_bits`), against the netlist's arrays; no via past its end;
* the configuration straps -> the configuration fields (:func:`parse_config_bits`), against
  what the netlist says the tile is; row straps on exactly the block's rows.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from maskc.layout.banks import iter_tiles, tile_name, tile_positions
from maskc.layout.geometry import CELL_BITS, Geometry
from maskc.layout.read import LayerFile, extract_metal, extract_tile
from maskc.layout.rom import (
    MODES,
    cell_data_bits,
    codes_from_cells,
    nibbles_to_bits,
    parse_config_bits,
    parse_scale_bits,
    role_code,
    scale_rom_layout,
)
from maskc.romformat import FIELD, FIELDS, QuantFormat


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


# -- one tile: decode and compare ---------------------------------------------------------------


def _code_bit_site(bits: int, packed: bool, c: int, b: int) -> tuple[int, int]:
    """(cell column, cell bit) holding bit ``b`` of the code of weight ``c`` of a row."""
    if bits == 8:  # high nibble in cell 2c, low nibble in cell 2c + 1
        return 2 * c + (b < 4), b % 4
    if bits == 3 and packed:  # the row's bit stream, most significant bit first
        s = 3 * c + 2 - b
        return s // 4, 3 - s % 4
    return c, b


def _check_cells(
    where: str, cells: np.ndarray, t: dict, i: int, meta: dict, fabric, limit: int
) -> list[str]:
    """The tile's extracted cell values ``[TR, columns]`` decoded into codes and compared with
    the netlist's codes of its block; padding bits must hold no via. The first ``limit``
    mismatches, in row-major order."""
    bits = meta["format"]["bits"]
    _r0, nr, _c0, nc = (int(v) for v in t["block"][i])
    mask = cell_data_bits(nr, nc, bits, fabric)
    found: list[tuple[int, int, str]] = []  # (row, cell, message)
    for r, k in np.argwhere(cells & ~mask)[:limit].tolist():
        v = int(cells[r, k])
        extra = [b for b in range(CELL_BITS) if (v & ~int(mask[r, k])) >> b & 1]
        desc = ", ".join(f"bit {b}: expected 0, found 1" for b in extra)
        msg = f"{where} cell ({r}, {k}): found value {v}, expected no via on its padding ({desc})"
        found.append((r, k, msg))
    got = codes_from_cells(cells & mask, nr, nc, bits, fabric).astype(np.int64)
    want = t["codes"][i][:nr, :nc].astype(np.int64)
    packed = fabric.tile.three_bit == "packed"
    for r, c in np.argwhere(got != want)[:limit].tolist():
        w, g = int(want[r, c]), int(got[r, c])
        flips = [b for b in range(bits) if (w ^ g) >> b & 1]
        if bits == 4 or (bits == 3 and not packed):  # the cell's value is the code
            desc = ", ".join(f"bit {b}: expected {w >> b & 1}, found {g >> b & 1}" for b in flips)
            found.append((r, c, f"{where} cell ({r}, {c}): expected value {w}, found {g} ({desc})"))
            continue
        flips.reverse()  # most significant first: the order of the cells
        sites = [_code_bit_site(bits, packed, c, b) for b in flips]
        desc = ", ".join(
            f"code bit {b} = cell ({r}, {k}) bit {p}: expected {w >> b & 1}, found {g >> b & 1}"
            for b, (k, p) in zip(flips, sites, strict=True)
        )
        k = sites[0][0]
        msg = f"{where} cell ({r}, {k}): weight {c}'s {bits}-bit code expected {w}, found {g}"
        found.append((r, k, f"{msg} ({desc})"))
    found.sort(key=lambda f: f[:2])
    return [m for _r, _k, m in found[:limit]]


def _check_scale(
    where: str, grid: np.ndarray, t: dict, i: int, meta: dict, groups: int, shown: int = 3
) -> list[str]:
    """The tile's extracted scale-ROM nibbles decoded into its fields and compared with the
    netlist's arrays, value by value; bits past the ROM's end must be 0. The first ``shown``
    mismatches, in ROM order."""
    fmt = meta["format"]
    tr = meta["tile_shape"][0]
    lay = scale_rom_layout(fmt, tr, groups)
    end = lay["bits"]
    bits = nibbles_to_bits(grid, grid.size * CELL_BITS)
    if len(bits) < end:
        return [f"{where} scale ROM: {len(bits)} bits read, its layout needs {end}"]
    found: list[tuple[int, str]] = []  # (ROM bit, message)

    def add(at: int, nb: int, what: str, want, got) -> None:
        span = f"bits {at}..{at + nb - 1}" if nb else "the format stores no such field"
        found.append((at, f"{where} scale ROM {what}: expected {want}, found {got} ({span})"))

    past = np.flatnonzero(bits[end:])
    if len(past):
        b = end + int(past[0])
        msg = f"via(s) on {len(past)} bit(s) past its {end} bits, first on bit {b}"
        found.append((b, f"{where} scale ROM: {msg} (expected 0, found 1)"))
    dec = parse_scale_bits(bits, fmt, tr, groups)
    stored = {name for name, *_ in lay["group"]}
    for name, off, nb, _signed in lay["group"]:
        want = t[name][i][:, :groups].astype(np.int64)
        for r, g in np.argwhere(dec[name] != want)[:shown].tolist():
            at = r * lay["row_bits"] + g * lay["group_bits"] + off
            add(at, nb, f"row {r} group {g} {name}", want[r, g], dec[name][r, g])
    qf = QuantFormat(**fmt)
    for name in GROUP_FIELDS:  # a field the format does not store reads its one value
        if name in t and name not in stored:
            implicit = FIELD[name].limits(qf)[0]  # 0, or mxfp4's scale_m = 1
            want = t[name][i][:, :groups]
            for r, g in np.argwhere(want != implicit)[:shown].tolist():
                add(r * lay["row_bits"], 0, f"row {r} group {g} {name}", want[r, g], implicit)
    for name, off, nb, _signed in lay["row"]:
        want = t[name][i].astype(np.int64)
        for r in np.flatnonzero(dec[name] != want)[:shown].tolist():
            add(r * lay["row_bits"] + off, nb, f"row {r} {name}", want[r], dec[name][r])
    start, nb, n = lay["levels"]
    want = t["levels"].astype(np.int64).reshape(-1)
    if len(want) != n:
        msg = f"{n} levels for {fmt['bits']}-bit codes, the netlist has {len(want)}"
        found.append((start, f"{where} scale ROM level table: {msg}"))
    else:
        for j in np.flatnonzero(dec["levels"] != want)[:shown].tolist():
            add(start + j * nb, nb, f"level table entry {j}", want[j], dec["levels"][j])
    for name, off, nb, _signed in lay["tensor"]:
        want = np.asarray(t[name]).astype(np.int64).reshape(-1)
        if not np.array_equal(dec[name], want):
            add(off, nb, name, want[0], dec[name][0])
    found.sort(key=lambda f: f[0])
    return [m for _at, m in found[:shown]]


def expected_config(meta: dict, block) -> dict:
    """What the netlist says a tile is: the configuration word's fields (docs/layout.md), from
    the matrix's meta and the tile's block ``(row0, rows, col0, cols)``."""
    r0, nr, c0, nc = (int(v) for v in block)
    tr, w = meta["tile_shape"]
    return {
        "enabled": 1,
        "mode": MODES[meta["format"]["bits"]],
        "layer": 255 if meta["layer"] is None else meta["layer"],
        "role": role_code(meta["role"]),
        "row_block": r0 // tr,
        "col_block": c0 // w,
        "rows": nr,
        "cols": nc,
    }


def _check_metal(
    where: str, straps: np.ndarray, geo: Geometry, t: dict, i: int, meta: dict
) -> list[str]:
    """The tile's straps: the configuration word decoded field by field and compared with the
    netlist's tile; row straps on exactly the block's rows."""
    cfg_bits, rows, probs = extract_metal(straps, geo)
    problems = [f"{where}: {p}" for p in probs]
    got = parse_config_bits(cfg_bits)
    want = expected_config(meta, t["block"][i])
    for k, v in want.items():
        if got[k] != v:
            problems.append(f"{where} configuration straps: {k} expected {v}, found {got[k]}")
    nr = int(t["block"][i][1])
    if rows != list(range(nr)):
        problems.append(f"{where}: row straps on {len(rows)} rows, expected rows 0..{nr - 1}")
    return problems


# -- a bank ---------------------------------------------------------------------------------------


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
        tn = tile_name(t["pos"][i])
        where = f"tile {tn} ({name})"
        vias, straps = via.shapes(tn), metal.shapes(tn)
        if vias is None or straps is None:
            problems.append(f"{where}: missing from the layer files")
            continue
        fmt = meta["format"]
        tr, w = meta["tile_shape"]
        groups = w // fmt["group_size"]
        lines = -(-scale_rom_layout(fmt, tr, groups)["bits"] // (CELL_BITS * geo.cols))
        cells, scale, probs = extract_tile(vias, geo, lines)
        problems += [f"{where}: {p}" for p in probs]
        problems += _check_cells(where, cells, t, i, meta, fabric, limit)
        problems += _check_scale(where, scale, t, i, meta, groups)
        problems += _check_metal(where, straps, geo, t, i, meta)
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
    from maskc import parallel

    workers = parallel.worker_count(parallel.usable_cpus())
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
    if n <= 1 and not parallel.distributed():
        for a in args:
            results.append(_verify_bank_worker(*a))
            if progress:
                progress.advance(1)
    else:
        with parallel.pool(n) as ex:
            for r in ex.map(_verify_bank_worker, *zip(*args, strict=True)):
                results.append(r)
                if progress:
                    progress.advance(1)
    return [p for r in results for p in r][:limit]


#: every per-group field of the ROM format
GROUP_FIELDS = tuple(f.name for f in FIELDS if f.axis == "group")
#: the per-tile fields in the order the manifest's tile hashes take them (the field table's)
STORE_ORDER = tuple(f.name for f in FIELDS if f.axis not in ("level", "tensor"))


def tile_hashes(nl) -> dict[str, str]:
    """``{tile name: sha256}`` of every tile's ROM content (codes, group fields, row exponents,
    levels) and block, for the manifest."""
    out = {}
    for name in sorted(nl.matrices):
        meta = nl.matrices[name]
        t = nl.tile_arrays(name)
        for i in range(meta["tiles"]):
            h = hashlib.sha256(name.encode())
            for k in ("block", *STORE_ORDER):
                if k in t:
                    h.update(np.ascontiguousarray(t[k][i]).view(np.uint8).data)
            h.update(np.ascontiguousarray(t["levels"]).view(np.uint8).data)
            if "tensor_m" in t:  # nvfp4: every tile's scale ROM holds it
                h.update(np.ascontiguousarray(t["tensor_m"]).view(np.uint8).data)
            out[tile_name(t["pos"][i])] = h.hexdigest()
    return dict(sorted(out.items()))


def check_tile_hashes(manifest: dict, nl) -> list[str]:
    """The manifest's per-tile ROM hashes against the hashes of the tiles themselves (the map
    is derived data: a manifest whose map was edited, every file hash still matching, must not
    pass). A manifest without the map passes: nothing reads it but this check."""
    claimed = manifest.get("tiles")
    if claimed is None:
        return []
    actual = tile_hashes(nl)
    if claimed == actual:
        return []
    wrong = sorted(n for n in set(claimed) | set(actual) if claimed.get(n) != actual.get(n))
    more = f" (+{len(wrong) - 3} more)" if len(wrong) > 3 else ""
    return [
        f"manifest.json: the per-tile ROM hash of {', '.join(wrong[:3])}{more} does not match "
        "the tile in the netlist; the manifest was edited, recompile"
    ]


def verify_build(path, limit: int = 10, progress=None, dask: str | None = None) -> dict:
    """``maskc verify``: the layer files read back and compared with the netlist (by the workers
    of the Dask scheduler ``dask`` if given: they must read the build at the same path), then
    every file's manifest hash. Returns ``{"problems": [...], "tiles": n, "files": [...],
    "record": path}``: a clean run is recorded in ``BUILD/verify.json`` (tied to the sha256
    of the manifest read here; :func:`maskc.build.write_verify_record`), a failed one removes
    any earlier record."""
    from maskc.boot import verify_boot
    from maskc.build import (
        MANIFEST,
        VERIFY_RECORD,
        open_build,
        sha256_file,
        verify_hashes,
        write_verify_record,
    )
    from maskc.errors import InputError, MaskcError
    from maskc.netlist import load_netlist
    from maskc.parallel import cluster

    b = open_build(path, check_hashes=False)
    manifest_sha = sha256_file(b.path / MANIFEST)
    nl = load_netlist(b.path)
    fab = nl.fabric
    if "layers/index.json" not in b.manifest["files"]:
        raise InputError(f"{b.path}: the build has no layers/ (recompile it with this maskc)")
    index = b.json("layers/index.json")
    with cluster(dask, b.path, b.path, read_only=b.path / "manifest.json"):
        problems = verify_layers(nl, fab, b.path / "layers", index["banks"], limit, progress)
    try:
        verify_hashes(b.path, b.manifest["files"])
    except MaskcError as e:
        problems.append(str(e))
    else:  # the tiles are the hashed ones: the map can be checked against them
        problems += check_tile_hashes(b.manifest, nl)
    problems += verify_boot(nl, b.path)
    files = sorted(f"layers/{f}" for bank in index["banks"] for f in bank["files"].values())
    tiles = sum(m["tiles"] for m in nl.matrices.values())
    res = {"problems": problems[:limit], "tiles": tiles, "files": files, "record": None}
    try:  # BUILD/verify.json, which inspect reads (maskc.build.verify_status)
        if not problems:
            res["record"] = str(write_verify_record(b.path, tiles, manifest_sha))
        elif (b.path / VERIFY_RECORD).is_file():
            (b.path / VERIFY_RECORD).unlink()
    except OSError as e:  # a read-only build: verified (or not) all the same
        res["record_note"] = f"{VERIFY_RECORD} not updated ({e.strerror or e})"
    return res
