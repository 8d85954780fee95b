"""The typed intermediate representation passed between maskc's stages.

Every IR object is a frozen dataclass with a ``validate()`` method that raises
:class:`maskc.errors.InputError` naming the offending field. Stages take IR in and give IR out;
the pipeline validates after every step (FINN-style), so a bug or a hostile input is caught at
the boundary where it appears.

This module holds the model-level IR produced by ingest:

* :class:`RopeScaling`, :class:`MoeConfig` and :class:`ModelArch`: the architecture parsed from
  ``config.json``;
* :class:`TensorSpec`: one expected weight tensor (name, shape, role);
* :func:`expected_tensors`: the complete, ordered list of tensors an architecture must have.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields

from maskc.errors import InputError
from maskc.limits import check_number

#: Architectures maskc implements end to end (config.json ``architectures[0]``).
SUPPORTED_ARCHITECTURES = (
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "MixtralForCausalLM",
    "Qwen2MoeForCausalLM",
    "Qwen3MoeForCausalLM",
)
#: The mixture-of-experts architectures among them (docs/moe-design.md).
MOE_ARCHITECTURES = ("MixtralForCausalLM", "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM")
#: Most routed experts per layer maskc accepts (DeepSeek-V3 has 256, Kimi K2 384).
MAX_EXPERTS = 1024
#: Most expert MLPs of a whole model (layers x experts): bounds the loops a config drives
#: before any weight is seen (DeepSeek-V3: 58 x 256 = 14,848).
MAX_EXPERT_MLPS = 1 << 16


@dataclass(frozen=True)
class RopeScaling:
    """Llama-3.1-style RoPE frequency scaling (``rope_scaling.rope_type == "llama3"``)."""

    rope_type: str
    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int

    @classmethod
    def from_json(cls, d: object, where: str) -> RopeScaling:
        """Read back what :meth:`ModelArch.to_json` wrote (untrusted: every field checked)."""
        return _from_json(cls, d, where)

    def validate(self, where: str = "config.json") -> None:
        if self.rope_type != "llama3":
            raise InputError(
                f"{where}: rope_scaling.rope_type {self.rope_type!r} is not supported; maskc "
                "supports 'llama3' or no rope_scaling"
            )
        for name in ("factor", "low_freq_factor", "high_freq_factor"):
            check_number(getattr(self, name), f"rope_scaling.{name}", where)
        if self.high_freq_factor <= self.low_freq_factor:
            raise InputError(
                f"{where}: rope_scaling.high_freq_factor ({self.high_freq_factor}) must exceed "
                f"low_freq_factor ({self.low_freq_factor})"
            )
        n = self.original_max_position_embeddings
        if not 0 < n <= 1 << 24:
            raise InputError(
                f"{where}: rope_scaling.original_max_position_embeddings must be in [1, 2^24], "
                f"got {n}"
            )


@dataclass(frozen=True)
class MoeConfig:
    """The mixture-of-experts MLP of every decoder layer (Mixtral, Qwen2-MoE, Qwen3-MoE).

    The router is a linear layer ``[num_experts, hidden]``; each token's MLP output is
    ``sum over its top_k experts of p_e * expert_e(x)`` where ``p = softmax(router(x))`` over all
    experts, the top ``top_k`` by ``p`` (ties to the lowest expert index), and with
    ``norm_topk_prob`` the selected ``p_e`` divided by their sum (Mixtral always does). An
    expert is a SiLU-gated MLP of ``expert_intermediate_size``. ``shared_expert_intermediate_size``
    > 0 (Qwen2-MoE) adds a shared expert of that size on every token, scaled by
    ``sigmoid(shared_expert_gate(x))`` (a ``[1, hidden]`` linear layer).
    """

    num_experts: int
    top_k: int
    expert_intermediate_size: int
    shared_expert_intermediate_size: int = 0
    norm_topk_prob: bool = False

    @classmethod
    def from_json(cls, d: object, where: str) -> MoeConfig:
        """Read back what :meth:`ModelArch.to_json` wrote (untrusted: every field checked)."""
        return _from_json(cls, d, where)

    @property
    def activation_rate(self) -> float:
        """The fraction of routed experts that run per token: ``top_k / num_experts``."""
        return self.top_k / self.num_experts

    def validate(self, where: str = "config.json") -> None:
        for name, lo, hi in (
            ("num_experts", 1, MAX_EXPERTS),
            ("top_k", 1, self.num_experts),
            ("expert_intermediate_size", 1, 1 << 24),
            ("shared_expert_intermediate_size", 0, 1 << 24),
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise InputError(
                    f"{where}: {_MOE_FIELDS.get(name, name)} must be an integer in [{lo}, {hi}], "
                    f"got {v!r}"
                )
        if not isinstance(self.norm_topk_prob, bool):
            raise InputError(f"{where}: norm_topk_prob must be true or false")


#: MoeConfig field -> the config.json field it comes from (for messages)
_MOE_FIELDS = {
    "num_experts": "num_experts (num_local_experts)",
    "top_k": "num_experts_per_tok",
    "expert_intermediate_size": "moe_intermediate_size",
}


@dataclass(frozen=True)
class ModelArch:
    """A decoder-only transformer as maskc understands it (Llama family).

    Shapes follow Hugging Face: a linear layer's weight is ``[out_features, in_features]``.
    ``head_dim * num_heads`` need not equal ``hidden_size`` (``head_dim`` is explicit).
    """

    architecture: str  #: e.g. "LlamaForCausalLM"
    model_type: str  #: e.g. "llama"
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    #: q/k/v projections have biases (Qwen2); o_proj never has one here (a Llama config with
    #: attention_bias true, which also biases o_proj, is refused by ingest)
    attention_bias: bool = False
    rope_scaling: RopeScaling | None = None
    sliding_window: int | None = None  #: Mistral-style local attention window, in tokens
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = field(default_factory=tuple)
    #: the MLP of every layer is a mixture of experts (None: a dense SiLU-gated MLP)
    moe: MoeConfig | None = None
    #: RMSNorm of each q and k head over head_dim before RoPE (Qwen3: ``q_norm``, ``k_norm``)
    qk_norm: bool = False

    def validate(self, where: str = "config.json") -> None:
        if self.architecture not in SUPPORTED_ARCHITECTURES:
            raise InputError(
                f"{where}: architecture {self.architecture!r} is not supported; maskc supports "
                + ", ".join(SUPPORTED_ARCHITECTURES)
            )
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
            "max_position_embeddings",
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise InputError(f"{where}: field {name} must be a positive integer, got {v!r}")
            if v > 1 << 24:
                raise InputError(f"{where}: field {name}={v} is implausibly large (max 2^24)")
        if self.num_heads % self.num_kv_heads:
            raise InputError(
                f"{where}: num_attention_heads ({self.num_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_kv_heads})"
            )
        if self.head_dim % 2:
            raise InputError(f"{where}: head_dim ({self.head_dim}) must be even for RoPE")
        check_number(self.rms_norm_eps, "rms_norm_eps", where)
        check_number(self.rope_theta, "rope_theta", where)
        if self.rope_scaling is not None:
            self.rope_scaling.validate(where)
        if (self.moe is not None) != (self.architecture in MOE_ARCHITECTURES):
            raise InputError(
                f"{where}: {self.architecture} "
                + (
                    "has no mixture of experts"
                    if self.moe
                    else "needs its mixture-of-experts fields"
                )
            )
        if self.moe is not None:
            self.moe.validate(where)
            if self.num_layers * self.moe.num_experts > MAX_EXPERT_MLPS:
                raise InputError(
                    f"{where}: num_hidden_layers x num_experts = {self.num_layers} x "
                    f"{self.moe.num_experts} expert MLPs is more than maskc builds (at most "
                    f"{MAX_EXPERT_MLPS:,})"
                )
        if not isinstance(self.qk_norm, bool):
            raise InputError(f"{where}: qk_norm must be true or false")
        sw = self.sliding_window
        if sw is not None and (not isinstance(sw, int) or isinstance(sw, bool) or sw <= 0):
            raise InputError(f"{where}: sliding_window must be a positive integer or null")
        for name, tok in [("bos_token_id", self.bos_token_id)] + [
            ("eos_token_id", t) for t in self.eos_token_ids
        ]:
            if tok is not None and not (0 <= tok < self.vocab_size):
                raise InputError(f"{where}: {name} {tok} is outside the vocabulary")

    @property
    def q_dim(self) -> int:
        """Rows of q_proj (= num_heads * head_dim)."""
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Rows of k_proj and v_proj (= num_kv_heads * head_dim)."""
        return self.num_kv_heads * self.head_dim

    @property
    def is_moe(self) -> bool:
        """Whether the MLPs are mixtures of experts."""
        return self.moe is not None

    def to_json(self) -> dict:
        """A JSON-ready dict (sorted by the caller when written). The fields of
        :data:`OMITTED_AT_DEFAULT` are left out at their default, so a dense model's JSON is
        what maskc wrote before mixture-of-experts models existed."""
        d = asdict(self)
        d["eos_token_ids"] = list(self.eos_token_ids)
        for name, default in OMITTED_AT_DEFAULT.items():
            if d[name] == default:
                del d[name]
        return d

    @classmethod
    def from_json(cls, d: object, where: str) -> ModelArch:
        """The architecture :meth:`to_json` wrote (a build's model.json or netlist.json), read
        back from an untrusted file: every field present and of its type, no unknown field,
        then :meth:`validate` (InputError naming ``where`` and the field otherwise)."""
        arch = _from_json(cls, d, where)
        arch.validate(where)
        return arch


