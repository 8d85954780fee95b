"""Pre-quantized checkpoints compiled end to end (issue 21): tiny GPTQ, AWQ and
compressed-tensors checkpoints packed by tests/prequant_pack.py (written from the formats'
descriptions) from the seeded tiny preset; every quantized layer imported exactly (its stored
weights, read back by hand from the build, equal the checkpoint's definition
``scale * (q - zero)`` bit for bit), the report saying so, inspect describing the checkpoint,
conflicting settings warned about and never applied."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import quantizer_output, raw_fields, weights_by_hand
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prequant_pack import quantize_folder

from maskc.pipeline.options import CompileOptions


@pytest.fixture
def ckpt(model_cache, tmp_path):
    def make(method, **kw):
        src = model_cache("tiny").path
        dst = tmp_path / f"{method}-ckpt"
        _qc, refs = quantize_folder(Path(src), dst, method, **kw)
        return dst, refs

    return make


def _rows_exact(rows, refs):
    imported = {r["name"]: r for r in rows if r["method"] == "imported"}
    assert set(imported) == set(refs)
    for r in imported.values():
        assert r["rel_error"] == 0.0 and r["snr_db"] is None and r["quantized"]


@pytest.mark.parametrize(
    "method,kw",
    [
        ("gptq", {"bits": 3, "v1": False}),
        ("gptq", {"bits": 8, "sym": True}),
        ("awq", {}),
        ("compressed-tensors", {"sym": True}),
        ("compressed-tensors", {"sym": False}),
    ],
)
def test_every_format_is_imported_exactly(ckpt, tmp_path, method, kw):
    """The quantize stage of each format and width: quant/ holds the checkpoint's weights
    exactly and the report rows say "imported" with zero error."""
    d, refs = ckpt(method, **kw)
    out = tmp_path / "build"
    quantizer_output(d, out, CompileOptions(fabric="mini"))
    idx = json.loads((out / "quant" / "index.json").read_text())["tensors"]
    for name, ref in refs.items():
        assert idx[name]["method"] == "imported"
        got = weights_by_hand(raw_fields(out, name), ref.shape)
        assert np.array_equal(got, ref.astype(np.float32)), name
        assert idx[name]["format"]["bits"] == kw.get("bits", 4)


def test_gptq_compiles_verifies_and_emulates(ckpt, tmp_path, cli):
    """A whole compile: the netlist's matrices (read back by hand from its tiles) are the
    checkpoint's weights bit for bit, the report says "imported, exact", the layers verify
    and the emulator runs."""
    d, refs = ckpt("gptq")
    b = tmp_path / "b"
    r = cli("compile", d, "-o", b, "--fabric", "mini", "--json")
    assert r.code == 0, r.err
    rep = json.loads((b / "reports" / "quant.json").read_text())
    _rows_exact(rep["tensors"], refs)
    for name, ref in refs.items():
        got = weights_by_hand(raw_fields(b, name), ref.shape)
        assert np.array_equal(got, ref.astype(np.float32)), name
    # the float reference of the output error is the checkpoint's dequantized model: only the
    # embedding (quantized by maskc) differs from it
    assert rep["output"]["kl_mean"] < 1e-2
    assert cli("verify", b).code == 0
    e = cli("emulate", b, "--prompt", "hello", "--max-tokens", "3")
    assert e.code == 0, e.err


def test_report_table_says_imported_exact(ckpt, tmp_path, cli):
    d, _ = ckpt("awq")
    r = cli("compile", d, "-o", tmp_path / "b", "--fabric", "mini", "--no-verify")
    assert r.code == 0, r.err
    assert "imported, exact" in r.out


def test_conflicting_bits_warn_and_keep_the_import(ckpt, tmp_path, cli):
    d, refs = ckpt("gptq")
    b = tmp_path / "b"
    r = cli("compile", d, "-o", b, "--fabric", "mini", "--no-verify", "--bits", "3")
    assert r.code == 0, r.err
    warn = [ln for ln in r.err.splitlines() if "imported exactly" in ln]
    assert len(warn) == 1 and "model.layers.0.self_attn.q_proj.weight" in warn[0]
    assert "3-bit" in warn[0] and "and 3 more" in warn[0]  # k/v/o/down stay 4-bit (mixed)
    rep = json.loads((b / "reports" / "quant.json").read_text())
    _rows_exact(rep["tensors"], refs)
    assert {r["bits"] for r in rep["tensors"] if r["name"] in refs} == {4}


def test_matching_bits_do_not_warn(ckpt, tmp_path, cli):
    d, _ = ckpt("gptq")
    r = cli("compile", d, "-o", tmp_path / "b", "--fabric", "mini", "--no-verify", "-b", "4")
    assert r.code == 0, r.err
    assert "imported exactly" not in r.err


def test_inspect_describes_the_checkpoint(ckpt, cli):
    d, refs = ckpt("compressed-tensors", sym=False)
    r = cli("inspect", d, "--json", "--headers-only")
    assert r.code == 0, r.err
    pq = json.loads(r.out)["prequantized"]
    assert pq["format"] == "compressed-tensors" and pq["bits"] == 4 and pq["group_size"] == 32
    assert pq["symmetric"] is False and pq["desc_act"] is False
    assert pq["imported_layers"] == sorted(refs, key=pq["imported_layers"].index)
    assert set(pq["imported_layers"]) == set(refs) and pq["rom"] is None
    full = json.loads(cli("inspect", d, "--json").out)["prequantized"]
    assert set(full["rom"].values()) == {"exact"}
    t = cli("inspect", d)
    text = " ".join(t.out.split())
    assert "compressed-tensors 4-bit, group 32, asymmetric: 14 quantized layers" in text
    assert "every layer imported exactly" in text


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(["gptq", "awq", "compressed-tensors"]),
    shapes=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 40)), min_size=5, max_size=5),
    dtypes=st.lists(st.sampled_from(["I32", "F16", "I64", "F32"]), min_size=5, max_size=5),
    bits=st.sampled_from([2, 3, 4, 8]),
)
def test_any_module_headers_give_a_layer_or_an_input_error(tmp_path, method, shapes, dtypes, bits):
    """The validator behind load_model's check of an imported layer: whatever the shapes and
    dtypes of its tensors, module_shape and read_module give a layer consistent with the
    shape they report, or an InputError (exit 3) naming a tensor; never another exception."""
    from maskc.errors import InputError
    from maskc.ingest import prequant as pq
    from maskc.safetensors_io import SafetensorsFile, write_safetensors

    suffixes = pq.MODULE_SUFFIXES[method]
    np_of = {"I32": np.int32, "F16": np.float16, "I64": np.int64, "F32": np.float32}
    t = {}
    for k, (suf, shp, dt) in enumerate(zip(suffixes, shapes, dtypes, strict=False)):
        shape = (2,) if suf == ".weight_shape" else ((shp[0],) if "g_idx" in suf else shp)
        arr = np.ones(shape, dtype=np_of[dt]) * (k % 3)
        if suf == ".weight_shape":
            arr = np.array(shapes[-1], dtype=np_of[dt])
        t["m" + suf] = arr
    path = tmp_path / f"{method}-{bits}.safetensors"
    write_safetensors(path, t)
    sch = pq.Scheme(method, bits, 32 if bits != 3 else -1, sym=method == "compressed-tensors")
    f = SafetensorsFile(path)
    try:
        shape = pq.module_shape(f, "m", sch, str(path))
        layer = pq.read_module(f, "m", sch, str(path))
    except InputError as e:
        assert "\n" not in str(e) and str(path) in str(e)
        return
    assert layer.shape == shape and layer.codes.shape == shape
    assert pq.dequantize(layer).shape == shape


@pytest.mark.parametrize("method,kw", [("gptq", {"bits": 3}), ("awq", {}), ("gptq", {"group": -1})])
def test_plan_only_places_as_the_compile(ckpt, tmp_path, cli, method, kw):
    """--plan-only of a pre-quantized checkpoint: each imported layer's ROM format from its
    scales alone; the placement and the ROM bits are the full compile's."""
    d, _ = ckpt(method, **kw)
    p, b = tmp_path / "p", tmp_path / "b"
    r = cli("compile", d, "-o", p, "--plan-only", "--fabric", "mini")
    assert r.code == 0, r.err
    assert cli("compile", d, "-o", b, "--fabric", "mini", "--no-verify").code == 0
    place = [json.loads((x / "reports" / "placement.json").read_text()) for x in (p, b)]
    assert place[0] == place[1]
    plan = json.loads((p / "reports" / "plan.json").read_text())
    rows = json.loads((b / "reports" / "quant.json").read_text())["tensors"]
    assert plan["rom_bits"] == sum(r["rom_bits"] for r in rows if r["quantized"])


