"""The compile's steps, each a named function from typed inputs to a typed output.

A step's parameters are the names of what it reads (``opts``, ``model``, ``placement`` ...:
the outputs of earlier steps, or the run's ``model_path``, ``opts``, ``build`` folder and
``events``); it returns what :class:`~maskc.pipeline.runner.Step` says it makes. The runner
validates every output that has a ``validate()`` before the next step runs (FINN's build
steps are the model). Files are written into ``build``, the run's temporary folder.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

from maskc import __version__
from maskc.build import sha256_file, write_json, write_manifest
from maskc.errors import InputError
from maskc.fabric import Fabric, load_fabric
from maskc.fsutil import copy_regular, optional_file, read_text
from maskc.ingest import Model, load_model
from maskc.ir import ModelArch
from maskc.pipeline.options import CompileOptions
from maskc.place import MatrixInfo, Placement, floorplan_png, place
from maskc.quantize import (
    MIXED_4BIT_ROLES,
    Calibration,
    QuantizedModel,
    choose_calibration,
    format_for,
    quantize_model,
    resolve_settings,
)
from maskc.quantize.driver import tokenize
from maskc.quantize.imported import conflicts
from maskc.quantize.report import (
    avg_bpw,
    default_report_text,
    error_png,
    logits,
    output_error,
    quant_report,
    sensitivity,
)
from maskc.quantize.rules import QUANTIZABLE_ROLES, Resolution
from maskc.quantize.stream import BlockPool, RowReader, quant_workers
from maskc.romformat import PERM

#: The tokenizer's optional settings beside tokenizer.json (the chat template)
TC = "tokenizer_config.json"
#: The IR stages a complete build holds (its manifest's ``stages``).
BUILD_STAGES = ["ingest", "quantize", "place", "netlist", "layout"]
#: compile verifies the layers by default up to this many weights (SmolLM2's GDS takes a minute)
VERIFY_AUTO_WEIGHTS = 1 << 25
#: above this size a GDSII build gets the advice to write OASIS
OASIS_ADVICE_BYTES = 256 << 20


# -- shared by compile and --plan-only ----------------------------------------------------------


def fabric(opts: CompileOptions) -> Fabric:
    """The base die to place on (built-in name or TOML file)."""
    return load_fabric(opts.fabric)


def settings(specs: list, opts: CompileOptions, events) -> Resolution:
    """Every quantizable tensor's setting (profiles, quant config, command line, mixed
    precision); the config's warnings go to ``events``."""
    res = resolve_settings(
        specs,
        opts.bits,
        opts.group_size,
        opts.method,
        opts.quant_config,
        opts.strict,
        opts.mixed,
        opts.weight_format,
        opts.calibrate,
    )
    for w in res.warnings:
        events.warn(w)
    return res


def placement(
    arch: ModelArch, rows: list[dict], fabric: Fabric, opts: CompileOptions, build: Path
) -> Placement:
    """Cut every quantized matrix into tile blocks and place them (stage 3); writes
    reports/placement.json and reports/floorplan.png."""
    mats, tensors = [], []
    for r in rows:
        if r.get(PERM):  # its gather table, in the boot image beside the biases
            tensors.append((f"{r['name']}.{PERM}", r["shape"][1]))
        if not r["quantized"]:
            tensors.append((r["name"], math.prod(r["shape"])))
            if r["role"] in QUANTIZABLE_ROLES:
                raise InputError(
                    f"{r['name']}: kept in float (skip = true) but the fabric stores only "
                    "quantized weights; remove the skip rule to place the model"
                )
            continue
        mats.append(
            MatrixInfo(
                r["name"],
                r["role"],
                r["layer"],
                r["shape"][0],
                r["shape"][1],
                r["bits"],
                r["group_size"],
            )
        )
    if opts.reserve_sram is None:
        context = opts.context or min(2048, arch.max_position_embeddings)
        p = place(mats, arch, fabric, opts.dies, context, tensors=tensors)
    else:
        from maskc.sram import parse_size

        reserve = parse_size(opts.reserve_sram, fabric.die.sram_bytes, "--reserve-sram")
        p = place(mats, arch, fabric, opts.dies, opts.context, reserve, tensors)
    write_json(build / "reports" / "placement.json", p.report)
    floorplan_png(p, build / "reports" / "floorplan.png")
    return p


