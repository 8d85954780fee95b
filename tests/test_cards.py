"""Dies and cards as a pipeline (issue 20, part 4): the optional ``[card]`` table, the
pipeline-balanced split, the modeled pipeline report (recomputed here from the formulas of
docs/fabric.md), and a multi-die build's emulation handing the hidden state die to die."""

from __future__ import annotations

import json
import math
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
from helpers import micro_fabric

from maskc.fabric import load_fabric, parse_fabric

ROOT = Path(__file__).resolve().parent.parent
CARDS = ROOT / "examples" / "fabrics" / "hc1-cards.toml"
CARD = """
[card]
dies_per_card = 2
static_w = 10.0
die_link_gb_per_s = 100.0
die_link_latency_ns = 50.0
die_link_pj_per_bit = 1.0
card_link_gb_per_s = 10.0
card_link_latency_ns = 1000.0
card_link_pj_per_bit = 4.0
"""


def test_card_table_is_optional_and_round_trips():
    hc1 = load_fabric("hc1")
    assert hc1.card is None and "card" not in hc1.to_json()  # older fabrics' JSON unchanged
    assert "cards" not in hc1.to_json()["derived"]
    fab = parse_fabric(tomllib.loads(hc1.to_toml() + CARD), "x.toml")
    assert parse_fabric(tomllib.loads(fab.to_toml()), "y.toml") == fab
    assert fab.to_json()["card"]["dies_per_card"] == 2
    assert [fab.card_of_die(d) for d in range(5)] == [0, 0, 1, 1, 2]
    assert fab.link(0, 1)["kind"] == "die" and fab.link(0, 1)["latency_ns"] == 50.0
    assert fab.link(1, 2) == {
        "kind": "card",
        "gb_per_s": 10.0,
        "latency_ns": 1000.0,
        "pj_per_bit": 4.0,
    }
    # without [card]: every die its own card, the [die]/[power] link, no latency
    assert hc1.link(0, 1) == {
        "kind": "card",
        "gb_per_s": hc1.die.link_gb_per_s,
        "latency_ns": 0.0,
        "pj_per_bit": hc1.power.link_pj_per_bit,
    }
    assert load_fabric(str(CARDS)).card.dies_per_card == 4


