"""``maskc compile``: run the stages in order, each verified, into an atomically written build.

Stages: ingest -> quantize (+ reports) -> place -> netlist. The build layout is in
docs/architecture.md.
Everything written is deterministic: same inputs and options, byte-identical build.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np

from maskc import __version__
from maskc.build import sha256_file, write_json, write_manifest
from maskc.errors import InputError, UsageError
from maskc.evaluate import kl_top1, log_softmax
from maskc.fabric import DEFAULT_FABRIC
from maskc.fsutil import atomic_output_dir, decode_utf8, read_small_file
from maskc.ingest import Model, load_model
from maskc.quantize import (
    BUILTIN_EMBED,
    METHODS,
    MIXED_4BIT_ROLES,
    PROFILES,
    QuantTensor,
    builtin_for_bits,
    quantize_stack,
    weight_metrics,
)
from maskc.quantize.calibrate import SITE_OF_ROLE, LayerCalibrator
from maskc.quantize.rules import QUANTIZABLE_ROLES, Resolution, resolve
from maskc.quantize.store import arrays_of, file_for, index_entry
from maskc.reference import FloatLlama
from maskc.safetensors_io import write_safetensors

#: Largest calibration / evaluation text accepted, in bytes.
MAX_TEXT_BYTES = 64 << 20
#: Fewest tokens a calibration text must give.
MIN_CALIB_TOKENS = 64


class Events(Protocol):
    """What the pipeline tells its caller (the CLI draws progress bars from it)."""

    def start(self, what: str, total: int) -> None: ...
    def advance(self, n: int = 1, detail: str = "") -> None: ...
    def warn(self, message: str) -> None: ...


class _Quiet:
    def start(self, what: str, total: int) -> None:
        pass

    def advance(self, n: int = 1, detail: str = "") -> None:
        pass

    def warn(self, message: str) -> None:
        pass


@dataclass(frozen=True)
class CompileOptions:
    """Options of ``maskc compile`` (``None`` = not given: built-ins and the config decide)."""

    bits: int | None = None
    group_size: int | None = None
    method: str | None = None
    quant_config: Path | None = None
    model_config: Path | None = None
    calib: Path | None = None
    #: None: calibrate when a setting needs it (gptq, or 3-bit codes); False: never
    calibrate: bool | None = None
    #: None: the 3-bit profile keeps MIXED_4BIT_ROLES at 4 bits; False: uniform bits
    mixed: bool | None = None
    calib_tokens: int = 4096
    calib_ctx: int = 512
    eval_text: Path | None = None
    eval_tokens: int = 256
    sensitivity: bool = False
    strict: bool = False
    force: bool = False
    #: a built-in fabric name or a fabric TOML path
    fabric: str = DEFAULT_FABRIC
    #: dies to spread the model over: a number, "auto" (fewest that fit) or "fabric"
    dies: int | str = "fabric"
    #: tokens of KV cache every die must hold for its layers
    context: int | None = None
    #: SRAM per die kept for LoRA adapters: bytes ("8MiB", "8000000") or a share ("25%");
    #: None: the KV cache gets ``context`` tokens and adapters the rest
    reserve_sram: str | None = None
    #: "gds" or "oas": the format of the two customizable layers
    layout_format: str = "gds"
    #: processes that write the layers (None: one per core); the output does not depend on it
    jobs: int | None = None
    #: read the layers back and compare them with the netlist (None: on builds of at most
    #: VERIFY_AUTO_WEIGHTS weights)
    verify: bool | None = None


@dataclass
class CompileResult:
    build: Path
    report: dict
    warnings: list[str] = field(default_factory=list)


def read_text(path: Path, what: str) -> str:
    """A UTF-8 text file, size-capped; InputError naming the file otherwise."""
    text = decode_utf8(path, what, read_small_file(path, what, MAX_TEXT_BYTES))
    if not text.strip():
        raise InputError(f"{path}: {what} is empty")
    return text


def _tokenizer(m: Model):
    from tokenizers import Tokenizer

    if m.tokenizer_path is None:
        raise InputError(f"{m.path}: no tokenizer.json; it is needed to tokenize text")
    return Tokenizer.from_file(str(m.tokenizer_path))


def _tokens(m: Model, text: str) -> list[int]:
    return list(_tokenizer(m).encode(text, add_special_tokens=False).ids)


def builtin_calibration_text() -> str:
    return resources.files("maskc.data").joinpath("calib_en.txt").read_text(encoding="utf-8")


def default_report_text() -> str:
    return resources.files("maskc.data").joinpath("report_text.txt").read_text(encoding="utf-8")


class _LayerWeights:
    """``get_tensor`` for FloatLlama that serves whatever weights are currently installed."""

    def __init__(self) -> None:
        self.tensors: dict[str, np.ndarray] = {}

    def __call__(self, name: str) -> np.ndarray:
        return self.tensors[name]


def _setting_row(name, spec, setting, q: QuantTensor | None, metrics, bpw) -> dict:
    return {
        "name": name,
        "role": spec.role,
        "layer": spec.layer,
        "shape": list(spec.shape),
        "quantized": q is not None,
        "bits": setting.bits if q is not None else None,
        "group_size": setting.group_size if q is not None else None,
        "method": setting.method if q is not None else None,
        "symmetric": setting.symmetric if q is not None else None,
        "scale_bits": setting.scale_bits if q is not None else None,
        "bpw": bpw,
        "rom_bits": q.fmt.rom_bits(*q.shape) if q is not None else None,
        **metrics,
    }


def compile_model(
    model_path: Path, out: Path, opts: CompileOptions, events: Events | None = None
) -> CompileResult:
    """Compile ``model_path`` into the build folder ``out`` (see the module docstring)."""
    ev = events or _Quiet()
    model_path = Path(model_path)
    with atomic_output_dir(out, force=opts.force, inputs=(model_path,)) as tmp:
        from maskc.fabric import load_fabric

        fab = load_fabric(opts.fabric)
        m = load_model(model_path, opts.model_config)
        res = _resolve(m, opts)
        for w in res.warnings:
            ev.warn(w)
        active = [s for s in res.settings.values() if not s.skip]
        needs_h = any(s.method == "gptq" for s in active)
        wants_calib = needs_h or any(s.bits <= 3 for s in active)
        if opts.calibrate is False and needs_h:
            raise UsageError("method gptq needs calibration: drop --no-calib")
        calib_ids, calib_name = None, None
        if opts.calibrate is False:
            pass
        elif opts.calib is not None:
            calib_name = opts.calib.name
            calib_ids = _tokens(m, read_text(opts.calib, "calibration text"))
            if len(calib_ids) < MIN_CALIB_TOKENS:
                raise InputError(
                    f"{opts.calib}: calibration text gives {len(calib_ids)} tokens, fewer than "
                    f"{MIN_CALIB_TOKENS}; give a longer text"
                )
        elif wants_calib:
            if m.tokenizer_path is None:
                if needs_h:
                    raise InputError(
                        f"{m.path}: method gptq calibrates on text and the model has no "
                        "tokenizer.json; add one, or choose --method lsq"
                    )
                ev.warn(f"{m.path}: no tokenizer.json: quantizing without calibration")
            else:
                calib_name = "built-in (maskc/data/calib_en.txt)"
                calib_ids = _tokens(m, builtin_calibration_text())
        if calib_ids is not None:
            calib_ids = calib_ids[: opts.calib_tokens]
        eval_text = (
            read_text(opts.eval_text, "evaluation text") if opts.eval_text else None
        ) or default_report_text()
        eval_ids = _tokens(m, eval_text)[: opts.eval_tokens] if m.tokenizer_path else None

        inputs = _input_hashes(m, opts)
        _write_model_files(m, tmp, res, opts, inputs)
        rows, index = _quantize(m, tmp, res, calib_ids, needs_h, ev)
        write_json(tmp / "quant" / "index.json", {"version": 1, "tensors": index})
        report = _report(m, rows, res, calib_name, calib_ids)
        report["mixed_precision"] = {
            "enabled": opts.mixed is not False,
            "roles_at_4_bits_in_3_bit_builds": list(MIXED_4BIT_ROLES),
        }
        if eval_ids and len(eval_ids) >= 2:
            ref = _logits(m.arch, m.read, eval_ids)  # the float model, shared by both reports
            report["output"] = _output_error(m, tmp, index, eval_ids, ref, ev)
            if opts.sensitivity:
                report["sensitivity"] = _sensitivity(m, tmp, index, eval_ids, ref, ev)
        else:
            ev.warn(f"{m.path}: no tokenizer.json: output-level error not measured")
        placement = _place(m, rows, fab, opts)
        write_json(tmp / "reports" / "placement.json", placement.report)
        from maskc.place import floorplan_png

        floorplan_png(placement, tmp / "reports" / "floorplan.png")
        report["placement"] = placement.report
        from maskc.netlist import write_netlist

        report["netlist"] = write_netlist(tmp, m.arch, index, placement, fab, _tok_info(m), ev)
        from maskc.layout import tile_hashes, verify_layers, write_layers
        from maskc.netlist import load_netlist

        nl = load_netlist(tmp)
        banks = write_layers(nl, fab, tmp / "layers", opts.layout_format, workers=opts.jobs,
                             progress=ev)  # fmt: skip
        weights = report["netlist"]["weights"]
        verify = opts.verify if opts.verify is not None else weights <= VERIFY_AUTO_WEIGHTS
        report["layers"] = layers_report(tmp / "layers", banks, opts.layout_format, weights)
        report["layers"]["verified"] = verify
        if verify:
            problems = verify_layers(nl, fab, tmp / "layers", banks, progress=ev)
            if problems:  # a bug: the layers just written disagree with the netlist
                raise RuntimeError(f"layout verification failed: {problems[0]}")
        write_json(tmp / "reports" / "quant.json", report)
        from maskc.quantize.report import error_png

        error_png(report, tmp / "reports" / "quant_error.png")
        extra = _manifest_extra(opts, fab, inputs)
        extra["tiles"] = tile_hashes(nl)
        write_manifest(tmp, ["ingest", "quantize", "place", "netlist", "layout"], extra)
    return CompileResult(Path(out), report, list(res.warnings))


#: compile verifies the layers by default up to this many weights (SmolLM2's GDS takes a minute)
VERIFY_AUTO_WEIGHTS = 1 << 25
#: above this size a GDSII build gets the advice to write OASIS
OASIS_ADVICE_BYTES = 256 << 20


def layers_report(root: Path, banks: list[dict], fmt: str, weights: int) -> dict:
    """Sizes of the layer files: per file, per layer, total and per weight."""
    files = {f: (root / f).stat().st_size for b in banks for f in b["files"].values()}
    per_layer = {layer: sum(n for f, n in files.items() if f.startswith(layer))
                 for layer in ("via", "metal")}  # fmt: skip
    total = sum(files.values())
    return {"format": fmt, "banks": len(banks), "files": dict(sorted(files.items())),
            "bytes": per_layer | {"total": total}, "weights": weights,
            "bytes_per_weight": round(total / max(weights, 1), 4),
            "advice": ("GDSII has no repetitions: --layout-format oas writes the same layers "
                       "about 9x smaller and twice as fast to read back")
            if fmt == "gds" and total > OASIS_ADVICE_BYTES else None}  # fmt: skip


@dataclass(frozen=True)
class _Shapes:
    """What planning needs of a model when only its config.json is read."""

    path: Path
    arch: object
    specs: list


def plan_model(model_path: Path, out: Path, opts: CompileOptions) -> dict:
    """``maskc compile --plan-only``: settings, ROM size and placement from config.json alone.

    No weights are read; the build holds model.json, reports/plan.json, reports/placement.json
    and reports/floorplan.png, and is marked with the single stage "plan"."""
    from maskc.fabric import load_fabric
    from maskc.ingest.config import load_config
    from maskc.ir import expected_tensors
    from maskc.quantize import format_for

    model_path = Path(model_path)
    cfg = opts.model_config or (model_path / "config.json" if model_path.is_dir() else model_path)
    with atomic_output_dir(out, force=opts.force, inputs=(model_path,)) as tmp:
        fab = load_fabric(opts.fabric)
        arch = load_config(Path(cfg))
        shapes = _Shapes(model_path, arch, expected_tensors(arch))
        res = _resolve(shapes, opts)
        rows = []
        for spec in shapes.specs:
            s = res.settings.get(spec.name)
            q = s is not None and not s.skip
            fmt = format_for(s) if q else None
            rom = fmt.rom_bits(*spec.shape) if q else None
            rows.append({"name": spec.name, "role": spec.role, "layer": spec.layer,
                         "shape": list(spec.shape), "quantized": q,
                         "bits": s.bits if q else None, "group_size": s.group_size if q else None,
                         "rom_bits": rom})  # fmt: skip
        placement = _place(shapes, rows, fab, opts)
        quant = [r for r in rows if r["quantized"]]
        blocks = [r for r in quant if r["layer"] is not None]

        plan = {
            "version": 1,
            "architecture": arch.to_json(),
            "parameters": sum(s.parameters for s in shapes.specs),
            "bpw_blocks": _avg_bpw(blocks),
            "bpw_quantized": _avg_bpw(quant),
            "rom_bits": sum(r["rom_bits"] for r in quant),
            "settings": res.to_json(),
            "placement": placement.report,
        }
        write_json(tmp / "model.json", {"maskc_version": __version__,
                                        "architecture": arch.to_json(), "plan_only": True,
                                        "config_sha256": sha256_file(Path(cfg))})  # fmt: skip
        write_json(tmp / "reports" / "plan.json", plan)
        write_json(tmp / "reports" / "placement.json", placement.report)
        from maskc.place import floorplan_png

        floorplan_png(placement, tmp / "reports" / "floorplan.png")
        write_manifest(tmp, ["plan"])
    return plan


def _tok_info(m: Model) -> dict:
    """What the netlist records of the tokenizer: file, bos/eos ids, chat template."""
    info = {"path": m.tokenizer_path, "bos_token_id": m.arch.bos_token_id,
            "eos_token_id": m.arch.eos_token_ids[0] if m.arch.eos_token_ids else None,
            "chat_template": None}  # fmt: skip
    if m.tokenizer_path is not None:
        tc = m.tokenizer_path.parent / "tokenizer_config.json"
        if tc.is_file():
            from maskc.ingest.config import read_json_file

            doc = read_json_file(tc, "tokenizer_config.json")
            ct = doc.get("chat_template") if isinstance(doc, dict) else None
            if isinstance(ct, str):
                info["chat_template"] = ct
            elif ct is not None:
                raise InputError(f"{tc}: chat_template must be a string")
    return info


def _input_hashes(m: Model, opts: CompileOptions) -> dict[str, str]:
    """sha256 of every input file, hashed once per compile: ``model/<name>`` for the config,
    weights and tokenizer; ``calib``, ``quant_config``, ``eval_text`` for the option files."""
    inputs = {f"model/{f.name}": sha256_file(f) for f in [m.config_path, *m.files]}
    for what, p in (("calib", opts.calib), ("quant_config", opts.quant_config),
                    ("eval_text", opts.eval_text)):  # fmt: skip
        if p is not None:
            inputs[what] = sha256_file(p)
    if m.tokenizer_path is not None:
        inputs["model/tokenizer.json"] = sha256_file(m.tokenizer_path)
    return dict(sorted(inputs.items()))


def _manifest_extra(opts: CompileOptions, fab, inputs: dict[str, str]) -> dict:
    """The inputs' hashes and the options, recorded in manifest.json."""
    skip = ("force", "jobs")  # neither changes a byte of the build
    options = {k: (v.name if isinstance(v, Path) else v)
               for k, v in dataclasses.asdict(opts).items() if k not in skip}  # fmt: skip
    options["fabric_name"] = fab.name
    return {"inputs": inputs, "options": options}


