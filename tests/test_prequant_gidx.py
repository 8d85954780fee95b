"""desc_act (activation-order ``g_idx``) on every matrix (issue 21, part gidx): a GPTQ
checkpoint whose every linear layer was quantized in an activation order compiles exactly. Each
matrix but down_proj (folded into gate/up, docs/import-design.md) gets an input permutation
``P``: its ROM holds the columns in the order ``P`` (consecutive groups), the netlist records
``P`` (params ``NAME.input_perm``, the boot image's gather table) and the chip reads
``Q8(v[P], f, 32)`` (docs/numerics.md, "Input permutation"). Checked: the tiles read back by
hand are the permuted matrices exactly; the report says imported with zero error; verify;
--plan-only places it the same way; the emulator equals tests/intref.py bit for bit (greedy
and logits; with a LoRA adapter on permuted matrices too) and follows the float reference of
the checkpoint's own (unpermuted) dequantization; the netlist validator refuses a table that
is not a permutation (and a property test of it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import intref
import numpy as np
import pytest
from helpers import raw_fields, weights_by_hand
from hypothesis import given, settings
from hypothesis import strategies as st
from prequant_pack import LINEAR, quantize_folder
from test_prequant_compile import _rows_exact

from maskc.romformat import is_permutation

TOKENS = [1, 5, 9]


def _float_reference(d: Path, refs: dict, dst: Path) -> Path:
    """The checkpoint's float reference: every packed weight replaced by its definition."""
    from maskc.safetensors_io import SafetensorsFile, write_safetensors

    shutil.copytree(d, dst)
    cfg = json.loads((dst / "config.json").read_text())
    del cfg["quantization_config"]
    (dst / "config.json").write_text(json.dumps(cfg))
    st_ = SafetensorsFile(dst / "model.safetensors")
    t = {n: st_.read_raw(n) for n in st_.tensors if n.split(".")[-1] == "weight"}
    del st_
    t |= {n: w.astype(np.float32) for n, w in refs.items()}
    write_safetensors(dst / "model.safetensors", t)
    return dst


def _same_as_intref(b: Path, adapters=()) -> None:
    from maskc.emulate.run import generate, open_session
    from maskc.emulate.sampling import SamplingParams

    rows: list = []
    sess = open_session(b, adapters=list(adapters))
    g = generate(sess, TOKENS, 3, SamplingParams(), False, keep_logits=rows)
    ref = intref.IntRef(b, adapters=[str(a) for a in adapters])
    toks, ref_rows = intref.generate(ref, TOKENS, 3, 0.0, 0, 1.0, 0)
    assert g.tokens == toks and [r.tolist() for r in rows] == ref_rows


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """The tiny llama preset as GPTQ with desc_act on every linear layer, compiled."""
    from maskc.testmodels import generate

    root = tmp_path_factory.mktemp("gidx")
    src = generate(root / "src", "tiny", 0).path
    d = root / "gptq"
    _qc, refs = quantize_folder(Path(src), d, "gptq", desc_act=LINEAR)
    b = root / "b"
    from maskc.pipeline.options import CompileOptions
    from maskc.pipeline.runner import compile_model

    compile_model(d, b, CompileOptions(fabric="mini"))
    return d, refs, b, root


