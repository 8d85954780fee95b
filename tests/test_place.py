"""Placement: every weight in exactly one tile, serpentine adjacency, contiguous layers,
multi-die split, fit errors (exit 4) and the reports, checked on generated models."""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pytest
from helpers import assert_bad

from maskc.fabric import load_fabric
from maskc.place import MatrixInfo, cut, place, serpentine


def small_fabric(tmp_path, cols: int, rows: int, sram: int | None = None):
    """mini with a smaller tile grid (and optionally less SRAM), as a TOML file."""
    text = load_fabric("mini").to_toml()
    text = re.sub(r"(?m)^name = .*$", 'name = "small"', text, count=1)
    text = re.sub(r"(?m)^tile_columns = .*$", f"tile_columns = {cols}", text)
    text = re.sub(r"(?m)^tile_rows = .*$", f"tile_rows = {rows}", text)
    if sram is not None:
        text = re.sub(r"(?m)^sram_bytes = .*$", f"sram_bytes = {sram}", text)
    p = tmp_path / "small.toml"
    p.write_text(text)
    return p


def test_serpentine_visits_every_tile_once_adjacently():
    pos = list(serpentine(5, 4))
    assert len(set(pos)) == 20
    assert all(abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1 for a, b in itertools.pairwise(pos))


def test_cut_covers_every_weight_once():
    fab = load_fabric("mini")
    for bits, rows, cols, g in [(4, 576, 1536, 32), (3, 1536, 576, 64), (8, 500, 100, 32)]:
        m = MatrixInfo("w", "up_proj", 0, rows, cols, bits, g)
        seen = np.zeros((rows, cols), dtype=np.int64)
        for r0, nr, c0, nc in cut(m, fab):
            assert nr <= fab.tile.rows and nc <= fab.weights_per_tile_row(bits)
            seen[r0 : r0 + nr, c0 : c0 + nc] += 1
        assert (seen == 1).all()


def test_compile_with_fabric(model_cache, tmp_path, cli):
    gen = model_cache("tiny")
    out = tmp_path / "b"
    r = cli("compile", gen.path, "-o", out, "--fabric", "mini", "--json")
    assert r.code == 0, r.err
    p = json.loads((out / "reports" / "placement.json").read_text())
    assert p["fabric"] == "mini" and p["dies"] == 1
    assert (out / "reports" / "floorplan.png").read_bytes()[:4] == b"\x89PNG"
    idx = json.loads((out / "quant" / "index.json").read_text())["tensors"]
    fab = load_fabric("mini")
    # the tile count is what cutting every quantized matrix gives, computed here independently
    want = 0
    for e in idx.values():
        if e["kind"] == "quantized":
            rows, cols = e["shape"]
            per_row = {4: 192, 3: 256, 8: 96}[e["format"]["bits"]]
            want += -(-rows // fab.tile.rows) * -(-cols // per_row)
    assert p["tiles_used"] == want
    assert sum(p["per_layer_tiles"].values()) == want
    r = cli("inspect", out)
    assert r.code == 0 and "placement on mini" in r.out


def test_too_small_fabric_is_exit_4_and_auto_spreads(model_cache, tmp_path, cli):
    gen = model_cache("tiny")
    fab = small_fabric(tmp_path, 4, 3)  # 12 tiles per die
    r = cli("compile", gen.path, "-o", tmp_path / "b", "--fabric", fab)
    assert r.code == 4, r
    assert "tiles" in r.err and "--dies auto" in r.err and "Traceback" not in r.err
    assert not (tmp_path / "b").exists()
    r = cli("compile", gen.path, "-o", tmp_path / "c", "--fabric", fab, "--dies", "auto", "--json")
    assert r.code == 0, r.err
    p = json.loads((tmp_path / "c" / "reports" / "placement.json").read_text())
    assert p["dies"] >= 2
    assert all(d["tiles_used"] <= d["tiles_available"] for d in p["per_die"])
    # layers are split into contiguous runs, in order
    runs = [d["layers"] for d in p["per_die"]]
    assert runs[0][0] == 0 and runs[-1][1] == 1
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(runs))
    # one crossing per die boundary, and the tied head's way back to die 0
    hops = [(x["from_die"], x["to_die"]) for x in p["links"]]
    assert hops == [*((d, d + 1) for d in range(p["dies"] - 1)), (p["dies"] - 1, 0)]


def test_sram_too_small_is_exit_4(model_cache, tmp_path, cli):
    fab = small_fabric(tmp_path, 80, 64, sram=1024)
    r = cli("compile", model_cache("tiny").path, "-o", tmp_path / "b", "--fabric", fab)
    assert r.code == 4 and "SRAM" in r.err


