"""``maskc inspect``: a model (MODEL), a build (BUILD) or a LoRA adapter (ADAPTER)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from maskc.cli.app import app, emit_json, out, progress_bar
from maskc.cli.show import print_layers, print_netlist, print_placement, print_quant_report
from maskc.errors import EXIT_FIT, UsageError


@app.command()
def inspect(
    model: Annotated[
        Path,
        typer.Argument(
            metavar="MODEL",
            help="A Hugging Face model folder (config.json + model.safetensors or shards + "
            "model.safetensors.index.json), or a single .safetensors file with --model-config.",
            show_default=False,
        ),
    ],
    config: Annotated[
        Path | None,
        typer.Option(
            "--model-config",
            "-c",
            help="config.json to use (required for a single .safetensors file; the same flag "
            "as maskc compile's).",
        ),
    ] = None,
    config_alias: Annotated[
        Path | None,
        typer.Option("--config", hidden=True, help="The old spelling of --model-config."),
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
    tiles: Annotated[
        bool,
        typer.Option(
            "--tiles",
            help="(builds) List every tile: its name T<die>_<x>_<y> (what render --tile "
            "takes), tensor, tile index, layer, the block's rows and columns, die/x/y and ROM "
            "format; with --tensor NAME only that matrix's tiles.",
        ),
    ] = False,
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
    (exit 5 on a mismatch) and the quantization report is printed, with whether maskc verify
    has verified exactly these files (its record, BUILD/verify.json, names the manifest's
    sha256); --tensor NAME shows one tensor in detail; --tiles lists every tile.
    """
    from maskc.adapters import CONFIG_FILE
    from maskc.build import is_build

    if config_alias is not None:
        if config is not None and config != config_alias:
            raise UsageError("--config is the old spelling of --model-config: give one of them")
        config = config_alias
    if os.path.lexists(model / CONFIG_FILE):  # a FIFO or folder there is the adapter's error
        if tensor is not None or netlist or tiles:
            raise UsageError("--tensor, --tiles and --netlist work on builds, not adapters")
        _inspect_adapter(model, build, context, headers_only, as_json)
        return
    if build is not None or context is not None:
        raise UsageError(f"--build and --context work on adapters (folders with {CONFIG_FILE})")
    if is_build(model):
        if tiles and netlist:
            raise UsageError("--tiles and --netlist: give one of them")
        if tiles:
            _inspect_tiles(model, tensor, as_json)
            return
        if netlist:
            from maskc.build import open_build
            from maskc.netlist import dump_text, load_netlist

            open_build(model)
            sys.stdout.write(dump_text(load_netlist(model)))
            return
        _inspect_build(model, tensor, as_json)
        return
    if tensor is not None or netlist or tiles:
        raise UsageError(
            "--tensor, --tiles and --netlist work on builds (folders written by maskc compile)"
        )
    _inspect_model(model, config, headers_only, as_json)


def pq_names(pq: dict) -> str:
    names = pq["float_matrices"]
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _inspect_model(model: Path, config: Path | None, headers_only: bool, as_json: bool) -> None:
    from maskc.ingest import load_model
    from maskc.quantize.imported import describe

    m = load_model(model, config)
    if not headers_only:
        total = sum(m.nbytes(s.name) for s in m.specs)
        with progress_bar() as prog:
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
        emit_json(
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
                "prequantized": describe(m, not headers_only),
            }
        )
        return

    a = m.arch
    summary = Table(title=f"{model} — {a.architecture}", show_header=False, box=None)
    summary.add_column(style="bold")
    summary.add_column()
    heads = f"{a.num_heads} query / {a.num_kv_heads} key-value (head_dim {a.head_dim})"
    rope = f"theta {a.rope_theta:g}" + (
        f", llama3 scaling x{a.rope_scaling.factor:g}" if a.rope_scaling else ""
    )
    tied = "tied (lm_head = embed_tokens)" if a.tie_word_embeddings else "untied"
    tokenizer = f"{m.tokenizer_vocab_size} tokens" if m.tokenizer_path else "none found"
    rows = [
        ("layers", a.num_layers),
        ("hidden size", a.hidden_size),
        ("intermediate size", a.intermediate_size),
        ("attention heads", heads),
        ("vocabulary", a.vocab_size),
        ("embeddings", tied),
        ("rope", rope),
        ("rms_norm_eps", f"{a.rms_norm_eps:g}"),
        ("max positions", a.max_position_embeddings),
        ("q/k/v bias", "yes" if a.attention_bias else "no"),
        ("sliding window", a.sliding_window or "none"),
    ]
    if a.qk_norm:
        rows.append(("q/k norm", "yes (RMSNorm per head)"))
    if a.moe is not None:
        e = a.moe
        experts = (
            f"top {e.top_k} of {e.num_experts} (each {e.expert_intermediate_size} wide)"
            + (", renormalized" if e.norm_topk_prob else "")
            + (
                f"; shared expert {e.shared_expert_intermediate_size} wide, gated"
                if e.shared_expert_intermediate_size
                else ""
            )
        )
        rows.append(("experts", experts))
    pq = describe(m, not headers_only)
    if pq is not None:
        n, kept = len(pq["imported_layers"]), len(pq["float_matrices"])
        rows.append(("pre-quantized", f"{pq['description']}: {n} quantized layers"))
        if kept:
            rows.append(("float matrices", f"{kept} (quantized by maskc): " + pq_names(pq)))
        if pq["rom"] is not None:
            bad = {k: v for k, v in pq["rom"].items() if v != "exact"}
            first = next(iter(bad.values()), "")
            rom = f"{len(bad)} refused: {first}" if bad else "every layer imported exactly"
            rows.append(("ROM mapping", rom))
    rows += [
        ("weight files", len(m.files)),
        ("tokenizer", tokenizer),
    ]
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
    checked = (
        "headers checked (data not read)" if headers_only else "all tensors finite and in range"
    )
    out.print(
        f"[green]ok[/green]: {len(tensors)} tensors, {m.total_parameters:,} parameters, {checked}"
    )


