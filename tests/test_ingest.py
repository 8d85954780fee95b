"""Ingest: every bad input is exit 3 with a one-line message naming the problem; good inputs are
read exactly (checked against the independent ``safetensors`` library and raw bytes)."""

from __future__ import annotations

import json
import os
import struct
import tracemalloc

import ml_dtypes
import numpy as np
import pytest
from helpers import assert_bad
from safetensors import safe_open

from maskc.errors import InputError
from maskc.ingest import load_model
from maskc.testmodels import PRESETS, generate

# --------------------------------------------------------------------------- raw file helpers


def read_raw(path):
    """(header dict, data bytes) of a safetensors file, parsed here independently of maskc."""
    b = path.read_bytes()
    (n,) = struct.unpack("<Q", b[:8])
    return json.loads(b[8 : 8 + n]), b[8 + n :]


def write_raw(path, header, data, pad=True):
    blob = json.dumps(header).encode()
    if pad:
        blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


def edit_config(folder, **changes):
    p = folder / "config.json"
    cfg = json.loads(p.read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    p.write_text(json.dumps(cfg))


def first_tensor(header, dtype="F32"):
    return next(k for k, v in header.items() if k != "__metadata__" and v["dtype"] == dtype)


# --------------------------------------------------------------------------- good inputs


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_inspect_counts_match_generator(preset, model_cache, cli):
    gen = model_cache(preset)
    r = cli("inspect", gen.path, "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["total_parameters"] == gen.total_parameters
    assert [(t["name"], tuple(t["shape"]), t["dtype"]) for t in doc["tensors"]] == [
        (n, tuple(s), d) for n, s, d in gen.tensors
    ]
    assert all(t["parameters"] == int(np.prod(t["shape"])) for t in doc["tensors"])
    a = doc["architecture"]
    spec = gen.spec
    assert a["architecture"] == spec.architecture
    assert a["num_layers"] == spec.num_layers
    assert a["num_kv_heads"] == spec.num_kv_heads
    assert a["tie_word_embeddings"] == spec.tie_word_embeddings
    assert doc["data_checked"] is True
    assert doc["tokenizer"] is not None


def test_inspect_table_output(model_cache, cli):
    gen = model_cache("tiny-untied")
    r = cli("inspect", gen.path)
    assert r.code == 0, r.err
    assert f"{gen.total_parameters:,}" in r.out
    assert "LlamaForCausalLM" in r.out
    assert "lm_head.weight" in r.out
    assert "untied" in r.out


def test_single_file_with_config(model_cache, cli):
    gen = model_cache("tiny")
    r = cli(
        "inspect", gen.path / "model.safetensors", "--config", gen.path / "config.json", "--json"
    )
    assert r.code == 0, r.err
    assert json.loads(r.out)["total_parameters"] == gen.total_parameters


@pytest.mark.parametrize("preset", ["tiny", "tiny-untied", "tiny-gqa-bf16", "tiny-sharded"])
def test_read_values_match_independent_reader(preset, model_cache):
    """Model.read gives float32 values equal to the raw bytes decoded independently."""
    gen = model_cache(preset)
    m = load_model(gen.path)
    for f in m.files:
        header, data = read_raw(f)
        for name, e in header.items():
            if name == "__metadata__":
                continue
            b0, b1 = e["data_offsets"]
            dt = {"F32": "<f4", "F16": "<f2", "BF16": ml_dtypes.bfloat16}[e["dtype"]]
            want = np.frombuffer(data[b0:b1], dtype=dt).astype(np.float32).reshape(e["shape"])
            got = m.read(name)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, want)
        if all(e["dtype"] != "BF16" for k, e in header.items() if k != "__metadata__"):
            with safe_open(str(f), framework="numpy") as sf:
                for name in sf.keys():  # noqa: SIM118
                    np.testing.assert_array_equal(m.read(name), sf.get_tensor(name))


def test_memory_bounded_by_largest_tensor(tmp_path):
    """Reading every tensor keeps peak traced memory near the largest tensor, not the model."""
    from dataclasses import replace

    spec = replace(PRESETS["tiny"], name="deep", num_layers=24)
    gen = generate(tmp_path / "deep", spec, seed=1)
    m = load_model(gen.path)
    largest = max(s.parameters for s in m.specs) * 4
    model_bytes = gen.total_parameters * 4
    assert model_bytes > 10 * largest
    tracemalloc.start()
    m.check_data()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 3 * largest + (1 << 20), (peak, largest, model_bytes)


def test_ignorable_inv_freq_and_tied_lm_head(tiny_copy, cli):
    d = tiny_copy("tiny")
    header, data = read_raw(d / "model.safetensors")
    emb = header["model.embed_tokens.weight"]
    b0, b1 = emb["data_offsets"]
    extra = {
        "model.layers.0.self_attn.rotary_emb.inv_freq": (np.ones(8, np.float32)).tobytes(),
        "lm_head.weight": data[b0:b1],
    }
    for name, blob in extra.items():
        shape = [8] if "inv_freq" in name else emb["shape"]
        header[name] = {
            "dtype": "F32",
            "shape": shape,
            "data_offsets": [len(data), len(data) + len(blob)],
        }
        data += blob
    write_raw(d / "model.safetensors", header, data)
    r = cli("inspect", d, "--json")
    assert r.code == 0, r.err
    assert sorted(json.loads(r.out)["ignored_tensors"]) == sorted(extra)
    # a tied lm_head that differs from the embedding is an error
    header2, data2 = read_raw(d / "model.safetensors")
    h0, _h1 = header2["lm_head.weight"]["data_offsets"]
    data2 = data2[:h0] + (np.float32(0.5).tobytes()) + data2[h0 + 4 :]
    write_raw(d / "model.safetensors", header2, data2)
    assert_bad(cli("inspect", d), "lm_head.weight differs")


# --------------------------------------------------------------------------- bad inputs: paths


def test_missing_path(tmp_path, cli):
    assert_bad(cli("inspect", tmp_path / "nope"), "no such file")


def test_folder_without_config(tiny_copy, cli):
    d = tiny_copy()
    (d / "config.json").unlink()
    assert_bad(cli("inspect", d), "config.json")


def test_folder_without_weights(tiny_copy, cli):
    d = tiny_copy()
    (d / "model.safetensors").unlink()
    assert_bad(cli("inspect", d), "no weights")


def test_stray_shards_without_index(tiny_copy, cli):
    d = tiny_copy("tiny-sharded")
    (d / "model.safetensors.index.json").unlink()
    assert_bad(cli("inspect", d), "index")


def test_single_file_without_config(model_cache, cli):
    assert_bad(cli("inspect", model_cache().path / "model.safetensors"), "--model-config")


def test_symlink_loop(tmp_path, cli):
    a, b = tmp_path / "a", tmp_path / "b"
    os.symlink(b, a)
    os.symlink(a, b)
    assert_bad(cli("inspect", a), "symlink loop")


# --------------------------------------------------------------------------- bad inputs: config


def test_config_not_json(tiny_copy, cli):
    d = tiny_copy()
    (d / "config.json").write_text("{not json")
    assert_bad(cli("inspect", d), "config.json", "not valid JSON")


def test_config_not_object(tiny_copy, cli):
    d = tiny_copy()
    (d / "config.json").write_text("[1, 2]")
    assert_bad(cli("inspect", d), "JSON object")


@pytest.mark.parametrize(
    "field", ["hidden_size", "num_hidden_layers", "vocab_size", "architectures"]
)
def test_config_missing_field(tiny_copy, cli, field):
    d = tiny_copy()
    edit_config(d, **{field: None})
    assert_bad(cli("inspect", d), field)


def test_config_wrong_type(tiny_copy, cli):
    d = tiny_copy()
    edit_config(d, hidden_size="64")
    assert_bad(cli("inspect", d), "hidden_size", "integer")


def test_unsupported_architecture(tiny_copy, cli):
    d = tiny_copy()
    edit_config(d, architectures=["GPT2LMHeadModel"], model_type="gpt2")
    assert_bad(cli("inspect", d), "unsupported architecture", "GPT2LMHeadModel")


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "yarn"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"num_key_value_heads": 3}, "multiple"),
        ({"quantization_config": {"quant_method": "bitsandbytes"}}, "bitsandbytes"),
        ({"quantization_config": {"quant_method": "gptq"}}, "quantization_config.bits"),
        ({"rms_norm_eps": -1.0}, "rms_norm_eps"),
        ({"bos_token_id": 10_000_000}, "outside the vocabulary"),
    ],
)
def test_config_unsupported_or_invalid(tiny_copy, cli, change, needle):
    d = tiny_copy()
    edit_config(d, **change)
    assert_bad(cli("inspect", d), needle)


