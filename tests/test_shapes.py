"""``maskc testmodel --shape``: published shapes with SYNTHETIC weights, written in bounded memory.

Small shapes only (a few MB): the published shapes are checked from config alone. Files are
checked independently of maskc where possible: the published parameter counts are the numbers
the model cards give, shard headers are parsed here (tests/test_testmodels.py's ``read_all``),
the streaming writer is compared byte for byte with the ``safetensors`` library's writer, and
the tokenizer is loaded with ``tokenizers``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save as st_save
from safetensors.numpy import save_file as st_save_file
from test_testmodels import folder_bytes, raw_header, read_all
from tokenizers import Tokenizer

from maskc.ingest import load_model
from maskc.ir import expected_tensors
from maskc.safetensors_io import SafetensorsWriter, write_safetensors
from maskc.testmodels import SHAPES, generate_shape, resolve_shape
from maskc.testmodels.streaming import plan_shards
from maskc.testmodels.synthetic import SEED_BLOCK_ELEMENTS, TensorGenerator, outlier_channels

#: A small Llama-3.1-8B-derived shape: 2 layers, hidden 256, 3 seed blocks in the embedding.
SMALL = [
    "--shape", "llama-3.1-8b", "--hidden", "256", "--intermediate", "512", "--layers", "2",
    "--heads", "4", "--kv-heads", "2", "--vocab", "3000",
]  # fmt: skip
SMALL_OVERRIDES = {
    "hidden": 256,
    "intermediate": 512,
    "layers": 2,
    "heads": 4,
    "kv_heads": 2,
    "vocab": 3000,
}

#: Parameter counts as the model cards / the published safetensors indexes give them.
PUBLISHED_PARAMETERS = {
    "llama-3.2-1b": 1_235_814_400,
    "llama-3.2-3b": 3_212_749_824,
    "llama-3.1-8b": 8_030_261_248,
    "llama-3.1-70b": 70_553_706_496,
    "llama-3.1-405b": 405_853_388_800,
    "qwen2.5-7b": 7_615_616_512,
    "mistral-7b": 7_241_732_096,
    "mixtral-8x7b": 46_702_792_704,
    "qwen3-30b-a3b": 30_532_122_624,
}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The SMALL shape, seed 0, written once through the CLI's generator."""
    path = tmp_path_factory.mktemp("shapes") / "small"
    return generate_shape(path, resolve_shape("llama-3.1-8b", SMALL_OVERRIDES), 0)


# --------------------------------------------------------------------------- shapes and --list


def test_published_shapes_have_the_published_sizes(cli):
    assert set(SHAPES) == set(PUBLISHED_PARAMETERS)
    r = cli("testmodel", "--list", "--json")
    assert r.code == 0
    doc = json.loads(r.out)
    for name, n in PUBLISHED_PARAMETERS.items():
        assert doc[name]["kind"] == "shape"
        assert doc[name]["parameters"] == n, name
        assert doc[name]["source"].startswith("https://huggingface.co/")
    assert doc["tiny"]["kind"] == "preset"
    text = cli("testmodel", "--list").out
    assert "llama-3.1-405b" in text and "SYNTHETIC" in text


def test_config_only_writes_config_and_tokenizer(cli, tmp_path):
    out = tmp_path / "c"
    r = cli("testmodel", out, "--shape", "qwen2.5-7b", "--config-only", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["weight_bytes"] == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]) == (3584, 28, 152064)
    assert cfg["architectures"] == ["Qwen2ForCausalLM"]
    # Qwen2.5's embedding has padding rows past its 151,665 tokens; so does the shape's
    assert Tokenizer.from_file(str(out / "tokenizer.json")).get_vocab_size() == 151665


@pytest.mark.parametrize("name", ["llama-3.1-8b", "mistral-7b"])
def test_tokenizer_has_the_vocabulary_size(cli, tmp_path, name):
    out = tmp_path / name
    assert cli("testmodel", out, "--shape", name, "--config-only").code == 0
    cfg = json.loads((out / "config.json").read_text())
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert tok.get_vocab_size() == cfg["vocab_size"]
    ids = tok.encode("The quick brown fox, 1887.").ids
    assert ids and max(ids) < cfg["vocab_size"]
    last = cfg["vocab_size"] - 1
    assert tok.decode([last]) == f"<|reserved_{last}|>"  # placeholder tokens decode to text


def test_overrides_give_the_asked_dimensions(small):
    cfg = json.loads((small.path / "config.json").read_text())
    assert cfg["hidden_size"] == 256 and cfg["intermediate_size"] == 512
    assert cfg["num_hidden_layers"] == 2 and cfg["vocab_size"] == 3000
    assert cfg["num_attention_heads"] == 4 and cfg["num_key_value_heads"] == 2
    assert cfg["head_dim"] == 64 and cfg["torch_dtype"] == "bfloat16"
    assert cfg["rope_scaling"]["rope_type"] == "llama3"  # the rest of the shape is Llama 3.1's
    tok = Tokenizer.from_file(str(small.path / "tokenizer.json"))
    assert tok.get_vocab_size() == 3000


