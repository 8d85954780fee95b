"""The layer commands: ``maskc verify``, ``maskc render`` and ``maskc diff-layers``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from maskc.cli.app import RichEvents, app, emit_json, out, progress_bar
from maskc.cli.show import print_diff
from maskc.errors import EXIT_DIFFERS


@app.command()
def verify(
    build: Annotated[
        Path, typer.Argument(metavar="BUILD", help="A build folder written by maskc compile.")
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout.")
    ] = False,
    dask: Annotated[
        str | None,
        typer.Option(
            "--dask",
            metavar="ADDRESS",
            help="Read the layer banks back on the workers of this Dask scheduler "
            "(tcp://HOST:PORT; pip install 'maskc[dask]'). BUILD must be on a filesystem "
            "every worker mounts at the same path (checked first, read-only). "
            "docs/distributed.md.",
        ),
    ] = None,
    rtl: Annotated[
        Path | None,
        typer.Option(
            "--rtl",
            metavar="RTL_DIR",
            help="Also read the ROM images of an RTL export (maskc export-rtl) back and compare "
            "every tile's codes and scale-ROM fields with the netlist (docs/rtl.md).",
        ),
    ] = None,
) -> None:
    """Read the two customizable layers and the SRAM boot image back and compare them with
    the netlist.

    Every via and strap of BUILD/layers/ is extracted and every tile's cells, scale-ROM bits,
    configuration and position are compared with BUILD/netlist/; the boot image
    (BUILD/boot/: the norm gammas and constants, biases, RoPE steps; docs/sram.md) is rebuilt
    from the netlist and compared byte for byte; then every file's manifest hash and the
    manifest's per-tile ROM hashes are checked. With --rtl, the RTL's ROM images too (the
    third reader of the netlist: the layers, the RTL and the emulator). Exit 0 when everything
    matches; exit 5 listing the first mismatches (tile, cell, bit, expected vs found) otherwise.
    """
    from maskc.errors import VerifyError
    from maskc.layout import verify_build

    with progress_bar(in_bytes=False) as prog:
        res = verify_build(build, progress=RichEvents(prog), dask=dask)
    problems = res["problems"]
    if rtl is not None:
        from maskc.netlist import load_netlist
        from maskc.rtl.verify import verify_rtl

        r = verify_rtl(load_netlist(build), rtl)
        res = {**res, "rtl": r}
        problems = problems + [f"rtl: {p}" for p in r["problems"]]
    if as_json:
        emit_json({"ok": not problems, **res})
    elif not problems:
        also = "" if rtl is None else f"; the RTL's ROM images in {rtl} match it too"
        out.print(
            f"{build}: the layers and the boot image match the netlist ({res['tiles']:,} "
            "tiles) and every file matches the manifest"
            + also
            + "; "
            + (
                "recorded in BUILD/verify.json (maskc inspect BUILD shows it)"
                if res["record"]
                else res.get("record_note", "")
            ),
            markup=False,
        )
    if problems:
        first = "; ".join(problems[:5])
        raise VerifyError(f"{build}: {len(problems)} mismatch(es), first: {first}")


@app.command()
def render(
    build: Annotated[
        Path, typer.Argument(metavar="BUILD", help="A build folder written by maskc compile.")
    ],
    tile: Annotated[
        str,
        typer.Option(
            "--tile",
            help="The tile to draw, by position: T<die>_<x>_<y> (e.g. T0_0_0; maskc inspect "
            "BUILD --tiles lists them).",
        ),
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="The PNG to write.")] = Path(
        "tile.png"
    ),
    zoom: Annotated[
        int,
        typer.Option("--zoom", min=1, max=64, help="Cells per side of the to-scale zoom."),
    ] = 8,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print what was drawn as JSON on stdout.")
    ] = False,
) -> None:
    """Draw one tile of the customizable layers, as read back from BUILD/layers/.

    The title says what the tile holds: tensor, tile index, the rows and columns of the
    matrix, the ROM format. Top left: the scale ROM's via sites. Bottom left: every cell's
    4-bit value, one pixel each (padding grey); on a packed 3-bit tile the block's 3-bit
    codes decoded instead (four 3-bit codes share three 4-bit cells, so the cells hold 0-15;
    docs/layout.md). Right: the tile's first cells to scale with their vias, metal straps and
    the value each cell holds. maskc inspect BUILD --tiles lists the tiles.
    """
    from maskc.fsutil import check_output_file
    from maskc.layout.render import render_tile

    check_output_file(output, "-o")
    res = render_tile(build, tile, output, zoom)
    if as_json:
        emit_json(res)
    else:
        out.print(
            f"[green]wrote[/green] {output}: tile {tile}, {res['vias']:,} vias, "
            f"{res['straps']} metal straps"
        )


@app.command("diff-layers")
def diff_layers(
    a: Annotated[
        Path, typer.Argument(metavar="A", help="A build folder, or a layer file (via.gds, ...).")
    ],
    b: Annotated[
        Path, typer.Argument(metavar="B", help="The build folder or layer file to compare with A.")
    ],
    png: Annotated[
        Path | None,
        typer.Option(
            "--png",
            help="Also draw the changes per tile over the tiles, as the floorplan is drawn "
            "(zoomed to the used tiles, y = 0 at the top, layers named, one log scale).",
        ),
    ] = None,
    top: Annotated[
        int, typer.Option("--top", min=1, max=100, help="Changed tensors to list per layer.")
    ] = 5,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout.")
    ] = False,
) -> None:
    """Which masks change between two chips, and by how much.

    A and B are two build folders (every file's hash checked, unchanged tiles files skipped,
    the rest compared tile by tile: seconds for SmolLM2; their SRAM boot images compared too)
    or two layer files of one kind inside build folders (every tile cell decoded and
    compared). Prints, per layer, whether it is identical, the vias/straps added and removed,
    the tiles changed and the tensors they hold, and a verdict: which masks must be re-made
    (and whether the boot image differs: new boot firmware, no new mask). Exit 0 identical,
    1 different, 3/5 on bad or corrupt input.
    """
    from maskc.diff import diff_layers as run
    from maskc.diff import heatmap_png
    from maskc.fsutil import check_output_file

    if png is not None:
        check_output_file(png, "--png")
    with progress_bar(in_bytes=False) as prog:
        res = run(a, b, RichEvents(prog), top)
    if png is not None:
        heatmap_png(res, png)
    if as_json:
        emit_json(res.to_json())
    else:
        print_diff(res.to_json(), png)
    if not res.identical:
        raise typer.Exit(EXIT_DIFFERS)
