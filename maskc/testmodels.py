"""Seeded generator of tiny Llama-family models, written as real Hugging Face model folders.

Every test of maskc runs on these models: they are small (< 1 MB each), load with the usual
Hugging Face tooling, and exercise the corners a compiler must get right (tied and untied heads,
GQA, an explicit ``head_dim`` with ``num_heads * head_dim != hidden_size``, sizes that divide no
tile or group size, an odd vocabulary, sharded checkpoints, Llama-3 RoPE scaling, Qwen2 q/k/v
biases, Mistral sliding-window attention, F32/F16/BF16 storage).

``generate(out_dir, preset, seed)`` writes::

    config.json             genuine HF config of the architecture (sort_keys, indent 2)
    model.safetensors       or model-0000k-of-0000n.safetensors + model.safetensors.index.json
    tokenizer.json          byte-level BPE (GPT-2 style), built deterministically
    tokenizer_config.json   bos/eos strings, add_bos_token false, a ChatML chat_template
    generation_config.json  bos/eos ids

Determinism: the folder is a pure function of ``(preset, seed)``. Each tensor is drawn in float32
from ``np.random.default_rng(np.random.SeedSequence([seed, stable_int(name)]))`` where
``stable_int`` is derived with SHA-256 of the tensor name (never Python's salted ``hash()``),
then cast to the preset's dtype (round to nearest even). The same seed gives a byte-identical
folder; a different seed gives different weights and the same tokenizer.

Weight statistics (chosen so a forward pass neither explodes nor vanishes, and greedy decoding
from a random model is not stuck on one token):

* embeddings ``[vocab, hidden]``: normal(0, 0.2);
* linear weights ``[out, in]``: normal(0, 1) / sqrt(in) (unit gain: q, k, v, gate and up
  outputs have RMS ~1 since their input is RMS-normalized), except the residual-branch outputs
  ``o_proj`` and ``down_proj``, scaled by a further 2.5;
* untied ``lm_head`` ``[vocab, hidden]``: normal(0, 1) / sqrt(hidden) * 2 (logit std ~2);
* RMSNorm weights ``[hidden]``: 1 + normal(0, 0.05);
* q/k/v biases (Qwen2) ``[out]``: normal(0, 0.1);
* embedding rows beyond the tokenizer's vocabulary (padding, as in Qwen2) are zero, so with a
  tied head their logit is exactly 0 and greedy decoding never picks them.

Why the residual branches are strong relative to the embedding: with a tied head, the logit of
token j is ``rmsnorm(h) . E[j]``; if the residual stream ``h`` stays close to the input
embedding ``E[t]``, token t wins every step and greedy decoding repeats the last prompt token
forever. With the embedding-to-branch ratio above (0.2 vs ~2.5 per sub-layer; the residual RMS
grows to ~2-4 after two layers), a numpy reference forward pass over the presets and seeds 0-3
gave 10-12 distinct tokens in 24 greedy steps on average, about 1/3 of steps repeating the
previous token, median top-1/top-2 logit margin ~0.5 (tied logit std ~1.5).

The tokenizer: ids 0-2 are the added special tokens ``<|endoftext|>``, ``<|im_start|>``,
``<|im_end|>``; ids 3-258 the 256 byte-level alphabet symbols in code-point order; then the
merges learned greedily (most frequent pair, ties broken lexicographically) from an embedded
English text, until the tokenizer vocabulary reaches the preset's size. Digits are always split
one by one, so no merge contains a digit. bos = ``<|endoftext|>`` (0), eos = ``<|im_end|>`` (2),
as in SmolLM2.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import ml_dtypes
import numpy as np
from tokenizers import pre_tokenizers

from maskc.errors import UsageError
from maskc.ir import ModelArch, RopeScaling, expected_tensors, parameter_count
from maskc.safetensors_io import write_safetensors

#: ``architectures[0]`` -> ``model_type`` of config.json.
MODEL_TYPES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
}
#: safetensors dtype -> (numpy dtype the weights are cast to, config.json ``torch_dtype``).
DTYPES: dict[str, tuple[np.dtype, str]] = {
    "F32": (np.dtype("<f4"), "float32"),
    "F16": (np.dtype("<f2"), "float16"),
    "BF16": (np.dtype(ml_dtypes.bfloat16), "bfloat16"),
}
#: The added special tokens, in id order (ids 0, 1, 2).
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
BOS_TOKEN = "<|endoftext|>"
EOS_TOKEN = "<|im_end|>"
BOS_TOKEN_ID = 0
EOS_TOKEN_ID = 2
#: Number of ids before the first merge: 3 special tokens + 256 byte-level symbols.
BASE_VOCAB = len(SPECIAL_TOKENS) + 256
#: Standard deviation of embedding entries.
EMBED_STD = 0.2
#: Extra gain of o_proj and down_proj over the unit-gain 1/sqrt(fan_in) initialization.
RESIDUAL_BRANCH_GAIN = 2.5
#: ``transformers_version`` written into the JSON files (the schema the files follow).
TRANSFORMERS_VERSION = "4.46.0"
#: A small ChatML template (SmolLM2 / Qwen style).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
#: Every file name generate() may write (used to clear a folder when overwriting).
_WEIGHT_GLOBS = ("model.safetensors", "model-[0-9]*-of-[0-9]*.safetensors")
_JSON_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
)

#: The text the BPE merges are learned from: plain English with digits and punctuation.
CORPUS = """\
The quick brown fox jumps over the lazy dog. The dog sleeps in the sun, and the fox runs \
into the forest. In the morning, the farmer counts 12 sheep, 7 cows and 3 horses; by the \
evening there are 15 sheep, because 3 lambs were born in the night.

