"""Issue 21, FP4 from the command line to a verified build: the ``format`` setting (``--format``,
quant.toml) and how it combines with the other settings, the FP4 quantizer methods, the netlist
(version 6, groups of 16, ``tensor_m``) read back by hand from the tiles and compared with the
specification's decoding of the codec (tests/test_fp4_rom.py checks the codec against
ml_dtypes and exact rationals), the layers verified, and the emulator's clear refusal."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
from helpers import assert_bad, micro_fabric, raw_fields, reseal
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file

from maskc.errors import InputError, UsageError
from maskc.ir import expected_tensors
from maskc.quantize import fp4
from maskc.quantize.profiles import resolve_settings
from maskc.quantize.rules import EMBED_ROLES, QUANTIZABLE_ROLES
from maskc.testmodels import PRESETS

SPECS = expected_tensors(PRESETS["tiny"].to_arch())
BLOCK = [s.name for s in SPECS if s.role in QUANTIZABLE_ROLES and s.role not in EMBED_ROLES]
DOWN = "model.layers.0.mlp.down_proj.weight"
#: E2M1 of each 4-bit code, from OCP MX v1.0 §5.3.3 (sign, then 0, .5, 1, 1.5, 2, 3, 4, 6)
E2M1 = [Fraction(m, 2) for m in (0, 1, 2, 3, 4, 6, 8, 12)]
E2M1 = E2M1 + [-v for v in E2M1]


def config(tmp_path, text: str):
    p = tmp_path / "quant.toml"
    p.write_text(text)
    return p


# -- the format setting ------------------------------------------------------------------------


def test_format_option_sets_the_block_matrices():
    res = resolve_settings(SPECS, fmt="mxfp4")
    for name in BLOCK:
        s = res.settings[name]
        assert (s.format, s.bits, s.group_size, s.symmetric, s.codebook) == (
            "mxfp4",
            4,
            32,
            True,
            False,
        )
        assert s.method == "gptq"  # mxfp4's default (calibrated)
    assert res.settings["model.embed_tokens.weight"].format == "int"
    for kind in ("mxfp4", "nvfp4"):  # without calibration: the calibration-free search
        off = resolve_settings(SPECS, fmt=kind, calibrate=False).settings[DOWN]
        assert off.method == "search"
    assert resolve_settings(SPECS, fmt="nvfp4").settings[DOWN].method == "gptq"  # calibrated
    nv = resolve_settings(SPECS, fmt="nvfp4", method="nv").settings[DOWN]
    assert (nv.format, nv.group_size, nv.method) == ("nvfp4", 16, "nv")
    assert "format" not in resolve_settings(SPECS).settings[DOWN].to_json()  # int: as before
    assert resolve_settings(SPECS, fmt="nvfp4").to_json()["tensors"][3]["format"] == "nvfp4"


@pytest.mark.parametrize(
    "kw, needle",
    [
        ({"bits": 3, "fmt": "mxfp4"}, "--bits 3 contradicts --format mxfp4"),
        ({"group_size": 64, "fmt": "nvfp4"}, "--group-size 64 contradicts --format nvfp4"),
        ({"method": "lsq", "fmt": "mxfp4"}, "--method lsq contradicts --format mxfp4"),
        ({"method": "lsq", "fmt": "nvfp4"}, "fixes method to nv, search or gptq"),
        ({"method": "search"}, "--method search: search is an FP4 method"),
        ({"method": "nv", "fmt": "mxfp4"}, "fixes method to ocp, search or gptq"),
    ],
)
def test_contradictions_on_the_command_line_are_usage_errors(kw, needle):
    with pytest.raises(UsageError, match=needle):
        resolve_settings(SPECS, **kw)


def test_the_more_specific_choice_wins(tmp_path):
    # --bits 3 everywhere, a rule makes down_proj mxfp4: down is mxfp4 at 4 bits (not 3, and
    # not mixed precision's int 4), the others 3-bit integer
    cfg = config(tmp_path, "[[rule]]\nmatch = '.*down_proj'\nformat = 'mxfp4'\n")
    res = resolve_settings(SPECS, bits=3, config=cfg)
    down = res.settings[DOWN]
    assert (down.format, down.bits, down.group_size, down.method) == ("mxfp4", 4, 32, "gptq")
    q = res.settings["model.layers.0.self_attn.q_proj.weight"]
    assert (q.format, q.bits) == ("int", 3)
    # [defaults] bits = 3 under --format nvfp4: the command line is more specific
    cfg = config(tmp_path, "[defaults]\nbits = 3\n")
    assert resolve_settings(SPECS, config=cfg, fmt="nvfp4").settings[DOWN].bits == 4


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[defaults]\nformat = 'fp8'\n", 'format must be one of int, mxfp4, nvfp4, got "fp8"'),
        ("[defaults]\nformat = 4\n", "format must be one of int, mxfp4, nvfp4"),
        (
            "[[rule]]\nmatch = '.*down_proj'\nformat = 'mxfp4'\nbits = 3\n",
            "rule 1 bits = 3 contradicts",
        ),
        (
            "[[rule]]\nmatch = '.*down_proj'\nformat = 'nvfp4'\n[[rule]]\nmatch = '.*'\n"
            "symmetric = false\n",
            "rule 2 symmetric = false contradicts",
        ),
        ("[[rule]]\nmatch = 'lm_head|model.embed_tokens'\nformat = 'mxfp4'\n", "cannot be mxfp4"),
        ("[[rule]]\nmatch = '.*down_proj'\nmethod = 'ocp'\n", "ocp is an FP4 method"),
    ],
)
def test_bad_format_settings_in_quant_toml_are_input_errors(tmp_path, text, needle):
    with pytest.raises(InputError, match=needle):
        resolve_settings(SPECS, config=config(tmp_path, text))


# -- the quantizer -------------------------------------------------------------------------------


def _block_err(w, q, imp, block):
    d = (w.astype(np.float64) - q.dequantize().astype(np.float64)) ** 2 * imp[None, :]
    c = w.shape[1]
    d = np.pad(d, ((0, 0), (0, -c % block)))
    return d.reshape(w.shape[0], -1, block).sum(axis=2)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(["mxfp4", "nvfp4"]),
    cols=st.integers(1, 80),
    weighted=st.booleans(),
)
def test_search_is_never_worse_than_the_reference_recipe_per_block(seed, kind, cols, weighted):
    rng = np.random.default_rng(seed)
    w = (rng.standard_t(3, (5, cols)) * 2.0 ** rng.integers(-8, 8)).astype(np.float32)
    imp = rng.random(cols) + 0.01 if weighted else np.ones(cols)
    ref = fp4.quantize_fp4("w", w, kind, "ocp" if kind == "mxfp4" else "nv")
    got = fp4.quantize_fp4("w", w, kind, "search", imp if weighted else None)
    block = ref.fmt.group_size
    e_ref, e_got = _block_err(w, ref, imp, block), _block_err(w, got, imp, block)
    assert np.all(e_got <= e_ref * (1 + 1e-12) + 1e-300)
    assert np.array_equal(got.tensor_m, ref.tensor_m)


def test_row_blocks_share_the_tensor_scale():
    from maskc.quantize.matrix import quantize_matrix
    from maskc.quantize.profiles import resolve_settings as rs

    s = rs(SPECS, fmt="nvfp4", method="nv").settings[DOWN]
    rng = np.random.default_rng(1)
    w = rng.standard_normal((40, 48)).astype(np.float32)
    w[37, 5] = 300.0  # the tensor's largest weight, in the last rows
    whole = quantize_matrix("w", w, s)
    ts = fp4.nv_tensor_scale(w)
    first = quantize_matrix("w", w[:20], s, tensor_scale=ts)
    assert np.array_equal(first.tensor_m, whole.tensor_m)
    assert np.array_equal(first.codes, whole.codes[:20])


# -- a compiled FP4 build --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def builds(model_cache, tmp_path_factory):
    """tiny compiled with each FP4 format's reference method on a fabric that cuts every matrix
    into several tiles (the compile verifies the layers it writes)."""
    from maskc.pipeline import CompileOptions, compile_model

    root = tmp_path_factory.mktemp("fp4")
    fab = micro_fabric(root)
    gen = model_cache("tiny")
    out = {"model": gen.path}
    for kind, method in (("mxfp4", "ocp"), ("nvfp4", "nv")):
        b = root / kind
        compile_model(gen.path, b, CompileOptions(fabric=fab, weight_format=kind, method=method))
        out[kind] = b
    return out


def _weights(builds, name):
    return load_file(builds["model"] / "model.safetensors")[name].astype(np.float32)


def test_netlist_records_fp4_matrices(builds):
    for kind in ("mxfp4", "nvfp4"):
        doc = json.loads((builds[kind] / "netlist" / "netlist.json").read_text())
        assert doc["version"] == 6
        m = doc["matrices"][DOWN]
        assert m["format"]["kind"] == kind
        assert m["format"]["group_size"] == (32 if kind == "mxfp4" else 16)
        assert m["tiles"] > 1
        emb = doc["matrices"]["model.embed_tokens.weight"]["format"]
        assert "kind" not in emb  # the embedding stays an integer format
        tiles = load_file(builds[kind] / "netlist" / m["file"])
        assert (f"{DOWN}/tensor_m" in tiles) == (kind == "nvfp4")
        report = json.loads((builds[kind] / "reports" / "quant.json").read_text())
        row = next(r for r in report["tensors"] if r["name"] == DOWN)
        assert row["format"] == kind and row["bits"] == 4 and row["scale_bits"] == 8
        want = 4 + 8 / m["format"]["group_size"]
        assert want < row["bpw"] < want + 0.1


def _hand_decode(f: dict, kind: str, r: int, j: int) -> Fraction:
    """Weight (r, j) from the raw tile fields, by the specification: mxfp4 ``E2M1 *
    2**(E - 127)`` with ``E = scale_e + 128 - scale_s``; nvfp4 ``E2M1 * E4M3 * tensor`` with the
    E4M3 ``scale_m * 2**(5 - scale_s)`` and the tensor scale ``tensor_m * 2**(scale_e - 4)``."""
    g = j // (32 if kind == "mxfp4" else 16)
    v = E2M1[int(f["codes"][r, j])]
    e, s = int(f["scale_e"][r]), int(f["scale_s"][r, g])
    if kind == "mxfp4":
        return v * Fraction(2) ** (e + 128 - s - 127)
    blk = int(f["scale_m"][r, g]) * Fraction(2) ** (5 - s)
    return v * blk * int(f["tensor_m"][0]) * Fraction(2) ** (e - 4)


@pytest.mark.parametrize("kind", ["mxfp4", "nvfp4"])
def test_tiles_decode_by_hand_to_the_reference_recipe(builds, kind):
    """Every weight of down_proj read from the tiles file with the safetensors library and
    decoded by hand is the specification's value of the reference recipe's encoding of the
    checkpoint's weight (the codec is checked against ml_dtypes in tests/test_fp4_rom.py)."""
    w = _weights(builds, DOWN)
    f = raw_fields(builds[kind], DOWN)
    if kind == "mxfp4":
        codes, e = fp4.mx_encode(w)
        ref = fp4.mx_decode(codes, e, w.shape[1])
    else:
        codes, sb, ts = fp4.nv_encode(w)  # the tensor scale of the whole matrix
        ref = fp4.nv_decode(codes, sb, ts, w.shape[1])
    assert np.array_equal(f["codes"][:, : w.shape[1]] & 7, codes[:, : w.shape[1]] & 7)
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, w.shape[0], 300), rng.integers(0, w.shape[1], 300)
    for r, j in zip(rows, cols, strict=True):
        assert _hand_decode(f, kind, r, j) == Fraction(float(ref[r, j])), (r, j)


