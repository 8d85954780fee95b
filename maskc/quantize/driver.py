"""Stage 2's driver: a whole model quantized into a build's ``quant/``, one decoder layer in
memory at a time, calibrated on text when a setting needs it.

:func:`choose_calibration` decides whether and on what text to calibrate; :func:`quantize_model`
streams the model (embedding first: it feeds the calibration windows; then every layer, observed
with the float weights, quantized, and pushed through *quantized*; then the final norm and an
untied lm_head) and returns a :class:`QuantizedModel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from maskc.build import write_json
from maskc.errors import InputError, UsageError
from maskc.fsutil import read_text
from maskc.quantize.calibrate import SITE_OF_ROLE, LayerCalibrator
from maskc.quantize.matrix import quantize_stack, weight_metrics
from maskc.quantize.rules import QUANTIZABLE_ROLES, Resolution
from maskc.quantize.store import INDEX, QuantStore, arrays_of, file_for, index_entry
from maskc.reference import FloatLlama
from maskc.romformat import QuantTensor
from maskc.safetensors_io import write_safetensors

#: Fewest tokens a calibration text must give.
MIN_CALIB_TOKENS = 64


def builtin_calibration_text() -> str:
    return resources.files("maskc.data").joinpath("calib_en.txt").read_text(encoding="utf-8")


def tokenize(model, text: str) -> list[int]:
    """``text`` in the model's tokenizer.json (no special tokens added)."""
    from tokenizers import Tokenizer

    if model.tokenizer_path is None:
        raise InputError(f"{model.path}: no tokenizer.json; it is needed to tokenize text")
    tok = Tokenizer.from_file(str(model.tokenizer_path))
    return list(tok.encode(text, add_special_tokens=False).ids)


@dataclass(frozen=True)
class Calibration:
    """The calibration text as token ids, what it is called in the report, the window length,
    and whether the settings need Hessians (gptq)."""

    ids: tuple[int, ...]
    name: str
    ctx: int
    hessians: bool

    def validate(self) -> None:
        if len(self.ids) < 2 or self.ctx < 2:
            raise ValueError("calibration needs at least one window of 2 tokens")


def choose_calibration(
    model, res: Resolution, text: Path | None, calibrate: bool | None, tokens: int, ctx: int, warn
) -> Calibration | None:
    """Whether to calibrate and on what: ``text`` (a file) if given; else the built-in English
    text when a setting needs it (gptq, or codes of 3 bits or fewer) and ``calibrate`` is not
    False; ``tokens`` of it at most, in windows of ``ctx``."""
    active = [s for s in res.settings.values() if not s.skip]
    needs_h = any(s.method == "gptq" for s in active)
    wants = needs_h or any(s.bits <= 3 for s in active)
    if calibrate is False:
        if needs_h:
            raise UsageError("method gptq needs calibration: drop --no-calib")
        return None
    if text is not None:
        ids = tokenize(model, read_text(text, "calibration text"))
        if len(ids) < MIN_CALIB_TOKENS:
            raise InputError(
                f"{text}: calibration text gives {len(ids)} tokens, fewer than "
                f"{MIN_CALIB_TOKENS}; give a longer text"
            )
        name = text.name
    elif not wants:
        return None
    elif model.tokenizer_path is None:
        if needs_h:
            raise InputError(
                f"{model.path}: method gptq calibrates on text and the model has no "
                "tokenizer.json; add one, or choose --method lsq"
            )
        warn(f"{model.path}: no tokenizer.json: quantizing without calibration")
        return None
    else:
        name = "built-in (maskc/data/calib_en.txt)"
        ids = tokenize(model, builtin_calibration_text())
    return Calibration(tuple(ids[:tokens]), name, ctx, needs_h)


@dataclass
class QuantizedModel:
    """Stage 2's output: the build's quant/ folder opened (``store``) and one report row per
    tensor (``rows``, canonical order: role, layer, shape, setting, bits/weight, error)."""

    store: QuantStore
    rows: list[dict]

    def validate(self) -> None:
        names = [r["name"] for r in self.rows]
        if names != list(self.store.index):
            raise ValueError("quantize: the report rows and quant/index.json disagree")
        for name, e in self.store.index.items():
            if not (self.store.build / e["file"]).is_file():
                raise ValueError(f"quantize: {name}: {e['file']} was not written")


def _setting_row(spec, setting, q: QuantTensor | None, metrics, bpw) -> dict:
    return {
        "name": spec.name,
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


class _LayerWeights:
    """``get_tensor`` for FloatLlama that serves whatever weights are currently installed."""

    def __init__(self) -> None:
        self.tensors: dict[str, np.ndarray] = {}

    def __call__(self, name: str) -> np.ndarray:
        return self.tensors[name]


def quantize_model(
    model, res: Resolution, calib: Calibration | None, build: Path, events
) -> QuantizedModel:
    """Quantize every tensor of ``model`` per ``res`` into ``build/quant/`` (one layer in
    memory at a time) and write quant/index.json."""
    ev = events
    a = model.arch
    specs_by_layer: dict[int | None, list] = {}
    for s in model.specs:
        specs_by_layer.setdefault(s.layer, []).append(s)
    ev.start("quantizing", sum(s.parameters for s in model.specs))
    (build / "quant").mkdir(parents=True, exist_ok=True)
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
            rows.append(_setting_row(spec, setting, None, {}, 32.0))
            deq = w
        else:
            deq = q.dequantize()
            arrays.update(arrays_of(q))
            index[spec.name] = index_entry(q, file)
            bpw = q.fmt.bits_per_weight(*q.shape)
            rows.append(_setting_row(spec, setting, q, weight_metrics(w, deq), bpw))
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
        [embed_spec], {embed_spec.name: model.read(embed_spec.name)}, None, global_arrays, gfile
    )[embed_spec.name]
    if calib is not None:
        ids, ctx = list(calib.ids), calib.ctx
        windows = [
            embed_deq[np.asarray(ids[i : i + ctx])].astype(np.float32)
            for i in range(0, len(ids), ctx)
            if len(ids[i : i + ctx]) >= 2
        ]
        calibrator = LayerCalibrator(
            FloatLlama(a, weights, cache_weights=False), windows, calib.hessians
        )
    del embed_deq

    for i in range(a.num_layers):
        specs = specs_by_layer[i]
        floats = {s.name: model.read(s.name) for s in specs}
        stats = None
        if calibrator is not None:
            weights.tensors = floats
            stats = calibrator.observe(i)
        arrays: dict[str, np.ndarray] = {}
        file = file_for(i)
        deqs = do_tensors(specs, floats, stats, arrays, file)
        write_safetensors(build / file, arrays, {"maskc": "quantized layer"})
        if calibrator is not None:
            weights.tensors = deqs
            calibrator.advance(i)
        del floats, deqs, arrays

    rest = specs_by_layer[None][1:]
    do_tensors(rest, {s.name: model.read(s.name) for s in rest}, None, global_arrays, gfile)
    write_safetensors(build / gfile, global_arrays, {"maskc": "quantized model-level tensors"})
    order = {s.name: k for k, s in enumerate(model.specs)}
    rows.sort(key=lambda r: order[r["name"]])
    index = dict(sorted(index.items(), key=lambda kv: order[kv[0]]))
    write_json(build / INDEX, {"version": 1, "tensors": index})
    return QuantizedModel(QuantStore(build, index), rows)