# -- compile ------------------------------------------------------------------------------------


def ingest(model_path: Path, opts: CompileOptions) -> tuple[Model, ModelArch, list]:
    """Stage 1: the checkpoint opened and validated (headers only); its architecture and
    tensors."""
    m = load_model(model_path, opts.model_config)
    return m, m.arch, m.specs


def weights(model: Model, events) -> None:
    """Every tensor read once, one at a time, before anything is compiled: finite, and within
    what the chip can represent (:mod:`maskc.limits`; InputError naming the tensor otherwise)."""
    params = {s.name: s.parameters for s in model.specs}
    events.start("checking weights", sum(params.values()))
    model.check_data(lambda name, _nbytes: events.advance(params[name], name))


def calibration(
    model: Model, quant_settings: Resolution, opts: CompileOptions, events
) -> Calibration | None:
    """Whether and on what (text, random token ids or both) to calibrate."""
    return choose_calibration(
        model,
        quant_settings,
        opts.calib,
        opts.calibrate,
        opts.calib_tokens,
        opts.calib_ctx,
        opts.calib_source,
    )


def eval_tokens(model: Model, opts: CompileOptions) -> list[int] | None:
    """The tokens the output-level error is measured on (None without a tokenizer)."""
    text = (read_text(opts.eval_text, "evaluation text") if opts.eval_text else None) or (
        default_report_text()
    )
    return tokenize(model, text)[: opts.eval_tokens] if model.tokenizer_path else None


def inputs(model: Model, opts: CompileOptions) -> dict[str, str]:
    """sha256 of every input file, hashed once per compile: ``model/<name>`` for the config,
    weights and tokenizer; ``calib``, ``quant_config``, ``eval_text`` for the option files."""
    out = {f"model/{f.name}": sha256_file(f) for f in [model.config_path, *model.files]}
    for what, p in (
        ("calib", opts.calib),
        ("quant_config", opts.quant_config),
        ("eval_text", opts.eval_text),
    ):
        if p is not None:
            out[what] = sha256_file(p)
    if model.tokenizer_path is not None:
        out["model/tokenizer.json"] = sha256_file(model.tokenizer_path)
    return dict(sorted(out.items()))


def model_files(
    model: Model,
    quant_settings: Resolution,
    opts: CompileOptions,
    input_hashes: dict[str, str],
    build: Path,
) -> None:
    """model.json (architecture, sources, options, settings) and the tokenizer files."""
    src_files = {f.name: input_hashes[f"model/{f.name}"] for f in model.files}
    write_json(
        build / "model.json",
        {
            "maskc_version": __version__,
            "architecture": model.arch.to_json(),
            "source": {
                "config_sha256": input_hashes[f"model/{model.config_path.name}"],
                "weights_sha256": dict(sorted(src_files.items())),
            },
            "options": {
                "bits": opts.bits,
                "group_size": opts.group_size,
                "method": opts.method,
                **({"format": opts.weight_format} if opts.weight_format is not None else {}),
                "calib_sha256": input_hashes.get("calib"),
                "calib_tokens": opts.calib_tokens if opts.calib else None,
                **({"calib_source": opts.calib_source} if opts.calib_source else {}),
            },
            "quant_settings": quant_settings.to_json(),
        }
        | (
            {"desc_act_folds": {n: axis for n, (axis, _p) in sorted(model.folds.items())}}
            if model.folds
            else {}
        ),
    )
    if model.tokenizer_path is not None:  # the one copy of the model's (the netlist links it)
        copy_regular(model.tokenizer_path, build / "tokenizer.json", "tokenizer.json")
        tc = optional_file(model.tokenizer_path.parent / TC, TC)
        if tc is not None:
            copy_regular(tc, build / TC, TC)


