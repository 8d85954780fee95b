"""``maskc testmodel``: a seeded model as a Hugging Face folder: a tiny preset, or a published
shape (or explicit dimensions) with synthetic weights, written in bounded memory."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from maskc.cli.app import app, emit_json, out, progress_bar
from maskc.errors import UsageError
from maskc.fsutil import atomic_output_dir


def _int_option(value: str | None, flag: str) -> int | None:
    """A positive integer option given as text (one-line UsageError otherwise)."""
    if value is None:
        return None
    text = value.strip().replace("_", "")
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"testmodel: {flag} must be a positive integer, got {value!r}")
    return int(text)


def _size_option(value: str | None) -> int | None:
    """``--shard-size``: bytes, e.g. 5GB, 500MB, 2GiB, 1000000."""
    from maskc.sram import parse_size

    if value is None:
        return None
    bad = f"testmodel: --shard-size {value!r}: give bytes (e.g. 5GB, 500MB, 1000000)"
    if "%" in value:
        raise UsageError(bad)
    try:
        n = parse_size(value, 0, "--shard-size")
    except UsageError:
        raise UsageError(bad) from None
    if n < 1:
        raise UsageError(f"testmodel: --shard-size {value!r}: must be at least 1 byte")
    return n


@app.command()
def testmodel(
    out_dir: Annotated[
        Path | None,
        typer.Argument(
            metavar="OUT_DIR", help="Folder to write the model into.", show_default=False
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option("--preset", "-p", help="Which tiny model (see --list). Default: tiny."),
    ] = None,
    shape: Annotated[
        str | None,
        typer.Option(
            "--shape",
            "-s",
            help="A published architecture (see --list), e.g. llama-3.1-8b, with SYNTHETIC "
            "weights. Excludes --preset.",
        ),
    ] = None,
    hidden: Annotated[
        str | None, typer.Option("--hidden", metavar="N", help="Override hidden_size.")
    ] = None,
    intermediate: Annotated[
        str | None,
        typer.Option("--intermediate", metavar="N", help="Override intermediate_size."),
    ] = None,
    layers: Annotated[
        str | None, typer.Option("--layers", metavar="N", help="Override num_hidden_layers.")
    ] = None,
    heads: Annotated[
        str | None, typer.Option("--heads", metavar="N", help="Override num_attention_heads.")
    ] = None,
    kv_heads: Annotated[
        str | None,
        typer.Option("--kv-heads", metavar="N", help="Override num_key_value_heads."),
    ] = None,
    vocab: Annotated[
        str | None,
        typer.Option("--vocab", metavar="N", help="Override vocab_size (the tokenizer follows)."),
    ] = None,
    head_dim: Annotated[
        str | None,
        typer.Option(
            "--head-dim", metavar="N", help="Override head_dim (default: hidden / heads)."
        ),
    ] = None,
    dtype: Annotated[
        str | None,
        typer.Option("--dtype", help="Storage dtype of a shape: bf16 (default), f16 or f32."),
    ] = None,
    shards: Annotated[
        str | None,
        typer.Option("--shards", metavar="N", help="Write N shards of about equal size."),
    ] = None,
    shard_size: Annotated[
        str | None,
        typer.Option(
            "--shard-size",
            metavar="SIZE",
            help="Largest shard, as Hugging Face's max_shard_size (default 5GB).",
        ),
    ] = None,
    config_only: Annotated[
        bool,
        typer.Option(
            "--config-only",
            help="Write config.json and the tokenizer files only, no weights (enough for "
            "maskc compile --plan-only).",
        ),
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the weights.")] = 0,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace OUT_DIR if it exists and is not empty; if another maskc is writing "
            "it, wait for that one to finish (the two never interleave).",
        ),
    ] = False,
    list_presets: Annotated[
        bool, typer.Option("--list", help="List the presets and shapes and exit.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Write a seeded Llama-family model as a Hugging Face folder.

    --preset NAME (default tiny): a tiny model (< 1 MB) for tests and bug reports.

    --shape NAME and/or --hidden/--intermediate/--layers/--heads/--kv-heads/--vocab/--head-dim
    (on llama-3.1-8b when no --shape): a published architecture at full size, for shape and
    scale tests. Its weights are SYNTHETIC, not the published model's: seeded random numbers
    with heavy-tailed rows, per-row and per-column scale spread and a few outlier input
    channels in q/k/v/gate/up, written tensor by tensor in row blocks (memory stays a few
    hundred MB for any size); the tokenizer is a small test BPE padded with placeholder tokens
    to the vocabulary size. Shards as Hugging Face saves them (--shard-size, default 5GB).

    The folder has config.json, safetensors weights (with model.safetensors.index.json when
    sharded), tokenizer.json, tokenizer_config.json and generation_config.json. The same
    options and seed always give byte-identical files.
    """
    if list_presets:
        _list(as_json)
        return
    overrides = {
        "hidden": _int_option(hidden, "--hidden"),
        "intermediate": _int_option(intermediate, "--intermediate"),
        "layers": _int_option(layers, "--layers"),
        "heads": _int_option(heads, "--heads"),
        "kv_heads": _int_option(kv_heads, "--kv-heads"),
        "vocab": _int_option(vocab, "--vocab"),
        "head_dim": _int_option(head_dim, "--head-dim"),
    }
    n_shards = _int_option(shards, "--shards")
    max_shard = _size_option(shard_size)
    shape_opts = [f for f, v in (("--dtype", dtype), ("--config-only", config_only)) if v]
    shape_opts += [f for f, v in (("--shards", shards), ("--shard-size", shard_size)) if v]
    shape_opts += ["--" + k.replace("_", "-") for k, v in overrides.items() if v is not None]
    if shape is not None and preset is not None:
        raise UsageError("testmodel: --shape and --preset exclude each other; give one")
    if preset is not None and shape_opts:
        raise UsageError(f"testmodel: {shape_opts[0]} applies to --shape models, not to --preset")
    if n_shards is not None and max_shard is not None:
        raise UsageError("testmodel: --shards and --shard-size exclude each other; give one")
    if out_dir is None:
        raise UsageError("testmodel: give OUT_DIR (or --list)")
    if seed < 0:
        raise UsageError(f"testmodel: --seed must be a non-negative integer, got {seed}")
    if shape is None and not shape_opts:
        _write_preset(out_dir, preset or "tiny", seed, force, as_json)
        return
    from maskc.testmodels import generate_shape, resolve_shape

    try:
        spec = resolve_shape(shape, overrides, dtype)
    except UsageError as e:
        raise UsageError(f"testmodel: {e}") from None
    with _Progress() as progress, atomic_output_dir(out_dir, force=force) as tmp:
        gen = generate_shape(
            tmp,
            spec,
            seed,
            shard_size=max_shard,
            shards=n_shards,
            config_only=config_only,
            progress=progress,
        )
    _report_shape(out_dir, gen, config_only, as_json)


