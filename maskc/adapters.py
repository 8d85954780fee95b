"""LoRA adapters in the die's SRAM (docs/sram.md; integer format in docs/numerics.md).

A PEFT LoRA adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``) is read
and validated here (:func:`load_adapter`), checked against a build's base model
(:func:`check_against`: module names, layers, shapes), converted to the SRAM integer format
(:func:`to_sram`: int8 codes with one step per row, exact ``VQ`` of docs/numerics.md); what
it costs in a die's SRAM is :func:`module_bytes` per target, budgeted in :mod:`maskc.sram`.
The masks never change: one build serves any number of adapters, loaded at run time by
``maskc emulate``.

Memory: the header is read once; tensors are read one module (one A/B pair) at a time.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskc.errors import InputError, UnsupportedError
from maskc.fsutil import decode_utf8, read_small_file
from maskc.safetensors_io import SafetensorsFile
from maskc.textparse import ParseError, json_loads

#: LoRA targets maskc supports: module name -> its block ("self_attn" or "mlp")
TARGETS = {
    "q_proj": "self_attn",
    "k_proj": "self_attn",
    "v_proj": "self_attn",
    "o_proj": "self_attn",
    "gate_proj": "mlp",
    "up_proj": "mlp",
    "down_proj": "mlp",
}
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
CONFIG_MAX_BYTES = 1 << 20
MAX_RANK = 1024  #: docs/numerics.md: keeps |v * mu * b_m| < 2^51
MAX_COLS = 16384  #: docs/numerics.md: keeps |t * m_a * a_m| < 2^61
SCALE_WORD_BYTES = 4  #: one scale word per stored row (as the KV cache's)
E_MIN, E_MAX = -128, 127  #: the scale word's int8 exponent

_TENSOR = re.compile(
    r"^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.([A-Za-z_]+)\."
    r"lora_(A|B)(?:\.default)?\.weight$"
)
#: config keys whose non-default value means a LoRA variant maskc does not run
_VARIANTS = {
    "use_dora": (False, None),
    "fan_in_fan_out": (False, None),
    "modules_to_save": (None, []),
    "rank_pattern": ({}, None),
    "alpha_pattern": ({}, None),
    "layer_replication": (None, []),
    "lora_bias": (False, None),
    "use_qalora": (False, None),
    "trainable_token_indices": (None, {}, []),
}


def matrix_name(layer: int, module: str) -> str:
    """The base matrix (netlist / Hugging Face name) of a LoRA target."""
    return f"model.layers.{layer}.{TARGETS[module]}.{module}.weight"


@dataclass(frozen=True)
class Module:
    """One LoRA target: ``lora_A`` ``[rank, cols]`` and ``lora_B`` ``[rows, rank]`` tensors."""

    layer: int
    module: str
    a_name: str
    b_name: str
    rows: int
    cols: int

    @property
    def matrix(self) -> str:
        return matrix_name(self.layer, self.module)


@dataclass(frozen=True)
class Adapter:
    """A validated PEFT LoRA adapter (float tensors still in the file)."""

    path: Path
    rank: int
    alpha: float
    use_rslora: bool
    base_model: str | None
    modules: tuple[Module, ...]  #: sorted by (layer, module)
    file: SafetensorsFile

    @property
    def scale(self) -> float:
        """``s = lora_alpha / r`` (``/ sqrt(r)`` with rsLoRA), an IEEE double."""
        return self.alpha / math.sqrt(self.rank) if self.use_rslora else self.alpha / self.rank

    @property
    def layers(self) -> list[int]:
        return sorted({m.layer for m in self.modules})

    @property
    def targets(self) -> list[str]:
        return [t for t in TARGETS if any(m.module == t for m in self.modules)]

    def sram_bytes(self, layers: set[int] | None = None) -> int:
        """SRAM bytes of this adapter's integers (all layers, or only ``layers``)."""
        return sum(
            module_bytes(m.rows, m.cols, self.rank)
            for m in self.modules
            if layers is None or m.layer in layers
        )

    def read(self, m: Module) -> tuple[np.ndarray, np.ndarray]:
        """``(A, B)`` of one module as float64 (exact), finite (InputError otherwise)."""
        out = []
        for name in (m.a_name, m.b_name):
            t = self.file.read(name).astype(np.float64)
            if not np.isfinite(t).all():
                raise InputError(f"{self.file.path}: tensor {name!r} holds NaN or infinity")
            out.append(t)
        return out[0], out[1]

    def merged_delta(self, m: Module) -> np.ndarray:
        """The float model's correction ``s * B @ A`` (float64 ``[rows, cols]``)."""
        a, b = self.read(m)
        return (b * self.scale) @ a


