"""maskc diff-layers: verdicts, counts checked against the netlists' codes (an independent
popcount written here) and against KLayout's geometric XOR, bad inputs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import micro_fabric


def _compile(cli, model, out, *args):
    r = cli("compile", model, "-o", out, "--method", "rtn", *args)
    assert r.code == 0, r.err
    return out


def _one_weight_changed(src, dst):
    """A copy of the model with one weight of layer 0's down_proj moved inside its group (its
    group's min and max kept, so only its code changes)."""
    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, dst)
    w = load_file(str(dst / "model.safetensors"))
    name = "model.layers.0.mlp.down_proj.weight"
    g = w[name][3, 0:32].copy()
    order = np.argsort(g)
    lo, hi = order[8], order[24]  # two interior values far apart: the code must change
    w[name] = w[name].copy()
    w[name][3, lo] = g[hi]
    save_file(w, str(dst / "model.safetensors"))
    return name


def _ones(t, meta, i):
    """Set bits of tile ``i``'s ROM, counted directly from the netlist arrays: the codes in the
    block, every group/row field in its width, the level table."""
    f = meta["format"]
    r, c = int(t["block"][i][1]), int(t["block"][i][3])
    n = sum(bin(int(v)).count("1") for v in t["codes"][i][:r, :c].ravel())
    widths = {
        "scale_m": f["scale_bits"],
        "scale_s": f["scale_shift_bits"],
        "zero_m": f["zero_bits"],
        "zero_s": f["zero_shift_bits"],
        "scale_e": 8,
        "zero_e": 8 if f["zero_bits"] else 0,
    }
    for k, nb in widths.items():
        if nb and k in t:
            n += sum(bin(int(v) & ((1 << nb) - 1)).count("1") for v in t[k][i].ravel())
    n += sum(bin(int(v) & ((1 << f["level_bits"]) - 1)).count("1") for v in t["levels"].ravel())
    return n


def _bits(t, meta, i):
    """The tile's stored bits as a Python int per field, to XOR two builds."""
    f = meta["format"]
    r, c = int(t["block"][i][1]), int(t["block"][i][3])
    out = [("codes", int(v), f["bits"]) for v in t["codes"][i][:r, :c].ravel()]
    for k, nb in (
        ("scale_m", f["scale_bits"]),
        ("scale_s", f["scale_shift_bits"]),
        ("zero_m", f["zero_bits"]),
        ("zero_s", f["zero_shift_bits"]),
        ("scale_e", 8),
        ("zero_e", 8 if f["zero_bits"] else 0),
    ):
        if nb and k in t:
            out += [(k, int(v) & ((1 << nb) - 1), nb) for v in t[k][i].ravel()]
    return out


@pytest.fixture(scope="module")
def pair(model_cache, tmp_path_factory):
    """A: the tiny model; B: one weight changed; on the micro fabric, GDSII."""

    from maskc.pipeline import CompileOptions, compile_model

    root = tmp_path_factory.mktemp("diff")
    fab = micro_fabric(root)
    model_b = root / "model-b"
    name = _one_weight_changed(model_cache("tiny").path, model_b)
    out = {"fabric": fab, "tensor": name, "model_a": model_cache("tiny").path}
    base = model_cache("tiny").path
    for key, model, fmt in (
        ("a", base, "gds"),
        ("b", model_b, "gds"),
        ("a_oas", base, "oas"),
        ("b_oas", model_b, "oas"),
    ):
        out[key] = root / key
        compile_model(model, out[key], CompileOptions(fabric=fab, method="rtn", layout_format=fmt))
    return out