# --------------------------------------------------------------------------- the folder


def test_maskc_loader_and_inspect_accept_the_folder(small, cli):
    m = load_model(small.path)
    m.check_data()
    assert m.total_parameters == small.total_parameters
    r = cli("inspect", small.path)
    assert r.code == 0, r.err
    assert "256" in r.out and "3000" in r.out


def test_weights_read_independently_match_the_spec(small):
    got = read_all(small.path)
    want = {t.name: t.shape for t in expected_tensors(small.arch)}
    assert {n: v[1] for n, v in got.items()} == want
    assert {v[0] for v in got.values()} == {"BF16"}
    for name, (_, _, vals) in got.items():
        assert np.isfinite(vals).all(), name
        assert vals.std() > 0, name


def test_synthetic_weights_have_outlier_channels_and_heavy_tails(small):
    got = read_all(small.path)
    outl = outlier_channels(0, 256)
    assert len(outl) == 2
    normal = np.setdiff1d(np.arange(256), outl)
    for layer in range(2):
        q = got[f"model.layers.{layer}.self_attn.q_proj.weight"][2]
        col = np.sqrt((q * q).mean(axis=0))
        # the same input channels stand out in every layer (as trained LLMs' activations do)
        assert col[outl].min() > 3 * np.median(col[normal])
        o = got[f"model.layers.{layer}.self_attn.o_proj.weight"][2]
        ocol = np.sqrt((o * o).mean(axis=0))
        assert ocol[outl].max() < 2.5 * np.median(ocol)  # o_proj does not read the hidden state
        assert set(np.argsort(col)[-2:]) == set(outl)
        down = got[f"model.layers.{layer}.mlp.down_proj.weight"][2].ravel()
        z = (down - down.mean()) / down.std()
        assert (z**4).mean() - 3 > 1.0  # heavy tails: excess kurtosis well above a normal's 0
        rows = np.sqrt((down.reshape(256, 512) ** 2).mean(axis=1))
        assert rows.std() / rows.mean() > 0.15  # rows of different scales
    assert got["model.norm.weight"][2].min() > 0


def test_padding_rows_are_zero(tmp_path):
    """Embedding and lm_head rows past the tokenizer's tokens are zero (Qwen2.5's padding)."""
    spec = dataclasses.replace(
        resolve_shape(
            "qwen2.5-7b",
            {"hidden": 128, "intermediate": 256, "layers": 1, "heads": 2, "kv_heads": 1},
        ),
        vocab_size=700,
        tokenizer_vocab_size=650,
    )
    gen = generate_shape(tmp_path / "q", spec, 3)
    got = read_all(gen.path)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        w = got[name][2]
        assert not w[650:].any() and (np.abs(w[:650]).sum(axis=1) > 0).all(), name
    assert got["model.layers.0.self_attn.q_proj.bias"][2].std() > 0
    assert Tokenizer.from_file(str(gen.path / "tokenizer.json")).get_vocab_size() == 650


# --------------------------------------------------------------------------- determinism


def test_same_shape_and_seed_give_byte_identical_files(cli, tmp_path, small):
    a = tmp_path / "a"
    assert cli("testmodel", a, *SMALL).code == 0
    assert folder_bytes(a) == folder_bytes(small.path)  # CLI == API, and run to run
    b = tmp_path / "b"
    assert cli("testmodel", b, *SMALL, "--seed", "1").code == 0
    fa, fb = folder_bytes(a), folder_bytes(b)
    assert fa["model.safetensors"] != fb["model.safetensors"]
    assert {k: v for k, v in fa.items() if k != "model.safetensors"} == {
        k: v for k, v in fb.items() if k != "model.safetensors"
    }


def test_chunk_size_changes_no_byte(tmp_path, small):
    spec = resolve_shape("llama-3.1-8b", SMALL_OVERRIDES)
    gen = generate_shape(tmp_path / "c1", spec, 0, chunk_blocks=1)
    assert folder_bytes(gen.path) == folder_bytes(small.path)


