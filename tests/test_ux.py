"""Issue 23's rough edges, each as a new user met it: one flag for the model config, the
``diff-layers --top`` table, ``maskc verify``'s record shown by ``inspect``, layers in numeric
order, ``inspect --tiles`` and the ``render --tile`` error that points to it."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import assert_bad, micro_fabric, reseal


@pytest.fixture(scope="module")
def builds(model_cache, tmp_path_factory):
    """Two tiny models (seeds 0 and 1) on the micro fabric (several tiles per matrix)."""
    from maskc.pipeline import CompileOptions, compile_model

    root = tmp_path_factory.mktemp("ux")
    fab = micro_fabric(root)
    out = {"fabric": fab}
    for key, seed in (("a", 0), ("b", 1)):
        out[key] = root / key
        opts = CompileOptions(fabric=fab, method="rtn", calibrate=False, verify=False)
        compile_model(model_cache("tiny", seed).path, out[key], opts)
    return out


# -- one name for the model config --------------------------------------------------------------


def test_a_single_weights_file_names_the_flag_that_works(model_cache, cli, tmp_path):
    """compile's --config is the quantization TOML: the message names --model-config, and
    --plan-only does not read the weights file as config.json."""
    st = model_cache().path / "model.safetensors"
    for extra in ((), ("--plan-only",)):
        r = cli("compile", st, "-o", tmp_path / "b", *extra)
        assert_bad(r, "--model-config", "single weights file")
        assert "too large" not in r.err
        assert not (tmp_path / "b").exists()
    assert_bad(cli("inspect", st), "--model-config")


def test_model_config_works_everywhere_and_config_is_a_hidden_alias(model_cache, cli, tmp_path):
    path = model_cache().path
    st, cfg = path / "model.safetensors", path / "config.json"
    for flag in ("--model-config", "-c", "--config"):  # --config: inspect's old spelling
        r = cli("inspect", st, flag, cfg, "--json", "--headers-only")
        assert r.code == 0, r.err
        assert json.loads(r.out)["total_parameters"] > 0
    r = cli("compile", st, "--model-config", cfg, "-o", tmp_path / "p", "--plan-only", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["parameters"] > 0
    helptext = cli("inspect", "--help").out
    assert "--model-config" in helptext and "--config " not in helptext.replace("-c,", "")
    r = cli("inspect", st, "--model-config", cfg, "--config", path / "other.json")
    assert r.code == 2 and "old spelling" in r.err


def test_emulate_compare_takes_a_folder_or_a_file_with_its_config(builds, model_cache, cli):
    folder = model_cache().path
    st, cfg = folder / "model.safetensors", folder / "config.json"
    r = cli("emulate", builds["a"], "--tokens", "1,2", "-n", "1", "--compare", st)
    assert_bad(r, "--compare takes a model folder", "--model-config")
    run = ("emulate", builds["a"], "--tokens", "1,2,3,4", "--json", "--compare")
    one = cli(*run, st, "--model-config", cfg)
    whole = cli(*run, folder)
    assert one.code == 0 and whole.code == 0, (one.err, whole.err)
    a, b = json.loads(one.out), json.loads(whole.out)
    assert a.pop("reference") == str(st) and b.pop("reference") == str(folder)
    assert a == b and len(a["per_position"]) == 4
    r = cli("emulate", builds["a"], "--tokens", "1,2", "--model-config", cfg)
    assert r.code == 2 and "--compare" in r.err


# -- diff-layers --top ---------------------------------------------------------------------------


def test_diff_top_n_is_the_table(builds, cli):
    def listed(top: str | None) -> int:
        args = () if top is None else ("--top", top)
        r = cli("diff-layers", builds["a"], builds["b"], *args)
        assert r.code == 1, r.err
        via_row = r.out[r.out.index("│ via") : r.out.index("│ metal")]  # may wrap
        return via_row.count("model.")  # its "top tensors" cell (the metal mask is the same)

    assert listed("1") == 1
    assert listed("6") == 6  # the tiny model has 15 matrices, all changed
    assert listed(None) == 5  # the documented default


# -- verify's record -----------------------------------------------------------------------------


@pytest.mark.slow
def test_inspect_shows_a_verify_record_tied_to_the_manifest(builds, cli, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(builds["a"], b)
    r = cli("inspect", b)
    assert r.code == 0 and "not verified yet: maskc verify BUILD" in r.out
    assert json.loads(cli("inspect", b, "--json").out)["verify"] is None

    r = cli("verify", b)
    assert r.code == 0 and "verify.json" in r.out, r.err
    import hashlib

    msha = hashlib.sha256((b / "manifest.json").read_bytes()).hexdigest()
    rec = json.loads((b / "verify.json").read_text())
    assert rec["manifest_sha256"] == msha
    doc = json.loads(cli("inspect", b, "--json").out)  # the manifest/hash checks still pass
    assert doc["verify"]["state"] == "verified" and doc["verify"]["manifest_sha256"] == msha
    r = cli("inspect", b)
    assert "verified by maskc verify" in r.out and msha[:16] in r.out
    assert "not verified" not in r.out
    assert cli("verify", b).code == 0  # verifying again with the record there
    assert not list(b.glob(".verify*"))  # no temporary file left

    # an edited record, or a manifest resealed after an edit, no longer says verified
    (b / "verify.json").write_text(json.dumps({**rec, "tiles": rec["tiles"] + 1}))
    assert "malformed or was edited" in cli("inspect", b).out
    assert cli("verify", b).code == 0
    png = b / "reports" / "floorplan.png"
    png.write_bytes(png.read_bytes() + b"x")
    reseal(b, "reports/floorplan.png")
    r = cli("inspect", b)
    assert r.code == 0 and "records another manifest" in r.out and "verified by" not in r.out
    # verify records the new manifest; a failing verify removes the record
    assert cli("verify", b).code == 0 and "verified by" in cli("inspect", b).out
    via = b / "layers" / "via.gds"
    via.write_bytes(via.read_bytes() + b"\0")
    assert cli("verify", b).code == 5
    assert not (b / "verify.json").exists()


# -- tiles per layer in numeric order --------------------------------------------------------------


def test_inspect_lists_layers_in_numeric_order(cli, tmp_path):
    model, out = tmp_path / "m", tmp_path / "p"
    shape = ("--hidden", "64", "--intermediate", "128", "--heads", "4", "--kv-heads", "2")
    args = ("--shape", "llama-3.2-1b", *shape, "--layers", "12", "--vocab", "320")
    assert cli("testmodel", model, *args, "--config-only").code == 0
    assert cli("compile", model, "-o", out, "--plan-only", "--fabric", "mini").code == 0
    line = next(ln for ln in cli("inspect", out).out.splitlines() if "tiles per layer" in ln)
    assert line.index("embed") < line.index("0-11")  # one run 0-11, not 0, 1, 10, 11, 2-9
    assert "10" not in line.replace("0-11", "")


# -- inspect --tiles and render's error ----------------------------------------------------------


def test_inspect_tiles_lists_every_tile_as_the_netlist_places_it(builds, cli):
    from maskc.netlist import load_netlist

    nl = load_netlist(builds["a"])
    doc = json.loads(cli("inspect", builds["a"], "--tiles", "--json").out)
    tiles = doc["tiles"]
    assert len(tiles) == sum(m["tiles"] for m in nl.matrices.values())
    assert len({t["tile"] for t in tiles}) == len(tiles)
    for t in tiles:  # against the netlist's own arrays
        arr = nl.tile_arrays(t["tensor"], ("pos", "block"))
        d, x, y = arr["pos"][t["index"]].tolist()
        row0, rows, col0, cols = arr["block"][t["index"]].tolist()
        assert t["tile"] == f"T{d}_{x}_{y}" and (t["die"], t["x"], t["y"]) == (d, x, y)
        assert t["rows"] == [row0, row0 + rows] and t["cols"] == [col0, col0 + cols]
        assert t["format"].startswith(("int4", "int8"))
    name = "model.layers.1.mlp.down_proj.weight"
    one = json.loads(cli("inspect", builds["a"], "--tiles", "--tensor", name, "--json").out)
    assert {t["tensor"] for t in one["tiles"]} == {name}
    assert len(one["tiles"]) == nl.matrices[name]["tiles"] > 1
    r = cli("inspect", builds["a"], "--tiles")
    assert r.code == 0 and tiles[-1]["tile"] in r.out and name in r.out
    assert_bad(cli("inspect", builds["a"], "--tiles", "--tensor", "nope"), "nope", "--tiles")


def test_a_bad_render_tile_points_to_the_listing(builds, cli, tmp_path):
    r = cli("render", builds["a"], "--tile", "T9_99_99", "-o", tmp_path / "t.png")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    assert "--tiles" in r.err and "T0_0_0" in r.err
    assert not (tmp_path / "t.png").exists()
    # and the listing it points to exists and names that example tile
    listing = json.loads(cli("inspect", builds["a"], "--tiles", "--json").out)["tiles"]
    assert "T0_0_0" in {t["tile"] for t in listing}