#: ModelArch fields :meth:`ModelArch.to_json` omits at these defaults (and from_json accepts
#: missing)
OMITTED_AT_DEFAULT = {"moe": None, "qk_norm": False}


def _from_json(cls, d: object, where: str):
    """A frozen IR dataclass from its JSON dict, by the annotation of each field: ``int``,
    ``float`` (an int is accepted), ``bool``, ``str``, ``X | None``, ``tuple[int, ...]`` (a JSON
    list) or a nested IR class with ``from_json``."""
    if not isinstance(d, dict):
        raise InputError(f"{where}: must be an object")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise InputError(f"{where}: unknown field {unknown[0]!r}")
    values = {}
    for f in fields(cls):
        if f.name not in d and cls is ModelArch and f.name in OMITTED_AT_DEFAULT:
            continue
        if f.name not in d:
            raise InputError(f"{where}: field {f.name!r} is missing")
        values[f.name] = _json_value(d[f.name], str(f.type), f"{where}: field {f.name!r}")
    return cls(**values)


def _json_value(v: object, kind: str, where: str) -> object:
    if kind.endswith(" | None"):
        return None if v is None else _json_value(v, kind[: -len(" | None")], where)
    if kind == "RopeScaling":
        return RopeScaling.from_json(v, where)
    if kind == "MoeConfig":
        return MoeConfig.from_json(v, where)
    if kind == "tuple[int, ...]":
        if not isinstance(v, list):
            raise InputError(f"{where} must be a list of integers")
        return tuple(_json_value(x, "int", where) for x in v)
    ok = {
        "int": isinstance(v, int) and not isinstance(v, bool),
        "float": isinstance(v, int | float) and not isinstance(v, bool),
        "bool": isinstance(v, bool),
        "str": isinstance(v, str),
    }
    if not ok[kind]:
        raise InputError(f"{where} must be of type {kind}, got {type(v).__name__}")
    return float(v) if kind == "float" else v