def test_deterministic_across_processes(tmp_path, small):
    """A fresh interpreter (another hash seed), with progress lines on a piped stderr."""
    out = tmp_path / "p"
    env = dict(os.environ, PYTHONHASHSEED="4321")
    env.pop("MASKC_PROGRESS", None)
    r = subprocess.run(
        [sys.executable, "-m", "maskc", "testmodel", str(out), *SMALL],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert folder_bytes(out) == folder_bytes(small.path)
    assert "maskc: writing weights: 0 bytes / 5.4 MB" in r.stderr
    assert "maskc: writing weights: done in" in r.stderr
    assert "SYNTHETIC" in r.stdout


def test_chunks_are_bounded():
    """Memory: a chunk is at most ``chunk_blocks`` seed blocks, whatever the tensor's size."""
    spec = resolve_shape("llama-3.1-8b", {"layers": 1})
    arch = spec.to_arch()
    emb = next(t for t in expected_tensors(arch) if t.name == "model.embed_tokens.weight")
    gen = TensorGenerator(emb, arch, 0, 128256, outlier_channels(0, 4096), ml_dtypes.bfloat16)
    chunks = gen.chunks(2)
    for _ in range(3):
        c = next(chunks)
        assert c.shape[1] == 4096 and c.size <= 2 * SEED_BLOCK_ELEMENTS
        assert c.dtype == ml_dtypes.bfloat16


# --------------------------------------------------------------------------- shards


def test_shard_index_is_valid(cli, tmp_path):
    out = tmp_path / "s"
    r = cli("testmodel", out, *SMALL, "--shard-size", "1MB", "--json")
    assert r.code == 0, r.err
    files = sorted(p.name for p in out.glob("*.safetensors"))
    n = len(files)
    assert n > 2
    assert files == [f"model-{k:05d}-of-{n:05d}.safetensors" for k in range(1, n + 1)]
    index = json.loads((out / "model.safetensors.index.json").read_text())
    got = read_all(out)  # every tensor exactly once, headers parsed independently
    assert set(index["weight_map"]) == set(got)
    sizes = {}
    for f in files:
        header, base = raw_header(out / f)
        header.pop("__metadata__")
        for name in header:
            assert index["weight_map"][name] == f, name
        sizes[f] = (out / f).stat().st_size - base
        assert sizes[f] <= 1_000_000 or len(header) == 1  # HF's rule: only a lone big tensor
    assert index["metadata"]["total_size"] == sum(sizes.values())
    # the model order runs through the shards (as Hugging Face writes them)
    order = [index["weight_map"][t.name] for t in expected_tensors(load_model(out).arch)]
    assert order == sorted(order)
    load_model(out).check_data()
    assert cli("inspect", out).code == 0
    # --shards N: N shards, same tensors and bytes
    out3 = tmp_path / "s3"
    assert cli("testmodel", out3, *SMALL, "--shards", "3").code == 0
    assert len(list(out3.glob("*.safetensors"))) == 3
    got3 = read_all(out3)
    assert all(np.array_equal(got3[k][2], got[k][2]) for k in got)


def test_plan_shards_rules():
    sizes = [("a", 4), ("b", 4), ("c", 10), ("d", 1), ("e", 1)]
    assert plan_shards(sizes, shard_size=8) == [["a", "b"], ["c"], ["d", "e"]]
    assert plan_shards(sizes) == [["a", "b", "c", "d", "e"]]
    groups = plan_shards(sizes, shards=5)
    assert groups == [["a"], ["b"], ["c"], ["d"], ["e"]]
    assert [g for g in plan_shards(sizes, shards=2) if g] == plan_shards(sizes, shards=2)


# --------------------------------------------------------------------------- the streaming writer


def test_streaming_writer_equals_the_safetensors_library(tmp_path, small):
    """A generated file is byte for byte what ``safetensors`` writes for the same arrays."""
    got = read_all(small.path)
    arrays = {n: v[2].astype(ml_dtypes.bfloat16) for n, v in got.items()}  # exact: bf16 values
    ours = (small.path / "model.safetensors").read_bytes()
    assert st_save(arrays, metadata={"format": "pt"}) == ours


def test_streaming_writer_in_pieces(tmp_path):
    rng = np.random.default_rng(5)
    arrays = {
        "w": rng.standard_normal((37, 16)).astype(ml_dtypes.bfloat16),
        "b": rng.standard_normal(16).astype(ml_dtypes.bfloat16),
        "e": np.zeros((0, 4), dtype=ml_dtypes.bfloat16),
        "a": rng.standard_normal((5, 3)).astype(ml_dtypes.bfloat16),
    }
    entries = [(n, "BF16", a.shape) for n, a in arrays.items()]
    path = tmp_path / "x.safetensors"
    with SafetensorsWriter(path, entries, {"format": "pt"}) as w:
        for name in sorted(arrays):
            a = arrays[name]
            for r0 in range(0, len(a), 10):  # rows in blocks of 10
                w.write(name, a[r0 : r0 + 10])
    st_path = tmp_path / "ref.safetensors"
    st_save_file(arrays, str(st_path), metadata={"format": "pt"})
    assert path.read_bytes() == st_path.read_bytes()
    mixed = {"f": np.ones((3, 2), np.float32), "h": np.ones(4, np.float16)}
    write_safetensors(tmp_path / "m1.safetensors", mixed)
    with SafetensorsWriter(
        tmp_path / "m2.safetensors", [("f", "F32", (3, 2)), ("h", "F16", (4,))]
    ) as w:
        w.write("f", mixed["f"])
        w.write("h", mixed["h"])
    assert (tmp_path / "m1.safetensors").read_bytes() == (tmp_path / "m2.safetensors").read_bytes()


def test_streaming_writer_refuses_misuse(tmp_path):
    entries = [("a", "F32", (2, 2)), ("b", "F32", (2,))]
    cases = [
        ("expected 'a'", "b", np.zeros(2, np.float32)),
        ("is F32", "a", np.zeros((2, 2), np.float16)),
        ("more than its bytes", "a", np.zeros((3, 2), np.float32)),
        ("got 8 of 16 bytes", "a", np.zeros((1, 2), np.float32)),
    ]
    for k, (match, name, piece) in enumerate(cases):
        with (
            pytest.raises(ValueError, match=match),
            SafetensorsWriter(tmp_path / f"{k}", entries) as w,
        ):
            w.write(name, piece)
    with pytest.raises(ValueError, match="given twice"):
        SafetensorsWriter(tmp_path / "5", [("a", "F32", (1,)), ("a", "F32", (1,))])


# --------------------------------------------------------------------------- bad options


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--shape", "llama-9"], "unknown shape"),
        (["--hidden", "abc"], "--hidden must be a positive integer"),
        (["--layers", "0"], "--layers must be a positive integer"),
        (["--heads", "5"], "multiple of --kv-heads"),
        (["--hidden", "4095"], "multiple of --heads"),
        (["--vocab", "100"], "--vocab (100) must be at least 259"),
        (["--shape", "llama-3.1-8b", "--preset", "tiny"], "exclude each other"),
        (["--preset", "tiny", "--layers", "2"], "applies to --shape"),
        (["--shape", "llama-3.2-1b", "--shards", "2", "--shard-size", "1GB"], "exclude"),
        (["--shape", "llama-3.2-1b", "--shard-size", "lots"], "--shard-size"),
        (["--shape", "llama-3.2-1b", "--dtype", "int8"], "--dtype"),
        (["--shape", "llama-3.2-1b", "--seed", "-1"], "--seed"),
        ([*SMALL, "--shards", "999"], "--shards 999"),
    ],
)
def test_bad_options_exit_2_with_one_line(cli, tmp_path, args, needle):
    out = tmp_path / "bad"
    r = cli("testmodel", out, *args)
    assert r.code == 2, (r.code, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("maskc: error: "), r.err
    assert needle in r.err and "Traceback" not in r.err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_not_enough_disk_is_exit_3_and_writes_nothing(cli, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 0, 10**6))
    out = tmp_path / "d"
    r = cli("testmodel", out, "--shape", "llama-3.1-8b")
    assert r.code == 3 and "16.06 GB" in r.err and "--config-only" in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
    r = cli("testmodel", out, "--shape", "llama-3.1-8b", "--config-only")  # needs no room
    assert r.code == 0, r.err