def _place(m, rows: list[dict], fab, opts: CompileOptions):
    """Cut every quantized matrix into tile blocks and place them (stage 3)."""
    from maskc.place import MatrixInfo, place

    mats = []
    for r in rows:
        if not r["quantized"]:
            if r["role"] in QUANTIZABLE_ROLES:
                raise InputError(
                    f"{r['name']}: kept in float (skip = true) but the fabric stores only "
                    "quantized weights; remove the skip rule to place the model"
                )
            continue
        mats.append(MatrixInfo(r["name"], r["role"], r["layer"], r["shape"][0], r["shape"][1],
                               r["bits"], r["group_size"]))  # fmt: skip
    from maskc.adapters import parse_size

    if opts.reserve_sram is None:
        return place(mats, m.arch, fab, opts.dies,
                     opts.context or min(2048, m.arch.max_position_embeddings))  # fmt: skip
    reserve = parse_size(opts.reserve_sram, fab.die.sram_bytes, "--reserve-sram")
    return place(mats, m.arch, fab, opts.dies, opts.context, reserve)


def _resolve(m: Model, opts: CompileOptions) -> Resolution:
    cli = {"bits": opts.bits, "group_size": opts.group_size, "method": opts.method}
    builtin = builtin_for_bits(opts.bits if opts.bits is not None else 4)
    res = resolve(m.specs, cli, opts.quant_config, builtin, BUILTIN_EMBED, METHODS, opts.strict)
    for name, s in res.settings.items():
        if s.codebook and not s.skip and (s.method == "gptq" or s.symmetric):
            where = opts.quant_config or "the command line"
            raise InputError(
                f"{where}: tensor {name}: codebook = true works with methods rtn and lsq and "
                "asymmetric formats, not with gptq or symmetric = true"
            )
    if opts.mixed is False:
        return res
    # Mixed precision of the 3-bit profile: the most sensitive matrix kinds stay at 4 bits,
    # unless a user rule chose their bits.
    bits_rules = {r.index for r in res.rules if any(k == "bits" for k, _ in r.overrides)}
    roles = {s.name: s.role for s in m.specs}
    settings = dict(res.settings)
    for name, s in settings.items():
        if (
            s.bits == 3
            and roles[name] in MIXED_4BIT_ROLES
            and not bits_rules.intersection(res.applied.get(name, ()))
        ):
            # the exception uses the 4-bit profile's group size (groups of 64 lose the 4-bit
            # grid: docs/benchmarks.md) unless the user chose a group size
            g = s.group_size if opts.group_size is not None else PROFILES[4].group_size
            settings[name] = dataclasses.replace(s, bits=4, group_size=g)
    return dataclasses.replace(res, settings=settings)