def test_rom_groups_fit_the_fabrics_tile_rows():
    """An imported layer's ROM group lies inside one checkpoint group and divides the
    fabric's tile row at its code width (hc1: 384 4-bit / 192 8-bit weights; mini: 192 / 96):
    the largest such multiple of 32; any size for a per-channel layer."""
    from types import SimpleNamespace as T

    from maskc.ingest.prequant import rom_group_size

    hc1, mini = {3: 512, 4: 384, 8: 192}, {3: 256, 4: 192, 8: 96}
    g128 = T(group_size=128, shape=(8, 4096), bits=4)
    assert rom_group_size(g128) == rom_group_size(g128, hc1) == 128
    assert rom_group_size(g128, mini) == 64
    assert rom_group_size(T(group_size=128, shape=(8, 4096), bits=8), hc1) == 64
    assert rom_group_size(T(group_size=128, shape=(8, 4096), bits=8), mini) == 32
    chan = T(group_size=4096, shape=(8, 4096), bits=4)  # per channel: the group is the row
    assert rom_group_size(chan) == 4096
    assert (rom_group_size(chan, hc1), rom_group_size(chan, mini)) == (384, 192)
    odd = T(group_size=100, shape=(8, 100), bits=4)  # per channel, a width no 32 divides
    assert rom_group_size(odd) == 128 and rom_group_size(odd, mini) == 192
    assert rom_group_size(T(group_size=16, shape=(8, 64), bits=4), hc1) is None
    assert rom_group_size(T(group_size=96, shape=(8, 192), bits=4), {4: 128}) == 32


