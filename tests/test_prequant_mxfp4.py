"""MXFP4 checkpoints (issue 21): fused expert weights as ``*_blocks`` + ``*_scales`` (the
gpt-oss layout), packed by tests/prequant_pack.py from the published description (checked here
against ml_dtypes' float4_e2m1fn / float8_e8m0fnu), imported exactly into the ``mxfp4`` ROM
format or refused naming the tensor."""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prequant_pack import FP4_VALUES, mx_pack, mx_quantize, mx_value, mxfp4_folder

from maskc.errors import FitError, InputError, UnsupportedError

P = "model.layers.0.block_sparse_moe.experts."


def _by_ml_dtypes(codes, scales):
    """float64 weights of E2M1 codes and E8M0 scales decoded by ml_dtypes."""
    v = np.asarray(codes, np.uint8).view(ml_dtypes.float4_e2m1fn).astype(np.float64)
    s = np.asarray(scales, np.uint8).view(ml_dtypes.float8_e8m0fnu).astype(np.float64)
    return v * np.repeat(s, 32, axis=-1)


def _by_hand(q) -> np.ndarray:
    """A ROM matrix's weights from its fields (docs/fp4-design.md): ``2^(scale_e - scale_s) *
    levels[code]`` per block of 32, float64 (exact)."""
    step = np.exp2(q.scale_e.astype(np.float64)[:, None] - q.scale_s)
    return np.repeat(step, 32, axis=1) * q.levels.astype(np.float64)[q.codes]


def test_packer_decodes_as_ml_dtypes():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 16, (6, 64), dtype=np.uint8)
    scales = rng.integers(100, 150, (6, 2), dtype=np.uint8)
    assert np.array_equal(mx_value(codes, scales), _by_ml_dtypes(codes, scales))
    table = np.arange(16, dtype=np.uint8).view(ml_dtypes.float4_e2m1fn).astype(np.float64)
    assert np.array_equal(np.array(FP4_VALUES), table)
    assert np.array_equal(np.signbit(FP4_VALUES), np.signbit(table))  # code 8 is -0


def test_pack_puts_the_even_element_in_the_low_nibble():
    codes = np.zeros((1, 32), np.uint8)
    codes[0, :4] = [3, 10, 15, 1]
    blocks = mx_pack(codes)
    assert blocks.shape == (1, 1, 16) and blocks[0, 0, 0] == 0xA3 and blocks[0, 0, 1] == 0x1F


@pytest.fixture
def mixtral(model_cache, tmp_path):
    d = tmp_path / "mx"
    refs = mxfp4_folder(Path(model_cache("mixtral").path), d)
    return d, refs


def test_mixtral_experts_import_exactly(mixtral):
    """Every expert matrix is an imported layer; the loader's float reference and the ROM
    tensor (decoded by hand) equal the checkpoint's definition bit for bit; the stored
    block exponents are the checkpoint's E8M0 bytes, read independently with safetensors."""
    from safetensors.numpy import load_file

    from maskc.ingest import load_model, prequant
    from maskc.romformat import FP4_FORMATS

    d, refs = mixtral
    m = load_model(d)
    assert set(m.imported) == set(refs) and len(refs) == 2 * 4 * 3
    assert m.imported[P + "1.w3.weight"] == P[:-1] + ".gate_up_proj"
    raw = load_file(d / "model.safetensors")
    for name, ref in refs.items():
        assert np.array_equal(m.read(name).astype(np.float64), ref), name
        q = prequant.to_rom(m.read_imported(name))
        assert q.fmt == FP4_FORMATS["mxfp4"] and q.method == "imported"
        assert np.array_equal(_by_hand(q), ref) and np.array_equal(q.dequantize(), ref)
    # expert 1 of layer 0: gate = even rows of gate_up, up = odd rows; E = scale_e + 128 - s
    scales = raw[P + "gate_up_proj_scales"][1]
    for part, rows in (("w1", slice(0, None, 2)), ("w3", slice(1, None, 2))):
        q = prequant.to_rom(m.read_imported(f"{P}1.{part}.weight"))
        e = q.scale_e.astype(np.int64)[:, None] + 128 - q.scale_s
        nz = (q.levels[q.codes] != 0).reshape(*e.shape, 32).any(axis=2)
        assert np.array_equal(e[nz], scales[rows].astype(np.int64)[nz])
    lo = raw[P + "down_proj_blocks"][2] & 15  # expert 2's down_proj: element 0 of each block
    q = prequant.to_rom(m.read_imported(f"{P}2.w2.weight"))
    assert np.array_equal(q.codes[:, ::32], lo[:, :, 0])
    assert m.nbytes(P + "0.w2.weight") == 64 * 96 // 2 + 64 * 96 // 32