@dataclass(frozen=True)
class TensorSpec:
    """One weight tensor the architecture requires.

    ``role`` names what it is independent of the layer ("embed", "q_proj", "norm", ...);
    ``layer`` is the decoder layer index or ``None`` for model-level tensors; ``expert`` the
    routed expert a matrix belongs to (roles in :data:`EXPERT_ROLES`), ``None`` otherwise.
    """

    name: str
    shape: tuple[int, ...]
    role: str
    layer: int | None = None
    expert: int | None = None

    @property
    def parameters(self) -> int:
        return math.prod(self.shape)


#: Most decoder layers maskc builds (the largest published models have ~130): a bound on the
#: loops a config drives before any weight is seen (``compile --plan-only`` of a config alone).
MAX_LAYERS = 4096


#: Roles of a routed expert's matrices (gate, up, down), in data-flow order
EXPERT_ROLES = ("expert_gate_proj", "expert_up_proj", "expert_down_proj")
#: Roles of Qwen2-MoE's shared expert (always run, scaled by its sigmoid gate)
SHARED_EXPERT_ROLES = ("shared_gate_proj", "shared_up_proj", "shared_down_proj")
#: Roles of the small matrices that weight the experts: the router ``[num_experts, hidden]``
#: and the shared expert's gate ``[1, hidden]``
ROUTER_ROLES = ("router", "shared_expert_gate")


_EXPERT = re.compile(r"model\.layers\.\d+\.(?:mlp|block_sparse_moe)\.experts\.(\d+)\.")


def expert_of(name: str) -> int | None:
    """The routed expert a tensor name belongs to (``...experts.E....``), ``None`` otherwise."""
    m = _EXPERT.match(name)
    return int(m.group(1)) if m else None


def _moe_prefix(arch: ModelArch, n: int) -> str:
    """The module of layer ``n``'s sparse MLP: Mixtral's ``block_sparse_moe``, Qwen's ``mlp``."""
    sub = "block_sparse_moe" if arch.architecture == "MixtralForCausalLM" else "mlp"
    return f"model.layers.{n}.{sub}."