def module_bytes(rows: int, cols: int, rank: int) -> int:
    """SRAM bytes of one target at ``rank``: int8 codes of A and B plus a scale word per row."""
    return rank * cols + rows * rank + SCALE_WORD_BYTES * (rank + rows)


def _cfg_error(path: Path, msg: str) -> InputError:
    return InputError(f"{path / CONFIG_FILE}: {msg}")


def _read_config(path: Path) -> dict:
    if not path.exists():
        raise InputError(f"{path}: no such adapter folder")
    if not path.is_dir():
        raise InputError(f"{path}: an adapter is a folder holding {CONFIG_FILE} and {WEIGHTS_FILE}")
    cfg_path = path / CONFIG_FILE
    raw = read_small_file(cfg_path, "adapter config", CONFIG_MAX_BYTES)
    try:
        cfg = json_loads(decode_utf8(cfg_path, "adapter config", raw))
    except ParseError as e:
        raise _cfg_error(path, f"not valid JSON ({e.detail})") from None
    if not isinstance(cfg, dict):
        raise _cfg_error(path, "must hold a JSON object")
    return cfg


def _targets(path: Path, tm) -> tuple[set[str] | None, re.Pattern | None]:
    """``target_modules`` -> (module names, or a regex PEFT full-matches on module paths)."""
    if tm is None:
        raise _cfg_error(path, "target_modules is missing; name the modules the adapter changes")
    if isinstance(tm, str):
        if tm == "all-linear":
            return set(TARGETS), None
        try:
            return None, re.compile(tm)
        except re.error as e:
            raise _cfg_error(path, f"target_modules regex {tm!r}: {e}") from None
    if not isinstance(tm, list) or not tm or not all(isinstance(t, str) for t in tm):
        raise _cfg_error(path, "target_modules must be a non-empty list of module names")
    names = set()
    for t in tm:
        short = t.rsplit(".", 1)[-1]
        if short not in TARGETS:
            raise UnsupportedError(
                f"{path / CONFIG_FILE}: target module {t!r} is not supported; maskc puts "
                f"LoRA on {', '.join(TARGETS)}"
            )
        names.add(short)
    return names, None


def _number(path: Path, cfg: dict, key: str, default, kind) -> object:
    v = cfg.get(key, default)
    if isinstance(v, bool) or not isinstance(v, kind):
        raise _cfg_error(path, f"{key} must be a number, got {v!r}")
    return v