def quantize(
    model: Model,
    quant_settings: Resolution,
    calib: Calibration | None,
    build: Path,
    events,
    opts: CompileOptions,
    fabric: Fabric,
) -> tuple[QuantizedModel, list[dict]]:
    """Stage 2: quant/ written; the quantized model and its per-tensor rows. Without
    calibration the layers are quantized by ``--jobs`` worker processes (quant_workers: fewer
    when memory says so), or by the Dask cluster's workers under ``--dask``. With calibration
    the layers go in order in this process, and the row blocks of each layer's matrices are
    quantized side by side by ``--jobs`` threads, or by the cluster's workers (gptq's blocks,
    whose Hessians are too big to ship, by the local threads). The build does not depend on
    how many or where."""
    from maskc import parallel

    explicit = any(
        v is not None for v in (opts.bits, opts.group_size, opts.method, opts.weight_format)
    )
    explicit = explicit or opts.quant_config is not None
    for w in conflicts(model, quant_settings.settings, explicit, opts.method):
        events.warn(w)
    run = functools.partial(
        quantize_model, model, quant_settings, calib, build, events, tile_rows=tile_rows(fabric)
    )
    if calib is not None:
        from concurrent.futures import ThreadPoolExecutor

        threads = max(1, opts.jobs if opts.jobs is not None else parallel.usable_cpus())
        with ThreadPoolExecutor(threads, thread_name_prefix="maskc-quant") as local:
            if parallel.distributed():
                with parallel.pool(0) as ex:
                    blocks = BlockPool(ex, parallel.worker_count(1), local)
                    q = run(blocks=blocks)
            else:
                blocks = BlockPool(local, threads)
                q = run(blocks=blocks)
        return q, q.rows
    n = quant_workers(model, opts.jobs)
    if parallel.distributed():
        n = parallel.worker_count(n)
    if n <= 1 and not parallel.distributed():
        q = run()
    else:
        with parallel.pool(n) as ex:
            q = run(executor=ex)
    return q, q.rows


def report(
    model: Model,
    quantized: QuantizedModel,
    quant_settings: Resolution,
    calib: Calibration | None,
    eval_ids: list[int] | None,
    opts: CompileOptions,
    events,
) -> dict:
    """The quantization report: rows and totals, and the output-level error of the whole
    quantized model (and per layer with ``--sensitivity``) against the float model."""
    rep = quant_report(model.total_parameters, quantized.rows, quant_settings, calib)
    if rep["calibration"] is not None and quantized.uncalibrated_experts is not None:
        # a mixture of experts: the routed experts quantized without calibration, by layer
        rep["calibration"]["unselected_experts"] = {
            str(i): v for i, v in sorted(quantized.uncalibrated_experts.items()) if v
        }
    rep["mixed_precision"] = {
        "enabled": opts.mixed is not False,
        "roles_at_4_bits_in_3_bit_builds": list(MIXED_4BIT_ROLES),
    }
    if eval_ids and len(eval_ids) >= 2:
        reader = RowReader(model)  # the embedding and lm_head by blocks of rows
        try:
            ref = logits(model.arch, model.read, eval_ids, reader.rows)  # the float model
            out = None
            if ref is not None:
                out = output_error(model.arch, quantized.store, eval_ids, ref, events)
            rep["output"] = out
            if out is not None and opts.sensitivity:
                rep["sensitivity"] = sensitivity(
                    model.arch, model.read, quantized.store, eval_ids, ref, events, reader.rows
                )
        finally:
            reader.close()
        if out is None:
            events.warn(
                f"{model.path}: the float32 reference overflows on the evaluation text (its "
                "activations exceed float32 though every weight is in range): output-level "
                "error not measured"
            )
        elif opts.sensitivity and rep["sensitivity"] is None:
            events.warn(f"{model.path}: a layer's float32 run overflows: sensitivity not measured")
    else:
        events.warn(f"{model.path}: no tokenizer.json: output-level error not measured")
    return rep


