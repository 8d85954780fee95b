"""The tiny-model generator: real HF folders, exact shapes, byte-for-byte determinism.

Everything is checked independently of maskc where possible: tensor shapes and parameter totals
from formulas written here (not ``maskc.ir``), weights through the ``safetensors`` library or a
header parse done here, the tokenizer through ``tokenizers.Tokenizer.from_file``.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open
from tokenizers import Tokenizer

from maskc.errors import InputError, UsageError
from maskc.ir import expected_tensors
from maskc.testmodels import PRESETS, TinySpec, generate, preset_names

NAMES = preset_names()
ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2}
TORCH_DTYPE = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
MODEL_TYPE = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "MixtralForCausalLM": "mixtral",
    "Qwen2MoeForCausalLM": "qwen2_moe",
    "Qwen3MoeForCausalLM": "qwen3_moe",
}


def dims(s: TinySpec) -> tuple[int, int, int, int, int]:
    """(hidden, intermediate, vocab, q_dim, kv_dim) of a spec, head_dim defaulted HF-style."""
    d = s.head_dim or s.hidden_size // s.num_heads
    return s.hidden_size, s.intermediate_size, s.vocab_size, s.num_heads * d, s.num_kv_heads * d


# --------------------------------------------------------------------------- independent helpers


def independent_shapes(s: TinySpec) -> dict[str, tuple[int, ...]]:
    """Every tensor name -> shape, written out from the HF Llama/Qwen2/Mistral layouts and the
    Hub checkpoints of Mixtral (block_sparse_moe, w1/w3/w2), Qwen2-MoE (mlp.gate, experts,
    shared_expert, shared_expert_gate) and Qwen3-MoE (q_norm, k_norm)."""
    h, i, v, q, kv = dims(s)
    out = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    if not s.tie_word_embeddings:
        out["lm_head.weight"] = (v, h)
    for n in range(s.num_layers):
        p = f"model.layers.{n}."
        out |= {
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (q, h),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, q),
        }
        if s.architecture == "MixtralForCausalLM":
            out[p + "block_sparse_moe.gate.weight"] = (s.num_experts, h)
            for e in range(s.num_experts):
                x = f"{p}block_sparse_moe.experts.{e}."
                out |= {x + "w1.weight": (i, h), x + "w3.weight": (i, h), x + "w2.weight": (h, i)}
        elif s.num_experts:
            m = s.moe_intermediate_size
            out[p + "mlp.gate.weight"] = (s.num_experts, h)
            for e in range(s.num_experts):
                x = f"{p}mlp.experts.{e}."
                out |= {
                    x + "gate_proj.weight": (m, h),
                    x + "up_proj.weight": (m, h),
                    x + "down_proj.weight": (h, m),
                }
            if s.shared_expert_intermediate_size:
                sh = s.shared_expert_intermediate_size
                out |= {
                    p + "mlp.shared_expert_gate.weight": (1, h),
                    p + "mlp.shared_expert.gate_proj.weight": (sh, h),
                    p + "mlp.shared_expert.up_proj.weight": (sh, h),
                    p + "mlp.shared_expert.down_proj.weight": (h, sh),
                }
        else:
            out |= {
                p + "mlp.gate_proj.weight": (i, h),
                p + "mlp.up_proj.weight": (i, h),
                p + "mlp.down_proj.weight": (h, i),
            }
        if s.architecture == "Qwen3MoeForCausalLM":
            d = q // s.num_heads
            out |= {p + "self_attn.q_norm.weight": (d,), p + "self_attn.k_norm.weight": (d,)}
        if s.attention_bias:
            out |= {
                p + "self_attn.q_proj.bias": (q,),
                p + "self_attn.k_proj.bias": (kv,),
                p + "self_attn.v_proj.bias": (kv,),
            }
    return out


def formula_parameters(s: TinySpec) -> int:
    """Closed-form parameter count (tied embeddings counted once)."""
    h, i, v, q, kv = dims(s)
    per_layer = 2 * h + 2 * q * h + 2 * kv * h + (q + 2 * kv) * s.attention_bias
    if s.num_experts:  # router + experts (+ shared expert and its gate) (+ q/k norms)
        e = s.moe_intermediate_size or i
        sh = s.shared_expert_intermediate_size
        per_layer += s.num_experts * h + s.num_experts * 3 * h * e + (3 * h * sh + h if sh else 0)
        per_layer += 2 * (q // s.num_heads) * (s.architecture == "Qwen3MoeForCausalLM")
    else:
        per_layer += 3 * h * i
    return v * h * (1 if s.tie_word_embeddings else 2) + h + s.num_layers * per_layer


def raw_header(path: Path) -> tuple[dict, int]:
    """(header JSON, byte offset of the data buffer), parsed here without any library."""
    b = path.read_bytes()
    (n,) = struct.unpack("<Q", b[:8])
    return json.loads(b[8 : 8 + n]), 8 + n


def read_all(folder: Path) -> dict[str, tuple[str, tuple[int, ...], np.ndarray]]:
    """name -> (dtype, shape, float32 values) for every weight file in ``folder``.

    F32/F16 go through ``safetensors.safe_open``; BF16 (which numpy lacks) is decoded here from
    the raw bytes (bf16 = the top 16 bits of a float32), after checking the header offsets.
    """
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        header, base = raw_header(f)
        assert header.pop("__metadata__") == {"format": "pt"}
        data = f.read_bytes()
        spans = sorted(tuple(e["data_offsets"]) for e in header.values())
        pos = 0
        for b0, b1 in spans:  # contiguous, no holes, no overlap, covers the whole buffer
            assert b0 == pos
            pos = b1
        assert base + pos == len(data)
        for name, e in header.items():
            shape = tuple(e["shape"])
            b0, b1 = e["data_offsets"]
            assert b1 - b0 == int(np.prod(shape)) * ITEMSIZE[e["dtype"]]
            if e["dtype"] == "BF16":
                bits = np.frombuffer(data[base + b0 : base + b1], dtype="<u2").astype(np.uint32)
                vals = (bits << 16).view(np.float32).reshape(shape)
            else:
                with safe_open(str(f), framework="numpy") as sf:
                    vals = sf.get_tensor(name).astype(np.float32)
                assert vals.shape == shape
            assert name not in out, f"{name} stored twice"
            out[name] = (e["dtype"], shape, vals)
    return out


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Each preset generated once (seed 0) for the read-only tests."""
    root = tmp_path_factory.mktemp("testmodels")
    return {n: generate(root / n, n, 0) for n in NAMES}