def _write_model_files(m: Model, tmp: Path, res: Resolution, opts: CompileOptions,
                       inputs: dict[str, str]) -> None:  # fmt: skip
    src_files = {f.name: inputs[f"model/{f.name}"] for f in m.files}
    write_json(
        tmp / "model.json",
        {
            "maskc_version": __version__,
            "architecture": m.arch.to_json(),
            "source": {
                "config_sha256": inputs[f"model/{m.config_path.name}"],
                "weights_sha256": dict(sorted(src_files.items())),
            },
            "options": {
                "bits": opts.bits,
                "group_size": opts.group_size,
                "method": opts.method,
                "calib_sha256": inputs.get("calib"),
                "calib_tokens": opts.calib_tokens if opts.calib else None,
            },
            "quant_settings": res.to_json(),
        },
    )
    if m.tokenizer_path is not None:
        shutil.copyfile(m.tokenizer_path, tmp / "tokenizer.json")
        tc = m.tokenizer_path.parent / "tokenizer_config.json"
        if tc.is_file():
            shutil.copyfile(tc, tmp / "tokenizer_config.json")


def _quantize(m, tmp, res, calib_ids, needs_h, ev):
    """Quantize every tensor, one layer in memory at a time; write quant/*.safetensors."""
    a = m.arch
    specs_by_layer: dict[int | None, list] = {}
    for s in m.specs:
        specs_by_layer.setdefault(s.layer, []).append(s)
    total = sum(s.parameters for s in m.specs)
    ev.start("quantizing", total)
    (tmp / "quant").mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    index: dict[str, dict] = {}
    global_arrays: dict[str, np.ndarray] = {}
    weights = _LayerWeights()
    calibrator = None

    def record(spec, w, setting, q, arrays, file):
        """Store one tensor's result (q None: kept in float) and return its dequantized value."""
        if q is None:
            arrays[spec.name] = w
            index[spec.name] = {"file": file, "kind": "float", "shape": list(spec.shape)}
            rows.append(_setting_row(spec.name, spec, setting, None, {}, 32.0))
            deq = w
        else:
            deq = q.dequantize()
            arrays.update(arrays_of(q))
            index[spec.name] = index_entry(q, file)
            bpw = q.fmt.bits_per_weight(*q.shape)
            rows.append(_setting_row(spec.name, spec, setting, q, weight_metrics(w, deq), bpw))
        ev.advance(spec.parameters, spec.name)
        return deq

    def do_tensors(specs, floats, stats, arrays, file) -> dict[str, np.ndarray]:
        """Quantize a layer's (or the model-level) tensors; matrices that share an input site
        and a setting are quantized as one row-stack."""
        deqs: dict[str, np.ndarray] = {}
        jobs: dict[tuple, list] = {}
        for spec in specs:
            setting = res.settings.get(spec.name)
            if spec.role not in QUANTIZABLE_ROLES or setting is None or setting.skip:
                deqs[spec.name] = record(spec, floats[spec.name], setting, None, arrays, file)
            else:
                key = (SITE_OF_ROLE.get(spec.role, spec.name), setting)
                jobs.setdefault(key, []).append(spec)
        for (site, setting), group in jobs.items():
            st = stats.get(site) if stats else None
            qs = quantize_stack(
                [s.name for s in group],
                [floats[s.name] for s in group],
                setting,
                importance=None if st is None else st.importance,
                hessian=None if st is None else st.hessian,
            )
            for spec, q in zip(group, qs, strict=True):
                deqs[spec.name] = record(spec, floats[spec.name], setting, q, arrays, file)
        return deqs

    # model-level tensors first (the embedding feeds the calibration windows)
    gfile = file_for(None)
    embed_spec = specs_by_layer[None][0]
    embed_deq = do_tensors(
        [embed_spec], {embed_spec.name: m.read(embed_spec.name)}, None, global_arrays, gfile
    )[embed_spec.name]
    if calib_ids is not None:
        ctx = 512
        windows = [
            embed_deq[np.asarray(calib_ids[i : i + ctx])].astype(np.float32)
            for i in range(0, len(calib_ids), ctx)
            if len(calib_ids[i : i + ctx]) >= 2
        ]
        calibrator = LayerCalibrator(FloatLlama(a, weights, cache_weights=False), windows, needs_h)
    del embed_deq

    for i in range(a.num_layers):
        specs = specs_by_layer[i]
        floats = {s.name: m.read(s.name) for s in specs}
        stats = None
        if calibrator is not None:
            weights.tensors = floats
            stats = calibrator.observe(i)
        arrays: dict[str, np.ndarray] = {}
        file = file_for(i)
        deqs = do_tensors(specs, floats, stats, arrays, file)
        write_safetensors(tmp / file, arrays, {"maskc": "quantized layer"})
        if calibrator is not None:
            weights.tensors = deqs
            calibrator.advance(i)
        del floats, deqs, arrays

    rest = specs_by_layer[None][1:]
    do_tensors(rest, {s.name: m.read(s.name) for s in rest}, None, global_arrays, gfile)
    write_safetensors(tmp / gfile, global_arrays, {"maskc": "quantized model-level tensors"})
    order = {s.name: k for k, s in enumerate(m.specs)}
    rows.sort(key=lambda r: order[r["name"]])
    return rows, dict(sorted(index.items(), key=lambda kv: order[kv[0]]))