def netlist(
    model: Model,
    quantized: QuantizedModel,
    placement: Placement,
    fabric: Fabric,
    build: Path,
    events,
):
    """Stage 4: netlist/ written, then loaded back through the validating loader."""
    from maskc.netlist import load_netlist, write_netlist

    summary = write_netlist(
        build, model.arch, quantized.store, placement, fabric, tokenizer_info(model, build), events
    )
    return load_netlist(build), summary


def drop_quant(quantized: QuantizedModel, netlist) -> None:
    """quant/ keeps only what the netlist does not hold: its quantized arrays are dropped (the
    netlist's tiles are the same fields) and quant/index.json marks those matrices as stored
    in the netlist, where QuantStore reads them from (issue 17: one copy of the codes)."""
    quantized.store.move_to_netlist(netlist)


def layout(netlist, fabric: Fabric, opts: CompileOptions, build: Path, events) -> list[dict]:
    """Stages 5-6: the via and metal layers written (layers/ and its index)."""
    from maskc.layout import write_layers

    return write_layers(
        netlist, fabric, build / "layers", opts.layout_format, workers=opts.jobs, progress=events
    )


def boot(netlist, build: Path) -> dict:
    """The SRAM boot image: boot/sram.d<die>.bin and boot/index.json (maskc/boot.py), every
    model-specific value that is not a weight."""
    from maskc.boot import write_boot

    return write_boot(netlist, build)


def verify(
    netlist,
    netlist_summary: dict,
    fabric: Fabric,
    banks: list[dict],
    opts: CompileOptions,
    build: Path,
    events,
) -> dict:
    """The layer files' sizes and, on builds up to VERIFY_AUTO_WEIGHTS weights (or with
    ``--verify``), the layers read back and compared with the netlist (a mismatch here is a
    bug: RuntimeError)."""
    from maskc.boot import verify_boot
    from maskc.layout import verify_layers

    weights = netlist_summary["weights"]
    check = opts.verify if opts.verify is not None else weights <= VERIFY_AUTO_WEIGHTS
    rep = layers_report(build / "layers", banks, opts.layout_format, weights)
    rep["verified"] = check
    problems = verify_boot(netlist, build)  # small: always
    if check:
        problems += verify_layers(netlist, fabric, build / "layers", banks, progress=events)
    if problems:  # a bug: the layers or the boot image just written disagree with the netlist
        raise RuntimeError(f"layout verification failed: {problems[0]}")
    return rep


def reports(
    report: dict, placement: Placement, netlist_summary: dict, layers: dict, build: Path
) -> dict:
    """The compile report, complete: reports/quant.json and reports/quant_error.png."""
    full = {**report, "placement": placement.report, "netlist": netlist_summary, "layers": layers}
    write_json(build / "reports" / "quant.json", full)
    error_png(full, build / "reports" / "quant_error.png")
    return full


def manifest(
    opts: CompileOptions, fabric: Fabric, input_hashes: dict[str, str], netlist, build: Path
) -> dict:
    """manifest.json: every file's hash, the inputs' hashes, the options, every tile's ROM
    hash."""
    from maskc.layout import tile_hashes

    skip = ("force", "jobs", "dask")  # none changes a byte of the build
    options = {
        k: (v.name if isinstance(v, Path) else v)
        for k, v in dataclasses.asdict(opts).items()
        if k not in skip and not (k == "weight_format" and v is None)
    }
    options["fabric_name"] = fabric.name
    extra = {"inputs": input_hashes, "options": options, "tiles": tile_hashes(netlist)}
    return write_manifest(build, BUILD_STAGES, extra)


def tokenizer_info(model: Model, build: Path) -> dict:
    """What the netlist records of the tokenizer: file (the build's copy, made by
    :func:`model_files`), bos/eos ids, chat template (checked when the model was loaded)."""
    a = model.arch
    return {
        "path": build / "tokenizer.json" if model.tokenizer_path is not None else None,
        "bos_token_id": a.bos_token_id,
        "eos_token_id": a.eos_token_ids[0] if a.eos_token_ids else None,
        "chat_template": model.chat_template if model.tokenizer_path is not None else None,
    }


