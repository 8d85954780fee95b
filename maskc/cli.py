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
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from maskc import __version__
from maskc.errors import (
    EXIT_DIFFERS,
    EXIT_FIT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    InputError,
    MaskcError,
    UsageError,
)
from maskc.fabric import DEFAULT_FABRIC
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


def _progress(transient: bool = True, in_bytes: bool = True) -> Progress:
    """A progress bar on stderr (silent when stderr is not a terminal); totals in bytes, or
    shown as a percentage."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        DownloadColumn() if in_bytes else TaskProgressColumn(),
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
    tensor: Annotated[
        str | None,
        typer.Option(
            "--tensor",
            "-t",
            help="(builds) Show one tensor: code histogram, step/offset statistics and a "
            "dequantized sample.",
        ),
    ] = None,
    build: Annotated[
        Path | None,
        typer.Option(
            "--build",
            help="(adapters) The build to load the adapter on: checks module names, layers and "
            "shapes against its model and the SRAM left beside its KV cache (exit 4 if it does "
            "not fit).",
        ),
    ] = None,
    context: Annotated[
        int | None,
        typer.Option(
            "--context",
            min=1,
            help="(adapters, with --build) KV-cache tokens to budget for "
            "(default: the build's context).",
        ),
    ] = None,
    netlist: Annotated[
        bool,
        typer.Option(
            "--netlist",
            help="(builds) Print the netlist's canonical text form: numerics, lookup tables, "
            "every matrix and tile (position, block, ROM hash), every op, SRAM, tokenizer. "
            "Identical for identical compiles, so it can be diffed.",
        ),
    ] = False,
) -> None:
    """Validate a model, a build or a LoRA adapter, and list what it holds.

    MODEL: every tensor is checked (present, exact shape, F32/F16/BF16 and, unless
    --headers-only, finite) and the architecture and tensor table are printed.

    ADAPTER (a PEFT LoRA folder: adapter_config.json + adapter_model.safetensors): config and
    tensors are validated (exit 3) and its SRAM cost is printed; with --build BUILD, also
    whether it fits that build's SRAM beside the KV cache (exit 4 when it does not).

    BUILD (a folder written by maskc compile): every file's hash is checked against the manifest
    (exit 5 on a mismatch) and the quantization report is printed; --tensor NAME shows one
    tensor in detail.
    """
    from maskc.adapters import CONFIG_FILE
    from maskc.build import is_build

    if (model / CONFIG_FILE).is_file():
        if tensor is not None or netlist:
            raise UsageError("--tensor and --netlist work on builds, not adapters")
        _inspect_adapter(model, build, context, headers_only, as_json)
        return
    if build is not None or context is not None:
        raise UsageError("--build and --context work on adapters (folders with "
                         f"{CONFIG_FILE})")  # fmt: skip
    if is_build(model):
        if netlist:
            from maskc.build import open_build
            from maskc.netlist import dump_text, load_netlist

            open_build(model)
            sys.stdout.write(dump_text(load_netlist(model)))
            return
        _inspect_build(model, tensor, as_json)
        return
    if tensor is not None or netlist:
        raise UsageError("--tensor and --netlist work on builds (folders written by maskc compile)")
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


def _inspect_adapter(path: Path, build: Path | None, context: int | None, headers_only: bool,
                     as_json: bool) -> None:  # fmt: skip
    from maskc.adapters import check_against, load_adapter, sram_fit

    ad = load_adapter(path)
    if not headers_only:
        for m in ad.modules:
            ad.read(m)  # NaN / infinity: exit 3 naming the tensor
    doc = {
        "path": str(path), "rank": ad.rank, "lora_alpha": ad.alpha, "use_rslora": ad.use_rslora,
        "scale": ad.scale, "base_model": ad.base_model, "targets": ad.targets,
        "layers": ad.layers, "modules": len(ad.modules),
        "parameters": sum(ad.rank * (m.rows + m.cols) for m in ad.modules),
        "sram_bytes": ad.sram_bytes(), "data_checked": not headers_only,
    }  # fmt: skip
    fits = True
    if build is not None:
        from maskc.build import open_build
        from maskc.netlist import load_netlist

        open_build(build)
        nl = load_netlist(build)
        check_against(ad, nl.matrices, nl.arch.num_layers)
        sram = nl.doc["sram"]
        ctx = context or sram["context"]
        rows = sram_fit(sram, [ad], ctx)
        fits = all(r["free_bytes"] >= 0 for r in rows)
        doc["build"] = {"path": str(build), "context": ctx, "fits": fits, "dies": rows}
    if as_json:
        _emit_json(doc)
    else:
        out.print(
            f"{path}: LoRA rank {ad.rank}, alpha {ad.alpha:g}"
            f"{' (rsLoRA)' if ad.use_rslora else ''}, scale {ad.scale:g}; "
            f"{len(ad.modules)} modules ({', '.join(ad.targets)}) on {len(ad.layers)} layers; "
            f"{doc['parameters']:,} parameters; {doc['sram_bytes']:,} bytes of SRAM as int8 "
            "(docs/numerics.md)",
            markup=False,
        )
        if build is not None:
            title = f"on {build} at {doc['build']['context']:,} tokens of context"
            t = Table("die", "SRAM", "KV cache", "adapter", "free", "max context with it",
                      title=title)  # fmt: skip
            for r in doc["build"]["dies"]:
                free = r["free_bytes"]
                t.add_row(str(r["die"]), f"{r['sram_bytes']:,}", f"{r['kv_bytes']:,}",
                          f"{r['adapter_bytes']:,}",
                          f"{free:,}" if free >= 0 else f"[red]{free:,}[/red]",
                          f"{r['max_context']:,}")  # fmt: skip
            out.print(t)
            out.print("[green]fits[/green]" if fits else "[red]does not fit[/red]: lower "
                      "--context at run time, or use a smaller rank")  # fmt: skip
    if not fits:
        raise typer.Exit(EXIT_FIT)


def _inspect_build(path: Path, tensor: str | None, as_json: bool) -> None:
    from maskc.build import open_build
    from maskc.quantize.inspect import tensor_detail

    b = open_build(path)
    if tensor is not None:
        d = tensor_detail(b, tensor)
        if as_json:
            _emit_json(d)
            return
        out.print(f"[bold]{d['name']}[/bold]  {d['kind']}  shape {'x'.join(map(str, d['shape']))}")
        if d["kind"] == "float":
            out.print(f"sample: {d['sample']}")
            return
        f = d["format"]
        out.print(
            f"method {d['method']}, {f['bits']}-bit codes, group {f['group_size']}, "
            f"step {f['scale_bits']}+{f['scale_shift_bits']} bits, offset "
            f"{f['zero_bits']}+{f['zero_shift_bits']} bits, {d['bits_per_weight']:.3f} bits/weight"
        )
        out.print(f"levels: {d['levels']}")
        hist = Table("code", "level", "count", "share", title="code histogram")
        total = sum(d["code_histogram"]) or 1
        for code, (lv, n) in enumerate(zip(d["levels"], d["code_histogram"], strict=True)):
            hist.add_row(
                str(code),
                str(lv),
                f"{n:,}",
                f"{100 * n / total:.1f}%  " + "█" * round(40 * n / max(d["code_histogram"])),
            )
        out.print(hist)
        for k in ("step", "offset"):
            if k in d:
                v = d[k]
                out.print(
                    f"{k}: min {v['min']:.4g}  median {v['median']:.4g}  max {v['max']:.4g} "
                    f"over {v['groups']:,} groups"
                )
        smp = d["sample_row0"]
        out.print(f"row 0, first codes: {smp['codes']}")
        out.print("row 0, dequantized: [" + ", ".join(f"{v:.5g}" for v in smp["dequantized"]) + "]")
        return
    model_doc = b.json("model.json")
    report = b.json("reports/quant.json") if "reports/quant.json" in b.manifest["files"] else None
    if as_json:
        _emit_json({"path": str(path), "stages": b.stages, "model": model_doc, "quant": report})
        return
    arch = model_doc["architecture"]
    out.print(
        f"[bold]{path}[/bold]: maskc build of {arch['architecture']} "
        f"({arch['num_layers']} layers, hidden {arch['hidden_size']}); stages: "
        f"{', '.join(b.stages)}; all {len(b.manifest['files'])} file hashes match"
    )
    if report:
        _print_quant_report(report)
        if report.get("placement"):
            _print_placement(report["placement"])
        if report.get("netlist"):
            _print_netlist(report["netlist"])
        if report.get("layers"):
            _print_layers(report["layers"])
    elif "reports/placement.json" in b.manifest["files"]:
        _print_placement(b.json("reports/placement.json"))


def _print_quant_report(report: dict) -> None:
    table = Table(title="quantization", show_footer=True)
    tot = report["totals"]
    table.add_column("tensor", footer="blocks / all quantized")
    table.add_column("shape")
    table.add_column("bits", justify="right")
    table.add_column("group", justify="right")
    table.add_column("method")
    table.add_column(
        "bits/weight",
        justify="right",
        footer=f"{tot['bpw_blocks'] or 0:.3f} / {tot['bpw_quantized'] or 0:.3f}",
    )
    table.add_column("rel. error", justify="right")
    table.add_column("SNR dB", justify="right")
    for r in report["tensors"]:
        if not r["quantized"] and r["role"] not in ("embed", "lm_head"):
            continue
        if r["quantized"]:
            table.add_row(
                r["name"],
                "x".join(map(str, r["shape"])),
                str(r["bits"]),
                str(r["group_size"]),
                r["method"],
                f"{r['bpw']:.3f}",
                f"{r['rel_error']:.4f}",
                f"{r['snr_db']:.2f}",
            )
        else:
            table.add_row(r["name"], "x".join(map(str, r["shape"])), "float", "", "", "32", "", "")
    out.print(table)
    o = report.get("output")
    if o:
        out.print(
            f"output vs float on {o['tokens']} tokens: mean KL {o['kl_mean']:.4f} nats, "
            f"top-1 agreement {100 * o['top1_agreement']:.1f}%, ppl {o['ppl_quantized']:.3f} vs "
            f"{o['ppl_float']:.3f} float ({o['ppl_quantized'] / o['ppl_float']:.3f}x)"
        )
    sens = report.get("sensitivity")
    if sens:
        st = Table(
            "layer", "mean KL", "top-1 agreement", title="sensitivity: only this layer quantized"
        )
        for r in sens:
            st.add_row(str(r["layer"]), f"{r['kl_mean']:.5f}", f"{100 * r['top1_agreement']:.1f}%")
        out.print(st)


def _print_placement(p: dict) -> None:
    t = Table("die", "layers", "tiles used", "of", "tile use", "cell use in used tiles",
              "padding cells", title=f"placement on {p['fabric']}")  # fmt: skip
    for d in p["per_die"]:
        t.add_row(
            str(d["die"]),
            f"{d['layers'][0]}-{d['layers'][1]}",
            f"{d['tiles_used']:,}",
            f"{d['tiles_available']:,}",
            f"{100 * d['tile_utilization']:.1f}%",
            f"{100 * d['cell_utilization_of_used_tiles']:.1f}%",
            f"{d['padding_cells']:,}",
        )
    out.print(t)
    per_layer = ", ".join(f"{k}: {v}" for k, v in p["per_layer_tiles"].items())
    out.print(f"tiles per layer: {per_layer}")
    reserve = p.get("sram_reserved_for_adapters", 0)
    out.print(
        f"KV cache: {p['context_requested']:,} tokens, at most {p['max_context']:,} fit in each "
        "die's SRAM"
        + (f" beside the {reserve:,} bytes reserved for adapters" if reserve else "")
        + "; floorplan in reports/floorplan.png"
    )
    for d in p["per_die"]:
        if "adapter_bytes" in d:
            r = d["adapter_max_rank"]
            out.print(
                f"SRAM die {d['die']}: {d['sram_bytes']:,} bytes = KV cache {d['kv_bytes']:,} "
                f"({d['kv_bytes_per_token']:,} per token) + adapters {d['adapter_bytes']:,}: "
                f"LoRA rank up to {r['all']} on all 7 projections of its layers, "
                f"{r['attention']} on q/k/v/o only (docs/sram.md)"
            )
    perf = p.get("performance")
    if perf:
        a, b = perf["at_context_1"], perf["at_context"]
        out.print(
            f"modeled: {a['tokens_per_s_per_user']:,.0f} tokens/s per user at context 1, "
            f"{b['tokens_per_s_per_user']:,.0f} at {b['context']} ({b['latency_us']:.1f} us, "
            f"{b['energy_mj_per_token']:.3f} mJ per token); {perf['die_area_used_mm2']:.1f} mm2 "
            "of tiles; model in docs/fabric.md"
        )


class _RichEvents:
    """Pipeline events -> one rich progress bar per stage, warnings on stderr."""

    def __init__(self, prog: Progress) -> None:
        self.prog = prog
        self.task = None
        self.what = ""

    def start(self, what: str, total: int) -> None:
        if self.task is not None:
            self.prog.update(self.task, completed=self.prog.tasks[-1].total)
        self.what = what
        self.task = self.prog.add_task(what, total=total)

    def advance(self, n: int = 1, detail: str = "") -> None:
        if self.task is not None:
            desc = f"{self.what} {detail}" if detail else self.what
            self.prog.update(self.task, advance=n, description=desc)

    def warn(self, message: str) -> None:
        err.print(f"maskc: warning: {message}", markup=False)


def _dies_option(value: str) -> int | str:
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
            help="rtn (round to nearest), lsq (least-squares search, weighted by "
            "calibration statistics when calibrating) or gptq (error feedback; always "
            "calibrates).",
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
            help="UTF-8 text to calibrate on (default for 3-bit builds and gptq: a "
            "built-in English text): weights the error by real activation statistics.",
        ),
    ] = None,
    no_calib: Annotated[
        bool,
        typer.Option(
            "--no-calib",
            help="Never calibrate (3-bit builds calibrate on a built-in "
            "English text by default; gptq always needs calibration).",
        ),
    ] = False,
    calib_tokens: Annotated[
        int, typer.Option("--calib-tokens", min=64, help="Tokens of calibration text to use.")
    ] = 4096,
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
            "(a layer pipeline), or 'auto' for the fewest that fit. Default: the "
            "fabric's own count.",
        ),
    ] = "fabric",
    plan_only: Annotated[
        bool,
        typer.Option(
            "--plan-only",
            help="Plan from config.json alone (no "
            "weights read): settings, ROM size, placement, floorplan; writes only the "
            "reports. MODEL may be the config.json file.",
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
            help="Processes writing the layers (default: one per core). The build is "
            "byte-identical for any value.",
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
        str,
        typer.Option(
            "--layout-format",
            help="gds or oas: the format of BUILD/layers/ (OASIS is "
            "about 100x smaller for big models).",
        ),
    ] = "gds",
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
        bool, typer.Option("--force", help="Replace BUILD if it exists and is not empty.")
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
    if layout_format not in ("gds", "oas"):
        raise UsageError(f"--layout-format must be gds or oas, got {layout_format!r}")
    if bits is not None and bits not in (3, 4):
        raise UsageError(f"--bits must be 3 or 4, got {bits} (use a [[rule]] for other widths)")
    opts = CompileOptions(
        bits=bits, group_size=group_size, method=method, quant_config=quant_config,
        model_config=model_config, calib=calib, calib_tokens=calib_tokens, eval_text=eval_text,
        sensitivity=sensitivity, strict=strict, force=force,
        calibrate=False if no_calib else None, mixed=mixed, fabric=fabric,
        dies=_dies_option(dies), context=context, layout_format=layout_format,
        verify=verify, reserve_sram=reserve_sram, jobs=jobs,
    )  # fmt: skip
    if plan_only:
        from maskc.pipeline import plan_model

        plan = plan_model(model, output, opts)
        if as_json:
            _emit_json(
                {
                    "build": str(output),
                    **{
                        k: plan[k]
                        for k in (
                            "parameters",
                            "bpw_blocks",
                            "bpw_quantized",
                            "rom_bits",
                            "placement",
                        )
                    },
                }
            )
            return
        out.print(
            f"plan for {plan['parameters']:,} parameters: {plan['rom_bits'] / 8e9:.2f} GB "
            f"of ROM, {plan['bpw_blocks']:.3f} bits/weight in the blocks, "
            f"{plan['bpw_quantized']:.3f} over all quantized tensors"
        )
        _print_placement(plan["placement"])
        out.print(f"[green]wrote[/green] {output} (plan only)")
        return
    with _progress(in_bytes=False) as prog:
        result = compile_model(model, output, opts, _RichEvents(prog))
    rep = result.report
    if as_json:
        summary = {"build": str(output), "totals": rep["totals"], "output": rep.get("output")}
        summary |= {"sensitivity": rep.get("sensitivity"), "warnings": rep["warnings"]}
        summary |= {"placement": rep["placement"], "netlist": rep["netlist"]}
        summary["layers"] = rep["layers"]
        _emit_json(summary)
        return
    _print_quant_report(rep)
    _print_placement(rep["placement"])
    _print_netlist(rep["netlist"])
    _print_layers(rep["layers"])
    out.print(f"[green]wrote[/green] {output}")


def _print_layers(lay: dict) -> None:
    b = lay["bytes"]
    names = ", ".join(lay["files"]) if len(lay["files"]) <= 2 else f"{len(lay['files'])} files"
    checked = ("read back and verified against the netlist" if lay.get("verified")
               else "not verified yet: maskc verify BUILD")  # fmt: skip
    out.print(
        f"layers ({lay['format'].upper()}): {names} in BUILD/layers/; via {_size(b['via'])}, "
        f"metal {_size(b['metal'])}, {lay['bytes_per_weight']:.2f} bytes/weight; {checked}"
    )
    if lay.get("advice"):
        out.print(f"[yellow]advice:[/yellow] {lay['advice']}")


def _size(n: int) -> str:
    for unit, k in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= k:
            return f"{n / k:,.1f} {unit}"
    return f"{n} B"


def _print_netlist(n: dict) -> None:
    out.print(
        f"netlist: {n['matrices']} matrices in {n['tiles']:,} tiles, {n['weights']:,} weights, "
        f"{n['bytes'] / 2**20:,.1f} MiB (maskc inspect BUILD --netlist prints its text form; "
        "maskc emulate BUILD runs it)"
    )


@app.command()
def verify(
    build: Annotated[
        Path, typer.Argument(metavar="BUILD", help="A build folder written by maskc compile.")
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout.")
    ] = False,
) -> None:
    """Read the two customizable layers back and compare them with the netlist.

    Every via and strap of BUILD/layers/ is extracted and every tile's cells, scale-ROM bits,
    configuration and position are compared with BUILD/netlist/; then every file's manifest
    hash is checked. Exit 0 when everything matches; exit 5 listing the first mismatches
    (tile, cell, bit, expected vs found) otherwise.
    """
    from maskc.errors import VerifyError
    from maskc.layout import verify_build

    with _progress(in_bytes=False) as prog:
        res = verify_build(build, progress=_RichEvents(prog))
    if as_json:
        _emit_json({"ok": not res["problems"], **res})
    elif not res["problems"]:
        out.print(f"{build}: the layers match the netlist ({res['tiles']:,} tiles) and every file "
                  "matches the manifest")  # fmt: skip
    if res["problems"]:
        raise VerifyError(f"{build}: {len(res['problems'])} mismatch(es), first: "
                          + "; ".join(res["problems"][:5]))  # fmt: skip


@app.command()
def render(
    build: Annotated[
        Path, typer.Argument(metavar="BUILD", help="A build folder written by maskc compile.")
    ],
    tile: Annotated[
        str,
        typer.Option("--tile", help="The tile to draw, by position: T<die>_<x>_<y> (e.g. T0_0_0)."),
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

    Left: every via site of the tile (ROM array, then the scale ROM above it), one pixel per
    site. Right: the tile's first cells to scale with their vias, metal straps and the 4-bit
    value each cell holds.
    """
    from maskc.layout.render import render_tile

    res = render_tile(build, tile, output, zoom)
    if as_json:
        _emit_json(res)
    else:
        out.print(f"[green]wrote[/green] {output}: tile {tile}, {res['vias']:,} vias, "
                  f"{res['straps']} metal straps")  # fmt: skip


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
        typer.Option("--png", help="Also draw the changes per tile over the floorplan."),
    ] = None,
    top: Annotated[
        int, typer.Option("--top", min=1, max=100, help="Changed tensors to list per layer.")
    ] = 5,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout.")
    ] = False,
) -> None:
    """Which masks change between two chips, and by how much.

    A and B are two build folders (compared by the manifests' per-tile hashes, then tile by
    tile on the changed tiles: seconds for SmolLM2) or two layer files of one kind inside
    build folders (every tile cell decoded and compared). Prints, per layer, whether it is
    identical, the vias/straps added and removed, the tiles changed and the tensors they
    hold, and a verdict: which masks must be re-made. Exit 0 identical, 1 different, 3/5 on
    bad or corrupt input.
    """
    from maskc.diff import diff_layers as run
    from maskc.diff import heatmap_png

    with _progress(in_bytes=False) as prog:
        res = run(a, b, _RichEvents(prog), top)
    if png is not None:
        heatmap_png(res, png)
    if as_json:
        _emit_json(res.to_json())
    else:
        _print_diff(res.to_json(), png)
    if not res.identical:
        raise typer.Exit(EXIT_DIFFERS)