def _write_preset(out_dir: Path, preset: str, seed: int, force: bool, as_json: bool) -> None:
    from maskc.testmodels import PRESETS, generate

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


class _Progress:
    """The generator's progress on stderr, as every long maskc step shows it
    (:mod:`maskc.cli.progress`): a bar on a terminal, plain lines when stderr is piped (start,
    every 5% at most one per 10 s, the end), nothing with ``MASKC_PROGRESS=0``."""

    def __init__(self) -> None:
        self.bar = None
        self.task = None

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.bar is not None:
            self.bar.__exit__(exc_type, exc, tb)

    def __call__(self, done: int, total: int, name: str) -> None:
        if self.bar is None:
            self.bar = progress_bar(transient=True, in_bytes=True)
            self.bar.__enter__()
            self.task = self.bar.add_task("writing weights", total=total)
        self.bar.update(self.task, completed=done)


def _report_shape(out_dir: Path, gen, config_only: bool, as_json: bool) -> None:
    from rich.filesize import decimal

    from maskc.testmodels.spec import DTYPES

    itemsize = DTYPES[gen.spec.dtype][0].itemsize
    weight_bytes = 0 if config_only else gen.total_parameters * itemsize
    weight_files = [f for f in gen.files if f.endswith(".safetensors")]
    if as_json:
        emit_json(
            {
                "path": str(out_dir),
                "shape": gen.spec.name,
                "seed": gen.seed,
                "dtype": gen.spec.dtype,
                "total_parameters": gen.total_parameters,
                "tensors": len(gen.tensors),
                "config_only": config_only,
                "weight_bytes": weight_bytes,
                "files": list(gen.files),
            }
        )
        return
    what = (
        "config and tokenizer only (no weights)"
        if config_only
        else f"{decimal(weight_bytes)} of {gen.spec.dtype} in {len(weight_files)} file(s)"
    )
    out.print(
        f"wrote {out_dir}: shape {gen.spec.name}, seed {gen.seed}, {len(gen.tensors)} tensors, "
        f"{gen.total_parameters:,} parameters, {what}; SYNTHETIC weights"
    )


def _list(as_json: bool) -> None:
    from maskc.ir import parameter_count
    from maskc.testmodels import PRESETS, SHAPES

    if as_json:
        doc = {n: {"kind": "preset", **dataclasses.asdict(s)} for n, s in sorted(PRESETS.items())}
        for n, sh in SHAPES.items():
            doc[n] = {
                "kind": "shape",
                **dataclasses.asdict(sh.spec),
                "parameters": parameter_count(sh.spec.to_arch()),
                "source": sh.source,
            }
        emit_json(doc)
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
        title="--preset: tiny models",
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
    table = Table(
        "shape",
        "architecture",
        "layers",
        "hidden",
        "ffn",
        "heads q/kv",
        "vocab",
        "embeddings",
        "parameters",
        "bf16",
        title="--shape: published architectures, SYNTHETIC weights",
    )
    for n, sh in SHAPES.items():
        s = sh.spec
        params = parameter_count(s.to_arch())
        table.add_row(
            n,
            s.architecture,
            str(s.num_layers),
            str(s.hidden_size),
            str(s.intermediate_size),
            f"{s.num_heads}/{s.num_kv_heads}",
            f"{s.vocab_size:,}",
            "tied" if s.tie_word_embeddings else "untied",
            f"{params / 1e9:.2f}B",
            f"{params * 2 / 1e9:.1f} GB",
        )
    out.print(table)