# --------------------------------------------------------------------------- presets


def test_preset_names_and_properties():
    assert NAMES[0] == "tiny"
    assert set(NAMES) == {
        "tiny",
        "tiny-untied",
        "tiny-gqa-bf16",
        "tiny-odd",
        "tiny-sharded",
        "tiny-qwen2",
        "tiny-mistral",
        "mixtral",
        "qwen2-moe",
        "qwen3-moe",
    }
    p = PRESETS
    assert p["tiny"].tie_word_embeddings and p["tiny"].dtype == "F32"
    assert (p["tiny"].num_heads, p["tiny"].num_kv_heads) == (4, 2)
    assert not p["tiny-untied"].tie_word_embeddings and p["tiny-untied"].dtype == "F16"
    assert p["tiny-untied"].num_heads == p["tiny-untied"].num_kv_heads
    g = p["tiny-gqa-bf16"]
    assert g.dtype == "BF16" and g.num_heads * g.head_dim != g.hidden_size
    o = p["tiny-odd"]
    assert (o.hidden_size, o.intermediate_size, o.vocab_size, o.num_layers) == (72, 200, 301, 3)
    assert (o.num_heads, o.num_kv_heads, o.head_dim) == (3, 1, 24)
    s = p["tiny-sharded"]
    assert s.shards == 3 and not s.tie_word_embeddings and s.rope_scaling["rope_type"] == "llama3"
    assert p["tiny-qwen2"].attention_bias and p["tiny-qwen2"].tie_word_embeddings
    assert p["tiny-mistral"].sliding_window == 32 and not p["tiny-mistral"].tie_word_embeddings
    for spec in p.values():
        hash(spec)  # frozen and hashable even with a rope_scaling dict


