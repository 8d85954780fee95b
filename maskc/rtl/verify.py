"""``maskc verify BUILD --rtl RTL_DIR``: the RTL's ROM images read back and compared with the
netlist, so the layers, the RTL and the emulator are three readers of one netlist that verify
shows to agree.

Every tile of every matrix the RTL holds (``RTL_DIR/rom/<matrix>.t<i>.cells.hex`` and
``.scale.hex``, :mod:`maskc.rtl.tiles`) is decoded with the layout's *decoders*
(:func:`maskc.layout.rom.codes_from_cells`, :func:`maskc.layout.rom.parse_scale_bits`; never the
encoders the generator wrote them with) into codes and scale-ROM fields and compared value by
value with the netlist's tile arrays; a bit set where the format stores nothing (padding cells,
bits past a record or the level table) is a mismatch too. The first mismatch names the tile
(its position, as ``maskc verify`` names tiles), the row and the field.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maskc.errors import InputError
from maskc.layout.banks import tile_name
from maskc.layout.rom import cell_data_bits, codes_from_cells, parse_scale_bits
from maskc.rtl.tiles import ident, tile_kind

MAX_PROBLEMS = 20


def _read_lines(path: Path, digits: int, lines: int, what: str) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path.name}: missing")
    out = path.read_text().split()
    if len(out) != lines or any(len(x) != digits for x in out):
        raise ValueError(f"{path.name}: {what} must be {lines} lines of {digits} hex digits")
    try:
        [int(x, 16) for x in out]
    except ValueError:
        raise ValueError(f"{path.name}: not hexadecimal") from None
    return out


def _nibbles(lines: list[str]) -> np.ndarray:
    raw = np.frombuffer("".join(lines).encode(), np.uint8).reshape(len(lines), -1)
    return np.where(raw >= ord("a"), raw - ord("a") + 10, raw - ord("0")).astype(np.uint8)


def _bits(lines: list[str]) -> np.ndarray:
    """Hex lines -> bits [lines, 4 * digits], each line's first bit its most significant."""
    n = _nibbles(lines)
    return ((n[..., None] >> np.arange(3, -1, -1, dtype=np.uint8)) & 1).reshape(len(lines), -1)


def verify_matrix(nl, name: str, rtl_dir: Path) -> tuple[int, list[str]]:
    """(tiles compared, problems) of matrix ``name``'s ROM images in ``rtl_dir``."""
    kind = tile_kind(nl, name)
    t = nl.tile_arrays(name)
    n = nl.matrices[name]["tiles"]
    fmt = kind.fmt
    problems: list[str] = []
    base = rtl_dir / "rom" / ident(name)
    tr, rb, ll = kind.tr, kind.record_bits, kind.level_line_bits
    for i in range(n):
        where = f"tile {tile_name(t['pos'][i])} ({name}, t{i})"
        try:
            cl = _read_lines(Path(f"{base}.t{i}.cells.hex"), kind.columns, tr, "the cells image")
            sl = _read_lines(
                Path(f"{base}.t{i}.scale.hex"), kind.scale_width // 4, tr + 1, "the scale image"
            )
        except (FileNotFoundError, ValueError) as e:
            problems.append(f"{where}: {e}")
            continue
        _, nr, _, nc = (int(v) for v in t["block"][i])
        cells = _nibbles(cl)
        pad = cells & ~cell_data_bits(nr, nc, kind.bits, nl.fabric)
        if pad.any():
            r, c = (int(v) for v in np.argwhere(pad)[0])
            problems.append(f"{where}: row {r} cell {c}: bits {int(pad[r, c]):#x} set in padding")
        want = np.asarray(t["codes"][i])[:nr, :nc]
        got = codes_from_cells(cells, nr, nc, kind.bits, nl.fabric)
        if not np.array_equal(got, want):
            r, j = (int(v) for v in np.argwhere(got != want)[0])
            problems.append(
                f"{where}: row {r} weight {j}: code expected {int(want[r, j])}, "
                f"found {int(got[r, j])}"
            )
        sb = _bits(sl)
        extra = np.concatenate([sb[:tr, rb:].reshape(-1), sb[tr, ll:]])
        if extra.any():
            problems.append(f"{where}: scale image: bits set past the records / level table")
        bits = np.concatenate([sb[:tr, :rb].reshape(-1), sb[tr, :ll]])
        fields = parse_scale_bits(bits, fmt, tr, kind.groups)
        for key, vals in fields.items():
            exp = np.asarray(t[key]).astype(np.int64)
            if key != "levels":
                exp = exp[i]
                if exp.ndim == 2:
                    exp = exp[:, : kind.groups]
            bad = np.argwhere(np.asarray(vals) != exp)
            if len(bad):
                at = tuple(int(v) for v in bad[0])
                what = (
                    {1: "row", 2: "row, group"}.get(len(at), "index") if key != "levels" else "code"
                )
                problems.append(
                    f"{where}: {key} at {what} {at if len(at) > 1 else at[0]}: expected "
                    f"{int(exp[at])}, found {int(np.asarray(vals)[at])}"
                )
        if len(problems) >= MAX_PROBLEMS:
            break
    return n, problems


def verify_rtl(nl, rtl_dir) -> dict:
    """Every matrix's ROM images in ``rtl_dir`` against netlist ``nl``: ``{"tiles",
    "matrices", "problems"}``. A directory with no ROM images at all is an input error."""
    rtl_dir = Path(rtl_dir)
    if not (rtl_dir / "rom").is_dir():
        raise InputError(f"{rtl_dir}: no rom/ folder: not an RTL directory (maskc export-rtl)")
    tiles, problems = 0, []
    for name in sorted(nl.matrices):
        n, p = verify_matrix(nl, name, rtl_dir)
        tiles += n
        problems += p
        if len(problems) >= MAX_PROBLEMS:
            break
    return {"tiles": tiles, "matrices": len(nl.matrices), "problems": problems}