def _avg_bpw(rows: list[dict]) -> float | None:
    """ROM bits per weight over report rows (``rom_bits``, ``shape``), weighted by size."""
    n = sum(math.prod(r["shape"]) for r in rows)
    return sum(r["rom_bits"] for r in rows) / n if n else None


def _report(m, rows, res, calib_name, calib_ids) -> dict:
    q = [r for r in rows if r["quantized"]]
    blocks = [r for r in q if r["role"] not in ("embed", "lm_head")]

    return {
        "version": 1,
        "tensors": rows,
        "totals": {
            "parameters": m.total_parameters,
            "quantized_parameters": sum(math.prod(r["shape"]) for r in q),
            "float_parameters": sum(math.prod(r["shape"]) for r in rows if not r["quantized"]),
            "bpw_blocks": _avg_bpw(blocks),
            "bpw_quantized": _avg_bpw(q),
            "rom_bits": sum(r["rom_bits"] for r in q),
        },
        "calibration": None
        if calib_ids is None
        else {"text": calib_name, "tokens": len(calib_ids)},
        "warnings": res.to_json()["warnings"],
    }


def dequantized_getter(build: Path, index: dict) -> Callable[[str], np.ndarray]:
    """``get_tensor(name) -> float32`` reading a build's quant files (one tensor at a time)."""
    from maskc.quantize.store import load_quant
    from maskc.safetensors_io import SafetensorsFile

    opened: dict[str, SafetensorsFile] = {}

    def get(name: str) -> np.ndarray:
        e = index[name]
        st = opened.get(e["file"]) or opened.setdefault(
            e["file"], SafetensorsFile(build / e["file"])
        )
        if e["kind"] == "float":
            return st.read(name).astype(np.float32)
        return load_quant(st.path, st, name, e).dequantize()

    return get