# ------------------------------------------------------------------------ bad inputs: safetensors


def test_truncated(tiny_copy, cli):
    d = tiny_copy()
    p = d / "model.safetensors"
    p.write_bytes(p.read_bytes()[:-100])
    assert_bad(cli("inspect", d), "model.safetensors", "truncated")


def test_empty_file(tiny_copy, cli):
    d = tiny_copy()
    (d / "model.safetensors").write_bytes(b"")
    assert_bad(cli("inspect", d), "shorter than the 8-byte header")


def test_header_length_absurd(tiny_copy, cli):
    d = tiny_copy()
    p = d / "model.safetensors"
    p.write_bytes(struct.pack("<Q", 1 << 60) + p.read_bytes()[8:])
    assert_bad(cli("inspect", d), "header length", "absurd")


def test_header_length_past_end(tiny_copy, cli):
    d = tiny_copy()
    p = d / "model.safetensors"
    size = p.stat().st_size
    p.write_bytes(struct.pack("<Q", size) + p.read_bytes()[8:])
    assert_bad(cli("inspect", d), "past the end")


def test_header_not_json(tiny_copy, cli):
    d = tiny_copy()
    p = d / "model.safetensors"
    b = bytearray(p.read_bytes())
    b[8] = ord("X")
    p.write_bytes(bytes(b))
    assert_bad(cli("inspect", d), "not valid UTF-8 JSON")


