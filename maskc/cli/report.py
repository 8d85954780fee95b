"""``maskc report``: one self-contained HTML page of a build (docs/report.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from maskc.cli.app import RichEvents, app, emit_json, out, progress_bar


@app.command("report")
def report(
    build: Annotated[Path, typer.Argument(metavar="BUILD", help="A compiled build folder.")],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="The HTML file to write (report.html).")
    ],
    other: Annotated[
        Path | None,
        typer.Option(
            "--diff",
            metavar="OTHER_BUILD",
            help="Also show what changed from OTHER_BUILD (a build on the same fabric) to "
            "BUILD: per mask, the changed tiles on the die and the tensors they hold.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the file if it exists.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print what was written as JSON on stdout.")
    ] = False,
) -> None:
    """Write one self-contained HTML page of BUILD to attach to a review.

    The page needs no network and no server (inline SVG, CSS and a little JavaScript): the
    summary (model, fabric, bits/weight, tiles, dies, SRAM split, modeled tokens/s, latency
    and energy per token, layer file sizes, verify status), the floorplan (zoomed to the used
    tiles, an inset of the whole die; hover a tile for its tensor, layer and format), the
    quantization error per tensor and per layer, the output-level metrics, the adapter and
    context budget, and with --diff the change map of each mask and the tensors that moved.
    Every hash of BUILD is checked first. The same build gives the same bytes.
    """
    from maskc.report import write_report

    with progress_bar(in_bytes=False) as prog:
        res = write_report(build, output, other, force, RichEvents(prog))
    if as_json:
        emit_json(res)
    else:
        extra = f"; {res['diff']['verdict']}" if res["diff"] else ""
        out.print(
            f"[green]wrote[/green] {output}: {res['bytes']:,} bytes, {res['tiles']:,} tiles, "
            f"sections {', '.join(res['sections'])}{extra}",
            markup=True,
            highlight=False,
        )
