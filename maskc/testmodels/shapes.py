"""Published model shapes for shape tests (``maskc testmodel --shape NAME``) and the explicit
overrides (``--hidden``, ``--layers``, ...).

A shape is the *architecture* of a published model, copied from the ``config.json`` its authors
ship on the Hugging Face Hub (the file and revision-independent fields named below); the
weights written for it are SYNTHETIC (:mod:`maskc.testmodels.synthetic`), and the tokenizer is
maskc's small test tokenizer padded to the vocabulary size (:mod:`maskc.testmodels.tokenizer`),
so bos/eos ids are maskc's (0 and 2), not the published ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from maskc.errors import InputError, UsageError
from maskc.testmodels.spec import DTYPES, TinySpec

#: Llama 3.1's RoPE scaling (config.json ``rope_scaling`` of meta-llama/Llama-3.1-8B, -70B and
#: -405B); Llama 3.2 1B/3B ship the same with ``factor`` 32.0.
LLAMA31_ROPE = {
    "factor": 8.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3",
}
LLAMA32_ROPE = {**LLAMA31_ROPE, "factor": 32.0}


@dataclass(frozen=True)
class Shape:
    """A published architecture: the :class:`TinySpec` its config.json describes, and where the
    numbers come from."""

    spec: TinySpec
    source: str  #: the Hugging Face repository whose config.json the numbers are copied from


def _llama3(name: str, repo: str, **kw) -> Shape:
    """Llama 3.x: vocab 128,256, rope_theta 500,000, rms_norm_eps 1e-5, 131,072 positions."""
    spec = TinySpec(
        name=name,
        vocab_size=128256,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        max_position_embeddings=131072,
        dtype="BF16",
        **kw,
    )
    return Shape(spec, f"https://huggingface.co/{repo}/blob/main/config.json")


#: name -> published shape. Values are the config.json fields of the repository in ``source``.
SHAPES: dict[str, Shape] = {
    s.spec.name: s
    for s in (
        # meta-llama/Llama-3.2-1B: 16 layers, hidden 2048, ffn 8192, 32/8 heads of 64, tied.
        _llama3(
            "llama-3.2-1b",
            "meta-llama/Llama-3.2-1B",
            hidden_size=2048,
            intermediate_size=8192,
            num_layers=16,
            num_heads=32,
            num_kv_heads=8,
            tie_word_embeddings=True,
            rope_scaling=LLAMA32_ROPE,
        ),
        # meta-llama/Llama-3.2-3B: 28 layers, hidden 3072, ffn 8192, 24/8 heads of 128, tied.
        _llama3(
            "llama-3.2-3b",
            "meta-llama/Llama-3.2-3B",
            hidden_size=3072,
            intermediate_size=8192,
            num_layers=28,
            num_heads=24,
            num_kv_heads=8,
            tie_word_embeddings=True,
            rope_scaling=LLAMA32_ROPE,
        ),
        # meta-llama/Llama-3.1-8B: 32 layers, hidden 4096, ffn 14336, 32/8 heads, untied.
        _llama3(
            "llama-3.1-8b",
            "meta-llama/Llama-3.1-8B",
            hidden_size=4096,
            intermediate_size=14336,
            num_layers=32,
            num_heads=32,
            num_kv_heads=8,
            tie_word_embeddings=False,
            rope_scaling=LLAMA31_ROPE,
        ),
        # meta-llama/Llama-3.1-70B: 80 layers, hidden 8192, ffn 28672, 64/8 heads, untied.
        _llama3(
            "llama-3.1-70b",
            "meta-llama/Llama-3.1-70B",
            hidden_size=8192,
            intermediate_size=28672,
            num_layers=80,
            num_heads=64,
            num_kv_heads=8,
            tie_word_embeddings=False,
            rope_scaling=LLAMA31_ROPE,
        ),
        # meta-llama/Llama-3.1-405B: 126 layers, hidden 16384, ffn 53248, 128/8 heads, untied.
        _llama3(
            "llama-3.1-405b",
            "meta-llama/Llama-3.1-405B",
            hidden_size=16384,
            intermediate_size=53248,
            num_layers=126,
            num_heads=128,
            num_kv_heads=8,
            tie_word_embeddings=False,
            rope_scaling=LLAMA31_ROPE,
        ),
        # Qwen/Qwen2.5-7B: 28 layers, hidden 3584, ffn 18944, 28/4 heads of 128, q/k/v biases,
        # rope_theta 1e6, rms_norm_eps 1e-6, untied; the embedding has 152,064 rows for a
        # tokenizer of 151,665 tokens (151,643 BPE + 22 special), the rest padding.
        Shape(
            TinySpec(
                name="qwen2.5-7b",
                architecture="Qwen2ForCausalLM",
                vocab_size=152064,
                hidden_size=3584,
                intermediate_size=18944,
                num_layers=28,
                num_heads=28,
                num_kv_heads=4,
                tie_word_embeddings=False,
                dtype="BF16",
                attention_bias=True,
                rope_theta=1000000.0,
                rms_norm_eps=1e-6,
                max_position_embeddings=131072,
                tokenizer_vocab_size=151665,
            ),
            "https://huggingface.co/Qwen/Qwen2.5-7B/blob/main/config.json",
        ),
        # mistralai/Mistral-7B-v0.1: 32 layers, hidden 4096, ffn 14336, 32/8 heads, vocab 32000,
        # rope_theta 10000, sliding_window 4096, 32,768 positions, untied.
        Shape(
            TinySpec(
                name="mistral-7b",
                architecture="MistralForCausalLM",
                vocab_size=32000,
                hidden_size=4096,
                intermediate_size=14336,
                num_layers=32,
                num_heads=32,
                num_kv_heads=8,
                tie_word_embeddings=False,
                dtype="BF16",
                rope_theta=10000.0,
                rms_norm_eps=1e-5,
                max_position_embeddings=32768,
                sliding_window=4096,
            ),
            "https://huggingface.co/mistralai/Mistral-7B-v0.1/blob/main/config.json",
        ),
        # mistralai/Mixtral-8x7B-v0.1: Mistral-7B's attention (32 layers, hidden 4096, 32/8
        # heads, vocab 32000, 32,768 positions) with rope_theta 1e6, no sliding window, and
        # top-2 of 8 experts of 14336 per layer (46.7B parameters, 12.9B active), untied.
        Shape(
            TinySpec(
                name="mixtral-8x7b",
                architecture="MixtralForCausalLM",
                vocab_size=32000,
                hidden_size=4096,
                intermediate_size=14336,
                num_layers=32,
                num_heads=32,
                num_kv_heads=8,
                tie_word_embeddings=False,
                dtype="BF16",
                rope_theta=1000000.0,
                rms_norm_eps=1e-5,
                max_position_embeddings=32768,
                num_experts=8,
                num_experts_per_tok=2,
                norm_topk_prob=True,
            ),
            "https://huggingface.co/mistralai/Mixtral-8x7B-v0.1/blob/main/config.json",
        ),
        # Qwen/Qwen3-30B-A3B: 48 layers, hidden 2048, 32/4 heads of 128 (q_dim 4096), q/k
        # norms, top-8 of 128 experts of 768, norm_topk_prob true, vocab 151,936, rope_theta
        # 1e6, rms_norm_eps 1e-6, 40,960 positions, untied (30.5B parameters, 3.3B active).
        Shape(
            TinySpec(
                name="qwen3-30b-a3b",
                architecture="Qwen3MoeForCausalLM",
                vocab_size=151936,
                hidden_size=2048,
                intermediate_size=6144,
                num_layers=48,
                num_heads=32,
                num_kv_heads=4,
                head_dim=128,
                tie_word_embeddings=False,
                dtype="BF16",
                rope_theta=1000000.0,
                rms_norm_eps=1e-6,
                max_position_embeddings=40960,
                num_experts=128,
                num_experts_per_tok=8,
                moe_intermediate_size=768,
                norm_topk_prob=True,
            ),
            "https://huggingface.co/Qwen/Qwen3-30B-A3B/blob/main/config.json",
        ),
    )
}

#: The base of explicit overrides given without ``--shape``.
DEFAULT_SHAPE = "llama-3.1-8b"

#: Override option -> TinySpec field. ``head_dim`` None (not given) keeps the shape's, which
#: for every published dense shape is ``hidden_size // num_heads`` and so follows ``--hidden``
#: (Qwen3-30B-A3B's is an explicit 128). ``--intermediate`` of a Qwen mixture of experts is its
#: dense MLP's size, which no layer uses; of Mixtral its experts'.
OVERRIDES = {
    "hidden": "hidden_size",
    "intermediate": "intermediate_size",
    "layers": "num_layers",
    "heads": "num_heads",
    "kv_heads": "num_kv_heads",
    "vocab": "vocab_size",
    "head_dim": "head_dim",
}
#: ``--dtype`` values -> safetensors dtype.
DTYPE_NAMES = {"bf16": "BF16", "f16": "F16", "fp16": "F16", "f32": "F32", "fp32": "F32"}


def shape_names() -> list[str]:
    """Names of the published shapes, smallest first."""
    return list(SHAPES)


def resolve_shape(
    name: str | None, overrides: dict[str, int | None] | None = None, dtype: str | None = None
) -> TinySpec:
    """The :class:`TinySpec` of shape ``name`` (``None``: :data:`DEFAULT_SHAPE`) with the
    ``overrides`` that are not ``None`` (keys of :data:`OVERRIDES`) and ``dtype`` (a key of
    :data:`DTYPE_NAMES`), validated; :class:`UsageError` (exit 2) naming the option otherwise.

    A changed vocabulary also sizes the tokenizer (Qwen2.5's padding rows are dropped)."""
    base = name if name is not None else DEFAULT_SHAPE
    if base not in SHAPES:
        raise UsageError(f"unknown shape {base!r}; choose one of: {', '.join(SHAPES)}")
    spec = SHAPES[base].spec
    changes: dict[str, object] = {}
    label = []
    for opt, value in sorted((overrides or {}).items()):
        if opt not in OVERRIDES:
            raise UsageError(f"unknown shape override {opt!r}")
        if value is None:
            continue
        flag = "--" + opt.replace("_", "-")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"{flag} must be a positive integer, got {value!r}")
        if value > 1 << 24:
            raise UsageError(f"{flag} {value} is implausibly large (at most {1 << 24})")
        changes[OVERRIDES[opt]] = value
        label.append(f"{opt.replace('_', '-')}={value}")
    if "vocab_size" in changes:
        changes["tokenizer_vocab_size"] = None
    if dtype is not None:
        key = dtype.lower()
        if key not in DTYPE_NAMES:
            raise UsageError(f"--dtype must be one of bf16, f16, f32, got {dtype!r}")
        changes["dtype"] = DTYPE_NAMES[key]
        if DTYPE_NAMES[key] != spec.dtype:
            label.append(f"dtype={key}")
    full = base + ("+" + ",".join(label) if label else "")
    spec = dataclasses.replace(spec, name=full, **changes)
    _check(spec)
    return spec


def _check(spec: TinySpec) -> None:
    """Usage errors for overrides that make no model (before TinySpec's own checks)."""
    heads, kv = spec.num_heads, spec.num_kv_heads
    if heads % kv:
        raise UsageError(f"--heads ({heads}) must be a multiple of --kv-heads ({kv})")
    if spec.head_dim is None and spec.hidden_size % heads:
        raise UsageError(
            f"--hidden ({spec.hidden_size}) must be a multiple of --heads ({heads}), or give "
            "--head-dim"
        )
    if spec.resolved_head_dim % 2:
        raise UsageError(f"head dimension {spec.resolved_head_dim} must be even (RoPE pairs)")
    from maskc.testmodels.tokenizer import BASE_VOCAB

    if spec.vocab_size < BASE_VOCAB:
        raise UsageError(
            f"--vocab ({spec.vocab_size}) must be at least {BASE_VOCAB} (3 special tokens and "
            "the 256 byte symbols of the test tokenizer)"
        )
    if spec.dtype not in DTYPES:  # pragma: no cover - DTYPE_NAMES maps into DTYPES
        raise UsageError(f"unknown dtype {spec.dtype}")
    try:
        spec.validate()
    except (ValueError, InputError) as e:
        raise UsageError(str(e)) from None