def load_adapter(path: str | Path) -> Adapter:
    """Read and validate a PEFT LoRA adapter folder (header and config only; exit 3 on any
    problem: missing files, unsupported variant, rank 0, unknown or unmatched tensors, wrong
    shapes)."""
    path = Path(path)
    cfg = _read_config(path)
    peft_type = cfg.get("peft_type", "LORA")
    if peft_type != "LORA":
        raise UnsupportedError(
            f"{path / CONFIG_FILE}: peft_type {peft_type!r}; maskc loads LoRA adapters only"
        )
    for key, defaults in _VARIANTS.items():
        if key in cfg and cfg[key] not in defaults:
            raise UnsupportedError(
                f"{path / CONFIG_FILE}: {key} = {cfg[key]!r} is a LoRA variant maskc does not "
                "run (plain LoRA only: no DoRA, no extra trained modules, one rank and alpha)"
            )
    if cfg.get("bias", "none") != "none":
        raise UnsupportedError(
            f"{path / CONFIG_FILE}: bias = {cfg['bias']!r}; maskc adds no trained biases "
            '(bias must be "none")'
        )
    rank = _number(path, cfg, "r", 8, int)
    if rank < 1:
        raise _cfg_error(path, f"r = {rank}: the rank must be at least 1")
    if rank > MAX_RANK:
        raise UnsupportedError(
            f"{path / CONFIG_FILE}: r = {rank}; maskc supports ranks up to {MAX_RANK}"
        )
    alpha = float(_number(path, cfg, "lora_alpha", 8, (int, float)))
    if not math.isfinite(alpha) or alpha <= 0:
        raise _cfg_error(path, f"lora_alpha = {alpha!r} must be a positive number")
    rslora = cfg.get("use_rslora", False)
    if not isinstance(rslora, bool):
        raise _cfg_error(path, f"use_rslora must be true or false, got {rslora!r}")
    names, regex = _targets(path, cfg.get("target_modules"))
    ltt = cfg.get("layers_to_transform")
    if isinstance(ltt, int) and not isinstance(ltt, bool):
        ltt = [ltt]
    if ltt is not None and (
        not isinstance(ltt, list)
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ltt)
    ):
        raise _cfg_error(path, "layers_to_transform must be a layer index or a list of them")

    file = SafetensorsFile(path / WEIGHTS_FILE) if (path / WEIGHTS_FILE).exists() else None
    if file is None:
        raise InputError(f"{path / WEIGHTS_FILE}: no such file (the adapter's weights)")
    pairs: dict[tuple[int, str], dict[str, str]] = {}
    for name in sorted(file.tensors):
        mt = _TENSOR.match(name)
        if not mt:
            raise UnsupportedError(
                f"{file.path}: tensor {name!r} is not a LoRA A/B weight of a transformer "
                "block (DoRA magnitudes, embeddings and biases are not supported)"
            )
        layer, block, module, ab = int(mt[1]), mt[2], mt[3], mt[4]
        if TARGETS.get(module) != block:
            raise UnsupportedError(
                f"{file.path}: tensor {name!r}: module {block}.{module} is not one maskc puts "
                f"LoRA on ({', '.join(TARGETS)})"
            )
        full = f"model.layers.{layer}.{block}.{module}"
        matched = module in names if names is not None else bool(regex.fullmatch(full))
        if not matched:
            raise _cfg_error(
                path, f"tensor {name!r} is for {full}, which target_modules does not name"
            )
        if ltt is not None and layer not in ltt:
            raise _cfg_error(
                path, f"tensor {name!r} is for layer {layer}, not in layers_to_transform {ltt}"
            )
        slot = pairs.setdefault((layer, module), {})
        if ab in slot:
            raise InputError(f"{file.path}: two lora_{ab} tensors for {full}")
        slot[ab] = name
    if not pairs:
        raise InputError(f"{file.path}: no LoRA tensors in the adapter")
    modules = []
    for (layer, module), slot in sorted(pairs.items()):
        full = f"model.layers.{layer}.{TARGETS[module]}.{module}"
        if set(slot) != {"A", "B"}:
            miss = "B" if "A" in slot else "A"
            raise InputError(f"{file.path}: {full} has no lora_{miss} tensor")
        a, b = file.tensors[slot["A"]], file.tensors[slot["B"]]
        if len(a.shape) != 2 or len(b.shape) != 2 or a.shape[0] != rank or b.shape[1] != rank:
            raise InputError(
                f"{file.path}: {full}: lora_A is {list(a.shape)} and lora_B {list(b.shape)}; "
                f"with r = {rank} they must be [{rank}, in_features] and [out_features, {rank}]"
            )
        for t in (a, b):
            if t.dtype not in ("F32", "F16", "BF16"):
                raise UnsupportedError(
                    f"{file.path}: tensor {t.name!r} has dtype {t.dtype}; "
                    "adapters are read in F32, F16 or BF16"
                )
        modules.append(Module(layer, module, slot["A"], slot["B"], b.shape[0], a.shape[1]))
    base = cfg.get("base_model_name_or_path")
    return Adapter(
        path, rank, alpha, rslora, base if isinstance(base, str) else None, tuple(modules), file
    )


def folds_of(build) -> dict[str, str]:
    """The desc_act folds a build was compiled with (model.json ``desc_act_folds``: matrix ->
    ``"rows"``/``"cols"``, docs/import-design.md); empty for most builds."""
    if "model.json" not in build.manifest["files"]:
        return {}
    doc = build.json("model.json")
    folds = doc.get("desc_act_folds") if isinstance(doc, dict) else None
    return folds if isinstance(folds, dict) else {}


def check_folds(adapter: Adapter, folds: dict[str, str]) -> None:
    """Refuse an adapter on a matrix whose rows or input columns the build renumbered (a
    desc_act fold): its B or A would meet the matrix in another order (UnsupportedError)."""
    for m in adapter.modules:
        if m.matrix in folds:
            what = "output rows" if folds[m.matrix] == "rows" else "input columns"
            raise UnsupportedError(
                f"{adapter.file.path}: {m.matrix}'s {what} were renumbered when the build "
                "folded a GPTQ desc_act permutation (docs/import-design.md); LoRA adapters "
                "on gate/up/down_proj of such a layer are not supported"
            )