@pytest.mark.parametrize("name", NAMES)
def test_folder_config_and_weights(made, name):
    gen = made[name]
    s = gen.spec
    folder = gen.path
    weight_files = (
        ["model.safetensors"]
        if s.shards == 1
        else [f"model-{k:05d}-of-{s.shards:05d}.safetensors" for k in range(1, s.shards + 1)]
        + ["model.safetensors.index.json"]
    )
    expected_files = {
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        *weight_files,
    }
    assert {p.name for p in folder.iterdir()} == expected_files
    assert set(gen.files) == expected_files

    # config.json: sorted keys, indent 2, and what the spec says
    text = (folder / "config.json").read_text()
    cfg = json.loads(text)
    assert text == json.dumps(cfg, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    d = s.head_dim or s.hidden_size // s.num_heads
    assert cfg["architectures"] == [s.architecture]
    assert cfg["model_type"] == MODEL_TYPE[s.architecture]
    assert cfg["vocab_size"] == s.vocab_size
    assert cfg["hidden_size"] == s.hidden_size
    assert cfg["intermediate_size"] == s.intermediate_size
    assert cfg["num_hidden_layers"] == s.num_layers
    assert cfg["num_attention_heads"] == s.num_heads
    assert cfg["num_key_value_heads"] == s.num_kv_heads
    assert cfg["head_dim"] == d
    assert cfg["tie_word_embeddings"] == s.tie_word_embeddings
    assert cfg["torch_dtype"] == TORCH_DTYPE[s.dtype]
    assert cfg["rope_theta"] == s.rope_theta
    assert cfg["rms_norm_eps"] == s.rms_norm_eps
    assert cfg["max_position_embeddings"] == s.max_position_embeddings
    assert cfg["hidden_act"] == "silu"
    assert (cfg["bos_token_id"], cfg["eos_token_id"]) == (0, 2)
    if cfg["model_type"] == "llama":
        assert cfg["attention_bias"] is False and cfg["mlp_bias"] is False
        assert cfg["rope_scaling"] == s.rope_scaling
    elif cfg["model_type"] in ("mistral", "mixtral"):
        assert cfg["sliding_window"] == s.sliding_window
        assert "attention_bias" not in cfg
    else:
        assert cfg["use_sliding_window"] is False
        assert cfg.get("attention_bias", False) is False
    gc = json.loads((folder / "generation_config.json").read_text())
    assert (gc["bos_token_id"], gc["eos_token_id"]) == (0, 2)

    # gen.arch agrees with config.json
    a = gen.arch
    assert (a.architecture, a.model_type, a.vocab_size, a.hidden_size) == (
        s.architecture,
        cfg["model_type"],
        cfg["vocab_size"],
        cfg["hidden_size"],
    )
    assert (a.num_layers, a.num_heads, a.num_kv_heads, a.head_dim) == (
        cfg["num_hidden_layers"],
        cfg["num_attention_heads"],
        cfg["num_key_value_heads"],
        d,
    )
    assert a.tie_word_embeddings == cfg["tie_word_embeddings"]
    assert a.attention_bias == (cfg["model_type"] in ("qwen2", "qwen2_moe"))
    window = cfg["model_type"] in ("mistral", "mixtral")
    assert a.sliding_window == (cfg["sliding_window"] if window else None)
    assert a.qk_norm == (cfg["model_type"] == "qwen3_moe")
    assert (a.moe is None) == (s.num_experts == 0)
    if a.moe is not None:  # the config's fields, under either architecture's names
        assert cfg.get("num_local_experts", cfg.get("num_experts")) == a.moe.num_experts
        assert cfg["num_experts_per_tok"] == a.moe.top_k
        assert cfg.get("moe_intermediate_size", cfg["intermediate_size"]) == (
            a.moe.expert_intermediate_size
        )
    assert (a.bos_token_id, a.eos_token_ids) == (0, (2,))
    assert (a.rope_scaling is None) == (s.rope_scaling is None)
    a.validate()

    # weights: exactly the expected names and shapes, parameter total from the formula
    shapes = independent_shapes(s)
    stored = read_all(folder)
    assert set(stored) == set(shapes)
    for n, (dtype, shape, vals) in stored.items():
        assert dtype == s.dtype, n
        assert shape == shapes[n], n
        assert np.isfinite(vals).all(), n
    total = sum(int(np.prod(sh)) for sh in shapes.values())
    assert total == formula_parameters(s) == gen.total_parameters
    assert [t[0] for t in gen.tensors] == [t.name for t in expected_tensors(gen.arch)]
    assert all(t[1] == shapes[t[0]] and t[2] == s.dtype for t in gen.tensors)
    assert sum(len(b) for f, b in folder_bytes(folder).items()) < 1_000_000


@pytest.mark.parametrize("name", NAMES)
def test_weight_statistics_are_sane(made, name):
    """Scales that keep a forward pass finite and non-degenerate (see the module docstring)."""
    gen = made[name]
    s = gen.spec
    w = {n: v for n, (_, _, v) in read_all(gen.path).items()}
    n_tok = s.tokenizer_vocab_size or s.vocab_size
    emb = w["model.embed_tokens.weight"]
    assert 0.15 < emb[:n_tok].std() < 0.25 and abs(emb.mean()) < 0.02
    assert not emb[n_tok:].any()  # padding rows beyond the tokenizer are zero
    for n, v in w.items():
        if n.endswith("norm.weight"):
            assert 0.97 < v.mean() < 1.03 and 0.02 < v.std() < 0.08, n
        elif n.endswith(("q_proj.weight", "k_proj.weight", "gate_proj.weight", "gate.weight")):
            assert 0.8 < v.std() * np.sqrt(v.shape[1]) < 1.2, n
        elif n.endswith(("o_proj.weight", "down_proj.weight", ".w2.weight")):
            assert 2.0 < v.std() * np.sqrt(v.shape[1]) < 3.0, n
        elif n.endswith(".bias"):
            assert 0.0 < v.std() < 0.2, n
    # every matrix differs from every other (per-tensor streams really are independent)
    firsts = {tuple(v.reshape(-1)[:8]) for v in w.values()}
    assert len(firsts) == len(w)


def test_qwen2_padding_rows_and_biases(made):
    gen = made["tiny-qwen2"]
    w = read_all(gen.path)
    assert gen.spec.tokenizer_vocab_size < gen.spec.vocab_size
    for n in range(gen.spec.num_layers):
        for proj in ("q", "k", "v"):
            assert f"model.layers.{n}.self_attn.{proj}_proj.bias" in w
        assert f"model.layers.{n}.self_attn.o_proj.bias" not in w


def test_bf16_values_round_to_nearest_from_float32(tmp_path):
    """The BF16 bytes are the float32 draw rounded to nearest even (ml_dtypes), not truncated."""
    from maskc.testmodels import make_weights

    spec = PRESETS["tiny-gqa-bf16"]
    gen = generate(tmp_path / "m", spec, 5)
    f32 = make_weights(replace(spec, dtype="F32"), 5)
    stored = read_all(gen.path)
    for n, v in f32.items():
        want = v.astype(ml_dtypes.bfloat16).astype(np.float32)
        np.testing.assert_array_equal(stored[n][2], want)


# --------------------------------------------------------------------------- sharding


def test_sharded_index(made):
    gen = made["tiny-sharded"]
    folder = gen.path
    text = (folder / "model.safetensors.index.json").read_text()
    index = json.loads(text)
    assert text == json.dumps(index, sort_keys=True, indent=2) + "\n"
    assert set(index) == {"metadata", "weight_map"}
    wm = index["weight_map"]
    assert list(wm) == sorted(wm)
    shard_files = sorted(set(wm.values()))
    assert shard_files == [f"model-0000{k}-of-00003.safetensors" for k in (1, 2, 3)]
    seen: dict[str, str] = {}
    nbytes = 0
    for f in shard_files:
        header, base = raw_header(folder / f)
        header.pop("__metadata__")
        for name, e in header.items():
            assert name not in seen, f"{name} in {seen.get(name)} and {f}"
            seen[name] = f
            nbytes += e["data_offsets"][1] - e["data_offsets"][0]
        end = max(e["data_offsets"][1] for e in header.values())
        assert (folder / f).stat().st_size == base + end
    assert seen == wm
    assert set(wm) == set(independent_shapes(gen.spec))
    assert index["metadata"]["total_size"] == nbytes == gen.total_parameters * 4
    # contiguous groups in canonical order
    order = [wm[name] for name, _, _ in gen.tensors]
    assert order == sorted(order)


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", ["tiny-sharded", "tiny-gqa-bf16", "tiny-qwen2"])
def test_same_seed_is_byte_identical_and_seeds_differ(tmp_path, name):
    a = folder_bytes(generate(tmp_path / "a", name, 7).path)
    b = folder_bytes(generate(tmp_path / "b", name, 7).path)
    assert a == b
    c_gen = generate(tmp_path / "c", name, 8)
    c = folder_bytes(c_gen.path)
    assert a.keys() == c.keys()
    for f in a:
        if f.endswith(".safetensors"):
            assert a[f] != c[f], f
        else:  # config, index, tokenizer files do not depend on the seed
            assert a[f] == c[f], f
    wa, wc = read_all(tmp_path / "a"), read_all(c_gen.path)
    for n in wa:
        if wa[n][1] != (1,):
            assert not np.array_equal(wa[n][2], wc[n][2]), n


def test_deterministic_across_processes(tmp_path, made):
    """A fresh interpreter with another hash seed writes the same bytes."""
    code = "import sys; from maskc.testmodels import generate as g; g(*sys.argv[1:3], 0)"
    for name in ("tiny", "tiny-odd"):
        env = dict(os.environ, PYTHONHASHSEED="12345")
        out = tmp_path / name
        subprocess.run([sys.executable, "-c", code, str(out), name], check=True, env=env)
        assert folder_bytes(out) == folder_bytes(made[name].path)


def test_every_preset_same_tokenizer_family(made):
    """Presets with the same tokenizer size share tokenizer.json byte for byte."""
    by_size: dict[int, bytes] = {}
    for gen in made.values():
        n = gen.spec.tokenizer_vocab_size or gen.spec.vocab_size
        b = (gen.path / "tokenizer.json").read_bytes()
        assert by_size.setdefault(n, b) == b


# --------------------------------------------------------------------------- tokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "In 1887 the library held 40,000 books; pi is 3.14159!",
    "héllo wörld — naïve café, ÆØÅ, ß",
    "日本語のテキスト and 中文 mixed with emoji 🙂🚀 and tabs\tand\nnewlines  double  spaces",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "",
    "   leading and trailing   ",
    "\x00\x01 control bytes \x7f",
]


