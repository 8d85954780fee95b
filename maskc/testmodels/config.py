"""``config.json`` and ``generation_config.json``, and :func:`write_json` for every JSON file."""

from __future__ import annotations

import json
from pathlib import Path

from maskc.testmodels.spec import DTYPES, TinySpec
from maskc.testmodels.tokenizer import BOS_TOKEN_ID, EOS_TOKEN_ID

#: ``transformers_version`` written into the JSON files (the schema the files follow).
TRANSFORMERS_VERSION = "4.46.0"


def config_json(spec: TinySpec) -> dict:
    """The ``config.json`` a ``transformers`` save of this architecture would contain."""
    arch = spec.to_arch()
    cfg: dict[str, object] = {
        "architectures": [spec.architecture],
        "attention_dropout": 0.0,
        "bos_token_id": BOS_TOKEN_ID,
        "eos_token_id": EOS_TOKEN_ID,
        "head_dim": arch.head_dim,
        "hidden_act": "silu",
        "hidden_size": spec.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": spec.intermediate_size,
        "max_position_embeddings": spec.max_position_embeddings,
        "model_type": spec.model_type,
        "num_attention_heads": spec.num_heads,
        "num_hidden_layers": spec.num_layers,
        "num_key_value_heads": spec.num_kv_heads,
        "rms_norm_eps": spec.rms_norm_eps,
        "rope_theta": spec.rope_theta,
        "tie_word_embeddings": spec.tie_word_embeddings,
        "torch_dtype": DTYPES[spec.dtype][1],
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        "vocab_size": spec.vocab_size,
    }
    if spec.model_type == "llama":
        cfg.update(
            attention_bias=spec.attention_bias,
            mlp_bias=False,
            pretraining_tp=1,
            rope_scaling=dict(spec.rope_scaling) if spec.rope_scaling else None,
        )
    elif spec.model_type in ("mistral", "mixtral"):
        cfg.update(sliding_window=spec.sliding_window)
    else:  # the Qwens: q/k/v biases are implied by the architecture; the window is off
        cfg.update(
            max_window_layers=spec.num_layers,
            rope_scaling=dict(spec.rope_scaling) if spec.rope_scaling else None,
            sliding_window=spec.max_position_embeddings,
            use_sliding_window=False,
        )
    if spec.is_moe:
        cfg.update(_moe_fields(spec))
    return cfg


def _moe_fields(spec: TinySpec) -> dict[str, object]:
    """The mixture-of-experts fields of MixtralConfig / Qwen2MoeConfig / Qwen3MoeConfig."""
    common = {
        "num_experts_per_tok": spec.num_experts_per_tok,
        "output_router_logits": False,
        "router_aux_loss_coef": 0.001,
    }
    if spec.model_type == "mixtral":
        return {**common, "num_local_experts": spec.num_experts, "router_jitter_noise": 0.0}
    out = {
        **common,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "moe_intermediate_size": spec.moe_intermediate_size,
        "norm_topk_prob": spec.norm_topk_prob,
        "num_experts": spec.num_experts,
    }
    if spec.model_type == "qwen2_moe":
        out.update(
            qkv_bias=True, shared_expert_intermediate_size=spec.shared_expert_intermediate_size
        )
    else:  # qwen3_moe: q/k norms, no biases
        out.update(attention_bias=False)
    return out


def generation_config_json(spec: TinySpec) -> dict:
    """``generation_config.json`` (bos/eos ids as in config.json)."""
    return {
        "_from_model_config": True,
        "bos_token_id": BOS_TOKEN_ID,
        "eos_token_id": EOS_TOKEN_ID,
        "transformers_version": TRANSFORMERS_VERSION,
    }


def write_json(path: Path, doc: dict, *, sort_keys: bool = True) -> None:
    """``doc`` as UTF-8 JSON, indent 2, trailing newline (keys sorted unless told otherwise)."""
    text = json.dumps(doc, sort_keys=sort_keys, indent=2, ensure_ascii=False) + "\n"
    path.write_bytes(text.encode("utf-8"))
