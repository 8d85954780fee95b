"""The named test models (``maskc testmodel --preset NAME``)."""

from __future__ import annotations

from maskc.errors import UsageError
from maskc.testmodels.spec import TinySpec

PRESETS: dict[str, TinySpec] = {
    spec.name: spec
    for spec in (
        # The default: Llama, GQA 4/2, tied head, F32 (~0.43 MB).
        TinySpec(
            name="tiny",
            vocab_size=320,
            hidden_size=64,
            intermediate_size=160,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,
            tie_word_embeddings=True,
            dtype="F32",
        ),
        # Untied lm_head, plain multi-head attention, F16 (~0.25 MB).
        TinySpec(
            name="tiny-untied",
            vocab_size=320,
            hidden_size=64,
            intermediate_size=160,
            num_layers=2,
            num_heads=4,
            num_kv_heads=4,
            tie_word_embeddings=False,
            dtype="F16",
        ),
        # BF16, GQA 6/2, explicit head_dim: q_dim = 6 * 16 = 96 != hidden 48 (~0.12 MB).
        TinySpec(
            name="tiny-gqa-bf16",
            vocab_size=320,
            hidden_size=48,
            intermediate_size=128,
            num_layers=2,
            num_heads=6,
            num_kv_heads=2,
            head_dim=16,
            tie_word_embeddings=True,
            dtype="BF16",
        ),
        # Sizes that divide no tile or group size; odd vocabulary; MQA 3/1 (~0.86 MB).
        TinySpec(
            name="tiny-odd",
            vocab_size=301,
            hidden_size=72,
            intermediate_size=200,
            num_layers=3,
            num_heads=3,
            num_kv_heads=1,
            head_dim=24,
            tie_word_embeddings=False,
            dtype="F32",
        ),
        # Three shards + index, untied, Llama-3.1 RoPE scaling (~0.75 MB).
        TinySpec(
            name="tiny-sharded",
            vocab_size=384,
            hidden_size=64,
            intermediate_size=176,
            num_layers=3,
            num_heads=4,
            num_kv_heads=2,
            tie_word_embeddings=False,
            dtype="F32",
            shards=3,
            rope_theta=500000.0,
            rope_scaling={
                "factor": 8.0,
                "high_freq_factor": 4.0,
                "low_freq_factor": 1.0,
                "original_max_position_embeddings": 64,
                "rope_type": "llama3",
            },
        ),
        # Qwen2: q/k/v biases, tied, embedding padded past the tokenizer (~0.43 MB).
        TinySpec(
            name="tiny-qwen2",
            architecture="Qwen2ForCausalLM",
            vocab_size=320,
            hidden_size=64,
            intermediate_size=160,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,
            tie_word_embeddings=True,
            dtype="F32",
            attention_bias=True,
            rope_theta=1000000.0,
            rms_norm_eps=1e-6,
            tokenizer_vocab_size=300,
        ),
        # Mistral: sliding-window attention (window 32 < 256 positions), untied, BF16 (~0.2 MB).
        TinySpec(
            name="tiny-mistral",
            architecture="MistralForCausalLM",
            vocab_size=320,
            hidden_size=64,
            intermediate_size=160,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,
            tie_word_embeddings=False,
            dtype="BF16",
            sliding_window=32,
        ),
        # Mixtral: top-2 of 4 experts of 96 (the router's softmax renormalized over the two),
        # untied, BF16 (~0.2 MB).
        TinySpec(
            name="mixtral",
            architecture="MixtralForCausalLM",
            vocab_size=320,
            hidden_size=64,
            intermediate_size=96,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,
            tie_word_embeddings=False,
            dtype="BF16",
            rope_theta=1000000.0,
            num_experts=4,
            num_experts_per_tok=2,
            norm_topk_prob=True,
        ),
        # Qwen2-MoE: top-2 of 6 experts of 32 (not renormalized) plus a shared expert of 96
        # behind its sigmoid gate; q/k/v biases, tied, F32 (~0.6 MB).
        TinySpec(
            name="qwen2-moe",
            architecture="Qwen2MoeForCausalLM",
            vocab_size=320,
            hidden_size=64,
            intermediate_size=160,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,
            tie_word_embeddings=True,
            dtype="F32",
            attention_bias=True,
            rope_theta=1000000.0,
            rms_norm_eps=1e-6,
            num_experts=6,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            shared_expert_intermediate_size=96,
            norm_topk_prob=False,
        ),
        # Qwen3-MoE: q/k RMSNorm per head, top-3 of 8 experts of 48 renormalized, heads of 32
        # (q_dim 128 != hidden 64), untied, F16 (~0.3 MB).
        TinySpec(
            name="qwen3-moe",
            architecture="Qwen3MoeForCausalLM",
            vocab_size=320,
            hidden_size=64,
            intermediate_size=160,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,
            head_dim=32,
            tie_word_embeddings=False,
            dtype="F16",
            rope_theta=1000000.0,
            rms_norm_eps=1e-6,
            num_experts=8,
            num_experts_per_tok=3,
            moe_intermediate_size=48,
            norm_topk_prob=True,
        ),
    )
}
#: The mixture-of-experts presets (docs/moe-design.md).
MOE_PRESETS = tuple(n for n, s in PRESETS.items() if s.is_moe)


def preset_names() -> list[str]:
    """Names of the presets, in definition order (``"tiny"`` first)."""
    return list(PRESETS)


def dense_preset_names() -> list[str]:
    """Names of the dense presets (not :data:`MOE_PRESETS`)."""
    return [n for n in PRESETS if n not in MOE_PRESETS]


def resolve_preset(preset: str | TinySpec) -> TinySpec:
    """The :class:`TinySpec` named ``preset`` (or ``preset`` itself), validated."""
    if isinstance(preset, TinySpec):
        spec = preset
    elif preset in PRESETS:
        spec = PRESETS[preset]
    else:
        raise UsageError(
            f"unknown test-model preset {preset!r}; choose one of: {', '.join(PRESETS)}"
        )
    spec.validate()
    return spec