def moe_tensors(arch: ModelArch, n: int) -> list[TensorSpec]:
    """The mixture-of-experts MLP of layer ``n`` in data-flow order: the router, the shared
    expert's gate and its gate/up/down (Qwen2-MoE), then every expert's gate, up and down
    (expert 0 first; one expert's matrices next to each other). Mixtral names an expert's
    gate/up/down ``w1``/``w3``/``w2``."""
    moe = arch.moe
    h, p = arch.hidden_size, _moe_prefix(arch, n)
    out = [TensorSpec(p + "gate.weight", (moe.num_experts, h), "router", n)]
    s = moe.shared_expert_intermediate_size
    if s:
        q = p + "shared_expert."
        out += [
            TensorSpec(p + "shared_expert_gate.weight", (1, h), "shared_expert_gate", n),
            TensorSpec(q + "gate_proj.weight", (s, h), "shared_gate_proj", n),
            TensorSpec(q + "up_proj.weight", (s, h), "shared_up_proj", n),
            TensorSpec(q + "down_proj.weight", (h, s), "shared_down_proj", n),
        ]
    i = moe.expert_intermediate_size
    mixtral = arch.architecture == "MixtralForCausalLM"
    names = ("w1", "w3", "w2") if mixtral else ("gate_proj", "up_proj", "down_proj")
    shapes = ((i, h), (i, h), (h, i))
    for e in range(moe.num_experts):
        for name, shape, role in zip(names, shapes, EXPERT_ROLES, strict=True):
            out.append(TensorSpec(f"{p}experts.{e}.{name}.weight", shape, role, n, e))
    return out


def layer_tensors(arch: ModelArch, n: int) -> list[TensorSpec]:
    """The tensors of decoder layer ``n``, in data-flow order: input norm, q, k, v (and their
    biases, and Qwen3's q/k norms), o, post-attention norm, then the MLP: gate, up, down, or
    the mixture of experts (:func:`moe_tensors`)."""
    h, i = arch.hidden_size, arch.intermediate_size
    p = f"model.layers.{n}."
    layer = [
        TensorSpec(p + "input_layernorm.weight", (h,), "input_norm", n),
        TensorSpec(p + "self_attn.q_proj.weight", (arch.q_dim, h), "q_proj", n),
        TensorSpec(p + "self_attn.k_proj.weight", (arch.kv_dim, h), "k_proj", n),
        TensorSpec(p + "self_attn.v_proj.weight", (arch.kv_dim, h), "v_proj", n),
    ]
    if arch.attention_bias:
        layer += [
            TensorSpec(p + "self_attn.q_proj.bias", (arch.q_dim,), "q_bias", n),
            TensorSpec(p + "self_attn.k_proj.bias", (arch.kv_dim,), "k_bias", n),
            TensorSpec(p + "self_attn.v_proj.bias", (arch.kv_dim,), "v_bias", n),
        ]
    if arch.qk_norm:
        layer += [
            TensorSpec(p + "self_attn.q_norm.weight", (arch.head_dim,), "q_norm", n),
            TensorSpec(p + "self_attn.k_norm.weight", (arch.head_dim,), "k_norm", n),
        ]
    layer += [
        TensorSpec(p + "self_attn.o_proj.weight", (h, arch.q_dim), "o_proj", n),
        TensorSpec(p + "post_attention_layernorm.weight", (h,), "post_attention_norm", n),
    ]
    if arch.moe is not None:
        return layer + moe_tensors(arch, n)
    layer += [
        TensorSpec(p + "mlp.gate_proj.weight", (i, h), "gate_proj", n),
        TensorSpec(p + "mlp.up_proj.weight", (i, h), "up_proj", n),
        TensorSpec(p + "mlp.down_proj.weight", (h, i), "down_proj", n),
    ]
    return layer


def embedding_tensor(arch: ModelArch) -> TensorSpec:
    """The first tensor of every architecture: the token embedding."""
    return TensorSpec("model.embed_tokens.weight", (arch.vocab_size, arch.hidden_size), "embed")


def expected_tensors(arch: ModelArch, where: str = "config.json") -> list[TensorSpec]:
    """Every tensor ``arch`` needs, in canonical order (embedding, layers 0..L-1, norm, head).

    Layer order within a decoder layer follows the data flow (:func:`layer_tensors`). More
    than :data:`MAX_LAYERS` layers is an InputError naming ``where`` (the config), before the
    loop: a model whose weights are at hand is checked against them first
    (:func:`maskc.ingest.loader.load_model` names the first missing tensor).
    """
    if arch.num_layers > MAX_LAYERS:
        raise InputError(
            f"{where}: num_hidden_layers {arch.num_layers} is more than maskc builds "
            f"(at most {MAX_LAYERS})"
        )
    h, v = arch.hidden_size, arch.vocab_size
    out = [embedding_tensor(arch)]
    for n in range(arch.num_layers):
        out += layer_tensors(arch, n)
    out.append(TensorSpec("model.norm.weight", (h,), "final_norm"))
    if not arch.tie_word_embeddings:
        out.append(TensorSpec("lm_head.weight", (v, h), "lm_head"))
    return out


def parameter_count(arch: ModelArch) -> int:
    """Total parameters of ``arch`` (tied embeddings counted once), from the formula."""
    return sum(t.parameters for t in expected_tensors(arch))
