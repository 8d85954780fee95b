"""``maskc compile``: a model into a build folder (or, with ``--plan-only``, its plan)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from maskc.cli.app import RichEvents, app, emit_json, enum_parser, out, progress_bar
from maskc.cli.show import print_layers, print_netlist, print_placement, print_quant_report
from maskc.errors import UsageError
from maskc.fabric import DEFAULT_FABRIC


class LayoutFormat(StrEnum):
    """``--layout-format``: the file format of BUILD/layers/ (GDSII or OASIS)."""

    gds = "gds"
    oas = "oas"


class WeightFormat(StrEnum):
    """``--format``: the ROM format of the transformer-block matrices."""

    int = "int"
    mxfp4 = "mxfp4"
    nvfp4 = "nvfp4"


class CalibSource(StrEnum):
    """``--calib-source``: what calibration statistics are taken on."""

    text = "text"
    random = "random"
    mixed = "mixed"


def _dies_option(value: str) -> int | str:
    """``--dies``: a positive number, 'auto', or 'fabric' (the default: the fabric's count)."""
    if value in ("auto", "fabric"):
        return value
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"--dies must be a positive number or 'auto', got {value!r}")
    return int(value)


@app.command()
def compile(
    model: Annotated[
        Path,
        typer.Argument(
            metavar="MODEL",
            help="A Hugging Face model folder, or a .safetensors file with --model-config.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", metavar="BUILD", help="Build folder to write.", show_default=False
        ),
    ],
    bits: Annotated[
        int | None,
        typer.Option(
            "--bits",
            "-b",
            help="Code width of the transformer-block matrices: 3 or 4 "
            "(default 4). Embedding and lm_head stay 8-bit unless a rule says otherwise.",
        ),
    ] = None,
    group_size: Annotated[
        int | None,
        typer.Option(
            "--group-size",
            "-g",
            help="Weights per scale group along the input "
            "dimension (default: the built-in for --bits).",
        ),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            "-m",
            help="rtn (round to nearest), lsq (least-squares search, the default: weighted by "
            "calibration statistics, or with --no-calib by the weights' magnitudes) or gptq "
            "(error feedback; always calibrates; the best 4-bit quality measured, about 9x "
            "lsq's quantization time at 8B widths).",
        ),
    ] = None,
    weight_format: Annotated[
        WeightFormat | None,
        typer.Option(
            "--format",
            parser=enum_parser(WeightFormat, "--format must be int, mxfp4 or nvfp4, got {value!r}"),
            help="ROM format of the transformer-block matrices: int (integer levels, the "
            "default), mxfp4 (E2M1 codes, an E8M0 scale per 32) or nvfp4 (E2M1 codes, an E4M3 "
            "scale per 16, a float32 per tensor). FP4 fixes 4-bit codes and its block size; its "
            "methods: ocp (mxfp4), nv (nvfp4), search (both), gptq (both; the default). FP4 "
            "builds calibrate on the built-in text unless --no-calib (then search).",
            show_default=False,
        ),
    ] = None,
    quant_config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="quant.toml with [defaults] and ordered [[rule]]s (regex "
            "on tensor names) overriding bits/group_size/method/... per tensor.",
        ),
    ] = None,
    model_config: Annotated[
        Path | None,
        typer.Option("--model-config", help="config.json for a single .safetensors MODEL."),
    ] = None,
    calib: Annotated[
        Path | None,
        typer.Option(
            "--calib",
            help="UTF-8 text to calibrate on (default for lsq, gptq and FP4: a built-in "
            "English text): weights the error by real activation statistics.",
        ),
    ] = None,
    no_calib: Annotated[
        bool,
        typer.Option(
            "--no-calib",
            help="Never calibrate (by default a build calibrates on a built-in English text "
            "when a setting uses activation statistics: lsq, gptq, 3-bit codes, FP4; gptq "
            "always needs it). Faster; lsq then weighs each weight's error by its magnitude.",
        ),
    ] = False,
    calib_tokens: Annotated[
        int, typer.Option("--calib-tokens", min=64, help="Tokens of calibration text to use.")
    ] = 4096,
    calib_source: Annotated[
        CalibSource | None,
        typer.Option(
            "--calib-source",
            parser=enum_parser(
                CalibSource, "--calib-source must be text, random or mixed, got {value!r}"
            ),
            help="What to calibrate on: text (--calib, else the built-in text; the default), "
            "random (token ids drawn at random from the embedding, seed 0: no text or tokenizer "
            "needed; the default for a model without tokenizer.json, except for gptq, whose "
            "Hessians on random ids are worse) or mixed (the text for half of --calib-tokens, "
            "random ids for the rest).",
            show_default=False,
        ),
    ] = None,
    mixed: Annotated[
        bool | None,
        typer.Option(
            "--mixed/--no-mixed",
            help="3-bit builds keep k/v/o/down projections at 4 "
            "bits (measured best per ROM bit; the default); --no-mixed gives uniform 3-bit.",
        ),
    ] = None,
    eval_text: Annotated[
        Path | None,
        typer.Option(
            "--eval-text",
            help="Text for the output-level error report (default: a short built-in English text).",
        ),
    ] = None,
    sensitivity: Annotated[
        bool,
        typer.Option(
            "--sensitivity",
            help="Also measure the output error with only one "
            "layer quantized, for every layer (slower).",
        ),
    ] = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Quant-config rules that match nothing are errors.")
    ] = False,
    fabric: Annotated[
        str,
        typer.Option(
            "--fabric",
            help="Place the model on this fabric: a built-in name (maskc "
            "fabric list) or a fabric TOML file.",
        ),
    ] = DEFAULT_FABRIC,
    dies: Annotated[
        str,
        typer.Option(
            "--dies",
            help="Number of dies to spread the layers over "
            "(a layer pipeline), or 'auto' for the fewest that fit (on a fabric with "
            "[card]: every die of the fewest cards, the stage times balanced; a mixture "
            "of experts whose layer fits no die: each layer on a home die, its experts "
            "spread over expert dies). Default: the fabric's own count.",
        ),
    ] = "fabric",
    plan_only: Annotated[
        bool,
        typer.Option(
            "--plan-only",
            help="Plan from config.json alone (no "
            "weights read): settings, ROM size, placement, floorplan; writes only the "
            "reports. MODEL may be the config.json file. A pre-quantized checkpoint needs its "
            "weights: only their scales are read, for each layer's ROM format.",
        ),
    ] = False,
    context: Annotated[
        int | None,
        typer.Option(
            "--context",
            min=1,
            help="Tokens of KV cache every die must "
            "hold (default: min(2048, the model's maximum)).",
        ),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            "-j",
            min=1,
            help="Processes quantizing the layers (without calibration; fewer if memory "
            "says so) and writing the layers (default: one per core). The build is "
            "byte-identical for any value.",
        ),
    ] = None,
    dask: Annotated[
        str | None,
        typer.Option(
            "--dask",
            metavar="ADDRESS",
            help="Run the parallel work (layer files, verify) on the workers of this Dask "
            "scheduler (tcp://HOST:PORT; pip install 'maskc[dask]'). MODEL and BUILD must be on "
            "a filesystem every worker mounts at the same path (checked first). The build is "
            "byte-identical to a local one. docs/distributed.md.",
        ),
    ] = None,
    reserve_sram: Annotated[
        str | None,
        typer.Option(
            "--reserve-sram",
            metavar="SIZE",
            help="SRAM per die kept for LoRA adapters: bytes (8MiB, 8000000) or a share (25%). "
            "The KV cache gets the rest, and the context is what it holds unless --context is "
            "given. Default: the KV cache holds --context tokens, adapters get the rest.",
        ),
    ] = None,
    layout_format: Annotated[
        LayoutFormat,
        typer.Option(
            "--layout-format",
            parser=enum_parser(LayoutFormat, "--layout-format must be gds or oas, got {value!r}"),
            help="gds or oas: the format of BUILD/layers/ (OASIS is "
            "about 100x smaller for big models).",
        ),
    ] = LayoutFormat.gds,
    verify: Annotated[
        bool | None,
        typer.Option(
            "--verify/--no-verify",
            help="Read the layers back and compare them with the netlist before "
            "finishing (default: on builds of at most 32M weights; maskc verify "
            "does it later).",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace BUILD if it exists and is not empty; if another maskc is writing "
            "it, wait for that one to finish (the two never interleave).",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report summary as JSON on stdout.")
    ] = False,
) -> None:
    """Compile MODEL into a build folder: ingest, quantize, place, netlist, layout.

    Writes BUILD/quant/ (integer codes, levels and group scales in the chip's format),
    BUILD/netlist/ (the bit-exact functional netlist: every tile's ROM content and position,
    the dataflow, lookup tables, SRAM allocation, tokenizer; docs/netlist.md), BUILD/layers/
    (the two customizable layers, via and metal, as GDSII or OASIS; docs/layout.md),
    BUILD/reports/ (quant.json, quant_error.png, placement.json, floorplan.png) and a manifest
    of hashes (every file, every tile's ROM). The build is written to a temporary folder and
    renamed into place only when complete.
    """
    from maskc.pipeline import CompileOptions, compile_model

    if no_calib and calib is not None:
        raise UsageError("--calib and --no-calib contradict each other")
    if no_calib and calib_source is not None:
        raise UsageError("--calib-source and --no-calib contradict each other")
    if dask is not None and plan_only:
        raise UsageError("--dask is for a full compile; --plan-only reads no weights")
    if bits is not None and bits not in (3, 4):
        raise UsageError(f"--bits must be 3 or 4, got {bits} (use a [[rule]] for other widths)")
    opts = CompileOptions(
        bits=bits,
        group_size=group_size,
        method=method,
        weight_format=None if weight_format is None else weight_format.value,
        quant_config=quant_config,
        model_config=model_config,
        calib=calib,
        calib_tokens=calib_tokens,
        calib_source=None if calib_source is None else calib_source.value,
        eval_text=eval_text,
        sensitivity=sensitivity,
        strict=strict,
        force=force,
        calibrate=False if no_calib else None,
        mixed=mixed,
        fabric=fabric,
        dies=_dies_option(dies),
        context=context,
        layout_format=layout_format.value,
        verify=verify,
        reserve_sram=reserve_sram,
        jobs=jobs,
        dask=dask,
    )
    if plan_only:
        _plan(model, output, opts, as_json)
        return
    with progress_bar(in_bytes=False) as prog:
        result = compile_model(model, output, opts, RichEvents(prog))
    rep = result.report
    if as_json:
        summary = {"build": str(output), "totals": rep["totals"], "output": rep.get("output")}
        summary |= {"sensitivity": rep.get("sensitivity"), "warnings": rep["warnings"]}
        summary |= {"placement": rep["placement"], "netlist": rep["netlist"]}
        summary["layers"] = rep["layers"]
        emit_json(summary)
        return
    print_quant_report(rep)
    print_placement(rep["placement"])
    print_netlist(rep["netlist"])
    print_layers(rep["layers"])
    out.print(f"[green]wrote[/green] {output}")


def _plan(model: Path, output: Path, opts, as_json: bool) -> None:
    """``--plan-only``: settings, ROM size and placement from config.json alone."""
    from maskc.pipeline import plan_model

    plan = plan_model(model, output, opts)
    if as_json:
        keys = ("parameters", "bpw_blocks", "bpw_quantized", "rom_bits", "placement")
        emit_json({"build": str(output), **{k: plan[k] for k in keys}})
        return
    out.print(
        f"plan for {plan['parameters']:,} parameters: {plan['rom_bits'] / 8e9:.2f} GB "
        f"of ROM, {plan['bpw_blocks']:.3f} bits/weight in the blocks, "
        f"{plan['bpw_quantized']:.3f} over all quantized tensors"
    )
    print_placement(plan["placement"])
    out.print(f"[green]wrote[/green] {output} (plan only)")
