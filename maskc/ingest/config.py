"""Parse a Hugging Face ``config.json`` into a validated :class:`maskc.ir.ModelArch`.

Defaults follow the ``transformers`` config classes of each architecture (LlamaConfig,
MistralConfig, Qwen2Config, MixtralConfig, Qwen2MoeConfig, Qwen3MoeConfig) so that a config which
omits a field means what it means to HF. Anything that would change the arithmetic and that
maskc does not implement (other activations, MLP biases, RoPE scaling types other than llama3,
pre-quantized checkpoints in a format maskc does not import, Qwen2's per-layer sliding window,
dense layers between the sparse ones of a mixture of experts) is refused with
:class:`~maskc.errors.UnsupportedError` rather than ignored. Training-only fields
(``router_aux_loss_coef``, ``output_router_logits``, ``router_jitter_noise``) do not change
inference and are ignored.
"""

from __future__ import annotations

import math
from pathlib import Path

from maskc.errors import InputError, UnsupportedError
from maskc.fsutil import read_small_file
from maskc.ingest import prequant
from maskc.ir import SUPPORTED_ARCHITECTURES, ModelArch, MoeConfig, RopeScaling
from maskc.textparse import ParseError, json_loads

#: Largest config.json accepted, in bytes.
MAX_CONFIG_BYTES = 4 << 20

