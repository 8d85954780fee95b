"""Stage 2's driver: a whole model quantized into a build's ``quant/``, one decoder layer in
memory at a time, calibrated on text when a setting needs it.

:func:`choose_calibration` decides whether and on what text to calibrate; :func:`quantize_model`
streams the model in units (the model-level tensors first: the embedding feeds the calibration
windows; then every layer, observed with the float weights, quantized, and pushed through
*quantized*), each in row blocks (:mod:`maskc.quantize.stream`), and returns a
:class:`QuantizedModel`.
"""

from __future__ import annotations

from concurrent.futures import as_completed
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from maskc.build import write_json
from maskc.errors import InputError, UsageError
from maskc.fsutil import read_text
from maskc.quantize.calibrate import EXPERT_SITE_PREFIX, LayerCalibrator, calibration_windows
from maskc.quantize.rules import Resolution
from maskc.quantize.store import INDEX, QuantStore, file_for
from maskc.quantize.stream import BlockPool, RowReader, quantize_unit, run_unit, settings_json
from maskc.reference import FloatLlama

#: Fewest tokens a calibration text must give.
MIN_CALIB_TOKENS = 64

#: What a build calibrates on (``--calib-source``): ``text`` (the --calib file, else the
#: built-in text), ``random`` (token ids drawn at random: no text, no tokenizer needed) or
#: ``mixed`` (the text for half the tokens, random ids for the other half)
CALIB_SOURCES = ("text", "random", "mixed")
#: The seed of the random calibration tokens (fixed: a build is reproducible)
RANDOM_SEED = 0
#: Embedding rows shorter than this share of the median row's length are never drawn (untrained
#: or padding rows of a vocabulary padded beyond its tokenizer)
MIN_ROW_NORM = 0.25


def builtin_calibration_text() -> str:
    return resources.files("maskc.data").joinpath("calib_en.txt").read_text(encoding="utf-8")


def tokenize(model, text: str) -> list[int]:
    """``text`` in the model's tokenizer.json (no special tokens added)."""
    from maskc.tokenizer import open_tokenizer

    if model.tokenizer_path is None:
        raise InputError(f"{model.path}: no tokenizer.json; it is needed to tokenize text")
    tok = open_tokenizer(model.tokenizer_path)
    try:
        return tok.encode(text)
    finally:
        tok.close()


def random_token_ids(model, n: int, seed: int = RANDOM_SEED) -> list[int]:
    """``n`` token ids drawn uniformly, with replacement, from the embedding's rows whose L2
    length is at least :data:`MIN_ROW_NORM` of the median row's (numpy's PCG64 seeded by
    ``seed``: the same ids for the same model). The embedding is read in row blocks."""
    embed = next(s for s in model.specs if s.layer is None)
    rows = embed.shape[0]
    reader = RowReader(model)
    norms = np.empty(rows)
    try:
        for a in range(0, rows, 8192):
            x = reader.rows(embed.name, a, min(a + 8192, rows)).astype(np.float64)
            norms[a : a + len(x)] = np.sqrt((x * x).sum(axis=1))
    finally:
        reader.close()
    ok = np.flatnonzero((norms > 0) & (norms >= MIN_ROW_NORM * np.median(norms)))
    if len(ok) == 0:
        raise InputError(f"{model.path}: {embed.name} has no nonzero row to draw tokens from")
    rng = np.random.Generator(np.random.PCG64(seed))
    return [int(i) for i in ok[rng.integers(0, len(ok), size=n)]]


@dataclass(frozen=True)
class Calibration:
    """The calibration tokens (``ids``: the text's, then ``random`` drawn ids), what they are
    called in the report, the window length, and whether the settings need Hessians (gptq)."""

    ids: tuple[int, ...]
    name: str
    ctx: int
    hessians: bool
    #: how many of ``ids``, at the end, are random (:func:`random_token_ids`)
    random: int = 0

    def validate(self) -> None:
        if len(self.ids) < 2 or self.ctx < 2:
            raise ValueError("calibration needs at least one window of 2 tokens")
        if not 0 <= self.random <= len(self.ids):
            raise ValueError("calibration: more random ids than ids")

    def windows(self) -> list[np.ndarray]:
        """The windows of ``ctx`` tokens, the text's and the random ids' cut apart (no window
        holds both)."""
        cut = len(self.ids) - self.random
        return calibration_windows(self.ids[:cut], self.ctx) + calibration_windows(
            self.ids[cut:], self.ctx
        )


