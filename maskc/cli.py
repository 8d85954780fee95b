"""The ``maskc`` command line: the only module that talks to typer and rich.

Each command parses its flags, calls into the stage modules and renders the result. Errors are
mapped to exit codes in one place, :func:`main` (see :mod:`maskc.errors` for the table): a
:class:`~maskc.errors.MaskcError` prints ``maskc: error: <one line>`` on stderr, never a
traceback. Set ``MASKC_DEBUG=1`` to get tracebacks for internal errors.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from maskc import __version__
from maskc.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, MaskcError, UsageError
from maskc.fsutil import atomic_output_dir

app = typer.Typer(
    name="maskc",
    help=(
        "maskc compiles a Hugging Face LLM (safetensors) into the two customizable mask layers "
        "(a via layer and a metal layer) of a mask-ROM inference ASIC.\n\n"
        "Exit codes: 0 ok, 1 differs (diff-layers), 2 usage, 3 bad input, 4 does not fit the "
        "fabric, 5 verification failed, 70 internal error."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# Piped output (CI logs, files) gets a wide fixed width instead of rich's 80-column default.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        out.print(f"maskc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Root options."""


def _progress(transient: bool = True) -> Progress:
    """A byte-based progress bar on stderr (silent when stderr is not a terminal)."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=transient,
        disable=not err.is_terminal,
    )


def _emit_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")


@app.command()
def inspect(
    model: Annotated[
        Path,
        typer.Argument(
            metavar="MODEL",
            help="A Hugging Face model folder (config.json + model.safetensors or shards + "
            "model.safetensors.index.json), or a single .safetensors file with --config.",
            show_default=False,
        ),
    ],
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="config.json to use (required for a single file)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print machine-readable JSON on stdout instead.")
    ] = False,
    headers_only: Annotated[
        bool,
        typer.Option(
            "--headers-only",
            help="Check headers, names, shapes and dtypes only; skip reading tensor data "
            "(the NaN/Inf scan).",
        ),
    ] = False,
) -> None:
    """Validate a model and list its architecture and tensors.

    Every tensor is checked: present, exact shape, supported dtype (F32/F16/BF16) and, unless
    --headers-only, finite. Exit 3 with a one-line message on any defect.
    """
    from maskc.ingest import load_model

    m = load_model(model, config)
    if not headers_only:
        total = sum(m.locations[s.name][1].nbytes for s in m.specs)
        with _progress() as prog:
            task = prog.add_task("checking tensors", total=total)
            m.check_data(lambda _name, nbytes: prog.advance(task, nbytes))

    tensors = [
        {
            "name": s.name,
            "shape": list(s.shape),
            "dtype": m.dtype_of(s.name),
            "parameters": s.parameters,
        }
        for s in m.specs
    ]
    if as_json:
        _emit_json(
            {
                "path": str(model),
                "architecture": m.arch.to_json(),
                "tensors": tensors,
                "total_parameters": m.total_parameters,
                "files": [str(f) for f in m.files],
                "ignored_tensors": m.ignored,
                "tokenizer": (
                    {"path": str(m.tokenizer_path), "vocab_size": m.tokenizer_vocab_size}
                    if m.tokenizer_path
                    else None
                ),
                "data_checked": not headers_only,
            }
        )
        return

    a = m.arch
    summary = Table(title=f"{model} — {a.architecture}", show_header=False, box=None)
    summary.add_column(style="bold")
    summary.add_column()
    rows = [
        ("layers", a.num_layers),
        ("hidden size", a.hidden_size),
        ("intermediate size", a.intermediate_size),
        ("attention heads", f"{a.num_heads} query / {a.num_kv_heads} key-value (head_dim "
         f"{a.head_dim})"),
        ("vocabulary", a.vocab_size),
        ("embeddings", "tied (lm_head = embed_tokens)" if a.tie_word_embeddings else "untied"),
        ("rope", f"theta {a.rope_theta:g}"
         + (f", llama3 scaling x{a.rope_scaling.factor:g}" if a.rope_scaling else "")),
        ("rms_norm_eps", f"{a.rms_norm_eps:g}"),
        ("max positions", a.max_position_embeddings),
        ("q/k/v bias", "yes" if a.attention_bias else "no"),
        ("sliding window", a.sliding_window or "none"),
        ("weight files", len(m.files)),
        ("tokenizer", f"{m.tokenizer_vocab_size} tokens" if m.tokenizer_path else "none found"),
    ]  # fmt: skip
    for k, v in rows:
        summary.add_row(k, str(v))
    out.print(summary)

    table = Table(show_footer=True)
    table.add_column("tensor", footer=f"{len(tensors)} tensors")
    table.add_column("shape")
    table.add_column("dtype")
    table.add_column("parameters", justify="right", footer=f"{m.total_parameters:,}")
    for t in tensors:
        table.add_row(t["name"], "x".join(map(str, t["shape"])), t["dtype"], f"{t['parameters']:,}")
    out.print(table)
    if m.ignored:
        out.print(f"ignored: {', '.join(m.ignored)}")
    checked = "headers checked (data not read)" if headers_only else "all tensors finite"
    out.print(f"[green]ok[/green]: {len(tensors)} tensors, {m.total_parameters:,} parameters, "
              f"{checked}")  # fmt: skip


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
        if as_json:
            _emit_json({n: dataclasses.asdict(s) for n, s in sorted(PRESETS.items())})
            return
        table = Table("preset", "architecture", "layers", "hidden", "heads q/kv", "vocab",
                      "embeddings", "dtype", "files")  # fmt: skip
        for n, s in sorted(PRESETS.items()):
            table.add_row(n, s.architecture, str(s.num_layers), str(s.hidden_size),
                          f"{s.num_heads}/{s.num_kv_heads}", str(s.vocab_size),
                          "tied" if s.tie_word_embeddings else "untied", s.dtype,
                          f"{s.shards} shards" if s.shards > 1 else "1")  # fmt: skip
        out.print(table)
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
        _emit_json(
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


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``maskc`` console script: run the app and map errors to exit codes."""
    command = typer.main.get_command(app)
    try:
        rc = command.main(args=argv, prog_name="maskc", standalone_mode=False)
    except MaskcError as e:
        err.print(f"maskc: error: {e}", markup=False)
        sys.exit(e.exit_code)
    except typer.Abort:
        err.print("maskc: interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.TyperException as e:  # click's usage errors (typer vendors click)
        e.show(file=sys.stderr)
        sys.exit(getattr(e, "exit_code", EXIT_USAGE) or EXIT_USAGE)
    except KeyboardInterrupt:
        err.print("maskc: interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as e:  # a bug in maskc, not a user mistake
        if os.environ.get("MASKC_DEBUG"):
            traceback.print_exc()
        err.print(
            f"maskc: internal error: {type(e).__name__}: {e} (this is a bug; rerun with "
            "MASKC_DEBUG=1 for a traceback and report it)",
            markup=False,
        )
        sys.exit(EXIT_INTERNAL)
    sys.exit(rc if isinstance(rc, int) else 0)
