"""``maskc fabric list`` and ``maskc fabric show``: the base dies (docs/fabric.md)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from maskc.cli.app import app, emit_json, out
from maskc.cli.show import mib, si

fabric_app = typer.Typer(
    help="Show and validate fabrics: structured-ASIC base dies (tile grid, SRAM, fixed-function "
    "units, the two customizable layers), built in or as TOML files (docs/fabric.md).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(fabric_app, name="fabric")


@fabric_app.command("list")
def fabric_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """List the built-in fabrics: dies, tiles, ROM capacity and SRAM."""
    from maskc.fabric import builtin_fabrics, load_fabric

    fabs = [load_fabric(n) for n in builtin_fabrics()]
    if as_json:
        emit_json(
            [
                {
                    "name": f.name,
                    "description": f.fabric.description,
                    "dies": f.system.dies,
                    "total_tiles": f.total_tiles,
                    "rom_bits_total": f.rom_bits_total,
                    "weights_total_4bit": f.weights_per_tile(4) * f.total_tiles,
                    "sram_bytes_total": f.sram_bytes_total,
                }
                for f in fabs
            ]
        )
        return
    table = Table(
        "fabric", "dies", "tiles", "ROM (codes+scales)", "4-bit weights", "SRAM", "description"
    )
    for f in fabs:
        table.add_row(
            f.name,
            str(f.system.dies),
            f"{f.total_tiles:,}",
            si(f.rom_bits_total, "bit"),
            si(f.weights_per_tile(4) * f.total_tiles, ""),
            mib(f.sram_bytes_total),
            f.fabric.description,
        )
    out.print(table)


@fabric_app.command("show")
def fabric_show(
    fabric: Annotated[
        str,
        typer.Argument(
            metavar="NAME|FILE.toml",
            help="A built-in fabric name (see maskc fabric list) or a fabric TOML file.",
            show_default=False,
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Validate a fabric and print every field, grouped by table, and the derived numbers."""
    from maskc.fabric import load_fabric

    f = load_fabric(fabric)
    doc = f.to_json()
    if as_json:
        emit_json(doc)
        return
    from rich.text import Text

    from maskc.fabric.schema import field_units

    units = field_units()
    out.print(Text(f"{f.name}: {f.fabric.description}", style="bold"))

    def rows(table: dict, prefix: str) -> list[tuple[str, str]]:
        got: list[tuple[str, str]] = []
        for k, v in table.items():
            if isinstance(v, dict):
                got += rows(v, f"{prefix}{k}.")
            elif isinstance(v, list):
                got.append((prefix + k, ", ".join(map(str, v))))
            elif isinstance(v, int) and not isinstance(v, bool):
                got.append((prefix + k, f"{v:,}"))
            else:
                got.append((prefix + k, str(v)))
        return got

    for name, table in doc.items():
        if not isinstance(table, dict):
            continue
        title = "derived" if name == "derived" else f"[{name}]"
        t = Table("field", "value", "unit", title=Text(title), title_justify="left")
        for key, value in rows(table, ""):
            t.add_row(Text(key), Text(value), Text(units.get(f"{name}.{key}", "")))
        out.print(t)