def _inspect_adapter(
    path: Path, build: Path | None, context: int | None, headers_only: bool, as_json: bool
) -> None:
    from maskc.adapters import check_against, load_adapter
    from maskc.sram import sram_fit

    ad = load_adapter(path)
    if not headers_only:
        for m in ad.modules:
            ad.read(m)  # NaN / infinity: exit 3 naming the tensor
    doc = {
        "path": str(path),
        "rank": ad.rank,
        "lora_alpha": ad.alpha,
        "use_rslora": ad.use_rslora,
        "scale": ad.scale,
        "base_model": ad.base_model,
        "targets": ad.targets,
        "layers": ad.layers,
        "modules": len(ad.modules),
        "parameters": sum(ad.rank * (m.rows + m.cols) for m in ad.modules),
        "sram_bytes": ad.sram_bytes(),
        "data_checked": not headers_only,
    }
    fits = True
    if build is not None:
        from maskc.adapters import check_folds, folds_of
        from maskc.build import open_build
        from maskc.netlist import load_netlist

        check_folds(ad, folds_of(open_build(build)))
        nl = load_netlist(build)
        check_against(ad, nl.matrices, nl.arch.num_layers)
        sram = nl.doc["sram"]
        ctx = context or sram["context"]
        rows = sram_fit(sram, [ad], ctx)
        fits = all(r["free_bytes"] >= 0 for r in rows)
        doc["build"] = {"path": str(build), "context": ctx, "fits": fits, "dies": rows}
    if as_json:
        emit_json(doc)
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
            t = Table(
                "die",
                "SRAM",
                "params",
                "KV cache",
                "adapter",
                "free",
                "max context with it",
                title=title,
            )
            for r in doc["build"]["dies"]:
                free = r["free_bytes"]
                t.add_row(
                    str(r["die"]),
                    f"{r['sram_bytes']:,}",
                    f"{r['params_bytes']:,}",
                    f"{r['kv_bytes']:,}",
                    f"{r['adapter_bytes']:,}",
                    f"{free:,}" if free >= 0 else f"[red]{free:,}[/red]",
                    f"{r['max_context']:,}",
                )
            out.print(t)
            if fits:
                out.print("[green]fits[/green]")
            else:
                out.print(
                    "[red]does not fit[/red]: lower --context at run time, or use a smaller rank"
                )
    if not fits:
        raise typer.Exit(EXIT_FIT)


def _inspect_tiles(path: Path, tensor: str | None, as_json: bool) -> None:
    """``inspect BUILD --tiles [--tensor NAME]``: every tile (of one matrix)."""
    from maskc.build import open_build
    from maskc.errors import InputError
    from maskc.layout.tiles import list_tiles
    from maskc.netlist import load_netlist

    b = open_build(path)
    if "netlist/netlist.json" not in b.manifest["files"]:
        raise InputError(f"{path}: a --plan-only build has no tiles (compile it without)")
    rows = list_tiles(load_netlist(path), tensor)
    if as_json:
        emit_json({"path": str(path), "tensor": tensor, "tiles": rows})
        return
    t = Table("tile", "tensor", "index", "layer", "rows", "cols", "die", "x", "y", "format")
    t.title = f"{len(rows):,} tiles" + (f" of {tensor}" if tensor else "") + " (render --tile T)"
    for r in rows:
        t.add_row(
            r["tile"],
            r["tensor"],
            f"{r['index']} of {r['of']}",
            "-" if r["layer"] is None else str(r["layer"]),
            f"{r['rows'][0]}-{r['rows'][1] - 1}",
            f"{r['cols'][0]}-{r['cols'][1] - 1}",
            str(r["die"]),
            str(r["x"]),
            str(r["y"]),
            r["format"],
        )
    out.print(t)


def _inspect_build(path: Path, tensor: str | None, as_json: bool) -> None:
    from maskc.build import open_build, verify_status

    b = open_build(path)
    if tensor is not None:
        _inspect_tensor(b, tensor, as_json)
        return
    model_doc = b.json("model.json")
    report = b.json("reports/quant.json") if "reports/quant.json" in b.manifest["files"] else None
    record = verify_status(b)
    if as_json:
        emit_json(
            {
                "path": str(path),
                "stages": b.stages,
                "model": model_doc,
                "quant": report,
                "verify": record,
            }
        )
        return
    arch = model_doc["architecture"]
    out.print(
        f"[bold]{path}[/bold]: maskc build of {arch['architecture']} "
        f"({arch['num_layers']} layers, hidden {arch['hidden_size']}); stages: "
        f"{', '.join(b.stages)}; all {len(b.manifest['files'])} file hashes match"
    )
    if report:
        print_quant_report(report)
        if report.get("placement"):
            print_placement(report["placement"])
        if report.get("netlist"):
            print_netlist(report["netlist"])
        if report.get("layers"):
            print_layers(report["layers"], record or {"state": "none"})
    elif "reports/placement.json" in b.manifest["files"]:
        print_placement(b.json("reports/placement.json"))


def _inspect_tensor(b, tensor: str, as_json: bool) -> None:
    from maskc.quantize.inspect import tensor_detail

    d = tensor_detail(b, tensor)
    if as_json:
        emit_json(d)
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