@pytest.mark.parametrize("name", ["tiny", "tiny-odd", "tiny-sharded", "tiny-qwen2"])
def test_tokenizer_works(made, name):
    gen = made[name]
    s = gen.spec
    tok = Tokenizer.from_file(str(gen.path / "tokenizer.json"))
    n_tok = s.tokenizer_vocab_size or s.vocab_size
    assert tok.get_vocab_size() == n_tok <= s.vocab_size
    vocab = tok.get_vocab()
    assert sorted(vocab.values()) == list(range(n_tok))
    specials = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
    assert [tok.token_to_id(t) for t in specials] == [0, 1, 2]
    doc = json.loads((gen.path / "tokenizer.json").read_text())
    merges = doc["model"]["merges"]
    assert len(merges) == n_tok - 259  # the corpus yields no duplicate merge results
    assert not any(ch.isdigit() for m in merges for ch in m)
    assert [a["id"] for a in doc["added_tokens"]] == [0, 1, 2]
    assert all(a["special"] for a in doc["added_tokens"])
    alphabet = [t for t, i in sorted(vocab.items(), key=lambda kv: kv[1]) if 3 <= i < 259]
    assert alphabet == sorted(alphabet) and len(set(alphabet)) == 256

    for text in TEXTS:
        ids = tok.encode(text).ids
        assert all(0 <= i < n_tok for i in ids)
        assert tok.decode(ids, skip_special_tokens=False) == text, text
    # merges are real: common English compresses
    english = "the quick brown fox and the lazy dog in the morning"
    assert len(tok.encode(english).ids) < 0.7 * len(english.encode())
    # digits one by one
    enc = tok.encode("year 2024 and 3.14")
    digit_tokens = [t for t in enc.tokens if any(c.isdigit() for c in t)]
    assert digit_tokens == ["2", "0", "2", "4", "3", "1", "4"]
    # a special token is one id, even glued to text
    ids = tok.encode("<|im_start|>assistant").ids
    assert ids[0] == 1 and 1 not in ids[1:]
    assert tok.encode("x<|im_end|>y").ids.count(2) == 1