def test_70b_plan_on_cards_balances_the_pipeline(tmp_path, cli):
    """Llama-3.1-70B's shape (config only) on hc1 dies in cards of four: --dies auto takes the
    two cards' 8 dies, the per-die stage times are balanced, and the report's pipeline numbers
    are the formulas of docs/fabric.md."""
    r = cli("testmodel", tmp_path / "m", "--shape", "llama-3.1-70b", "--config-only")
    assert r.code == 0, r.err
    out = tmp_path / "plan"
    r = cli(
        "compile", tmp_path / "m" / "config.json", "-o", out, "--plan-only",
        "--fabric", CARDS, "--dies", "auto", "--context", "1024",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert "pipeline at 1024: 8 dies on 2 card(s)" in r.out
    assert "bytes card to card" in r.out
    rep = json.loads((out / "reports" / "placement.json").read_text())
    fab = load_fabric(str(CARDS))
    assert rep["dies"] == 8 and [d["card"] for d in rep["per_die"]] == [0] * 4 + [1] * 4
    layers = [d["layers"][1] - d["layers"][0] + 1 for d in rep["per_die"]]
    # stage time is per layer: balanced means 10 layers each although the first and last
    # dies also hold the 8-bit embedding and lm_head (a tile-balanced split gives them fewer)
    assert layers == [10] * 8
    assert all(d["tiles_used"] <= d["tiles_available"] for d in rep["per_die"])
    perf = rep["performance"]
    assert (perf["dies"], perf["cards"], perf["dies_per_card"]) == (8, 2, 4)
    assert perf["static_w"] == 8 * fab.power.static_w_per_die + 2 * fab.card.static_w
    t_op = fab.system.cycles_per_tile_op / fab.clock_hz
    hidden_bytes = 8192 * 4
    for b in (perf["at_context_1"], perf["at_context"]):
        ctx = b["context"]
        t_attn = 2 * 64 * 128 * ctx / fab.units.attention.ops_per_cycle / fab.clock_hz
        want = [(4 * n + (d == 7)) * t_op + n * t_attn for d, n in enumerate(layers)]
        got = [s["time_us"] * 1e-6 for s in b["stages"]]
        assert got == pytest.approx(want)
        kinds = [x["kind"] for x in b["links"]]
        assert kinds == ["die", "die", "die", "card", "die", "die", "die"]  # 3 -> 4 leaves card 0
        links = [
            hidden_bytes / (fab.link(x["from_die"], x["to_die"])["gb_per_s"] * 1e9)
            + fab.link(x["from_die"], x["to_die"])["latency_ns"] * 1e-9
            for x in b["links"]
        ]
        latency = sum(want) + sum(links)
        assert b["latency_us"] == pytest.approx(latency * 1e6)
        assert sum(b["time_us"].values()) == pytest.approx(b["latency_us"])
        assert b["link_bytes_per_token"] == {
            "die_to_die": 6 * hidden_bytes,
            "card_to_card": hidden_bytes,
        }
        pipe = b["pipeline"]
        slow = max(max(want), max(hidden_bytes / (x * 1e9) for x in (256.0, 64.0)))
        assert pipe["slowest_stage_us"] == pytest.approx(slow * 1e6)
        assert pipe["slowest_stage"] == "die 7"  # the lm_head's extra stage
        assert pipe["users_to_fill"] == math.ceil(latency / slow)
        kv_die = 10 * 2 * 8 * (128 + 4) * ctx  # int8 K and V of 8 kv heads + a scale word
        free = min(
            fab.die.sram_bytes - d["params_bytes"] - rep["sram_reserved_for_adapters"]
            for d in rep["per_die"]
        )
        assert pipe["users_kv_cache_holds"] == free // kv_die
        n = min(pipe["users_to_fill"], pipe["users_kv_cache_holds"])
        assert pipe["users_in_flight"] == n
        assert pipe["tokens_per_s"] == pytest.approx(min(n / latency, 1 / slow))
        assert pipe["tokens_per_s"] > b["tokens_per_s_per_user"]  # several users in flight
        parts = b["energy_mj"]
        assert parts["static"] == pytest.approx(perf["static_w"] * latency * 1e3)
        assert parts["links"] == pytest.approx(hidden_bytes * 8 * (6 * 1.0 + 5.0) * 1e-12 * 1e3)
        assert sum(parts.values()) == pytest.approx(b["energy_mj_per_token"])


def test_dies_n_on_cards_and_a_lone_die_without_link(model_cache, tmp_path, cli):
    """--dies N on a card fabric places the tiny model's layers one per die; a fabric whose
    [die] link_gb_per_s is 0 cannot run on two dies (exit 4 naming the key)."""
    fab = Path(micro_fabric(tmp_path))
    text = fab.read_text()
    (tmp_path / "cards.toml").write_text(text + CARD)
    m = model_cache("tiny").path
    out = tmp_path / "b"
    r = cli("compile", m, "-o", out, "--fabric", tmp_path / "cards.toml", "--dies", "2",
            "--plan-only")  # fmt: skip
    assert r.code == 0, r.err
    rep = json.loads((out / "reports" / "placement.json").read_text())
    assert [d["layers"] for d in rep["per_die"]] == [[0, 0], [1, 1]]
    assert [d["card"] for d in rep["per_die"]] == [0, 0]
    hops = [(x["from_die"], x["to_die"], x["kind"]) for x in rep["links"]]
    assert hops == [(0, 1, "die"), (1, 0, "die")]  # the tied head's way back to die 0
    (tmp_path / "nolink.toml").write_text(
        text.replace("link_gb_per_s = ", "link_gb_per_s = 0.0 #", 1)
    )
    r = cli("compile", m, "-o", tmp_path / "c", "--fabric", tmp_path / "nolink.toml",
            "--dies", "2", "--plan-only")  # fmt: skip
    assert r.code == 4 and "link_gb_per_s" in r.err and "Traceback" not in r.err, r
    assert not (tmp_path / "c").exists()


@pytest.fixture(scope="module")
def builds(model_cache, tmp_path_factory):
    """The tiny model on the micro fabric: one die (``1``), two dies (``2``), and two dies with
    one weight of layer 1 (on die 1) changed (``2b``)."""
    from safetensors.numpy import load_file, save_file

    from maskc.pipeline import CompileOptions, compile_model

    root = tmp_path_factory.mktemp("cards")
    fab = micro_fabric(root)
    base = model_cache("tiny").path
    changed = root / "model-b"
    shutil.copytree(base, changed)
    w = load_file(str(changed / "model.safetensors"))
    name = "model.layers.1.mlp.down_proj.weight"
    g = w[name][3, 0:32].copy()
    order = np.argsort(g)
    w[name] = w[name].copy()
    w[name][3, order[8]] = g[order[24]]  # an interior value moved: its code changes
    save_file(w, str(changed / "model.safetensors"))
    out = {}
    for key, model, dies in (("1", base, 1), ("2", base, 2), ("2b", changed, 2)):
        out[key] = root / key
        compile_model(model, out[key], CompileOptions(fabric=fab, dies=dies, verify=False))
    return out


def test_two_die_build_hands_over_int32_and_gives_the_same_logits(builds, cli):
    """The tiny model compiled for one die and for two (micro fabric): the two-die chip hands
    the residual stream over at the die boundary, hidden_size * 4 bytes per token, and its
    greedy tokens and logits are those of the one-die chip."""
    from maskc.emulate.run import open_session

    runs = {}
    for dies in ("1", "2"):
        r = cli("emulate", builds[dies], "--tokens", "1,2,3", "-n", "6", "--json")
        assert r.code == 0, r.err
        doc = json.loads(r.out)
        runs[dies] = (doc["tokens"], doc["logits_sha256"])
    assert runs["1"] == runs["2"]
    chip = open_session(builds["2"]).chip
    hidden = chip.nl.arch.hidden_size
    assert chip.home == [0, 1] and chip.link_bytes == {(0, 1): 0}
    chip.forward([1, 2, 3])  # prefill: three tokens cross the boundary
    assert chip.link_bytes == {(0, 1): 3 * hidden * 4}
    chip.forward([4])
    assert chip.link_bytes == {(0, 1): 4 * hidden * 4}
    one = open_session(builds["1"]).chip
    assert one.link_bytes == {}
    one.reset()
    chip.reset()
    assert (one.forward([5, 6]) == chip.forward([5, 6])).all()


def test_diff_layers_names_the_dies_whose_masks_change(builds, cli):
    """One weight of layer 1 changed on a two-die build: only die 1's via mask changes, and
    the layer files are per die."""
    index = json.loads((builds["2"] / "layers" / "index.json").read_text())
    assert sorted({b["die"] for b in index["banks"]}) == [0, 1]
    r = cli("diff-layers", builds["2"], builds["2b"], "--json")
    assert r.code == 1, r
    doc = json.loads(r.out)
    assert doc["masks_to_remake"] == ["via"]
    assert doc["dies_to_remake"] == {"via": [1], "metal": []}
    via = doc["layers"]["via"]["dies"]
    assert via["0"] == {
        "identical": True,
        "changed_tiles": 0,
        "total_tiles": via["0"]["total_tiles"],
    }
    assert via["1"]["changed_tiles"] == doc["layers"]["via"]["changed_tiles"] >= 1
    assert "(via mask of die 1)" in doc["verdict"], doc["verdict"]
    r = cli("diff-layers", builds["2"], builds["2b"])
    assert r.code == 1 and "via mask of die 1" in r.out
    r = cli("diff-layers", builds["2"], builds["2"], "--json")
    assert r.code == 0 and json.loads(r.out)["dies_to_remake"] == {"via": [], "metal": []}
