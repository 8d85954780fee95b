"""``maskc report BUILD [--diff OTHER] -o report.html``: check the output, read the build(s),
render the page, write it atomically (complete or absent)."""

from __future__ import annotations

import os
from pathlib import Path

from maskc.errors import InputError


def check_output(out: Path, force: bool) -> None:
    """Before any work: ``out`` can be written (its folder exists; a file there only with
    ``force``)."""
    from maskc.fsutil import check_output_file

    check_output_file(out, "-o")
    if (out.exists() or out.is_symlink()) and not force:
        raise InputError(f"-o {out}: exists; pass --force to replace it")


def check_other(other) -> None:
    """Before any work: ``--diff OTHER`` is a compiled build (its hashes are checked by the
    comparison itself)."""
    p = Path(other)
    if not (p / "manifest.json").is_file():
        raise InputError(f"--diff {other}: not a build folder; give a compiled build")
    if not (p / "layers" / "index.json").is_file():
        raise InputError(
            f"--diff {other}: the build has no layers/ (a --plan-only build?); give a compiled "
            "build"
        )


def collect_diff(other, build, d: dict, progress=None) -> dict:
    """The change map of ``other`` -> ``build`` (maskc/diff, every tensor listed)."""
    from maskc.diff import diff_layers
    from maskc.netlist import load_netlist
    from maskc.report.collect import tiles_of

    res = diff_layers(other, build, progress, top=1 << 30)
    doc = res.to_json()
    if not doc["same_base_die"]:
        raise InputError(
            f"--diff {other}: built for fabric {doc['fabric_a']!r}, {build} for "
            f"{doc['fabric_b']!r}; the masks of different base dies are not compared (diff "
            "builds of one fabric)"
        )
    info = {t["tile"]: t for t in tiles_of(load_netlist(Path(other)))}
    info.update({t["tile"]: t for t in d["tiles"]})
    return {
        "doc": doc,
        "tiles": res.tiles,
        "sites": list(res.sites),
        "tile_info": info,
        "columns": d["fabric"]["columns"],
        "rows": d["fabric"]["rows"],
    }


def write_report(build, out, other=None, force: bool = False, progress=None) -> dict:
    """Write the report of ``build`` (with the change map from ``other``) to ``out``; returns
    what was written: path, bytes, sections, tiles drawn, the diff's verdict."""
    from maskc.report.collect import collect
    from maskc.report.page import render

    out = Path(out)
    check_output(out, force)
    if other is not None:
        check_other(other)
    if progress:
        progress.start("reading the build (every hash checked)", 1)
    d = collect(build)
    if progress:
        progress.advance(1)
    dd = collect_diff(other, build, d, progress) if other is not None else None
    page, sections = render(d, dd)
    data = page.encode("utf-8")
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return {
        "output": str(out),
        "bytes": len(data),
        "sections": sections,
        "tiles": len(d["tiles"]),
        "dies": d["placement"].get("dies"),
        "diff": None
        if dd is None
        else {
            "other": str(other),
            "verdict": dd["doc"]["verdict"],
            "masks_to_remake": dd["doc"]["masks_to_remake"],
        },
    }