def _logits(arch, get, ids) -> np.ndarray:
    return FloatLlama(arch, get, cache_weights=False).forward(ids)


def _output_error(m, tmp, index, ids, ref, ev) -> dict:
    """The whole quantized model against the float logits ``ref``."""
    ev.start("measuring output error", 1)
    qlog = _logits(m.arch, dequantized_getter(tmp, index), ids)
    ev.advance()
    return _compare(ref, qlog, ids)


def _compare(ref, qlog, ids, chunk: int = 32) -> dict:
    """KL, top-1 agreement and ppl of ``qlog`` against ``ref`` (``[T, V]`` logits), computed
    over blocks of positions so memory stays a few ``[chunk, V]`` float64 arrays."""
    t = len(ids)
    kl = np.empty(t)
    agree = np.empty(t, dtype=bool)
    nll_ref = np.zeros(t - 1)
    nll_q = np.zeros(t - 1)
    tgt = np.asarray(ids[1:])
    for a in range(0, t, chunk):
        b = min(a + chunk, t)
        kl[a:b], agree[a:b] = kl_top1(ref[a:b], qlog[a:b])
        e = min(b, t - 1)
        if a < e:
            rows = np.arange(e - a)
            nll_ref[a:e] = -log_softmax(ref[a:e])[rows, tgt[a:e]]
            nll_q[a:e] = -log_softmax(qlog[a:e])[rows, tgt[a:e]]
    return {
        "tokens": t,
        "kl_mean": float(kl.mean()),
        "kl_max": float(kl.max()),
        "top1_agreement": float(agree.mean()),
        "ppl_float": float(np.exp(nll_ref.mean())),
        "ppl_quantized": float(np.exp(nll_q.mean())),
    }


def _sensitivity(m, tmp, index, ids, ref, ev) -> list[dict]:
    """Per layer: the output error against the float logits ``ref`` when only that layer's
    matrices are quantized."""
    a = m.arch
    qget = dequantized_getter(tmp, index)
    out = []
    ev.start("sensitivity per layer", a.num_layers)
    for i in range(a.num_layers):
        prefix = f"model.layers.{i}."

        def get(name, prefix=prefix):
            return qget(name) if name.startswith(prefix) else m.read(name)

        out.append({"layer": i, **_compare(ref, _logits(a, get, ids), ids)})
        ev.advance()
    return out