def test_netlist_reads_back_the_fp4_matrix(builds):
    from maskc.netlist import load_netlist

    for kind in ("mxfp4", "nvfp4"):
        nl = load_netlist(builds[kind])
        q = nl.matrix_rows(DOWN, 0, nl.matrices[DOWN]["shape"][0])
        assert q.fmt.kind == kind and np.array_equal(q.levels, fp4.E2M1_LEVELS)
        assert (q.tensor_m is not None) == (kind == "nvfp4")
        part = nl.matrix_rows(DOWN, 3, 21)  # rows across tiles
        assert np.array_equal(part.dequantize(), q.dequantize()[3:21])


def test_verify_passes_and_emulate_runs(builds, cli):
    for kind in ("mxfp4", "nvfp4"):
        r = cli("verify", builds[kind])
        assert r.code == 0, r.err
        r = cli("emulate", builds[kind], "--prompt", "hi", "--max-tokens", "2")
        assert r.code == 0, r.err


def test_a_wrong_acc_bits_of_an_fp4_matrix_is_refused(builds, tmp_path, cli):
    import shutil

    b = tmp_path / "b"
    shutil.copytree(builds["mxfp4"], b)
    p = b / "netlist" / "netlist.json"
    doc = json.loads(p.read_text())
    doc["matrices"][DOWN]["acc_bits"] += 1
    p.write_text(json.dumps(doc))
    reseal(b, "netlist/netlist.json")
    from maskc.netlist import load_netlist

    with pytest.raises(InputError, match="acc_bits"):
        load_netlist(b).matrix(DOWN)