@pytest.mark.slow
def test_identical_builds_and_gds_vs_oasis_are_identical(pair, cli):
    for x, y in (("a", "a"), ("a", "a_oas")):
        r = cli("diff-layers", pair[x], pair[y], "--json")
        doc = json.loads(r.out)
        assert r.code == 0 and doc["identical"] and doc["verdict"].startswith("identical"), r
        assert all(
            v["identical"] and v["added"] == v["removed"] == 0 for v in doc["layers"].values()
        )
    # the files themselves, decoded: GDSII word cells against flat OASIS
    r = cli("diff-layers", pair["a"] / "layers" / "via.gds", pair["a_oas"] / "layers" / "via.oas")
    assert r.code == 0 and "identical" in r.out, r


def test_one_weight_changed_is_one_tile_and_exactly_its_vias(pair, tmp_path, cli):
    from maskc.netlist import load_netlist

    r = cli("diff-layers", pair["a"], pair["b"], "--json")
    assert r.code == 1, r
    doc = json.loads(r.out)
    via, metal = doc["layers"]["via"], doc["layers"]["metal"]
    assert metal["identical"] and not via["identical"] and doc["masks_to_remake"] == ["via"]
    assert via["changed_tiles"] == 1 and via["top_tensors"][0]["tensor"] == pair["tensor"]
    assert doc["verdict"].startswith("via mask only")
    # independent count: XOR of the two netlists' stored bits, field by field
    na, nb = load_netlist(pair["a"]), load_netlist(pair["b"])
    added = removed = 0
    for name, meta in na.matrices.items():
        ta, tb = na.tile_arrays(name), nb.tile_arrays(name)
        for i in range(meta["tiles"]):
            for (_, va, _), (_, vb, _) in zip(_bits(ta, meta, i), _bits(tb, meta, i), strict=True):
                added += bin(vb & ~va).count("1")
                removed += bin(va & ~vb).count("1")
        lv_a = [int(v) & 0xFFFF for v in ta["levels"].ravel()]
        assert lv_a == [int(v) & 0xFFFF for v in tb["levels"].ravel()]  # rtn: levels unchanged
    assert (via["added"], via["removed"]) == (added, removed) and added + removed > 0
    total = sum(
        _ones(na.tile_arrays(n), m, i) for n, m in na.matrices.items() for i in range(m["tiles"])
    )
    assert via["shapes_in_a"] == total
    # the decoded files agree with the fast path, in both formats, manifests deleted
    for fmt in ("gds", "oas"):
        ka, kb = ("a", "b") if fmt == "gds" else ("a_oas", "b_oas")
        for k in (ka, kb):
            shutil.copytree(pair[k], tmp_path / k)
            (tmp_path / k / "manifest.json").unlink()
        r = cli(
            "diff-layers",
            tmp_path / ka / "layers" / f"via.{fmt}",
            tmp_path / kb / "layers" / f"via.{fmt}",
            "--json",
        )
        d = json.loads(r.out)["layers"]["via"]
        assert r.code == 1 and (d["added"], d["removed"], d["changed_tiles"]) == (added, removed, 1)


def test_a_forged_per_tile_hash_map_changes_nothing(pair, tmp_path, cli):
    """B's manifest given A's per-tile hash map (no file changed, so every file hash still
    matches): diff-layers still finds B's changed vias, and verify refuses B (issue 19)."""
    ref = json.loads(cli("diff-layers", pair["a"], pair["b"], "--json").out)
    forged = tmp_path / "b"
    shutil.copytree(pair["b"], forged)
    m = json.loads((forged / "manifest.json").read_text())
    m["tiles"] = json.loads((pair["a"] / "manifest.json").read_text())["tiles"]
    (forged / "manifest.json").write_text(json.dumps(m))
    r = cli("diff-layers", pair["a"], forged, "--json")
    assert r.code == 1 and json.loads(r.out)["layers"] == ref["layers"], r
    r = cli("verify", forged)
    assert r.code == 5 and "per-tile ROM hash" in r.err, r
    assert cli("verify", pair["b"]).code == 0