def test_tokenizer_config(made):
    gen = made["tiny"]
    tc = json.loads((gen.path / "tokenizer_config.json").read_text())
    assert tc["bos_token"] == "<|endoftext|>" and tc["eos_token"] == "<|im_end|>"
    assert tc["add_bos_token"] is False
    assert "<|im_start|>" in tc["chat_template"] and "add_generation_prompt" in tc["chat_template"]
    assert tc["added_tokens_decoder"]["1"]["content"] == "<|im_start|>"


def test_odd_vocab_is_3_plus_256_plus_42(made):
    doc = json.loads((made["tiny-odd"].path / "tokenizer.json").read_text())
    assert len(doc["model"]["vocab"]) == 301 and len(doc["model"]["merges"]) == 42


# --------------------------------------------------------------------------- errors and options


def test_unknown_preset_and_bad_seed(tmp_path):
    with pytest.raises(UsageError, match="tiny-odd"):
        generate(tmp_path / "x", "no-such-preset")
    for bad in (-1, 1.5, True):
        with pytest.raises(UsageError, match="seed"):
            generate(tmp_path / "y", "tiny", bad)


def test_refuses_non_empty_dir_unless_overwrite(tmp_path):
    out = tmp_path / "m"
    generate(out, "tiny-sharded", 0)
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        generate(out, "tiny", 0)
    gen = generate(out, "tiny", 0, overwrite=True)
    names = {p.name for p in out.iterdir()}
    assert "keep.txt" in names  # untouched
    assert not any(n.startswith("model-") for n in names)  # stale shards removed
    assert names - {"keep.txt"} == set(gen.files)
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="not a directory"):
        generate(tmp_path / "file", "tiny")


