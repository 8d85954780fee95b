"""Experts over several dies (issue 20, expert parallelism): a mixture-of-experts layer that
does not fit one die gets a home die (attention, router, shared expert, KV cache) and its
experts spread over expert dies, each expert whole on one die (docs/fabric.md, "Experts over
several dies").

The tiny Qwen2-MoE preset on ``mini`` tiles (192 x 192) has 9 tiles per layer outside the
experts, 3 per expert (6 experts), and a 2-tile embedding (tied): on a die of 20 tiles a layer
(27 tiles) does not fit, so ``--dies auto`` spreads it; on ``mini`` (5,120 tiles) it fits one
die. The expected layout and byte counts below are worked out by hand from those numbers and
docs/fabric.md's formulas, not read from maskc.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from helpers import reseal

from maskc.emulate.run import generate, open_session
from maskc.emulate.sampling import SamplingParams

HIDDEN = 64
ACT8 = HIDDEN + 4 + HIDDEN // 32  # codes, mantissa and exponent (2 bytes each), group shifts
SIGNALS = HIDDEN * 4  # int32
#: per layer, the die of each expert: layer 0's home die 0 holds 2 + 9 + 3 x 3 = 20 tiles,
#: experts 3-5 go to expert die 1; layer 1's home die 2 holds 9 + 3 x 3, its experts 3-5 join
#: expert die 1 (9 + 9 = 18 of 20 tiles)
EXPERT_DIES = [[0, 0, 0, 1, 1, 1], [2, 2, 2, 1, 1, 1]]


def small_fabric(dirpath: Path, cols: int = 5, rows: int = 4) -> str:
    """``mini`` with a die of ``cols x rows`` tiles (the same tiles: the same arithmetic)."""
    from maskc.fabric import load_fabric

    text = load_fabric("mini").to_toml()
    for key, value in (("name", '"mini20"'), ("tile_columns", cols), ("tile_rows", rows)):
        text = re.sub(rf"(?m)^{key} = .*$", f"{key} = {value}", text, count=1)
    p = Path(dirpath) / "mini20.toml"
    p.write_text(text)
    return str(p)


@pytest.fixture(scope="module")
def builds(model_cache, tmp_path_factory):
    from maskc.pipeline import CompileOptions, compile_model

    root = tmp_path_factory.mktemp("ep")
    fab = small_fabric(root)
    model = model_cache("qwen2-moe").path
    out = {"one": root / "one", "spread": root / "spread"}
    compile_model(model, out["one"], CompileOptions(fabric="mini", verify=False))
    compile_model(model, out["spread"], CompileOptions(fabric=fab, dies="auto", verify=False))
    return out


def test_the_experts_are_spread_over_dies(builds):
    rep = json.loads((builds["spread"] / "reports" / "placement.json").read_text())
    nl = json.loads((builds["spread"] / "netlist" / "netlist.json").read_text())
    assert rep["dies"] == nl["placement"]["dies"] == 3
    assert [d["layers"] for d in rep["per_die"]] == [[0, 0], [], [1, 1]]
    assert [d["tiles_used"] for d in rep["per_die"]] == [20, 18, 18]
    assert rep["per_die"][1]["experts_of"] == [
        {"layer": 0, "experts": [3, 4, 5]},
        {"layer": 1, "experts": [3, 4, 5]},
    ]
    assert rep["experts"]["home_dies"] == [0, 2]
    assert rep["experts"]["expert_dies"] == nl["placement"]["expert_dies"] == EXPERT_DIES
    for r in rep["experts"]["per_expert"]:  # each expert's tiles all on its die
        assert r["die"] == EXPERT_DIES[r["layer"]][r["expert"]] and r["tiles"] == 3
    # the KV cache of a layer on its home die; the expert die holds none
    kv = [[x["layer"] for x in d["kv"]["layers"]] for d in nl["sram"]["dies"]]
    assert kv == [[0], [], [1]]
    # the boot image: the final norm with the last layer, on its home die (2), not on die 1
    index = json.loads((builds["spread"] / "boot" / "index.json").read_text())
    names = [[e["name"] for e in d["entries"]] for d in index["dies"]]
    assert "model.norm.weight" in names[2]
    assert names[1] == ["rope.phase_step", "attention.inv_sqrt_hd_q16"]
    # a build that fits one die has no expert_dies at all
    one = json.loads((builds["one"] / "netlist" / "netlist.json").read_text())
    assert "expert_dies" not in one["placement"] and one["placement"]["dies"] == 1


def test_same_tokens_and_logits_as_one_die(builds):
    prompt = [1, 2, 3, 4, 5]
    settings = [SamplingParams(), SamplingParams(temperature=1.5, top_k=0, top_p=1.0, seed=3)]
    runs = {}
    for key, b in builds.items():
        session = open_session(b)
        runs[key] = [
            (g.tokens, g.logits_sha256)
            for g in (generate(session, prompt, 8, sp, stop_at_eos=False) for sp in settings)
        ]
    assert runs["spread"] == runs["one"]


def test_the_emulator_counts_the_bytes_handed_to_expert_dies(builds, monkeypatch):
    from maskc.emulate import moe

    chip = open_session(builds["spread"]).chip
    assert chip.home == [0, 2]
    pairs = {(0, 2), (0, 1), (1, 0), (2, 1), (1, 2)}
    assert set(chip.link_bytes) == pairs and not any(chip.link_bytes.values())
    chosen = []
    real = moe.route_rows

    def spy(*args):
        sel, wts = real(*args)
        chosen.append(sel.copy())
        return sel, wts

    monkeypatch.setattr(moe, "route_rows", spy)
    chip.reset()
    chip.forward([1, 2, 3])  # prefill: each token's experts, once per token and expert
    chip.forward([4])
    want = dict.fromkeys(pairs, 0)
    want[(0, 2)] = 4 * SIGNALS  # the residual stream into layer 1's home die
    for call, sel in enumerate(chosen):
        layer = call % 2
        home = [0, 2][layer]
        for row in sel.tolist():
            for e in row:
                x = EXPERT_DIES[layer][e]
                if x != home:
                    want[(home, x)] += ACT8
                    want[(x, home)] += SIGNALS
    assert len(chosen) == 4 and chip.link_bytes == want
    assert want[(0, 1)] + want[(2, 1)] > 0  # the prompt did select experts on die 1
    one = open_session(builds["one"]).chip
    assert one.link_bytes == {}


def test_modeled_expert_links(builds):
    """The links of the modeled chip: home die to home die (the hidden state), and per layer and
    expert die the act8 input out and the int32 outputs back, ``top_k / num_experts`` of the
    die's experts of that layer per token; latency adds the slowest round trip per layer."""
    from maskc.fabric import load_fabric

    rep = json.loads((builds["spread"] / "reports" / "placement.json").read_text())
    perf = rep["performance"]["at_context_1"]
    fab = load_fabric(str(builds["spread"].parent / "mini20.toml"))
    rate = 2 / 6
    got = [(h["from_die"], h["to_die"], h.get("expert_layer"), h["bytes_per_token"])
           for h in perf["links"]]  # fmt: skip
    want = [
        (0, 2, None, SIGNALS),
        (2, 0, None, SIGNALS),  # the tied head on die 0
        (0, 1, 0, pytest.approx(3 * rate * ACT8)),
        (1, 0, 0, pytest.approx(3 * rate * SIGNALS)),
        (2, 1, 1, pytest.approx(3 * rate * ACT8)),
        (1, 2, 1, pytest.approx(3 * rate * SIGNALS)),
    ]
    assert got == want
    gbs = fab.die.link_gb_per_s * 1e9
    dense = 2 * SIGNALS / gbs
    trips = 2 * 3 * rate * (ACT8 + SIGNALS) / gbs  # two layers, one expert die each
    assert perf["time_us"]["links"] == pytest.approx((dense + trips) * 1e6)
    bits = (2 * SIGNALS + 2 * 3 * rate * (ACT8 + SIGNALS)) * 8
    assert perf["energy_mj"]["links"] == pytest.approx(bits * fab.power.link_pj_per_bit * 1e-9)
    t_op = fab.system.cycles_per_tile_op / fab.clock_hz
    # the expert die: 2 stages per layer it serves, times the chance it is used (3 x 2 / 6 = 1)
    assert perf["stages"][1]["matrix_us"] == pytest.approx(2 * 2 * t_op * 1e6)
    assert perf["time_us"]["matrix_stages"] == pytest.approx((5 + 5 + 1) * t_op * 1e6)