def test_placement_layout_properties(model_cache):
    """Direct API: no tile used twice, consecutive blocks adjacent, each layer contiguous."""
    from maskc.ingest import load_model

    gen = model_cache("tiny-odd")
    m = load_model(gen.path)
    fab = load_fabric("mini")
    mats = [
        MatrixInfo(s.name, s.role, s.layer, s.shape[0], s.shape[1], 4, 32)
        for s in m.specs
        if len(s.shape) == 2
    ]
    p = place(mats, m.arch, fab)
    pos = [(b.x, b.y) for b in p.blocks]
    assert len(set(pos)) == len(pos)
    order = {xy: k for k, xy in enumerate(serpentine(*p.grid))}
    ks = [order[xy] for xy in pos]
    assert ks == list(range(len(ks)))  # filled in serpentine order without gaps
    for layer in range(m.arch.num_layers):
        idx = [k for k, b in zip(ks, p.blocks, strict=True) if b.layer == layer]
        assert idx == list(range(idx[0], idx[0] + len(idx)))


@pytest.mark.parametrize(
    "args,code,needle",
    [
        (["--fabric", "nosuch"], 3, "hc1"),
        (["--fabric", "mini", "--dies", "zero"], 2, "--dies"),
        (["--fabric", "mini", "-g", "40"], 3, "group size"),
    ],
)
def test_bad_placement_inputs(model_cache, tmp_path, cli, args, code, needle):
    r = cli("compile", model_cache("tiny").path, "-o", tmp_path / "b", *args)
    assert r.code == code, r
    assert needle in r.err and "Traceback" not in r.err
    assert not (tmp_path / "b").exists()


def test_skipped_matrix_cannot_be_placed(model_cache, tmp_path, cli):
    cfg = tmp_path / "q.toml"
    cfg.write_text("[[rule]]\nmatch = '.*v_proj'\nskip = true\n")
    r = cli(
        "compile",
        model_cache("tiny").path,
        "-o",
        tmp_path / "b",
        "--fabric",
        "mini",
        "--config",
        cfg,
    )
    assert_bad(r, "skip")


LLAMA_8B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "rope_scaling": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
}


@pytest.mark.parametrize("bits", ["4", "3"])
def test_llama_8b_plan_fits_hc1(tmp_path, cli, bits):
    """Acceptance of the fabric issue: a Llama-3.1-8B-shaped plan (config.json only, no
    weights) fits one hc1 die at 4 and at 3 bits, with tile and SRAM use reported."""
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(LLAMA_8B))
    out = tmp_path / "plan"
    r = cli("compile", cfg, "-o", out, "--plan-only", "--fabric", "hc1", "--bits", bits, "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["parameters"] == 8_030_261_248
    p = doc["placement"]
    assert p["dies"] == 1 and p["tiles_used"] <= p["tiles_available"]
    assert p["max_context"] >= 2048
    assert doc["bpw_blocks"] <= (5.0 if bits == "4" else 4.0)
    assert sorted(x.name for x in (out / "reports").iterdir()) == [
        "floorplan.png",
        "placement.json",
        "plan.json",
    ]
    assert cli("inspect", out).code == 0
    # modeled performance, recomputed from the fabric's fields: 32 layers x 4 sequential matrix
    # stages + lm_head, one tile operation each; attention at context 1 is 2*32*128 MACs per layer
    fab = load_fabric("hc1")
    op_s = fab.system.cycles_per_tile_op / (fab.system.clock_mhz * 1e6)
    attn_s = (
        32 * (2 * 32 * 128 * 1 / fab.units.attention.ops_per_cycle) / (fab.system.clock_mhz * 1e6)
    )
    perf = p["performance"]
    assert perf["sequential_stages"] == 129
    assert perf["at_context_1"]["latency_us"] == pytest.approx((129 * op_s + attn_s) * 1e6)
    assert 10_000 < perf["at_context_1"]["tokens_per_s_per_user"] < 20_000


def test_llama_8b_plan_does_not_fit_mini(tmp_path, cli):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(LLAMA_8B))
    for dies in ("1", "auto"):
        r = cli(
            "compile", cfg, "-o", tmp_path / "p", "--plan-only", "--fabric", "mini", "--dies", dies
        )
        assert r.code == 4 and "tiles" in r.err, r
    assert not (tmp_path / "p").exists()
    r = cli("compile", cfg, "-o", tmp_path / "p", "--plan-only")  # the default fabric: hc1
    assert r.code == 0 and "hc1" in (tmp_path / "p" / "reports" / "placement.json").read_text()


def test_dies_auto_also_fits_the_kv_cache(model_cache, tmp_path, cli):
    """Tiles are plenty, but one die's SRAM holds one layer's KV cache only: auto takes 2 dies."""
    gen = model_cache("tiny")  # 2 layers, 2 kv heads of 16: 80 bytes per token per layer
    fab = small_fabric(tmp_path, 64, 64, sram=256 * 80 + 1000)
    r = cli("compile", gen.path, "-o", tmp_path / "one", "--fabric", fab, "--context", "256")
    assert r.code == 4 and "SRAM" in r.err, r
    r = cli(
        "compile",
        gen.path,
        "-o",
        tmp_path / "b",
        "--fabric",
        fab,
        "--context",
        "256",
        "--dies",
        "auto",
        "--json",
    )
    assert r.code == 0, r.err
    assert json.loads(r.out)["placement"]["dies"] == 2