def test_a_per_channel_layer_wider_than_a_tile_row_is_imported_exactly(ckpt, tmp_path, cli):
    """GPTQ ``group_size: -1`` (one scale per row): down_proj's 160-wide rows on mini's
    192-weight tile rows take one ROM group per tile row (the scale repeats), exactly."""
    d, refs = ckpt("gptq", group=-1)
    b = tmp_path / "b"
    r = cli("compile", d, "-o", b, "--fabric", "mini", "--no-verify")
    assert r.code == 0, r.err
    idx = json.loads((b / "reports" / "quant.json").read_text())["tensors"]
    _rows_exact(idx, refs)
    for name, ref in refs.items():
        got = weights_by_hand(raw_fields(b, name), ref.shape)
        assert np.array_equal(got, ref.astype(np.float32)), name


def test_plan_only_refuses_what_the_compile_refuses(ckpt, tmp_path, cli):
    """A layer with no exact ROM form (a g_idx of uneven groups: 16 and 48 columns) is refused
    by --plan-only as by the compile, naming it; and config.json alone cannot be planned (the
    formats need the scales)."""
    from maskc.safetensors_io import SafetensorsFile, write_safetensors

    d, _ = ckpt("gptq")
    st_ = SafetensorsFile(d / "model.safetensors")
    t = {n: st_.read_raw(n) for n in sorted(st_.tensors)}
    del st_
    t["model.layers.1.self_attn.o_proj.g_idx"] = (np.arange(64) >= 16).astype(np.int32)
    write_safetensors(d / "model.safetensors", t)
    for extra in ([], ["--plan-only"]):
        r = cli("compile", d, "-o", tmp_path / "x", "--fabric", "mini", "--no-verify", *extra)
        want = "model.layers.1.self_attn.o_proj.weight: g_idx does not give every group 32"
        assert r.code == 3 and want in r.err and "16..48" in r.err, r.err
    r = cli("compile", d / "config.json", "-o", tmp_path / "y", "--plan-only")
    assert r.code == 3 and "needs its weights" in r.err