def _print_diff(doc: dict, png) -> None:
    if not doc["same_base_die"]:
        out.print(f"[bold red]{doc['verdict']}[/bold red]")
        return
    t = Table(title=f"diff-layers {doc['a']} -> {doc['b']}")
    for col in (
        "layer",
        "identical",
        "added",
        "removed",
        "changed tiles",
        "changed",
        "top tensors",
    ):
        t.add_column(col, justify="left" if col in ("layer", "top tensors") else "right")
    for name, rep in doc["layers"].items():
        tops = ", ".join(f"{x['tensor']} ({x['vias_or_straps']:,})" for x in rep["top_tensors"][:3])
        t.add_row(name, "yes" if rep["identical"] else "[red]no[/red]", f"{rep['added']:,}",
                  f"{rep['removed']:,}", f"{rep['changed_tiles']:,} / {rep['total_tiles']:,}",
                  f"{100 * rep['changed_fraction']:.3f}%", tops or "-")  # fmt: skip
    out.print(t)
    out.print(f"[bold]verdict:[/bold] {doc['verdict']}")
    if png is not None:
        out.print(f"[green]wrote[/green] {png}")


def _ids_option(value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        ids = [int(v) for v in value.replace(",", " ").split()]
    except ValueError:
        raise UsageError(f"--tokens must be token ids separated by commas, got {value!r}") from None
    if not ids:
        raise UsageError("--tokens is empty")
    return ids


class _Stream:
    """Prints generated text as it comes, holding back incomplete UTF-8 sequences."""

    def __init__(self, session) -> None:
        self.session = session
        self.ids: list[int] = []
        self.shown = ""

    def __call__(self, tok: int) -> None:
        self.ids.append(tok)
        text = self.session.decode(self.ids)
        if text.endswith("\ufffd"):
            return
        sys.stdout.write(text[len(self.shown) :])
        sys.stdout.flush()
        self.shown = text


def _modeled_us(perf: dict | None, ctx: int) -> float | None:
    """Modeled chip latency per token (us) at context ``ctx``: the model is linear in context."""
    if not perf:
        return None
    a, b = perf["at_context_1"], perf["at_context"]
    if b["context"] == a["context"]:
        return a["latency_us"]
    slope = (b["latency_us"] - a["latency_us"]) / (b["context"] - a["context"])
    return a["latency_us"] + slope * (ctx - 1)


@app.command()
def emulate(
    build: Annotated[
        Path, typer.Argument(metavar="BUILD", help="A build folder written by maskc compile.")
    ],
    prompt: Annotated[
        str | None, typer.Option("--prompt", "-p", help="Text to continue (or to --compare on).")
    ] = None,
    tokens: Annotated[
        str | None,
        typer.Option("--tokens", help="Token ids instead of --prompt, e.g. 1,2,3 (no tokenizer)."),
    ] = None,
    chat: Annotated[
        bool,
        typer.Option(
            "--chat", help="Wrap --prompt as one user turn with the model's chat template."
        ),
    ] = False,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", "-n", min=1, help="Tokens to generate at most.")
    ] = 64,
    temperature: Annotated[
        float,
        typer.Option(
            "--temperature",
            min=0.0,
            help="0 is greedy (ties: lowest id); else seeded integer sampling (docs/numerics.md).",
        ),
    ] = 0.0,
    top_k: Annotated[
        int, typer.Option("--top-k", min=0, help="Keep the k likeliest (0: off).")
    ] = 0,
    top_p: Annotated[
        float, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling mass (1: off).")
    ] = 1.0,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the SplitMix64 PRNG.")] = 0,
    ignore_eos: Annotated[
        bool, typer.Option("--ignore-eos", help="Do not stop at the end-of-sequence token.")
    ] = False,
    ppl: Annotated[
        Path | None,
        typer.Option("--ppl", help="Perplexity of this UTF-8 text (fixed protocol, see --help)."),
    ] = None,
    ctx: Annotated[int, typer.Option("--ctx", min=2, help="--ppl window length in tokens.")] = 512,
    stride: Annotated[
        int | None,
        typer.Option("--stride", min=1, help="--ppl window step (default --ctx: no overlap)."),
    ] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option("--max-tokens", min=2, help="--ppl: use only the first N tokens of the text."),
    ] = None,
    compare: Annotated[
        Path | None,
        typer.Option(
            "--compare",
            metavar="MODEL_DIR",
            help="Also run the float32 reference of this original model on the same "
            "tokens: top-1 agreement, KL and max logit error per position.",
        ),
    ] = None,
    compare_dequantized: Annotated[
        bool,
        typer.Option(
            "--compare-dequantized",
            help="Like --compare, with the build's own dequantized weights as the float "
            "reference: isolates the integer datapath.",
        ),
    ] = False,
    context: Annotated[
        int | None,
        typer.Option(
            "--context",
            min=1,
            help="KV-cache tokens to emulate (default: the build's; at most what the "
            "fabric's SRAM holds, else exit 4).",
        ),
    ] = None,
    adapter: Annotated[
        list[Path] | None,
        typer.Option(
            "--adapter",
            metavar="DIR",
            help="A PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors) "
            "to load into the chip's SRAM; repeat to stack adapters. The masks are unchanged.",
        ),
    ] = None,
    context_full: Annotated[
        str,
        typer.Option(
            "--context-full",
            help="When prompt + new tokens exceed the KV cache: 'refuse' (exit 4 before "
            "running) or 'stop' (generate until the cache is full). A prompt longer than the "
            "cache is always refused.",
        ),
    ] = "refuse",
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="CPU threads (default: all cores).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout.")
    ] = False,
) -> None:
    """Run a build's netlist, bit-exactly, on the CPU: generate, score a text, or compare.

    Loads only BUILD (netlist + tokenizer; hashes checked, exit 5 on a change) and computes
    exactly the integer arithmetic of docs/numerics.md. Modes:

    generate (default): --prompt TEXT [--chat] or --tokens IDS; greedy unless --temperature.
    Tokens stream as they come; --json gives prompt_tokens, tokens, text, logits_sha256 (the
    int32 logits of every generated position, little-endian) and timings.

    --ppl FILE --ctx 512 [--stride N]: perplexity with a fixed protocol: windows of ctx tokens
    from position 0, no BOS added, every position but a window's first scored.

    --compare MODEL_DIR | --compare-dequantized: float32 reference vs the chip on the prompt.

    --adapter DIR (repeatable): LoRA adapters loaded into SRAM in the integer format of
    docs/numerics.md; checked against the build's model (exit 3) and the SRAM left beside the
    KV cache (exit 4 with the numbers). --compare merges them into the float reference.

    Every run also prints the modeled chip time per token for this build (docs/fabric.md).
    """
    from maskc.emulate.run import (
        chat_prompt,
        generate,
        open_session,
        perplexity,
    )
    from maskc.emulate.run import (
        compare as run_compare,
    )
    from maskc.emulate.sampling import SamplingParams

    modes = sum([ppl is not None, compare is not None or compare_dequantized])
    if modes > 1:
        raise UsageError("choose one of --ppl and --compare/--compare-dequantized")
    if compare is not None and compare_dequantized:
        raise UsageError("--compare and --compare-dequantized contradict each other")
    if prompt is not None and tokens is not None:
        raise UsageError("give --prompt or --tokens, not both")
    if chat and prompt is None:
        raise UsageError("--chat needs --prompt")
    if ppl is not None and (prompt is not None or tokens is not None):
        raise UsageError("--ppl scores a file; drop --prompt/--tokens")
    if threads is not None:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    if context_full not in ("refuse", "stop"):
        raise UsageError(f"--context-full {context_full!r}: choose refuse or stop")
    with _progress(in_bytes=False) as prog:
        session = open_session(build, context, _RichEvents(prog), adapter or [])
    perf = session.modeled()
    loaded = _adapters_json(session)
    if loaded and not as_json:
        for a in loaded:
            err.print(f"adapter {a['path']}: rank {a['rank']}, {a['modules']} modules, "
                      f"{a['sram_bytes']:,} bytes of SRAM", markup=False)  # fmt: skip

    if ppl is not None:
        from maskc.pipeline import read_text

        ids = session.encode(read_text(ppl, "--ppl text"))
        if max_tokens is not None:
            ids = ids[:max_tokens]
        if len(ids) < 2:
            raise InputError(f"{ppl}: fewer than 2 tokens to score")
        import time

        t0 = time.perf_counter()
        with _progress(in_bytes=False) as prog:
            task = prog.add_task("scoring windows", total=None)
            res = perplexity(
                session,
                ids,
                ctx,
                stride,
                lambda done, total: prog.update(task, completed=done, total=total),
            )
        wall = time.perf_counter() - t0
        modeled = _modeled_us(perf, ctx)
        doc = {"ppl": res.ppl, "tokens_scored": res.tokens_scored, "tokens": len(ids),
               "ctx": ctx, "stride": stride or ctx, "wall_s": wall,
               "modeled_chip_us_per_token": modeled, "adapters": loaded}  # fmt: skip
        if as_json:
            _emit_json(doc)
        else:
            out.print(
                f"perplexity {res.ppl:.4f} over {res.tokens_scored:,} scored tokens "
                f"({len(ids):,} tokens, windows of {ctx}); emulator {wall:.1f} s "
                f"({len(ids) / wall:,.0f} tokens/s)"
            )
            _print_modeled(modeled)
        return

    if tokens is not None:
        ids = _ids_option(tokens)
    else:
        text = prompt if prompt is not None else ""
        if chat:
            text = chat_prompt(session, text)
        if not text:
            raise UsageError("give --prompt TEXT or --tokens IDS")
        ids = session.encode(text)
        if not ids:
            raise UsageError("the prompt gives no tokens")

    if compare is not None or compare_dequantized:
        res = run_compare(session, ids, compare)
        if as_json:
            _emit_json({"prompt_tokens": ids, **res, "adapters": loaded})
            return
        out.print(
            f"chip vs float32 reference ({res['reference']}) on {len(ids)} tokens: top-1 "
            f"agreement {100 * res['top1_agreement']:.1f}%, mean KL {res['kl_mean']:.5f} "
            f"nats (max {res['kl_max']:.5f}), max |logit error| "
            f"{res['max_logit_error']:.4f}"
        )
        t = Table("position", "token", "top-1 agrees", "KL", "max |logit error|")
        for row in res["per_position"]:
            t.add_row(str(row["pos"]), str(ids[row["pos"]]), "yes" if row["top1_agree"] else "no",
                      f"{row['kl']:.5f}", f"{row['max_logit_error']:.4f}")  # fmt: skip
        out.print(t)
        return

    params = SamplingParams(temperature, top_k, top_p, seed)
    stream = None if as_json else _Stream(session)
    g = generate(session, ids, max_new_tokens, params, stream, stop_at_eos=not ignore_eos,
                 context_full=context_full)  # fmt: skip
    n = len(g.tokens)
    decode_tps = (n - 1) / g.decode_s if n > 1 and g.decode_s > 0 else None
    modeled = _modeled_us(perf, len(ids) + n)
    timings = {"prefill_s": g.prefill_s, "decode_s": g.decode_s,
               "decode_tokens_per_s": decode_tps, "modeled_chip_us_per_token": modeled}  # fmt: skip
    if as_json:
        _emit_json({"prompt_tokens": g.prompt_tokens, "tokens": g.tokens,
                    "text": session.decode(g.tokens), "logits_sha256": g.logits_sha256,
                    "stopped_at_eos": g.stopped_at_eos,
                    "stopped_at_context": g.stopped_at_context, "adapters": loaded,
                    "timings": timings})  # fmt: skip
        return
    sys.stdout.write("\n")
    err.print(
        f"{len(ids)} prompt tokens, {n} generated{' (stopped at EOS)' if g.stopped_at_eos else ''}"
        + (
            f" (stopped: the KV cache of {session.chip.context} tokens is full)"
            if g.stopped_at_context
            else ""
        )
        + f"; emulator: prefill {1e3 * g.prefill_s:.0f} ms"
        + (f", decode {decode_tps:.1f} tokens/s" if decode_tps else "")
        + f"; logits_sha256 {g.logits_sha256[:16]}",
        markup=False,
    )
    _print_modeled(modeled, to=err)