def layers_report(root: Path, banks: list[dict], fmt: str, weights: int) -> dict:
    """Sizes of the layer files: per file, per layer, total and per weight."""
    files = {f: (root / f).stat().st_size for b in banks for f in b["files"].values()}
    per_layer = {
        layer: sum(n for f, n in files.items() if f.startswith(layer)) for layer in ("via", "metal")
    }
    total = sum(files.values())
    return {
        "format": fmt,
        "banks": len(banks),
        "files": dict(sorted(files.items())),
        "bytes": per_layer | {"total": total},
        "weights": weights,
        "bytes_per_weight": round(total / max(weights, 1), 4),
        "advice": (
            "GDSII has no repetitions: --layout-format oas writes the same layers "
            "about 9x smaller and twice as fast to read back"
        )
        if fmt == "gds" and total > OASIS_ADVICE_BYTES
        else None,
    }


# -- --plan-only --------------------------------------------------------------------------------


def config(
    model_path: Path, opts: CompileOptions, fabric: Fabric
) -> tuple[ModelArch, list, Path, dict, set]:
    """The architecture from config.json (no weight data): arch, its tensors, the file; the
    weights' headers, when they are at hand, checked to hold those tensors; a pre-quantized
    checkpoint's imported layers and their ROM formats (read from their scales alone), and
    those with an input permutation (from their ``g_idx``)."""
    from maskc.ingest.loader import declared_tensors

    return declared_tensors(model_path, opts.model_config, perms=True, tile_rows=tile_rows(fabric))


def tile_rows(fabric: Fabric) -> dict[int, int]:
    """Weights per tile row of ``fabric`` by code bits: an imported layer's ROM groups divide
    them (:func:`maskc.ingest.prequant.rom_group_size`)."""
    return {b: fabric.weights_per_tile_row(b) for b in (3, 4, 8)}


def plan_rows(
    specs: list, quant_settings: Resolution, imported_formats: dict, perms: set
) -> list[dict]:
    """Each tensor's setting and ROM bits, as the compile report's rows (no error columns);
    an imported layer's are its own ROM format's (the settings do not apply to it), and its
    input permutation is marked (its gather table takes SRAM: the placement counts it)."""
    rows = []
    for spec in specs:
        s = quant_settings.settings.get(spec.name)
        q = spec.name in imported_formats or (s is not None and not s.skip)
        fmt = imported_formats.get(spec.name) or (format_for(s) if q else None)
        rows.append(
            {
                "name": spec.name,
                "role": spec.role,
                "layer": spec.layer,
                "shape": list(spec.shape),
                "quantized": q,
                "bits": fmt.bits if q else None,
                "group_size": fmt.group_size if q else None,
                **({"format": fmt.kind} if q and fmt.fp4 else {}),
                "rom_bits": fmt.rom_bits(*spec.shape) if q else None,
                **({PERM: True} if spec.name in perms else {}),
            }
        )
    return rows


def plan(
    arch: ModelArch,
    specs: list,
    config_path: Path,
    rows: list[dict],
    quant_settings: Resolution,
    placement: Placement,
    build: Path,
) -> dict:
    """reports/plan.json (settings, ROM size, placement) and a model.json marked plan-only;
    the manifest lists the single stage "plan"."""
    quant = [r for r in rows if r["quantized"]]
    doc = {
        "version": 1,
        "architecture": arch.to_json(),
        "parameters": sum(s.parameters for s in specs),
        "bpw_blocks": avg_bpw([r for r in quant if r["layer"] is not None]),
        "bpw_quantized": avg_bpw(quant),
        "rom_bits": sum(r["rom_bits"] for r in quant),
        "settings": quant_settings.to_json(),
        "placement": placement.report,
    }
    write_json(
        build / "model.json",
        {
            "maskc_version": __version__,
            "architecture": arch.to_json(),
            "plan_only": True,
            "config_sha256": sha256_file(config_path),
        },
    )
    write_json(build / "reports" / "plan.json", doc)
    write_manifest(build, ["plan"])
    return doc