def test_an_expert_moved_to_another_die_is_refused(builds, tmp_path, cli):
    b = tmp_path / "b"
    shutil.copytree(builds["spread"], b)
    p = b / "netlist" / "netlist.json"
    doc = json.loads(p.read_text())
    doc["placement"]["expert_dies"][1][3] = 2
    p.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    reseal(b, "netlist/netlist.json")
    r = cli("emulate", b, "--tokens", "1,2", "-n", "1")
    assert r.code == 3, r.err
    assert "placement.expert_dies" in r.err and len(r.err.strip().splitlines()) == 1


def test_explicit_dies_do_not_spread_experts(model_cache, tmp_path, cli):
    """Only ``--dies auto`` spreads experts: ``--dies 2`` (a layer per die) does not fit."""
    fab = small_fabric(tmp_path)
    cfg = model_cache("qwen2-moe").path / "config.json"
    r = cli("compile", cfg, "-o", tmp_path / "p", "--plan-only", "--fabric", fab, "--dies", "2")
    assert r.code == 4 and "--dies auto" in r.err, r.err
    assert not (tmp_path / "p").exists()
    # a die of 8 tiles cannot hold layer 0's attention, router, shared expert and embedding (11)
    fab = small_fabric(tmp_path, cols=2, rows=4)
    r = cli("compile", cfg, "-o", tmp_path / "p", "--plan-only", "--fabric", fab, "--dies", "auto")
    assert r.code == 4 and "nor its experts spread over more dies" in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1 and not (tmp_path / "p").exists()


def test_adapter_fit_skips_the_expert_die(builds):
    """The SRAM plan's adapter check at run time: an expert die has no KV cache to divide by."""
    from maskc.sram import sram_fit

    sram = json.loads((builds["spread"] / "netlist" / "netlist.json").read_text())["sram"]
    rows = sram_fit(sram, [], 16)
    assert [r["kv_bytes"] for r in rows][1] == 0
    assert rows[1]["max_context"] == sram["max_context"]
    assert all(r["free_bytes"] > 0 for r in rows)