def choose_calibration(
    model,
    res: Resolution,
    text: Path | None,
    calibrate: bool | None,
    tokens: int,
    ctx: int,
    source: str | None = None,
) -> Calibration | None:
    """Whether to calibrate and on what. Calibrate when ``calibrate`` is not False and a
    setting uses activation statistics (gptq; lsq, whose search weighs each column's error by
    its inputs: the 4-bit and 3-bit defaults; codes of 3 bits or fewer; an FP4 format), or
    when ``text`` is given. ``source`` (:data:`CALIB_SOURCES`; None: ``text``, or ``random``
    for a model without tokenizer.json unless a setting is gptq: an InputError) says on what:
    ``text`` (``text``, else the built-in English text), ``random``
    (:func:`random_token_ids`) or ``mixed`` (the text's first ``tokens // 2`` tokens, random
    ids for the rest); ``tokens`` in all, in windows of ``ctx``."""
    active = [s for s in res.settings.values() if not s.skip]
    needs_h = any(s.method == "gptq" for s in active)
    wants = needs_h or any(s.method == "lsq" or s.bits <= 3 or s.format != "int" for s in active)
    if calibrate is False:
        if needs_h:
            raise UsageError("method gptq needs calibration: drop --no-calib")
        return None
    if source is not None and source not in CALIB_SOURCES:
        raise UsageError(f"calibration source must be one of {', '.join(CALIB_SOURCES)}")
    if text is not None and source == "random":
        raise UsageError("--calib gives a text and --calib-source random uses none; drop one")
    if text is None and not wants:
        return None
    if source is None and text is None and model.tokenizer_path is None:
        if needs_h:  # gptq's Hessians on random ids mislead its error feedback (measured)
            raise InputError(
                f"{model.path}: method gptq calibrates on text and the model has no "
                "tokenizer.json; add one, choose --method lsq (calibrated on random token "
                "ids), or --calib-source random (worse than lsq for gptq: docs/benchmarks.md)"
            )
        source = "random"
    source = source or "text"
    ids: list[int] = []
    if source != "random":
        if text is not None:
            ids = tokenize(model, read_text(text, "calibration text"))
            if len(ids) < MIN_CALIB_TOKENS:
                raise InputError(
                    f"{text}: calibration text gives {len(ids)} tokens, fewer than "
                    f"{MIN_CALIB_TOKENS}; give a longer text"
                )
            name = text.name
        elif model.tokenizer_path is None:
            raise InputError(
                f"{model.path}: no tokenizer.json to read the built-in calibration text with; "
                "use --calib-source random (no text needed) or add the model's tokenizer.json"
            )
        else:
            name = "built-in (maskc/data/calib_en.txt)"
            ids = tokenize(model, builtin_calibration_text())
        ids = ids[: tokens // 2 if source == "mixed" else tokens]
    n_random = tokens - len(ids) if source != "text" else 0
    if n_random:
        drawn = f"{n_random} random token ids (seed {RANDOM_SEED})"
        name = drawn if source == "random" else f"{name} + {drawn}"
        ids += random_token_ids(model, n_random)
    return Calibration(tuple(ids), name, ctx, needs_h, n_random)


@dataclass
class QuantizedModel:
    """Stage 2's output: the build's quant/ folder opened (``store``) and one report row per
    tensor (``rows``, canonical order: role, layer, shape, setting, bits/weight, error)."""

    store: QuantStore
    rows: list[dict]
    #: a calibrated mixture of experts: per layer, the routed experts no calibration token
    #: selected (quantized without calibration); None otherwise
    uncalibrated_experts: dict[int, list[int]] | None = None

    def validate(self) -> None:
        names = [r["name"] for r in self.rows]
        if names != list(self.store.index):
            raise ValueError("quantize: the report rows and quant/index.json disagree")
        for name, e in self.store.index.items():
            if not self.store.in_netlist(name) and not (self.store.build / e["file"]).is_file():
                raise ValueError(f"quantize: {name}: {e['file']} was not written")


class _LayerWeights:
    """``get_tensor`` for FloatLlama that serves whatever weights are currently installed."""

    def __init__(self) -> None:
        self.tensors: dict[str, np.ndarray] = {}

    def __call__(self, name: str) -> np.ndarray:
        return self.tensors[name]


def quantize_model(
    model,
    res: Resolution,
    calib: Calibration | None,
    build: Path,
    events,
    executor=None,
    blocks: BlockPool | None = None,
    tile_rows: dict[int, int] | None = None,
) -> QuantizedModel:
    """Quantize every tensor of ``model`` per ``res`` into ``build/quant/`` and write
    quant/index.json.

    The work comes in units (:mod:`maskc.quantize.stream`): the model-level tensors, then each
    decoder layer, each read and written in row blocks. Without calibration the units are
    independent: given ``executor`` (any :class:`concurrent.futures.Executor`), they are
    submitted to it as :func:`~maskc.quantize.stream.quantize_unit` calls; the results are
    assembled in a fixed order, so the build does not depend on the executor. With calibration
    the layers run here, in order: layer ``i`` is observed with its float weights (one layer in
    float32), quantized, and the calibration windows are pushed through its dequantized
    weights."""
    ev = events
    a = model.arch
    ev.start("quantizing", sum(s.parameters for s in model.specs))
    (build / "quant").mkdir(parents=True, exist_ok=True)
    settings = res.settings
    units: list[int | None] = [None, *range(a.num_layers)]
    params = {u: sum(s.parameters for s in model.specs if s.layer == u) for u in units}
    results: dict[int | None, tuple[list, dict]] = {}
    unselected: dict[int, list[int]] | None = None  # a calibrated mixture's unselected experts

    def progress(n: int, name: str) -> None:
        ev.advance(n, name)

    if calib is None and executor is not None:
        futs = {}
        for u in units:
            names = [s.name for s in model.specs if s.layer == u]
            args = (str(model.path), str(model.config_path), str(build), u)
            futs[u] = executor.submit(
                quantize_unit, *args, settings_json(settings, names), tile_rows
            )
        unit_of = {f: u for u, f in futs.items()}
        for f in as_completed(futs.values()):
            if f.exception() is None:
                ev.advance(params[unit_of[f]], file_for(unit_of[f]))
        for u in units:  # in order: the first failing unit raises, whatever finished first
            r = futs[u].result()
            results[u] = (r["rows"], r["index"])
    else:
        # the embedding feeds the calibration windows
        embed = next(s for s in model.specs if s.layer is None).name
        uniq = np.unique(np.asarray(calib.ids)) if calib is not None else None
        keep = {embed: uniq} if calib is not None else None
        rows, index, kept = run_unit(
            model, build, None, settings, None, keep, progress, blocks, tile_rows
        )
        results[None] = (rows, index)
        calibrator = None
        weights = _LayerWeights()
        if calib is not None:
            rows_of = kept.pop(embed)
            windows = [
                rows_of[np.searchsorted(uniq, w)].astype(np.float32) for w in calib.windows()
            ]
            del rows_of
            calibrator = LayerCalibrator(
                FloatLlama(a, weights, cache_weights=False), windows, calib.hessians
            )
        if calibrator is not None and getattr(a, "moe", None) is not None:
            unselected = {}
        for i in range(a.num_layers):
            stats = None
            specs = [s for s in model.specs if s.layer == i]
            if calibrator is not None:
                weights.tensors = {s.name: model.read(s.name) for s in specs}
                stats = calibrator.observe(i)
                weights.tensors = {}
                if unselected is not None:
                    unselected[i] = unselected_experts(stats, a.moe.num_experts)
            keep = {s.name: None for s in specs} if calibrator is not None else None
            rows, index, deqs = run_unit(
                model, build, i, settings, stats, keep, progress, blocks, tile_rows
            )
            results[i] = (rows, index)
            if calibrator is not None:
                weights.tensors = deqs
                calibrator.advance(i)
                weights.tensors = {}
            del deqs
    order = {s.name: k for k, s in enumerate(model.specs)}
    rows = [r for u in units for r in results[u][0]]
    rows.sort(key=lambda r: order[r["name"]])
    index = {k: v for u in units for k, v in results[u][1].items()}
    index = dict(sorted(index.items(), key=lambda kv: order[kv[0]]))
    write_json(build / INDEX, {"version": 1, "tensors": index})
    if unselected is not None and any(unselected.values()):
        ev.warn(unselected_warning(unselected, a.moe.num_experts))
    return QuantizedModel(QuantStore(build, index), rows, unselected)


def unselected_experts(stats: dict, num_experts: int) -> list[int]:
    """The routed experts of a layer that no calibration token selected (no statistics)."""
    return [e for e in range(num_experts) if f"{EXPERT_SITE_PREFIX}{e}.mlp_in" not in stats]


def unselected_warning(unselected: dict[int, list[int]], num_experts: int) -> str:
    """One line: how many experts of which layers no calibration token selected."""
    n = sum(len(v) for v in unselected.values())
    per = ", ".join(f"layer {i}: {len(v)}" for i, v in sorted(unselected.items()) if v)
    return (
        f"calibration: {n} routed expert{'s' * (n != 1)} of {num_experts * len(unselected)} "
        f"({per}) selected by no calibration token: quantized without calibration (gptq as "
        "lsq, FP4 gptq as search); give a longer --calib text or more --calib-tokens"
    )