A compiler reads a program and writes another program. This compiler reads the weights of a \
language model and writes the masks of a chip: every weight becomes a pattern of metal on \
silicon, and the chip then runs the model without any memory for the weights at all. The \
process is slow to start but fast to run, and the model can never be changed again.

"Where are you going?" asked the teacher. "To the library," said the student, "to read \
about the history of the world." The library opened in 1887 and holds more than 40,000 \
books, 250 maps and 9 old clocks. Its doors open at 8:30 in the morning and close at 6:00 in \
the evening, every day except Sunday.

Numbers such as 3.14159, 2.71828 and 1,000,000 appear in many texts. A recipe might say: mix \
2 cups of flour with 1 cup of water, add a pinch of salt, and bake for 45 minutes at 180 \
degrees. The result should be golden on the outside and soft on the inside (if it is not, \
try again tomorrow).

Questions, answers, and more questions: what is the meaning of a word? Who writes the \
rules of a language? Why do some words sound the same but mean different things? The \
answers are not simple, but the questions are worth asking again and again.

The sun rises in the east and sets in the west. The stars come out at night, and the moon \
moves through the sky in about 29 days. Long ago, people used the stars to find their way \
across the sea; today a small machine in every pocket can tell where it is to within a few \
meters.
"""


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
        """config.json ``model_type`` ("llama", "mistral" or "qwen2")."""
        return MODEL_TYPES[self.architecture]

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
        # Qwen2 always has q/k/v biases; Llama's attention_bias would also add an o_proj bias,
        # which maskc.ir does not model, and Mistral has none.
        if self.attention_bias != (self.architecture == "Qwen2ForCausalLM"):
            raise ValueError(
                f"TinySpec {self.name!r}: attention_bias must be true for Qwen2 and false otherwise"
            )
        if self.sliding_window is not None and self.architecture != "MistralForCausalLM":
            raise ValueError(f"TinySpec {self.name!r}: sliding_window is only for Mistral")
        if self.rope_scaling is not None and self.architecture == "MistralForCausalLM":
            raise ValueError(f"TinySpec {self.name!r}: Mistral configs have no rope_scaling")
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
        )


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
    )
}


def preset_names() -> list[str]:
    """Names of the presets, in definition order (``"tiny"`` first)."""
    return list(PRESETS)


@dataclass(frozen=True)
class GeneratedModel:
    """What :func:`generate` wrote.

    ``tensors`` lists ``(name, shape, dtype)`` in :func:`maskc.ir.expected_tensors` order, dtype
    being the safetensors string (``"F32"``, ``"F16"``, ``"BF16"``); ``files`` the file names
    written into ``path`` (sorted); ``total_parameters`` the element count of all tensors (tied
    embeddings counted once), equal to :func:`maskc.ir.parameter_count` of ``arch``.
    """

    path: Path
    spec: TinySpec
    seed: int
    arch: ModelArch
    tensors: tuple[tuple[str, tuple[int, ...], str], ...]
    total_parameters: int
    files: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------
# Weights


def stable_int(name: str) -> int:
    """A 64-bit integer from SHA-256 of ``name``: identical in every process and platform."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stable_int(name)]))