def test_every_matrix_is_imported_exactly_with_its_input_permutation(llama, cli):
    from safetensors.numpy import load_file

    d, refs, b, root = llama
    raw = load_file(d / "model.safetensors")
    rep = json.loads((b / "reports" / "quant.json").read_text())
    _rows_exact(rep["tensors"], refs)
    nl = json.loads((b / "netlist" / "netlist.json").read_text())
    assert nl["version"] == 6
    params = load_file(b / "netlist" / "params.safetensors")
    seen = 0
    for name, ref in refs.items():
        prefix = name[: -len(".weight")]
        g_idx = raw[prefix + ".g_idx"].astype(np.int64)
        assert not np.array_equal(g_idx, np.arange(len(g_idx)) // 32)  # a real permutation
        perm = np.argsort(g_idx, kind="stable")
        m = nl["matrices"][name]
        if name.endswith("down_proj.weight"):  # folded: no run-time gather
            assert "input_perm" not in m
            continue
        # the gather table is P itself, and the ROM holds the columns in P's order
        assert m["input_perm"] == name + ".input_perm"
        assert np.array_equal(params[name + ".input_perm"], perm)
        if ".mlp." in name:  # gate/up: their rows follow down_proj's fold
            down = raw[prefix.rsplit(".", 1)[0] + ".down_proj.g_idx"].astype(np.int64)
            ref = ref[np.argsort(down, kind="stable")]
        got = weights_by_hand(raw_fields(b, name), ref.shape)
        assert np.array_equal(got, ref[:, perm].astype(np.float32)), name
        seen += 1
    assert seen == 12
    assert cli("verify", b).code == 0
    # --plan-only places it the same way (the gather tables in the boot image included)
    p = root / "plan"
    assert cli("compile", d, "-o", p, "--plan-only", "--fabric", "mini").code == 0
    place = [json.loads((x / "reports" / "placement.json").read_text()) for x in (p, b)]
    assert place[0] == place[1]
    boot = json.loads((b / "boot" / "index.json").read_text())
    names = {e["name"]: e for e in boot["dies"][0]["entries"]}
    e = names["model.layers.1.self_attn.q_proj.weight.input_perm"]
    assert e["dtype"] == "int32" and e["count"] == 64


def test_emulated_equals_intref_and_follows_the_checkpoint(llama, cli):
    d, refs, b, root = llama
    _same_as_intref(b)
    f = _float_reference(d, refs, root / "float")
    e = cli("emulate", b, "--tokens", "1,5,9,13,17,21,25,29", "--compare", f, "--json")
    assert e.code == 0, e.err
    doc = json.loads(e.out)
    assert doc["kl_mean"] < 1e-2 and doc["top1_agreement"] >= 7 / 8, doc
    # --compare-dequantized: the build's weights back in the checkpoint's column order
    e = cli("emulate", b, "--tokens", "1,5,9,13,17,21,25,29", "--compare-dequantized", "--json")
    assert e.code == 0, e.err
    assert json.loads(e.out)["kl_mean"] < 1e-2


def test_lora_adapter_on_permuted_matrices_equals_intref(llama, tmp_path, cli):
    """The adapter's A meets the gathered input with its columns gathered the same way."""
    from maskc.ingest import load_model
    from maskc.testmodels import write_lora_adapter

    d, _refs, b, _root = llama
    ad = write_lora_adapter(
        tmp_path / "ad", load_model(d).arch, rank=2, targets=("q_proj", "o_proj")
    )
    _same_as_intref(b, [ad])


def test_netlist_input_perm_is_validated(llama, tmp_path):
    """A gather table that is not a permutation, of the wrong dtype or shape, or named by no
    matrix is exit 3 naming the matrix (the corpus has these too, through the CLI)."""
    from safetensors.numpy import load_file

    from maskc.errors import InputError
    from maskc.netlist import load_netlist
    from maskc.safetensors_io import write_safetensors

    _d, _refs, b, _root = llama
    name = "model.layers.0.self_attn.k_proj.weight"
    key = name + ".input_perm"
    good = load_file(b / "netlist" / "params.safetensors")[key]
    stray = "model.layers.0.mlp.down_proj.weight.input_perm"
    for label, (k, v), want in (
        ("dup", (key, np.zeros(64, np.int32)), "not a permutation"),
        ("dtype", (key, good.astype(np.int64)), "expected int32 [64]"),
        ("shape", (key, good[:32]), "expected int32 [64]"),
        ("stray", (stray, np.arange(160, dtype=np.int32)), "no matrix"),
    ):
        c = tmp_path / label
        shutil.copytree(b, c)
        pf = c / "netlist" / "params.safetensors"
        arrays = load_file(pf)
        arrays[k] = v
        write_safetensors(pf, arrays)
        with pytest.raises(InputError) as exc:
            load_netlist(c)
        msg = str(exc.value)
        assert want in msg and "\n" not in msg, msg
        assert (name if label != "stray" else stray) in msg, msg


@given(st.lists(st.integers(-3, 12), max_size=12), st.integers(0, 12))
@settings(max_examples=200, deadline=None)
def test_is_permutation_property(values, n):
    p = np.asarray(values, dtype=np.int64)
    assert is_permutation(p, n) == (sorted(values) == list(range(n)))


def test_moe_experts_each_their_own_permutation(tmp_path, cli):
    """An MoE preset (qwen2-moe: routed experts and a shared expert) with desc_act everywhere:
    every expert's gate/up its own gather (the packer seeds each matrix's order apart),
    emulated equal to the reference."""
    from maskc.testmodels import generate

    src = generate(tmp_path / "src", "qwen2-moe", 0).path
    d = tmp_path / "gptq"
    _qc, _refs = quantize_folder(Path(src), d, "gptq", desc_act=LINEAR)
    b = tmp_path / "b"
    r = cli("compile", d, "-o", b, "--fabric", "mini")
    assert r.code == 0, r.err
    nl = json.loads((b / "netlist" / "netlist.json").read_text())
    permuted = [n for n, m in nl["matrices"].items() if "input_perm" in m]
    assert "model.layers.0.mlp.experts.0.gate_proj.weight" in permuted
    assert "model.layers.1.mlp.experts.3.up_proj.weight" in permuted
    assert "model.layers.1.mlp.shared_expert.up_proj.weight" in permuted
    assert cli("verify", b).code == 0
    _same_as_intref(b)