def test_desc_act_down_proj_is_folded_into_gate_and_up(ckpt, tmp_path, cli):
    """GPTQ desc_act on down_proj: its input columns are renumbered so its groups are
    consecutive and gate_proj/up_proj's output rows the same way (docs/import-design.md). The
    build's tiles, read back by hand, are the checkpoint's matrices so permuted, exactly; the
    emulated logits follow the float reference of the checkpoint's own (unpermuted)
    dequantization; the other matrices keep their order."""
    from safetensors.numpy import load_file

    from maskc.safetensors_io import SafetensorsFile, write_safetensors

    d, refs = ckpt("gptq", desc_act=("down_proj",))
    raw = load_file(d / "model.safetensors")
    b = tmp_path / "b"
    r = cli("compile", d, "-o", b, "--fabric", "mini", "--json")
    assert r.code == 0, r.err
    rep = json.loads((b / "reports" / "quant.json").read_text())
    _rows_exact(rep["tensors"], refs)
    for n in (0, 1):
        p = f"model.layers.{n}.mlp."
        g_idx = raw[p + "down_proj.g_idx"].astype(np.int64)
        assert not np.array_equal(g_idx, np.arange(160) // 32)  # a real permutation
        perm = np.argsort(g_idx, kind="stable")
        want = {
            p + "down_proj.weight": refs[p + "down_proj.weight"][:, perm],
            p + "gate_proj.weight": refs[p + "gate_proj.weight"][perm],
            p + "up_proj.weight": refs[p + "up_proj.weight"][perm],
            f"model.layers.{n}.self_attn.q_proj.weight": refs[
                f"model.layers.{n}.self_attn.q_proj.weight"
            ],
        }
        for name, w in want.items():
            got = weights_by_hand(raw_fields(b, name), w.shape)
            assert np.array_equal(got, w.astype(np.float32)), name
    assert cli("verify", b).code == 0
    # the float reference: the tiny model with every packed weight replaced by its definition
    f = tmp_path / "float"
    import shutil

    shutil.copytree(d, f)
    cfg = json.loads((f / "config.json").read_text())
    del cfg["quantization_config"]
    (f / "config.json").write_text(json.dumps(cfg))
    st_ = SafetensorsFile(f / "model.safetensors")
    t = {n: st_.read_raw(n) for n in st_.tensors if n.split(".")[-1] in ("weight",)}
    del st_
    t |= {n: w.astype(np.float32) for n, w in refs.items()}
    write_safetensors(f / "model.safetensors", t)
    e = cli("emulate", b, "--tokens", "1,5,9,13,17,21,25,29", "--compare", f, "--json")
    assert e.code == 0, e.err
    doc = json.loads(e.out)
    assert doc["kl_mean"] < 1e-2 and doc["top1_agreement"] >= 7 / 8, doc
    # a LoRA adapter on gate/up/down of the folded layers is refused (their order changed);
    # one on q/k/v/o runs
    from maskc.ingest import load_model
    from maskc.testmodels import write_lora_adapter

    arch = load_model(d).arch
    ad = write_lora_adapter(tmp_path / "ad", arch, rank=2, targets=("up_proj",))
    r = cli("emulate", b, "--tokens", "1,2", "-n", "1", "--adapter", ad)
    assert r.code == 3 and "model.layers.0.mlp.up_proj.weight's output rows" in r.err, r.err
    r = cli("inspect", ad, "--build", b)
    assert r.code == 3 and "renumbered" in r.err, r.err
    ok = write_lora_adapter(tmp_path / "ok", arch, rank=2, targets=("q_proj", "v_proj"))
    r = cli("emulate", b, "--tokens", "1,2", "-n", "1", "--adapter", ok)
    assert r.code == 0, r.err
    model_json = json.loads((b / "model.json").read_text())
    assert model_json["desc_act_folds"]["model.layers.1.mlp.down_proj.weight"] == "cols"


def test_desc_act_folds_each_experts_own_permutation(model_cache, tmp_path):
    """qwen3-moe experts with desc_act down_proj (group 16: the fold is computed at load even
    where the ROM then refuses the group size): each expert's gate/up rows follow its own
    down_proj's permutation, and the loader serves them so."""
    from maskc.ingest import load_model

    d = tmp_path / "q"
    _qc, refs = quantize_folder(
        Path(model_cache("qwen3-moe").path), d, "gptq", group=16, desc_act=("down_proj",)
    )
    m = load_model(d)
    perms = []
    for e in (0, 5):
        p = f"model.layers.1.mlp.experts.{e}."
        axis, perm = m.folds[p + "down_proj.weight"]
        assert axis == "cols" and sorted(perm) == list(range(48))
        for part in ("gate_proj", "up_proj"):
            assert m.folds[p + part + ".weight"][0] == "rows"
            assert np.array_equal(m.folds[p + part + ".weight"][1], perm)
            got = m.read(p + part + ".weight").astype(np.float64)
            assert np.array_equal(got, refs[p + part + ".weight"][perm])
        perms.append(perm)
    assert not np.array_equal(*perms)
    assert "model.layers.1.self_attn.q_proj.weight" not in m.folds