def test_a_norm_gamma_changes_the_boot_image_not_the_masks(pair, tmp_path, cli):
    """A gamma is SRAM data (docs/sram.md): both masks identical, the boot image not, exit 1."""
    from safetensors.numpy import load_file, save_file

    from maskc.pipeline import CompileOptions, compile_model

    model = tmp_path / "m"
    shutil.copytree(pair["model_a"], model)
    w = load_file(str(model / "model.safetensors"))
    name = "model.layers.1.post_attention_layernorm.weight"
    w[name] = w[name] * np.float32(1.5)
    save_file(w, str(model / "model.safetensors"))
    opts = CompileOptions(fabric=pair["fabric"], method="rtn", layout_format="gds")
    compile_model(model, tmp_path / "b", opts)
    r = cli("diff-layers", pair["a"], tmp_path / "b", "--json")
    doc = json.loads(r.out)
    assert r.code == 1 and doc["masks_to_remake"] == [] and not doc["identical"], r
    assert all(v["identical"] for v in doc["layers"].values())
    assert doc["boot"] == {"identical": False, "changed": [name]}
    assert doc["verdict"].startswith("masks identical") and "boot firmware" in doc["verdict"]
    assert json.loads(cli("diff-layers", pair["a"], pair["a"], "--json").out)["boot"] == {
        "identical": True,
        "changed": [],
    }


def test_klayout_xor_counts_the_same_vias(pair, cli):
    db = pytest.importorskip("klayout.db")
    regions, layouts = [], []  # a Region reads its layout lazily: keep both alive
    for k in ("a", "b"):
        ly = db.Layout()
        ly.read(str(pair[k] / "layers" / "via.gds"))
        (top,) = ly.top_cells()
        layouts.append(ly)
        regions.append(db.Region(top.begin_shapes_rec(ly.layer(60, 0))))
    xor = (regions[0] ^ regions[1]).count()
    doc = json.loads(cli("diff-layers", pair["a"], pair["b"], "--json").out)["layers"]["via"]
    assert xor == doc["added"] + doc["removed"] > 0


def test_fine_tune_is_via_mask_only_and_other_fabric_is_another_die(model_cache, tmp_path, cli):
    a = _compile(cli, model_cache("tiny", 0).path, tmp_path / "a")
    b = _compile(cli, model_cache("tiny", 1).path, tmp_path / "b")
    r = cli("diff-layers", a, b, "--png", tmp_path / "d.png")
    assert r.code == 1 and "via mask only" in r.out and "metal mask is reused" in r.out, r.out
    assert (tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"
    c = _compile(cli, model_cache("tiny", 0).path, tmp_path / "c", "--fabric", "mini")
    r = cli("diff-layers", a, c, "--json")
    doc = json.loads(r.out)
    assert r.code == 1 and not doc["same_base_die"] and doc["layers"] == {}
    assert "different base die" in doc["verdict"]


def test_bad_inputs_are_errors_never_exit_1(pair, tmp_path, cli):
    r = cli("diff-layers", pair["a"], tmp_path / "nope")
    assert r.code in (2, 3) and "Traceback" not in r.err
    r = cli("diff-layers", pair["a"], pair["b"] / "layers" / "via.gds")
    assert r.code == 2
    r = cli("diff-layers", pair["a"] / "layers" / "via.gds", pair["b"] / "layers" / "metal.gds")
    assert r.code == 2
    bad = tmp_path / "bad"
    shutil.copytree(pair["b"], bad)
    p = bad / "netlist" / "netlist.json"
    p.write_bytes(p.read_bytes().replace(b'"version"', b'"Version"', 1))
    r = cli("diff-layers", pair["a"], bad)
    assert r.code == 5, r
    trunc = tmp_path / "trunc"
    shutil.copytree(pair["b"], trunc)
    (trunc / "manifest.json").unlink()
    v = trunc / "layers" / "via.gds"
    v.write_bytes(v.read_bytes()[:1000])
    r = cli("diff-layers", pair["a"] / "layers" / "via.gds", v)
    assert r.code == 5 and "Traceback" not in r.err, r