def test_qwen3_moe_gate_up_fused_down_in_float(model_cache, tmp_path):
    """qwen3-moe (expert width 48: no whole MXFP4 blocks for down_proj): gate_up fused in
    MXFP4, down_proj per expert in float; both load."""
    from maskc.ingest import load_model

    d = tmp_path / "q3"
    refs = mxfp4_folder(Path(model_cache("qwen3-moe").path), d, fused=("gate_up_proj",))
    m = load_model(d)
    assert set(m.imported) == set(refs)
    assert all(".gate_proj." in n or ".up_proj." in n for n in refs)
    for name, ref in refs.items():
        assert np.array_equal(m.read(name).astype(np.float64), ref), name
    assert m.read("model.layers.1.mlp.experts.7.down_proj.weight").shape == (64, 48)


def test_inspect_describes_an_mxfp4_checkpoint(mixtral, cli):
    d, refs = mixtral
    r = cli("inspect", d, "--json")
    assert r.code == 0, r.err
    pq = json.loads(r.out)["prequantized"]
    assert pq["format"] == "mxfp4" and pq["bits"] == 4 and pq["group_size"] == 32
    assert set(pq["imported_layers"]) == set(refs) and set(pq["rom"].values()) == {"exact"}
    assert P + "0.w1.weight" not in pq["float_matrices"]
    text = " ".join(cli("inspect", d).out.split())
    assert "mxfp4 (E2M1 codes, an E8M0 scale per 32), fused experts: 24 quantized layers" in text
    assert "every layer imported exactly" in text


def _edit(d: Path, fn) -> None:
    from maskc.safetensors_io import SafetensorsFile, write_safetensors

    st_ = SafetensorsFile(d / "model.safetensors")
    t = {n: st_.read_raw(n) for n in sorted(st_.tensors)}
    del st_
    fn(t)
    write_safetensors(d / "model.safetensors", t)


def _nan(t):
    t[P + "down_proj_scales"][3, 5, 1] = 0xFF


def _dtype(t):
    t[P + "gate_up_proj_scales"] = t[P + "gate_up_proj_scales"].astype(np.int16)


def _shape(t):
    t[P + "down_proj_blocks"] = t[P + "down_proj_blocks"][:, :, :2]


def _no_scales(t):
    del t[P + "gate_up_proj_scales"]


def _bias(t):
    t[P + "down_proj_bias"] = np.zeros((4, 64), np.float32)


def _dense(t):
    t["model.layers.0.self_attn.o_proj_blocks"] = np.zeros((64, 2, 16), np.uint8)
    t["model.layers.0.self_attn.o_proj_scales"] = np.zeros((64, 2), np.uint8)


def _per_expert(t):
    t[P + "0.w1_blocks"] = np.zeros((96, 2, 16), np.uint8)


def _big(t):
    t[P + "down_proj_scales"][0, 7, 2] = 127 + 17  # 0.5 * 2^17 at least, up to 6 * 2^17