def test_an_fp4_format_in_a_version_5_netlist_is_refused(builds, tmp_path, cli):
    import shutil

    b = tmp_path / "b"
    shutil.copytree(builds["nvfp4"], b)
    p = b / "netlist" / "netlist.json"
    doc = json.loads(p.read_text())
    doc["version"] = 5
    p.write_text(json.dumps(doc))
    reseal(b, "netlist/netlist.json")
    assert_bad(cli("inspect", b, "--netlist"), "FP4 matrices need netlist version 6")


@pytest.mark.parametrize("kind", ["mxfp4", "nvfp4"])
def test_the_scale_rom_holds_the_block_scales_and_tensor_m(builds, kind):
    """One FP4 tile's scale-ROM bit string, cut by hand from the widths of docs/layout.md
    (per row: each group's stored fields MSB first, the 8-bit row exponent; then 16 levels of 5
    bits; nvfp4: the 24-bit tensor_m), holds the tile's fields; verify's decoder agrees."""
    from maskc.layout.rom import parse_scale_bits, scale_bits
    from maskc.netlist import load_netlist

    nl = load_netlist(builds[kind])
    m = nl.matrices[DOWN]
    t = {k: np.asarray(v) for k, v in nl.tile_arrays(DOWN).items()}
    tr, w = m["tile_shape"]
    groups = w // m["format"]["group_size"]
    bits = scale_bits(t, 1, m["format"], tr, groups).tolist()

    def take(n: int, signed: bool = False) -> int:
        v = int("".join(map(str, bits[:n])), 2)
        del bits[:n]
        return v - (1 << n) if signed and v >= 1 << (n - 1) else v

    for r in range(tr):
        for g in range(groups):
            if kind == "nvfp4":
                assert take(4) == t["scale_m"][1, r, g]
                assert take(4) == t["scale_s"][1, r, g]
            else:
                assert take(8) == t["scale_s"][1, r, g]  # scale_m = 1 takes no bits
        assert take(8, True) == t["scale_e"][1, r]
    assert [take(5, True) for _ in range(16)] == fp4.E2M1_LEVELS.tolist()
    if kind == "nvfp4":
        assert take(24) == t["tensor_m"][0]
    assert bits == []
    dec = parse_scale_bits(scale_bits(t, 1, m["format"], tr, groups), m["format"], tr, groups)
    assert ("tensor_m" in dec) == (kind == "nvfp4")


