"""What a test model is: :class:`TinySpec`, with the architectures and dtypes it may name."""

from __future__ import annotations

from dataclasses import dataclass, field

import ml_dtypes
import numpy as np

from maskc.ir import ModelArch, MoeConfig, RopeScaling, expected_tensors
from maskc.testmodels.tokenizer import BASE_VOCAB, BOS_TOKEN_ID, EOS_TOKEN_ID

#: ``architectures[0]`` -> ``model_type`` of config.json.
MODEL_TYPES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "MixtralForCausalLM": "mixtral",
    "Qwen2MoeForCausalLM": "qwen2_moe",
    "Qwen3MoeForCausalLM": "qwen3_moe",
}
#: The mixture-of-experts architectures (``num_experts`` > 0 exactly for these)
MOE_MODEL_TYPES = ("mixtral", "qwen2_moe", "qwen3_moe")
#: Architectures with q/k/v biases
_BIASED = ("Qwen2ForCausalLM", "Qwen2MoeForCausalLM")
#: safetensors dtype -> (numpy dtype the weights are cast to, config.json ``torch_dtype``).
DTYPES: dict[str, tuple[np.dtype, str]] = {
    "F32": (np.dtype("<f4"), "float32"),
    "F16": (np.dtype("<f2"), "float16"),
    "BF16": (np.dtype(ml_dtypes.bfloat16), "bfloat16"),
}