def make_weights(spec: TinySpec, seed: int) -> dict[str, np.ndarray]:
    """All tensors of ``spec`` in ``expected_tensors`` order, cast to the storage dtype.

    Each array has the shape :func:`maskc.ir.expected_tensors` gives and dtype float32, float16
    or ``ml_dtypes.bfloat16`` per ``spec.dtype``. See the module docstring for the statistics.
    """
    arch = spec.to_arch()
    np_dtype = DTYPES[spec.dtype][0]
    branch_gain = np.float32(RESIDUAL_BRANCH_GAIN)
    n_tok = spec.resolved_tokenizer_vocab_size
    out: dict[str, np.ndarray] = {}
    for t in expected_tensors(arch):
        z = _rng(seed, t.name).standard_normal(t.shape, dtype=np.float32)
        if t.role == "embed":
            w = z * np.float32(EMBED_STD)
            w[n_tok:] = 0.0
        elif t.role == "lm_head":
            w = z * np.float32(2.0 / math.sqrt(t.shape[1]))
            w[n_tok:] = 0.0
        elif t.role.endswith("norm"):
            w = np.float32(1.0) + z * np.float32(0.05)
        elif t.role.endswith("bias"):
            w = z * np.float32(0.1)
        else:
            w = z * np.float32(1.0 / math.sqrt(t.shape[1]))
            if t.role in ("o_proj", "down_proj"):
                w *= branch_gain
        out[t.name] = np.ascontiguousarray(w.astype(np.float32).astype(np_dtype))
    return out


def _shard_groups(names: list[str], shards: int) -> list[list[str]]:
    """``names`` split into ``shards`` contiguous, non-empty groups of near-equal length."""
    q, r = divmod(len(names), shards)
    groups, start = [], 0
    for k in range(shards):
        n = q + (1 if k < r else 0)
        groups.append(names[start : start + n])
        start += n
    return groups


# --------------------------------------------------------------------------------------------
# Tokenizer


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """Digits one by one, then GPT-2 byte-level splitting (the tokenizer.json pre_tokenizer)."""
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )


def learn_merges(text: str, n_tokens: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Greedy byte-level BPE on ``text`` until the vocabulary has ``n_tokens`` entries.

    Returns ``(vocab, merges)``: ``vocab`` maps token -> id (specials 0-2, the byte alphabet
    3-258 in code-point order, then merged tokens in creation order); ``merges`` in rank order.
    At each step the most frequent adjacent pair wins, ties broken by the lexicographically
    smallest ``(left, right)``; a merge whose result already exists is recorded but adds no id.
    Stops early (fewer tokens) only if the text runs out of pairs.
    """
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    counts = Counter(piece for piece, _ in _pre_tokenizer().pre_tokenize_str(text))
    words = [[tuple(w), c] for w, c in sorted(counts.items())]
    merges: list[tuple[str, str]] = []
    while len(vocab) < n_tokens:
        pairs: Counter[tuple[str, str]] = Counter()
        for sym, c in words:
            for a, b in itertools.pairwise(sym):
                pairs[a, b] += c
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged = best[0] + best[1]
        if merged not in vocab:
            vocab[merged] = len(vocab)
        for entry in words:
            sym = entry[0]
            if len(sym) < 2:
                continue
            new, i = [], 0
            while i < len(sym):
                if i + 1 < len(sym) and (sym[i], sym[i + 1]) == best:
                    new.append(merged)
                    i += 2
                else:
                    new.append(sym[i])
                    i += 1
            entry[0] = tuple(new)
    return vocab, merges


def tokenizer_json(n_tokens: int) -> dict:
    """The ``tokenizer.json`` document (tokenizers schema 1.0) with ``n_tokens`` tokens.

    Merges are written as ``"left right"`` strings, which every ``tokenizers`` release reads
    (byte-level symbols never contain a literal space).
    """
    vocab, merges = learn_merges(CORPUS, n_tokens)
    byte_level = {"add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": tok,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for i, tok in enumerate(SPECIAL_TOKENS)
        ],
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Digits", "individual_digits": True},
                {"type": "ByteLevel", **byte_level},
            ],
        },
        "post_processor": {"type": "ByteLevel", **byte_level, "trim_offsets": False},
        "decoder": {"type": "ByteLevel", **byte_level},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "vocab": vocab,
            "merges": [f"{a} {b}" for a, b in merges],
        },
    }


# --------------------------------------------------------------------------------------------
# JSON files


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
    elif spec.model_type == "mistral":
        cfg.update(sliding_window=spec.sliding_window)
    else:  # qwen2: biases are implied by the architecture; the window is off
        cfg.update(
            max_window_layers=spec.num_layers,
            rope_scaling=dict(spec.rope_scaling) if spec.rope_scaling else None,
            sliding_window=spec.max_position_embeddings,
            use_sliding_window=False,
        )
    return cfg


def tokenizer_config_json(spec: TinySpec) -> dict:
    """``tokenizer_config.json``: special-token strings, no automatic BOS, ChatML template."""
    return {
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(i): {
                "content": tok,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for i, tok in enumerate(SPECIAL_TOKENS)
        },
        "additional_special_tokens": list(SPECIAL_TOKENS[1:]),
        "bos_token": BOS_TOKEN,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS_TOKEN,
        "model_max_length": spec.max_position_embeddings,
        "pad_token": EOS_TOKEN,
        "tokenizer_class": "GPT2Tokenizer",
        "unk_token": BOS_TOKEN,
    }


def generation_config_json(spec: TinySpec) -> dict:
    """``generation_config.json`` (bos/eos ids as in config.json)."""
    return {
        "_from_model_config": True,
        "bos_token_id": BOS_TOKEN_ID,
        "eos_token_id": EOS_TOKEN_ID,
        "transformers_version": TRANSFORMERS_VERSION,
    }


def _write_json(path: Path, doc: dict, *, sort_keys: bool = True) -> None:
    """``doc`` as UTF-8 JSON, indent 2, trailing newline (keys sorted unless told otherwise)."""
    text = json.dumps(doc, sort_keys=sort_keys, indent=2, ensure_ascii=False) + "\n"
    path.write_bytes(text.encode("utf-8"))


# --------------------------------------------------------------------------------------------
# Entry point


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


def generate(
    out_dir: str | Path,
    preset: str | TinySpec = "tiny",
    seed: int = 0,
    *,
    overwrite: bool = False,
) -> GeneratedModel:
    """Write the tiny model ``preset`` with weights from ``seed`` as an HF folder at ``out_dir``.

    ``out_dir`` is created if needed. If it exists and is not empty, :class:`UsageError` is
    raised unless ``overwrite`` is true, in which case only the files this function writes
    (``config.json``, ``model*.safetensors``, the index and the tokenizer/generation JSON files)
    are replaced; nothing else in the folder is touched. ``seed`` must be a non-negative int.
    """
    spec = resolve_preset(preset)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed!r}")
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise UsageError(f"{path}: directory is not empty (pass overwrite to replace)")
        for pattern in _WEIGHT_GLOBS:
            for old in sorted(path.glob(pattern)):
                old.unlink()
        for name in _JSON_FILES:
            (path / name).unlink(missing_ok=True)
    path.mkdir(parents=True, exist_ok=True)

    arch = spec.to_arch()
    weights = make_weights(spec, seed)
    names = list(weights)
    metadata = {"format": "pt"}
    files: list[str] = []
    if spec.shards == 1:
        write_safetensors(path / "model.safetensors", weights, metadata)
        files.append("model.safetensors")
    else:
        weight_map: dict[str, str] = {}
        n = spec.shards
        for k, group in enumerate(_shard_groups(names, n), start=1):
            fname = f"model-{k:05d}-of-{n:05d}.safetensors"
            write_safetensors(path / fname, {nm: weights[nm] for nm in group}, metadata)
            weight_map.update(dict.fromkeys(group, fname))
            files.append(fname)
        total_size = sum(int(w.nbytes) for w in weights.values())
        _write_json(
            path / "model.safetensors.index.json",
            {"metadata": {"total_size": total_size}, "weight_map": weight_map},
        )
        files.append("model.safetensors.index.json")

    _write_json(path / "config.json", config_json(spec))
    # tokenizer.json keeps the tokenizers layout: vocab in id order, merges in rank order.
    tok_doc = tokenizer_json(spec.resolved_tokenizer_vocab_size)
    _write_json(path / "tokenizer.json", tok_doc, sort_keys=False)
    _write_json(path / "tokenizer_config.json", tokenizer_config_json(spec))
    _write_json(path / "generation_config.json", generation_config_json(spec))
    files += ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]

    tensors = tuple((nm, tuple(weights[nm].shape), spec.dtype) for nm in names)
    total = sum(math.prod(shape) for _, shape, _ in tensors)
    if total != parameter_count(arch):  # pragma: no cover - guards ir/testmodels drift
        raise AssertionError(f"parameter total {total} != parameter_count {parameter_count(arch)}")
    return GeneratedModel(
        path=path,
        spec=spec,
        seed=seed,
        arch=arch,
        tensors=tensors,
        total_parameters=total,
        files=tuple(sorted(files)),
    )


def lora_shapes(arch) -> dict[tuple[int, str], tuple[int, int]]:
    """``{(layer, module): (out_features, in_features)}`` of every LoRA target of ``arch``
    (a :class:`maskc.ir.ModelArch`)."""
    h, i = arch.hidden_size, arch.intermediate_size
    q, kv = arch.num_heads * arch.head_dim, arch.num_kv_heads * arch.head_dim
    per = {"q_proj": (q, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, q),
           "gate_proj": (i, h), "up_proj": (i, h), "down_proj": (h, i)}  # fmt: skip
    return {(ly, m): s for ly in range(arch.num_layers) for m, s in per.items()}


def write_lora_adapter(
    out_dir: str | Path,
    arch,
    rank: int = 8,
    seed: int = 0,
    targets: tuple[str, ...] | None = None,
    layers: list[int] | None = None,
    alpha: float = 16.0,
    b_std: float = 0.02,
    use_rslora: bool = False,
    dtype: str = "F32",
) -> Path:
    """A seeded random PEFT LoRA adapter for ``arch`` (as PEFT saves one): ``lora_A`` with
    PEFT's default (Kaiming-uniform) scale, ``lora_B`` normal with ``b_std`` (PEFT starts it at
    0; a trained one is not), ``adapter_config.json`` naming ``targets`` (default: all seven
    projections) and ``layers``."""
    from maskc.adapters import TARGETS

    targets = tuple(TARGETS) if targets is None else targets

    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for (layer, mod), (rows, cols) in sorted(lora_shapes(arch).items()):
        if mod not in targets or (layers is not None and layer not in layers):
            continue
        rng = _rng(seed, f"lora.{layer}.{mod}")
        bound = 1.0 / math.sqrt(cols)
        pre = f"base_model.model.model.layers.{layer}.{TARGETS[mod]}.{mod}"
        a = rng.uniform(-bound, bound, (rank, cols))
        b = rng.normal(0.0, b_std, (rows, rank))
        for name, t in ((f"{pre}.lora_A.weight", a), (f"{pre}.lora_B.weight", b)):
            tensors[name] = np.ascontiguousarray(t.astype(np.float32).astype(DTYPES[dtype][0]))
    write_safetensors(path / "adapter_model.safetensors", tensors, {"format": "pt"})
    cfg = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": alpha,
        "lora_dropout": 0.0, "use_rslora": use_rslora, "bias": "none", "use_dora": False,
        "target_modules": sorted(targets), "layers_to_transform": layers,
        "base_model_name_or_path": None, "fan_in_fan_out": False, "modules_to_save": None,
        "init_lora_weights": True,
    }  # fmt: skip
    _write_json(path / "adapter_config.json", cfg)
    return path


__all__ = [
    "PRESETS",
    "GeneratedModel",
    "TinySpec",
    "generate",
    "lora_shapes",
    "preset_names",
    "resolve_preset",
    "write_lora_adapter",
]