@pytest.mark.parametrize("kind", ["mxfp4", "nvfp4"])
@pytest.mark.parametrize("where", ["first", "last"])
def test_a_via_removed_from_an_fp4_tile_is_caught(builds, tmp_path, cli, kind, where):
    """The layer file read back with gdstk, one via of an FP4 tile (the lowest: a cell; the
    highest: the scale ROM band) deleted and written again: verify names the tile, exit 5."""
    import re
    import shutil

    from test_layout import _cell, _flat_vias, _load, _save

    b = tmp_path / "b"
    shutil.copytree(builds[kind], b)
    path = b / "layers" / "via.gds"
    lib = _load(path)
    tiles = sorted(c.name for c in lib.cells if re.fullmatch(r"T\d+_\d+_\d+", c.name))
    c = _cell(lib, tiles[0])
    vias = sorted(_flat_vias(c), key=lambda q: tuple(q.points.min(axis=0)[::-1]))
    c.remove(vias[0] if where == "first" else vias[-1])
    _save(lib, path)
    r = cli("verify", b)
    assert r.code == 5 and "tile T" in r.err and "Traceback" not in r.err, r


def test_calibrated_search_weights_each_matrix_by_its_input_sites_statistics(
    model_cache, tmp_path, monkeypatch
):
    """With calibration, every FP4 block matrix's search gets its input site's importance (the
    mean squared activation of each input column, as the integer methods do), and the stored
    codes differ from the calibration-free search's."""
    from helpers import quantizer_output

    from maskc.pipeline import CompileOptions
    from maskc.quantize.driver import builtin_calibration_text

    seen = {}
    real = fp4.quantize_fp4

    def spy(name, w, kind, method, importance=None, *a, **k):
        seen[name] = importance
        return real(name, w, kind, method, importance, *a, **k)

    monkeypatch.setattr(fp4, "quantize_fp4", spy)
    text = tmp_path / "calib.txt"
    text.write_text(builtin_calibration_text())
    gen = model_cache("tiny").path
    stores = {}
    for calib in (None, text):
        seen.clear()
        o = CompileOptions(
            weight_format="mxfp4", method="search", calib=calib, calibrate=calib is not None, jobs=1
        )
        stores[calib] = quantizer_output(gen, tmp_path / f"q{calib is not None}", o)
        block = [n for n in seen if ".layers." in n]
        assert block and all((seen[n] is not None) == (calib is not None) for n in block)
    a, b = (raw_fields(s.build, DOWN)["codes"] for s in stores.values())
    assert not np.array_equal(a, b)