def test_offsets_out_of_range(tiny_copy, cli):
    d = tiny_copy()
    header, data = read_raw(d / "model.safetensors")
    name = first_tensor(header)
    b0, b1 = header[name]["data_offsets"]
    header[name]["data_offsets"] = [b0 + len(data), b1 + len(data)]
    write_raw(d / "model.safetensors", header, data)
    assert_bad(cli("inspect", d), "out of range", name)


def test_offsets_overlapping(tiny_copy, cli):
    d = tiny_copy()
    header, data = read_raw(d / "model.safetensors")
    names = sorted(
        (k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0]
    )
    a, b = names[0], names[1]  # shift b onto a's bytes (same size not needed: sizes checked)
    size_b = header[b]["data_offsets"][1] - header[b]["data_offsets"][0]
    start = header[a]["data_offsets"][1] - 4
    header[b]["data_offsets"] = [start, start + size_b]
    write_raw(d / "model.safetensors", header, data)
    assert_bad(cli("inspect", d), "overlap")


def test_holes_in_buffer(tiny_copy, cli):
    d = tiny_copy()
    header, data = read_raw(d / "model.safetensors")
    write_raw(d / "model.safetensors", header, data + b"\0" * 16)
    assert_bad(cli("inspect", d), "not indexed")


def test_size_shape_mismatch(tiny_copy, cli):
    d = tiny_copy()
    header, data = read_raw(d / "model.safetensors")
    name = first_tensor(header)
    header[name]["shape"] = [header[name]["shape"][0], 1]
    assert_bad_after_write(d, header, data, cli, "bytes stored")


def assert_bad_after_write(d, header, data, cli, *needles):
    write_raw(d / "model.safetensors", header, data)
    assert_bad(cli("inspect", d), *needles)


@pytest.mark.parametrize("dtype", ["I32", "U32"])
def test_dtype_unsupported_same_size(tiny_copy, cli, dtype):
    d = tiny_copy()
    header, data = read_raw(d / "model.safetensors")
    name = first_tensor(header)
    header[name]["dtype"] = dtype
    assert_bad_after_write(d, header, data, cli, dtype, "F32, F16 and BF16")