@pytest.mark.parametrize(
    "changes",
    [
        {"attention_bias": True},  # Llama: would need an o_proj bias maskc does not model
        {"architecture": "Qwen2ForCausalLM"},  # Qwen2 without biases
        {"dtype": "F64"},
        {"sliding_window": 16},  # only Mistral
        {"head_dim": None, "num_heads": 5},  # 64 % 5
        {"num_kv_heads": 3},
        {"tokenizer_vocab_size": 100},
        {"tokenizer_vocab_size": 400},
        {"shards": 0},
        {"architecture": "GPT2LMHeadModel"},
    ],
)
def test_invalid_specs_are_rejected(tmp_path, changes):
    spec = replace(PRESETS["tiny"], name="bad", **changes)
    with pytest.raises((ValueError, InputError)) as e:
        generate(tmp_path / "bad", spec)
    assert "bad" in str(e.value)
    assert not (tmp_path / "bad").exists()


def test_custom_spec(tmp_path):
    spec = replace(PRESETS["tiny"], name="deep", num_layers=5, dtype="F16", shards=2)
    gen = generate(tmp_path / "deep", spec, 3)
    assert gen.total_parameters == formula_parameters(spec)
    assert set(read_all(gen.path)) == set(independent_shapes(spec))
    assert (gen.path / "model-00002-of-00002.safetensors").exists()