def test_existing_folder_needs_force(cli, tmp_path, small):
    out = tmp_path / "f"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    r = cli("testmodel", out, *SMALL)
    assert r.code == 3 and "--force" in r.err
    assert cli("testmodel", out, *SMALL, "--force").code == 0
    assert folder_bytes(out) == folder_bytes(small.path)


# --------------------------------------------------------------------------- end to end


def test_compile_a_small_shape_end_to_end(cli, tmp_path):
    model, build = tmp_path / "m", tmp_path / "b"
    args = ["--hidden", "128", "--intermediate", "256", "--layers", "1", "--heads", "2"]
    args += ["--kv-heads", "1", "--vocab", "600"]
    assert cli("testmodel", model, "--shape", "llama-3.2-1b", *args).code == 0
    r = cli(
        "compile", model, "-o", build, "--no-calib", "--fabric", "mini", "--layout-format", "oas"
    )
    assert r.code == 0, r.err
    assert "verified" in r.out
    r = cli("emulate", build, "-n", "3", "--prompt", "The quick brown fox")
    assert r.code == 0, r.err


def test_interrupted_write_leaves_nothing(cli, tmp_path, monkeypatch):
    """Written into a temporary folder renamed at the end: an interrupt leaves no half model."""
    from maskc.testmodels import streaming

    real = streaming.TensorGenerator.chunks
    calls = []

    def chunks(self, *a, **k):
        calls.append(self.spec.name)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(streaming.TensorGenerator, "chunks", chunks)
    r = cli("testmodel", tmp_path / "i", *SMALL)
    assert r.code == 130
    assert list(tmp_path.iterdir()) == []