def test_dtype_f8_and_i64(tiny_copy, cli):
    """F8_E4M3 (1 byte) and I64 (8 bytes) tensors with consistent sizes are refused by dtype."""
    for dtype, itemsize in (("F8_E4M3", 1), ("I64", 8)):
        d = tiny_copy()
        header, data = read_raw(d / "model.safetensors")
        name = "model.norm.weight"
        n = int(np.prod(header[name]["shape"]))
        entries = sorted(
            ((k, v) for k, v in header.items() if k != "__metadata__"),
            key=lambda kv: kv[1]["data_offsets"][0],
        )
        new_header, blob = {}, b""
        for k, v in entries:
            b0, b1 = v["data_offsets"]
            chunk = bytes(n * itemsize) if k == name else data[b0:b1]
            new_header[k] = {
                **v,
                "dtype": dtype if k == name else v["dtype"],
                "data_offsets": [len(blob), len(blob) + len(chunk)],
            }
            blob += chunk
        assert_bad_after_write(d, new_header, blob, cli, dtype, name)


def test_dtype_unknown(tiny_copy, cli):
    d = tiny_copy()
    header, data = read_raw(d / "model.safetensors")
    header[first_tensor(header)]["dtype"] = "Q4"
    assert_bad_after_write(d, header, data, cli, "unknown dtype")


