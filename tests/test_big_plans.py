"""``--plan-only --dies auto`` for chips bigger than one die: Llama-3.1-70B from config alone.

The expected numbers are recomputed here from the fabric's fields and the tile counts the plan
reports (docs/fabric.md, "Modeled performance"), not read back from maskc's model.
"""

from __future__ import annotations

import json
import math

import pytest

from maskc.fabric import load_fabric
from maskc.place.placer import _partition


@pytest.fixture(scope="module")
def plan70(tmp_path_factory):
    from maskc.cli import main

    root = tmp_path_factory.mktemp("plan70")
    model, out = root / "llama-3.1-70b", root / "plan"
    for args in (
        ["testmodel", str(model), "--shape", "llama-3.1-70b", "--config-only"],
        ["compile", str(model), "-o", str(out), "--plan-only", "--dies", "auto"],
    ):
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 0
    return json.loads((out / "reports" / "placement.json").read_text()), out


def test_70b_plans_on_the_fewest_dies(plan70):
    p, out = plan70
    fab = load_fabric("hc1")
    tpd = fab.tiles_per_die
    per_layer = p["per_layer_tiles"]
    layer_tiles = [per_layer[str(i)] for i in range(80)]
    total = sum(layer_tiles) + per_layer["embed"] + per_layer["lm_head"]
    assert p["tiles_used"] == total
    fewest = math.ceil(total / tpd)
    assert p["dies"] == fewest == 7  # the tiles fill 7 dies; 70B needed 8 before the fix
    covered = []
    for d in p["per_die"]:
        a, b = d["layers"]
        covered += range(a, b + 1)
        need = sum(layer_tiles[a : b + 1])
        need += per_layer["embed"] if d["die"] == 0 else 0
        need += per_layer["lm_head"] if d["die"] == p["dies"] - 1 else 0
        assert d["tiles_used"] == need <= tpd
        assert d["kv_bytes"] <= d["sram_bytes"]
    assert covered == list(range(80))
    assert sorted(x.name for x in (out / "reports").iterdir()) == [
        "floorplan.png",
        "placement.json",
        "plan.json",
    ]


def test_70b_modeled_speed_and_where_the_time_goes(plan70):
    p, _ = plan70
    fab = load_fabric("hc1")
    clock = fab.system.clock_mhz * 1e6
    perf = p["performance"]
    assert perf["sequential_stages"] == 80 * 4 + 1
    for key, ctx in (("at_context_1", 1), ("at_context", 2048)):
        at = perf[key]
        assert at["context"] == ctx
        t = at["time_us"]
        stage_us = fab.system.cycles_per_tile_op / clock * 1e6
        assert t["matrix_stages"] == pytest.approx(321 * stage_us)
        # attention: 2 * 64 heads * 128 * ctx MACs per layer on its unit, 80 layers
        attn = 80 * 2 * 64 * 128 * ctx / fab.units.attention.ops_per_cycle / clock * 1e6
        assert t["attention"] == pytest.approx(attn)
        # six die boundaries, one int32 hidden state of 8192 values each
        assert t["links"] == pytest.approx((p["dies"] - 1) * 8192 * 4 / (64e9) * 1e6)
        assert sum(t.values()) == pytest.approx(at["latency_us"])
        assert at["tokens_per_s_per_user"] == pytest.approx(1e6 / at["latency_us"])
        assert sum(at["energy_mj"].values()) == pytest.approx(at["energy_mj_per_token"])
    assert 5_000 < perf["at_context_1"]["tokens_per_s_per_user"] < 7_000
    # at 2,048 tokens attention dominates a 70B token
    t = perf["at_context"]["time_us"]
    assert t["attention"] > t["matrix_stages"] > t["links"]


def test_plan_output_says_where_the_time_goes(tmp_path, cli):
    model = tmp_path / "m"
    assert cli("testmodel", model, "--shape", "llama-3.1-70b", "--config-only").code == 0
    r = cli("compile", model, "-o", tmp_path / "p", "--plan-only", "--dies", "auto")
    assert r.code == 0, r.err
    assert "tiles per layer: embed: 10,793, 0-79: 4,456 each, lm_head: 10,793" in r.out
    assert "SRAM dies 1-5:" in r.out
    line = next(x for x in r.out.splitlines() if x.startswith("time per token at 2048"))
    assert "matrix stages" in line and "attention" in line and "links" in line


def test_partition_counts_the_embedding_and_lm_head():
    # 6 equal layers, an embedding as big as 2 layers on the first die: loads 2+1, 2, 3
    assert _partition([1] * 6, 3, first=2) == [0, 1, 3]
    # and an lm_head as big on the last: 2+1, 3, 2+2 (no split does better than 4)
    assert _partition([1] * 6, 3, first=2, last=2) == [0, 1, 4]
    assert _partition([1] * 6, 3) == [0, 2, 4]
    assert _partition([5, 1, 1, 1], 2) == [0, 1]
    assert _partition([1, 1, 1, 1], 4, first=9, last=9) == [0, 1, 2, 3]  # every die a layer