def check_against(adapter: Adapter, matrices: dict, num_layers: int) -> None:
    """The adapter's modules exist in the build's model with the same shapes (InputError
    naming the module and both shapes otherwise). ``matrices``: netlist ``matrices``."""
    for m in adapter.modules:
        if m.layer >= num_layers:
            raise InputError(
                f"{adapter.file.path}: {m.a_name} is for layer {m.layer}; the build's model has "
                f"{num_layers} layers (an adapter for another base model?)"
            )
        base = matrices.get(m.matrix)
        if base is None:
            raise InputError(f"{adapter.file.path}: the build has no matrix {m.matrix}")
        rows, cols = base["shape"]
        if (m.rows, m.cols) != (rows, cols):
            raise InputError(
                f"{adapter.file.path}: {m.matrix} is {rows}x{cols} in the build but the "
                f"adapter's B @ A is {m.rows}x{m.cols}: an adapter for another base model"
            )
        if m.cols > MAX_COLS:
            raise UnsupportedError(
                f"{adapter.file.path}: {m.matrix} has {m.cols} inputs; "
                f"adapters run on matrices up to {MAX_COLS}"
            )


# -- the SRAM integer format (docs/numerics.md, "LoRA adapters in SRAM") ------------------------


@dataclass(frozen=True)
class SramModule:
    """One target's integers: ``a_codes`` int8 ``[r, C]``, ``b_codes`` int8 ``[R, r]``, and per
    row a step ``m * 2^e`` (int64 ``[r]`` / ``[R]``)."""

    matrix: str
    layer: int
    a_codes: np.ndarray
    a_m: np.ndarray
    a_e: np.ndarray
    b_codes: np.ndarray
    b_m: np.ndarray
    b_e: np.ndarray


def _fix_floor_half(q0: np.ndarray, num2: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """The exact ``floor(num / unit + 1/2)`` from a float estimate ``q0``: ``c`` is right when
    ``(2c - 1) unit <= 2 num < (2c + 1) unit``; every product here is exact in float64."""
    c = q0
    c = np.where(num2 < (2 * c - 1) * unit, c - 1, c)
    c = np.where(num2 >= (2 * c + 1) * unit, c + 1, c)
    return c


def vq_rows(v: np.ndarray, what: str = "adapter") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """docs/numerics.md ``VQ`` of every row of ``v`` (float64 ``[n, k]``, exact values) ->
    ``(codes int8 [n, k], m int64 [n], e int64 [n])``, exactly as the rational definition."""
    n = v.shape[0]
    a = np.abs(v).max(axis=1) if v.size else np.zeros(n)
    nz = a > 0
    safe = np.where(nz, a, 1.0)
    _, ex = np.frexp(safe / 127.0)
    e = (ex - 1 - 14).astype(np.int64)  # 2^14 <= a / (127 * 2^E) < 2^15, then made exact
    lo = np.ldexp(127.0 * 2**14, np.clip(e, -1074, 1023))
    e = np.where(safe < lo, e - 1, e)
    lo = np.ldexp(127.0 * 2**14, np.clip(e, -1074, 1023))
    e = np.where(safe >= 2 * lo, e + 1, e)
    if (nz & (e > E_MAX)).any():
        raise InputError(f"{what}: a row's values exceed 2^141; not an adapter maskc can store")
    keep = nz & (e >= E_MIN)
    ec = np.clip(e, E_MIN, E_MAX)
    unit = np.ldexp(127.0, ec)
    m = _fix_floor_half(np.floor(safe / unit + 0.5), 2 * safe, unit)
    m = np.where(keep, m, 0).astype(np.int64)
    e = np.where(keep, e, 0).astype(np.int64)
    step = np.ldexp(np.where(keep, m, 1).astype(np.float64), e)[:, None]
    c = _fix_floor_half(np.floor(v / step + 0.5), 2 * v, step)
    c = np.clip(c, -127, 127)
    c[~keep] = 0
    return c.astype(np.int8), m, e


def to_sram(adapter: Adapter, progress=None) -> list[SramModule]:
    """Every module of ``adapter`` in the SRAM integer format (one module in memory at a time
    as floats)."""
    out = []
    if progress:
        progress.start(f"loading adapter {adapter.path.name}", len(adapter.modules))
    s = adapter.scale
    for m in adapter.modules:
        a, b = adapter.read(m)
        where = f"{adapter.file.path}: {m.matrix}"
        ac, am, ae = vq_rows(a, where)
        bc, bm, be = vq_rows(b * s, where)
        out.append(SramModule(m.matrix, m.layer, ac, am, ae, bc, bm, be))
        if progress:
            progress.advance(1, m.matrix)
    return out


# -- SRAM budget (docs/sram.md) -----------------------------------------------------------------


__all__ = [
    "TARGETS",
    "Adapter",
    "Module",
    "SramModule",
    "check_against",
    "load_adapter",
    "module_bytes",
    "to_sram",
    "vq_rows",
]