def test_duplicate_tensor_name_in_header(tiny_copy, cli):
    d = tiny_copy()
    header, data = read_raw(d / "model.safetensors")
    name = first_tensor(header)
    blob = json.dumps(header).encode()
    dup = json.dumps({name: header[name]})[1:-1].encode()  # '"name": {...}'
    blob = blob[:-1] + b", " + dup + b"}"
    blob += b" " * (-len(blob) % 8)
    (d / "model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    assert_bad(cli("inspect", d), name, "twice")


def test_config_duplicate_key(tiny_copy, cli):
    d = tiny_copy()
    text = (d / "config.json").read_text().rstrip().rstrip("}")
    (d / "config.json").write_text(text + ', "hidden_size": 65}')
    assert_bad(cli("inspect", d), "config.json", "hidden_size", "twice")


def test_metadata_not_strings(tiny_copy, cli):
    d = tiny_copy()
    header, data = read_raw(d / "model.safetensors")
    header["__metadata__"] = {"format": 3}
    assert_bad_after_write(d, header, data, cli, "__metadata__")


# --------------------------------------------------------------------------- bad inputs: tensors


def _drop_tensor(d, name):
    header, data = read_raw(d / "model.safetensors")
    entries = sorted(
        ((k, v) for k, v in header.items() if k not in ("__metadata__", name)),
        key=lambda kv: kv[1]["data_offsets"][0],
    )
    new_header, blob = {}, b""
    for k, v in entries:
        b0, b1 = v["data_offsets"]
        new_header[k] = {**v, "data_offsets": [len(blob), len(blob) + b1 - b0]}
        blob += data[b0:b1]
    write_raw(d / "model.safetensors", new_header, blob)


def test_tensor_missing(tiny_copy, cli):
    d = tiny_copy()
    _drop_tensor(d, "model.layers.1.mlp.up_proj.weight")
    assert_bad(cli("inspect", d), "model.layers.1.mlp.up_proj.weight", "missing")


def test_tensor_extra(tiny_copy, cli):
    d = tiny_copy()
    header, data = read_raw(d / "model.safetensors")
    header["model.layers.0.mlp.extra_proj.weight"] = {
        "dtype": "F32",
        "shape": [2],
        "data_offsets": [len(data), len(data) + 8],
    }
    write_raw(d / "model.safetensors", header, data + bytes(8))
    assert_bad(cli("inspect", d), "unexpected tensor", "extra_proj")


def test_tensor_wrong_shape(tiny_copy, cli):
    d = tiny_copy()
    cfg = json.loads((d / "config.json").read_text())
    edit_config(d, intermediate_size=cfg["intermediate_size"] + 1)
    assert_bad(cli("inspect", d), "shape", "gate_proj")


def test_zero_size_tensor(tiny_copy, cli):
    d = tiny_copy()
    header, data = read_raw(d / "model.safetensors")
    _drop_tensor(d, "model.norm.weight")
    header, data = read_raw(d / "model.safetensors")
    header["model.norm.weight"] = {"dtype": "F32", "shape": [0], "data_offsets": [len(data)] * 2}
    write_raw(d / "model.safetensors", header, data)
    assert_bad(cli("inspect", d), "model.norm.weight", "shape [0]")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite(tiny_copy, cli, value):
    d = tiny_copy()
    header, data = read_raw(d / "model.safetensors")
    name = "model.layers.0.self_attn.k_proj.weight"
    b0, _ = header[name]["data_offsets"]
    data = data[: b0 + 12] + np.float32(value).tobytes() + data[b0 + 16 :]
    write_raw(d / "model.safetensors", header, data)
    assert_bad(cli("inspect", d), name, "NaN/Inf", "(0, 3)")
    # --headers-only does not read data and so accepts it
    assert cli("inspect", d, "--headers-only").code == 0


# --------------------------------------------------------------------------- bad inputs: shards


def test_index_names_missing_shard(tiny_copy, cli):
    d = tiny_copy("tiny-sharded")
    shard = sorted(d.glob("model-*.safetensors"))[1]
    shard.unlink()
    assert_bad(cli("inspect", d), shard.name, "does not exist")


def test_index_path_traversal(tiny_copy, cli):
    d = tiny_copy("tiny-sharded")
    p = d / "model.safetensors.index.json"
    idx = json.loads(p.read_text())
    name = next(iter(idx["weight_map"]))
    idx["weight_map"][name] = "../evil.safetensors"
    p.write_text(json.dumps(idx))
    assert_bad(cli("inspect", d), "plain")


def test_index_lies_about_location(tiny_copy, cli):
    d = tiny_copy("tiny-sharded")
    p = d / "model.safetensors.index.json"
    idx = json.loads(p.read_text())
    shards = sorted(set(idx["weight_map"].values()))
    name = next(k for k, v in idx["weight_map"].items() if v == shards[0])
    idx["weight_map"][name] = shards[1]
    p.write_text(json.dumps(idx))
    assert_bad(cli("inspect", d), name, "index")


def test_index_omits_tensor(tiny_copy, cli):
    d = tiny_copy("tiny-sharded")
    p = d / "model.safetensors.index.json"
    idx = json.loads(p.read_text())
    name = sorted(idx["weight_map"])[0]
    del idx["weight_map"][name]
    p.write_text(json.dumps(idx))
    assert_bad(cli("inspect", d), name, "does not list it")


def test_index_not_json(tiny_copy, cli):
    d = tiny_copy("tiny-sharded")
    (d / "model.safetensors.index.json").write_text("nope")
    assert_bad(cli("inspect", d), "index", "not valid JSON")


def test_duplicate_tensor_across_shards(tiny_copy, cli):
    d = tiny_copy("tiny-sharded")
    shards = sorted(d.glob("model-*.safetensors"))
    h0, d0 = read_raw(shards[0])
    h1, d1 = read_raw(shards[1])
    name = first_tensor(h0)
    b0, b1 = h0[name]["data_offsets"]
    h1[name] = {**h0[name], "data_offsets": [len(d1), len(d1) + b1 - b0]}
    write_raw(shards[1], h1, d1 + d0[b0:b1])
    assert_bad(cli("inspect", d), name)


# --------------------------------------------------------------------------- bad inputs: tokenizer


def test_tokenizer_corrupt(tiny_copy, cli):
    d = tiny_copy()
    (d / "tokenizer.json").write_text('{"model": 1}')
    assert_bad(cli("inspect", d), "tokenizer.json")


def test_tokenizer_larger_than_vocab(tiny_copy, cli):
    d = tiny_copy()
    cfg = json.loads((d / "config.json").read_text())
    tok = json.loads((d / "tokenizer.json").read_text())
    tok["added_tokens"].append(
        {
            "id": cfg["vocab_size"] + 5,
            "content": "<|big|>",
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
    )
    (d / "tokenizer.json").write_text(json.dumps(tok))
    assert_bad(cli("inspect", d), "tokenizer", "outside the model's vocab_size")


def test_load_model_api_raises_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_model(tmp_path / "x")