@dataclass(frozen=True, kw_only=True)
class TinySpec:
    """Everything a preset fixes. Shapes follow Hugging Face (``[out, in]`` for linear weights).

    ``head_dim`` ``None`` means ``hidden_size // num_heads``. ``dtype`` is the safetensors
    storage dtype (``"F32"``, ``"F16"`` or ``"BF16"``). ``shards > 1`` writes
    ``model-0000k-of-0000n.safetensors`` files plus ``model.safetensors.index.json``.
    ``rope_scaling`` is the config.json dict (``rope_type`` ``"llama3"``) or ``None``.
    ``sliding_window`` is Mistral's attention window (``None`` for the other architectures).
    ``tokenizer_vocab_size`` (``None`` = ``vocab_size``) lets the embedding have more rows than
    the tokenizer has tokens, as Qwen2 does; those rows are zero.

    Mixtures of experts (Mixtral, Qwen2-MoE, Qwen3-MoE; ``num_experts`` > 0 exactly for them):
    ``num_experts_per_tok`` of ``num_experts`` routed experts per token, each of
    ``moe_intermediate_size`` (Mixtral: ``None``, its experts are ``intermediate_size``; Qwen's
    ``intermediate_size`` is the unused dense MLP's), Qwen2-MoE's shared expert of
    ``shared_expert_intermediate_size`` (0 for the others), ``norm_topk_prob`` (Mixtral always
    renormalizes: true).
    """

    name: str
    architecture: str = "LlamaForCausalLM"
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int | None = None
    tie_word_embeddings: bool
    dtype: str
    shards: int = 1
    rope_theta: float = 10000.0
    rope_scaling: dict | None = field(default=None, hash=False)
    attention_bias: bool = False
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 256
    sliding_window: int | None = None
    tokenizer_vocab_size: int | None = None
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int | None = None
    shared_expert_intermediate_size: int = 0
    norm_topk_prob: bool = False

    @property
    def resolved_head_dim(self) -> int:
        """``head_dim``, or ``hidden_size // num_heads`` when it is ``None``."""
        return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_heads

    @property
    def resolved_tokenizer_vocab_size(self) -> int:
        """Tokens the tokenizer has (ids ``0 .. n-1``); ``<= vocab_size``."""
        return (
            self.tokenizer_vocab_size if self.tokenizer_vocab_size is not None else self.vocab_size
        )

    @property
    def model_type(self) -> str:
        """config.json ``model_type`` ("llama", "mistral", "qwen2", "mixtral", "qwen2_moe" or
        "qwen3_moe")."""
        return MODEL_TYPES[self.architecture]

    @property
    def is_moe(self) -> bool:
        return self.model_type in MOE_MODEL_TYPES

    def validate(self) -> None:
        """Raise if the spec cannot be written as a coherent HF folder.

        :class:`ValueError` for what only a generator can get wrong (an unknown dtype, a bias or
        window the architecture cannot express, a bad tokenizer size or shard count);
        :class:`maskc.errors.InputError` from :meth:`maskc.ir.ModelArch.validate` for the rest.
        """
        for name in ("vocab_size", "hidden_size", "num_heads", "num_kv_heads"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"TinySpec {self.name!r}: {name} must be a positive integer")
        if self.architecture not in MODEL_TYPES:
            raise ValueError(f"TinySpec {self.name!r}: unknown architecture {self.architecture!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"TinySpec {self.name!r}: dtype must be one of {sorted(DTYPES)}")
        if self.head_dim is None and self.hidden_size % self.num_heads:
            raise ValueError(
                f"TinySpec {self.name!r}: hidden_size must be a multiple of num_heads when "
                "head_dim is None"
            )
        # Qwen2 (and Qwen2-MoE) have q/k/v biases; Llama's attention_bias would also add an
        # o_proj bias, which maskc.ir does not model, and the others have none.
        if self.attention_bias != (self.architecture in _BIASED):
            raise ValueError(
                f"TinySpec {self.name!r}: attention_bias must be true for Qwen2 and Qwen2-MoE "
                "and false otherwise"
            )
        window = ("MistralForCausalLM", "MixtralForCausalLM")
        if self.sliding_window is not None and self.architecture not in window:
            raise ValueError(f"TinySpec {self.name!r}: sliding_window is only for Mistral/Mixtral")
        if self.rope_scaling is not None and self.architecture in window:
            raise ValueError(f"TinySpec {self.name!r}: Mistral configs have no rope_scaling")
        self._validate_moe()
        n_tok = self.resolved_tokenizer_vocab_size
        if not (BASE_VOCAB <= n_tok <= self.vocab_size):
            raise ValueError(
                f"TinySpec {self.name!r}: tokenizer vocabulary {n_tok} must be in "
                f"[{BASE_VOCAB}, vocab_size={self.vocab_size}]"
            )
        if not isinstance(self.shards, int) or self.shards < 1:
            raise ValueError(f"TinySpec {self.name!r}: shards must be a positive integer")
        self.to_arch().validate(f"TinySpec {self.name!r}")
        if self.shards > len(expected_tensors(self.to_arch())):
            raise ValueError(f"TinySpec {self.name!r}: more shards than tensors")

    def _validate_moe(self) -> None:
        bad = None
        if self.is_moe != (self.num_experts > 0):
            bad = "num_experts must be positive exactly for Mixtral, Qwen2-MoE and Qwen3-MoE"
        elif not self.is_moe:
            return
        elif not 0 < self.num_experts_per_tok <= self.num_experts:
            bad = "num_experts_per_tok must be in [1, num_experts]"
        elif (self.moe_intermediate_size is None) != (self.model_type == "mixtral"):
            bad = "moe_intermediate_size is None exactly for Mixtral (its intermediate_size)"
        elif (self.shared_expert_intermediate_size > 0) != (self.model_type == "qwen2_moe"):
            bad = "shared_expert_intermediate_size is positive exactly for Qwen2-MoE"
        elif self.model_type == "mixtral" and not self.norm_topk_prob:
            bad = "Mixtral always renormalizes its top-k weights: norm_topk_prob must be true"
        if bad:
            raise ValueError(f"TinySpec {self.name!r}: {bad}")

    def to_moe(self) -> MoeConfig | None:
        """The :class:`maskc.ir.MoeConfig` of config.json (``None`` for a dense model)."""
        if not self.is_moe:
            return None
        return MoeConfig(
            num_experts=self.num_experts,
            top_k=self.num_experts_per_tok,
            expert_intermediate_size=self.moe_intermediate_size or self.intermediate_size,
            shared_expert_intermediate_size=self.shared_expert_intermediate_size,
            norm_topk_prob=self.norm_topk_prob,
        )

    def to_arch(self) -> ModelArch:
        """The :class:`maskc.ir.ModelArch` that config.json describes."""
        rs = self.rope_scaling
        return ModelArch(
            architecture=self.architecture,
            model_type=self.model_type,
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            head_dim=self.resolved_head_dim,
            rms_norm_eps=self.rms_norm_eps,
            rope_theta=self.rope_theta,
            max_position_embeddings=self.max_position_embeddings,
            tie_word_embeddings=self.tie_word_embeddings,
            attention_bias=self.attention_bias,
            rope_scaling=None
            if rs is None
            else RopeScaling(
                rope_type=rs["rope_type"],
                factor=float(rs["factor"]),
                low_freq_factor=float(rs["low_freq_factor"]),
                high_freq_factor=float(rs["high_freq_factor"]),
                original_max_position_embeddings=int(rs["original_max_position_embeddings"]),
            ),
            sliding_window=self.sliding_window,
            bos_token_id=BOS_TOKEN_ID,
            eos_token_ids=(EOS_TOKEN_ID,),
            moe=self.to_moe(),
            qk_norm=self.model_type == "qwen3_moe",
        )