def _adapters_json(session) -> list[dict]:
    return [
        {"path": str(a.path), "rank": a.rank, "alpha": a.alpha, "use_rslora": a.use_rslora,
         "modules": len(a.modules), "sram_bytes": a.sram_bytes()}
        for a in session.chip.adapters
    ]  # fmt: skip


def _print_modeled(us: float | None, to: Console | None = None) -> None:
    c = to or out
    if us is None:
        c.print("modeled chip time: no placement report in this build", markup=False)
    else:
        c.print(
            f"modeled chip: {us:.1f} us per token ({1e6 / us:,.0f} tokens/s per user; "
            "docs/fabric.md)",
            markup=False,
        )


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


fabric_app = typer.Typer(
    help="Show and validate fabrics: structured-ASIC base dies (tile grid, SRAM, fixed-function "
    "units, the two customizable layers), built in or as TOML files (docs/fabric.md).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(fabric_app, name="fabric")


def _si(value: float, unit: str) -> str:
    """``value`` with a decimal prefix (k, M, G, T, P): 1.13e10 bits -> '11.3 Gbit'."""
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


@fabric_app.command("list")
def fabric_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """List the built-in fabrics: dies, tiles, ROM capacity and SRAM."""
    from maskc.fabric import builtin_fabrics, load_fabric

    fabs = [load_fabric(n) for n in builtin_fabrics()]
    if as_json:
        _emit_json(
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
    table = Table("fabric", "dies", "tiles", "ROM (codes+scales)", "4-bit weights", "SRAM",
                  "description")  # fmt: skip
    for f in fabs:
        table.add_row(f.name, str(f.system.dies), f"{f.total_tiles:,}",
                      _si(f.rom_bits_total, "bit"), _si(f.weights_per_tile(4) * f.total_tiles, ""),
                      _mib(f.sram_bytes_total), f.fabric.description)  # fmt: skip
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
        _emit_json(doc)
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
