"""The typed intermediate representation passed between maskc's stages.

Every IR object is a frozen dataclass with a ``validate()`` method that raises
:class:`maskc.errors.InputError` naming the offending field. Stages take IR in and give IR out;
the pipeline validates after every step (FINN-style), so a bug or a hostile input is caught at
the boundary where it appears.

This module holds the model-level IR produced by ingest:

* :class:`RopeScaling` and :class:`ModelArch`: the architecture parsed from ``config.json``;
* :class:`TensorSpec`: one expected weight tensor (name, shape, role);
* :func:`expected_tensors`: the complete, ordered list of tensors an architecture must have.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from maskc.errors import InputError
from maskc.limits import check_number

#: Architectures maskc implements end to end (config.json ``architectures[0]``).
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")


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

    def to_json(self) -> dict:
        """A JSON-ready dict (sorted by the caller when written)."""
        d = asdict(self)
        d["eos_token_ids"] = list(self.eos_token_ids)
        return d

    @classmethod
    def from_json(cls, d: object, where: str) -> ModelArch:
        """The architecture :meth:`to_json` wrote (a build's model.json or netlist.json), read
        back from an untrusted file: every field present and of its type, no unknown field,
        then :meth:`validate` (InputError naming ``where`` and the field otherwise)."""
        arch = _from_json(cls, d, where)
        arch.validate(where)
        return arch


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
        if f.name not in d:
            raise InputError(f"{where}: field {f.name!r} is missing")
        values[f.name] = _json_value(d[f.name], str(f.type), f"{where}: field {f.name!r}")
    return cls(**values)


def _json_value(v: object, kind: str, where: str) -> object:
    if kind.endswith(" | None"):
        return None if v is None else _json_value(v, kind[: -len(" | None")], where)
    if kind == "RopeScaling":
        return RopeScaling.from_json(v, where)
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
    ``layer`` is the decoder layer index or ``None`` for model-level tensors.
    """

    name: str
    shape: tuple[int, ...]
    role: str
    layer: int | None = None

    @property
    def parameters(self) -> int:
        return math.prod(self.shape)


#: Most decoder layers maskc builds (the largest published models have ~130): a bound on the
#: loops a config drives before any weight is seen (``compile --plan-only`` of a config alone).
MAX_LAYERS = 4096


def layer_tensors(arch: ModelArch, n: int) -> list[TensorSpec]:
    """The tensors of decoder layer ``n``, in data-flow order: input norm, q, k, v (and their
    biases), o, post-attention norm, gate, up, down."""
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
    layer += [
        TensorSpec(p + "self_attn.o_proj.weight", (h, arch.q_dim), "o_proj", n),
        TensorSpec(p + "post_attention_layernorm.weight", (h,), "post_attention_norm", n),
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