_MODEL_TYPES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "MixtralForCausalLM": "mixtral",
    "Qwen2MoeForCausalLM": "qwen2_moe",
    "Qwen3MoeForCausalLM": "qwen3_moe",
}
# Per-architecture defaults of the transformers config classes.
_DEFAULTS = {
    "llama": {"rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 2048},
    "mistral": {"rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 131072},
    "qwen2": {"rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 32768},
    "mixtral": {"rms_norm_eps": 1e-5, "rope_theta": 1e6, "max_position_embeddings": 131072},
    "qwen2_moe": {
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "max_position_embeddings": 32768,
        "intermediate_size": 5632,  # the dense MLP's, unused when every layer is sparse
    },
    "qwen3_moe": {
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "max_position_embeddings": 32768,
        "intermediate_size": 6144,
    },
}
# The mixture-of-experts defaults of MixtralConfig, Qwen2MoeConfig and Qwen3MoeConfig
# (transformers 5.x): experts, experts per token, an expert's intermediate size (None: Mixtral's
# intermediate_size), the shared expert's, norm_topk_prob (Mixtral always renormalizes).
_MOE_DEFAULTS = {
    "mixtral": {"num_experts": 8, "top_k": 2, "moe": None, "shared": 0, "norm": True},
    "qwen2_moe": {"num_experts": 60, "top_k": 4, "moe": 1408, "shared": 5632, "norm": False},
    "qwen3_moe": {"num_experts": 128, "top_k": 8, "moe": 768, "shared": 0, "norm": False},
}


def read_json_file(path: Path, what: str, max_bytes: int = MAX_CONFIG_BYTES) -> object:
    """Load a small JSON file, mapping every failure to a one-line :class:`InputError`."""
    raw = read_small_file(path, what, max_bytes)
    try:
        return json_loads(raw)
    except ParseError as e:
        if e.key is not None:
            raise InputError(f"{path}: {what} has the key {e.key!r} twice") from None
        raise InputError(f"{path}: {what} is not valid JSON ({e.detail})") from None


def _int(cfg: dict, key: str, where: str, default: object = ...) -> int:
    v = cfg.get(key, default)
    if v is ...:
        raise InputError(f"{where}: missing required field {key!r}")
    if not isinstance(v, int) or isinstance(v, bool):
        raise InputError(f"{where}: field {key!r} must be an integer, got {v!r}")
    return v


def _float(cfg: dict, key: str, where: str, default: float) -> float:
    v = cfg.get(key, default)
    if v is None:
        v = default
    if not isinstance(v, int | float) or isinstance(v, bool):
        raise InputError(f"{where}: field {key!r} must be a finite number, got {v!r}")
    try:
        f = float(v)
    except OverflowError:  # an integer beyond the float range (up to 4,300 digits parse)
        raise InputError(
            f"{where}: field {key!r} must be a finite number, got an integer of "
            f"{len(str(abs(v)))} digits"
        ) from None
    if not math.isfinite(f):
        raise InputError(f"{where}: field {key!r} must be a finite number, got {v!r}")
    return f


def _rope_scaling(cfg: dict, where: str) -> RopeScaling | None:
    rs = cfg.get("rope_scaling")
    if rs is None:
        return None
    if not isinstance(rs, dict):
        raise InputError(f"{where}: field 'rope_scaling' must be an object or null")
    kind = rs.get("rope_type", rs.get("type"))
    if kind in (None, "default"):
        return None
    if kind != "llama3":
        raise UnsupportedError(
            f"{where}: rope_scaling type {kind!r} is not supported (maskc implements 'llama3')"
        )
    w = f"{where}: rope_scaling"
    return RopeScaling(
        rope_type="llama3",
        factor=_float(rs, "factor", w, math.nan),
        low_freq_factor=_float(rs, "low_freq_factor", w, 1.0),
        high_freq_factor=_float(rs, "high_freq_factor", w, 4.0),
        original_max_position_embeddings=_int(rs, "original_max_position_embeddings", w, 8192),
    )


def parse_config(cfg: object, where: str) -> ModelArch:
    """Turn a parsed config.json object into a validated :class:`ModelArch`.

    ``where`` names the file in error messages.
    """
    if not isinstance(cfg, dict):
        raise InputError(f"{where}: config must be a JSON object")
    archs = cfg.get("architectures")
    if not (isinstance(archs, list) and archs and all(isinstance(a, str) for a in archs)):
        raise InputError(f"{where}: missing field 'architectures' (a list of class names)")
    arch_name = archs[0]
    if arch_name not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedError(
            f"{where}: unsupported architecture {arch_name!r}; maskc supports "
            + ", ".join(SUPPORTED_ARCHITECTURES)
        )
    model_type = _MODEL_TYPES[arch_name]
    if cfg.get("model_type", model_type) != model_type:
        raise InputError(
            f"{where}: model_type {cfg.get('model_type')!r} contradicts architecture {arch_name}"
        )
    if cfg.get("quantization_config") is not None:  # a format maskc imports, or exit 3
        prequant.parse_config(cfg["quantization_config"], where)
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise UnsupportedError(f"{where}: hidden_act {act!r} is not supported (only 'silu')")
    if _float(cfg, "partial_rotary_factor", where, 1.0) != 1.0:
        raise UnsupportedError(
            f"{where}: partial_rotary_factor {cfg['partial_rotary_factor']!r} is not supported "
            "(maskc rotates every dimension of a head: 1.0 or absent)"
        )
    if cfg.get("mlp_bias", False):
        raise UnsupportedError(f"{where}: mlp_bias true is not supported")
    if model_type == "qwen2":
        attention_bias = True  # Qwen2 always has q/k/v biases and no o_proj bias
    elif model_type == "qwen2_moe":  # q/k/v biases unless qkv_bias is false; no o_proj bias
        attention_bias = _bool(cfg, "qkv_bias", where, True)
    elif model_type == "qwen3_moe":
        if _bool(cfg, "attention_bias", where, False):
            raise UnsupportedError(
                f"{where}: attention_bias true is not supported for {arch_name} (it biases "
                "o_proj too)"
            )
        attention_bias = False
    else:
        if cfg.get("attention_bias", False):
            raise UnsupportedError(f"{where}: attention_bias true is not supported for {arch_name}")
        attention_bias = False

    d = _DEFAULTS[model_type]
    hidden = _int(cfg, "hidden_size", where)
    heads = _int(cfg, "num_attention_heads", where)
    kv = cfg.get("num_key_value_heads")
    kv = heads if kv is None else _int(cfg, "num_key_value_heads", where)
    head_dim = cfg.get("head_dim")
    if head_dim is None:
        if heads <= 0 or hidden % heads:
            raise InputError(
                f"{where}: hidden_size ({hidden}) is not divisible by num_attention_heads "
                f"({heads}) and head_dim is not given"
            )
        head_dim = hidden // heads
    else:
        head_dim = _int(cfg, "head_dim", where)

    sliding = None
    if model_type == "mistral" or model_type == "mixtral":
        sw = cfg.get("sliding_window")
        sliding = None if sw is None else _int(cfg, "sliding_window", where)
    elif cfg.get("use_sliding_window", False):  # qwen2, qwen2_moe, qwen3_moe
        raise UnsupportedError(f"{where}: use_sliding_window true is not supported for {arch_name}")

    eos = cfg.get("eos_token_id")
    if eos is None:
        eos_ids: tuple[int, ...] = ()
    elif isinstance(eos, int) and not isinstance(eos, bool):
        eos_ids = (eos,)
    elif isinstance(eos, list) and all(isinstance(e, int) and not isinstance(e, bool) for e in eos):
        eos_ids = tuple(eos)
    else:
        raise InputError(f"{where}: field 'eos_token_id' must be an integer or list of integers")
    bos = cfg.get("bos_token_id")
    if bos is not None:
        bos = _int(cfg, "bos_token_id", where)

    tie_default = False
    arch = ModelArch(
        architecture=arch_name,
        model_type=model_type,
        vocab_size=_int(cfg, "vocab_size", where),
        hidden_size=hidden,
        intermediate_size=_int(cfg, "intermediate_size", where, d.get("intermediate_size", ...)),
        num_layers=_int(cfg, "num_hidden_layers", where),
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=head_dim,
        rms_norm_eps=_float(cfg, "rms_norm_eps", where, d["rms_norm_eps"]),
        rope_theta=_float(cfg, "rope_theta", where, d["rope_theta"]),
        max_position_embeddings=_int(
            cfg, "max_position_embeddings", where, d["max_position_embeddings"]
        ),
        tie_word_embeddings=_bool(cfg, "tie_word_embeddings", where, tie_default),
        attention_bias=attention_bias,
        rope_scaling=_rope_scaling(cfg, where),
        sliding_window=sliding,
        bos_token_id=bos,
        eos_token_ids=eos_ids,
        moe=_moe(cfg, model_type, where) if model_type in _MOE_DEFAULTS else None,
        qk_norm=model_type == "qwen3_moe",
    )
    arch.validate(where)
    return arch


def _moe(cfg: dict, model_type: str, where: str) -> MoeConfig:
    """The mixture of experts of a Mixtral / Qwen2-MoE / Qwen3-MoE config.json.

    The expert count is ``num_local_experts`` (Mixtral) or ``num_experts`` (Qwen); either name
    is accepted for both, as transformers maps one onto the other, but not two different
    values. Every layer must be sparse: ``decoder_sparse_step`` 1 and no ``mlp_only_layers``
    (the dense layers between sparse ones are not implemented)."""
    d = _MOE_DEFAULTS[model_type]
    names = ("num_local_experts", "num_experts")
    if model_type != "mixtral":
        names = names[::-1]
    given = [n for n in names if cfg.get(n) is not None]
    counts = {n: _int(cfg, n, where) for n in given}
    if len(set(counts.values())) > 1:
        raise InputError(
            f"{where}: num_local_experts ({counts['num_local_experts']}) and num_experts "
            f"({counts['num_experts']}) disagree; give one"
        )
    experts = counts[given[0]] if given else d["num_experts"]
    if experts < 1:
        raise UnsupportedError(
            f"{where}: field {names[0]!r} is {experts}; a {model_type} model without experts is "
            "not supported (it needs at least 1)"
        )
    step = _int(cfg, "decoder_sparse_step", where, 1)
    if step != 1:
        raise UnsupportedError(
            f"{where}: decoder_sparse_step {step} is not supported (maskc builds every layer as "
            "a mixture of experts: 1 or absent)"
        )
    dense = cfg.get("mlp_only_layers")
    if dense is not None and not isinstance(dense, list):
        raise InputError(f"{where}: field 'mlp_only_layers' must be a list of layer indices")
    if dense:
        raise UnsupportedError(
            f"{where}: mlp_only_layers {dense[:4]!r}{'...' if len(dense) > 4 else ''} is not "
            "supported (maskc builds every layer as a mixture of experts: [] or absent)"
        )
    if model_type == "mixtral":
        inter = _int(cfg, "intermediate_size", where)
        shared, norm = 0, True
    else:
        inter = _int(cfg, "moe_intermediate_size", where, d["moe"])
        shared = 0
        if model_type == "qwen2_moe":
            shared = _int(cfg, "shared_expert_intermediate_size", where, d["shared"])
            if shared < 1:
                raise UnsupportedError(
                    f"{where}: shared_expert_intermediate_size {shared} is not supported "
                    "(Qwen2-MoE's shared expert needs at least 1 row)"
                )
        norm = _bool(cfg, "norm_topk_prob", where, d["norm"])
    return MoeConfig(
        num_experts=experts,
        top_k=_int(cfg, "num_experts_per_tok", where, d["top_k"]),
        expert_intermediate_size=inter,
        shared_expert_intermediate_size=shared,
        norm_topk_prob=norm,
    )


def _bool(cfg: dict, key: str, where: str, default: bool) -> bool:
    v = cfg.get(key, default)
    if not isinstance(v, bool):
        raise InputError(f"{where}: field {key!r} must be true or false, got {v!r}")
    return v


def load_config(path: Path) -> ModelArch:
    """Read and parse ``config.json`` at ``path``."""
    return parse_config(read_json_file(path, "config.json"), str(path))


def load_scheme(path: Path) -> prequant.Scheme | None:
    """The pre-quantized checkpoint's :class:`~maskc.ingest.prequant.Scheme` from
    ``config.json`` at ``path`` (already checked by :func:`load_config`), or None."""
    cfg = read_json_file(path, "config.json")
    qc = cfg.get("quantization_config") if isinstance(cfg, dict) else None
    return None if qc is None else prequant.parse_config(qc, str(path))