@pytest.mark.parametrize(
    "edit,where,needles",
    [
        (_nan, "read", ["down_proj_scales", "0xFF", "[3, 5, 1]"]),
        (_dtype, "load", ["gate_up_proj_scales", "must be U8", "I16"]),
        (_shape, "load", ["down_proj_blocks", "[4, 64, 2, 16]", "expected [4, 64, 3, 16]"]),
        (_no_scales, "load", ["gate_up_proj_scales' is missing", "_blocks"]),
        (_bias, "load", ["down_proj_bias", "expert biases are not supported"]),
        (_dense, "load", ["o_proj_blocks", "only as fused expert weights"]),
        (_per_expert, "load", ["experts.0.w1_blocks", "only as fused expert weights"]),
        (_big, "read", ["down_proj_blocks", "[0, 7, 2]", "below 2^19"]),
    ],
)
def test_bad_mxfp4_tensors_are_refused_naming_them(mixtral, edit, where, needles):
    from maskc.ingest import load_model

    d, _ = mixtral
    _edit(d, edit)
    with pytest.raises(InputError) as e:
        m = load_model(d)
        assert where == "read"
        for name in m.imported:
            m.read(name)
    msg = str(e.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg
    assert e.value.exit_code == 3


def test_a_row_spanning_more_than_19_binades_is_exit_4(mixtral):
    from maskc.ingest import load_model, prequant

    d, _ = mixtral

    def span(t):
        b, s = t[P + "down_proj_blocks"], t[P + "down_proj_scales"]
        b[1, 4, :2] = 0x11  # nonzero codes in blocks 0 and 1 of row 4
        s[1, 4, 0], s[1, 4, 1] = 130, 130 - 20

    _edit(d, span)
    m = load_model(d)
    with pytest.raises(FitError) as e:
        prequant.to_rom(m.read_imported(P + "1.w2.weight"))
    assert e.value.exit_code == 4 and "row 4 block 1" in str(e.value)


def test_mxfp4_config_is_parsed_and_checked():
    from maskc.ingest.prequant import parse_config

    s = parse_config({"quant_method": "mxfp4", "modules_to_not_convert": ["lm_head"]}, "c")
    assert (s.method, s.bits, s.group_size, s.sym, s.ignore) == ("mxfp4", 4, 32, True, ("lm_head",))
    with pytest.raises(InputError, match="modules_to_not_convert"):
        parse_config({"quant_method": "mxfp4", "modules_to_not_convert": "lm_head"}, "c")


@settings(max_examples=60, deadline=None)
@given(
    codes=st.lists(st.integers(0, 15), min_size=3 * 96, max_size=3 * 96),
    scales=st.lists(st.integers(0, 143), min_size=9, max_size=9),
)
def test_to_rom_is_exact_or_refuses_a_span_over_19(codes, scales):
    """Any codes and scales (below the weight limit): the ROM tensor decodes to the
    definition exactly, or FitError exactly when a row's nonzero blocks span more than 19
    binades."""
    from maskc.ingest.mxfp4 import MxImported, to_rom

    c = np.array(codes, np.uint8).reshape(3, 96)
    s = np.array(scales, np.uint8).reshape(3, 3)
    t = MxImported("w", (3, 96), c, s)
    nz = (np.array(FP4_VALUES)[c] != 0).reshape(3, 3, 32).any(axis=2)
    over = any(
        s[r][nz[r]].size and int(s[r][nz[r]].max()) - int(s[r][nz[r]].min()) > 19 for r in range(3)
    )
    try:
        q = to_rom(t)
    except FitError as e:
        assert over and "\n" not in str(e)
        return
    assert not over
    assert np.array_equal(_by_hand(q), mx_value(c, s))
    assert np.array_equal(q.dequantize(), mx_value(c, s).astype(np.float32))


@settings(max_examples=40, deadline=None)
@given(
    shapes=st.lists(st.lists(st.integers(1, 5), min_size=1, max_size=4), min_size=2, max_size=2),
    dtypes=st.lists(st.sampled_from(["U8", "I8", "F16"]), min_size=2, max_size=2),
)
def test_any_fused_headers_give_layers_or_an_input_error(shapes, dtypes):
    """The header validator behind load_model: whatever the shapes and dtypes of a fused
    module's blocks and scales, it gives the expert layers or an InputError naming the tensor."""
    from maskc.ingest.config import parse_config
    from maskc.ingest.mxfp4 import layers
    from maskc.safetensors_io import TensorInfo

    arch = parse_config(
        {
            "architectures": ["Qwen3MoeForCausalLM"],
            "hidden_size": 64,
            "intermediate_size": 64,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "num_hidden_layers": 1,
            "vocab_size": 32,
            "num_experts": 2,
            "num_experts_per_tok": 1,
            "moe_intermediate_size": 32,
            "head_dim": 32,
        },
        "config.json",
    )
    p = "model.layers.0.mlp.experts.down_proj"
    tensors = {
        p + suf: TensorInfo(p + suf, dt, tuple(shape), 0, 1)
        for suf, shape, dt in zip(("_blocks", "_scales"), shapes, dtypes, strict=True)
    }
    try:
        out = layers(tensors, arch, lambda n: "f.safetensors")
    except InputError as e:
        assert "\n" not in str(e) and "f.safetensors" in str(e) and p in str(e)
        return
    assert shapes == [[2, 64, 1, 16], [2, 64, 1]] and dtypes == ["U8", "U8"]
    assert sorted(out) == [f"model.layers.0.mlp.experts.{e}.down_proj.weight" for e in (0, 1)]


def test_the_test_packer_gives_an_all_zero_block_the_smallest_scale():
    assert issubclass(UnsupportedError, InputError)
    codes, scales = mx_quantize(np.zeros((1, 32)))
    assert scales[0, 0] == 0 and not codes.any()


def test_plan_only_gives_every_expert_the_mxfp4_format(mixtral, tmp_path, cli):
    from maskc.ingest.loader import declared_tensors
    from maskc.romformat import FP4_FORMATS

    d, refs = mixtral
    _arch, _specs, _cfg, formats = declared_tensors(d)
    assert formats == dict.fromkeys(refs, FP4_FORMATS["mxfp4"])
    r = cli("compile", d, "-o", tmp_path / "p", "--plan-only", "--fabric", "mini")
    assert r.code == 0, r.err
    plan = json.loads((tmp_path / "p" / "reports" / "plan.json").read_text())
    assert plan["placement"]["experts"]["expert_tiles"] == 24


def test_mxfp4_checkpoint_compiles_and_verifies(mixtral, tmp_path, cli):
    """A whole compile of the MXFP4 mixtral checkpoint: every expert matrix, read back by hand
    from the netlist's tiles, is the checkpoint's definition bit for bit; the report says
    "imported, exact"; the layers verify; --plan-only placed it the same way; the emulator's
    logits equal the integer reference's (tests/intref.py) and follow the float model."""
    from helpers import raw_fields

    d, refs = mixtral
    b, p = tmp_path / "b", tmp_path / "p"
    r = cli("compile", d, "-o", b, "--fabric", "mini")
    assert r.code == 0, r.err
    assert "imported, exact" in r.out
    rows = {x["name"]: x for x in json.loads((b / "reports" / "quant.json").read_text())["tensors"]}
    for name, ref in refs.items():
        assert rows[name]["method"] == "imported" and rows[name]["rel_error"] == 0.0
        assert rows[name]["format"] == "mxfp4"
        f = raw_fields(b, name)
        step = np.exp2(f["scale_e"].astype(np.float64)[:, None] - f["scale_s"])
        got = np.repeat(step, 32, axis=1) * f["levels"].astype(np.float64)[f["codes"]]
        assert np.array_equal(got, ref), name
    assert cli("verify", b).code == 0
    assert cli("compile", d, "-o", p, "--plan-only", "--fabric", "mini").code == 0
    place = [json.loads((x / "reports" / "placement.json").read_text()) for x in (p, b)]
    assert place[0] == place[1]
    # the emulator runs the imported matrices exactly as the independent integer reference
    import intref

    from maskc.emulate.run import generate, open_session
    from maskc.emulate.sampling import SamplingParams

    rows: list = []
    g = generate(open_session(b), [1, 5, 9], 4, SamplingParams(), False, keep_logits=rows)
    toks, ref_rows = intref.generate(intref.IntRef(b), [1, 5, 9], 4, 0.0, 0, 1.0, 0)
    assert g.tokens == toks and [r.tolist() for r in rows] == ref_rows
    # and follows the float reference of the checkpoint's own dequantization (everything
    # else quantized by maskc at its default 4 bits)
    e = cli("emulate", b, "--tokens", "1,5,9,13,17,21", "--compare", d, "--json")
    assert e.code == 0, e.err
    assert json.loads(e.out)["top1_agreement"] >= 0.5


def test_format_int_asked_of_an_mxfp4_import_warns_and_keeps_it(mixtral, tmp_path, cli):
    d, _ = mixtral
    r = cli(
        "compile", d, "-o", tmp_path / "b", "--fabric", "mini", "--no-verify", "--format", "int"
    )
    assert r.code == 0, r.err
    warn = [ln for ln in r.err.splitlines() if "imported exactly" in ln]
    assert len(warn) == 1 and "and 21 more" in warn[0] and "mxfp4" in warn[0]
