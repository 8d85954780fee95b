"""``maskc testmodel``: a tiny seeded Llama-family model as a Hugging Face folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from maskc.cli.app import app, emit_json, out
from maskc.errors import UsageError
from maskc.fsutil import atomic_output_dir


@app.command()
def testmodel(
    out_dir: Annotated[
        Path | None,
        typer.Argument(
            metavar="OUT_DIR", help="Folder to write the model into.", show_default=False
        ),
    ] = None,
    preset: Annotated[
        str, typer.Option("--preset", "-p", help="Which tiny model (see --list).")
    ] = "tiny",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the weights.")] = 0,
    force: Annotated[
        bool, typer.Option("--force", help="Replace OUT_DIR if it exists and is not empty.")
    ] = False,
    list_presets: Annotated[
        bool, typer.Option("--list", help="List the presets and exit.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Write a tiny seeded Llama-family model as a Hugging Face folder.

    The folder has config.json, safetensors weights (sharded for some presets), tokenizer.json,
    tokenizer_config.json and generation_config.json. The same preset and seed always give
    byte-identical files. Useful to try maskc in seconds and to reproduce bug reports.
    """
    from maskc.testmodels import PRESETS, generate

    if list_presets:
        _list_presets(as_json)
        return
    if out_dir is None:
        raise UsageError("testmodel: give OUT_DIR (or --list)")
    if preset not in PRESETS:
        raise UsageError(
            f"testmodel: unknown preset {preset!r}; choose one of {', '.join(sorted(PRESETS))}"
        )
    with atomic_output_dir(out_dir, force=force) as tmp:
        gen = generate(tmp, preset, seed)
    if as_json:
        emit_json(
            {
                "path": str(out_dir),
                "preset": preset,
                "seed": seed,
                "total_parameters": gen.total_parameters,
                "tensors": len(gen.tensors),
            }
        )
    else:
        out.print(
            f"wrote {out_dir}: preset {preset}, seed {seed}, {len(gen.tensors)} tensors, "
            f"{gen.total_parameters:,} parameters"
        )


def _list_presets(as_json: bool) -> None:
    from maskc.testmodels import PRESETS

    if as_json:
        emit_json({n: dataclasses.asdict(s) for n, s in sorted(PRESETS.items())})
        return
    table = Table(
        "preset",
        "architecture",
        "layers",
        "hidden",
        "heads q/kv",
        "vocab",
        "embeddings",
        "dtype",
        "files",
    )
    for n, s in sorted(PRESETS.items()):
        table.add_row(
            n,
            s.architecture,
            str(s.num_layers),
            str(s.hidden_size),
            f"{s.num_heads}/{s.num_kv_heads}",
            str(s.vocab_size),
            "tied" if s.tie_word_embeddings else "untied",
            s.dtype,
            f"{s.shards} shards" if s.shards > 1 else "1",
        )
    out.print(table)
