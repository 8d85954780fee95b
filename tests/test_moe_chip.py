"""Mixtures of experts compiled to a chip (issue 20): the netlist of Mixtral, Qwen2-MoE and
Qwen3-MoE (the tiny presets), its emulation bit for bit against tests/intref.py (written from
docs/numerics.md alone), golden hashes, prefill against decode, threads, only the selected
experts' matrices read, the float32 reference, verify and diff-layers."""

from __future__ import annotations

import json
import shutil

import intref
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from maskc.emulate.run import compare, generate, open_session
from maskc.emulate.sampling import SamplingParams
from maskc.netlist import load_netlist
from maskc.testmodels.presets import MOE_PRESETS

SETTINGS = [
    SamplingParams(),  # greedy
    # hot enough that every preset samples (qwen3-moe is peaked: at 0.8 it keeps its argmax)
    SamplingParams(temperature=1.5, top_k=0, top_p=1.0, seed=3),
]
PROMPT = [1, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def builds(model_cache, tmp_path_factory):
    """Every MoE preset compiled with the defaults (hc1; the layers read back and verified)."""
    from maskc.pipeline import CompileOptions, compile_model

    root = tmp_path_factory.mktemp("moe")
    for p in MOE_PRESETS:
        compile_model(model_cache(p).path, root / p, CompileOptions())
    return {p: root / p for p in MOE_PRESETS}


@pytest.mark.slow
@pytest.mark.parametrize("preset", MOE_PRESETS)
def test_netlist_names_each_experts_tiles(builds, preset):
    nl = load_netlist(builds[preset])
    moe = nl.arch.moe
    experts = {}
    for name, m in nl.matrices.items():
        if m["expert"] is not None:
            assert f".experts.{m['expert']}." in name and m["role"].startswith("expert_")
            experts.setdefault((m["layer"], m["expert"]), []).append(m["role"])
        else:
            assert ".experts." not in name
    assert len(experts) == nl.arch.num_layers * moe.num_experts
    assert all(sorted(r) == ["expert_down_proj", "expert_gate_proj", "expert_up_proj"]
               for r in experts.values())  # fmt: skip
    kinds = [op.KIND for op in nl.ops]
    assert kinds.count("route") == kinds.count("experts") == nl.arch.num_layers
    assert kinds.count("gate_scale") == (nl.arch.num_layers if preset == "qwen2-moe" else 0)
    assert kinds.count("head_norm") == (2 * nl.arch.num_layers if preset == "qwen3-moe" else 0)


@pytest.mark.parametrize("preset", MOE_PRESETS)
def test_emulator_equals_the_integer_reference(builds, preset):
    """Prompt + 6 decode steps, greedy and sampled: identical tokens and integer logits."""
    session = open_session(builds[preset])
    ref = intref.IntRef(builds[preset])
    for sp in SETTINGS:
        rows: list = []
        g = generate(session, PROMPT, 7, sp, stop_at_eos=False, keep_logits=rows)
        toks, ref_rows = intref.generate(
            ref, PROMPT, 7, sp.temperature, sp.top_k, sp.top_p, sp.seed
        )
        assert g.tokens == toks, (preset, sp)
        for a, b in zip(rows, ref_rows, strict=True):
            assert a.tolist() == b
        assert g.logits_sha256 == intref.logits_sha256(ref_rows)


GOLDEN = {
    # maskc testmodel --preset P (seed 0), compiled with the defaults, prompt 1..5, 8 tokens
    ("mixtral", "greedy"): (
        [223, 17, 155, 143, 164, 17, 223, 17],
        "4f0ccab7a45553089631b5d5dfecb8cc729fa51aa729495679d66562206d04fa",
    ),
    ("mixtral", "sampled"): (
        [260, 128, 279, 139, 187, 69, 17, 145],
        "47321aabf8e6205e0e148d9d22621997b5b97cf4c8bd1f3dc51c9ba8402e5df3",
    ),
    ("qwen2-moe", "greedy"): (
        [113, 113, 113, 113, 113, 113, 113, 113],
        "fbf28a3169bf58b7ece8bb13d3259e2cc917c9fa838d3b23f509dce5b73c4867",
    ),
    ("qwen2-moe", "sampled"): (
        [2, 253, 247, 159, 63, 60, 203, 6],
        "7af5f67a03afa3635cacb1be10428fe30bea1086b829ee2e834e488b251d855c",
    ),
    ("qwen3-moe", "greedy"): (
        [259, 259, 259, 259, 259, 259, 259, 259],
        "9c6a962e15b66cfd1f108b811411ffc4dc84d6cf3d11c5c5e8ec71d7146bb8ea",
    ),
    ("qwen3-moe", "sampled"): (
        [259, 203, 250, 259, 19, 242, 223, 257],
        "4276c6989f893fbf59cc742f6623d9d9df332d9897298570abe8c516059c832e",
    ),
}


@pytest.mark.parametrize("preset", MOE_PRESETS)
def test_golden_tokens(builds, preset):
    session = open_session(builds[preset])
    for mode, sp in zip(("greedy", "sampled"), SETTINGS, strict=True):
        g = generate(session, PROMPT, 8, sp, stop_at_eos=False)
        assert (g.tokens, g.logits_sha256) == GOLDEN[preset, mode], (preset, mode)


@pytest.mark.parametrize("preset", MOE_PRESETS)
def test_prefill_equals_decode_and_threads_do_not_matter(builds, preset):
    """A batch of tokens groups the rows by expert; token by token runs each token's experts:
    the same logits (the weighted sum is exact). Nor do 1 or 2 threads change a bit."""
    from maskc.emulate import backend

    chip = open_session(builds[preset]).chip
    ids = [5, 17, 200, 3, 99, 45, 12, 250, 7, 64, 31, 18, 140, 2, 90, 77, 11]  # >= 16: parallel
    out = []
    try:
        for n in (1, 2):
            backend.set_threads(n)
            chip.reset()
            batch = chip.forward(ids)
            chip.reset()
            one = np.stack([chip.forward([t])[0] for t in ids])
            assert np.array_equal(batch, one)
            out.append(batch)
    finally:
        backend.default_threads()
    assert np.array_equal(out[0], out[1])


def test_decode_reads_only_the_selected_experts(builds, monkeypatch):
    """One token runs ``top_k`` experts per layer: their matrices are the only expert
    matrices the chip multiplies by."""
    from maskc.emulate.chip import Chip

    used: list[str] = []
    real = Chip.matmul

    def spy(self, a, mat, bias, hint=None):
        used.append(mat.name)
        return real(self, a, mat, bias, hint)

    monkeypatch.setattr(Chip, "matmul", spy)
    chip = open_session(builds["qwen3-moe"]).chip
    moe, layers = chip.nl.arch.moe, chip.nl.arch.num_layers
    chip.reset()
    used.clear()
    chip.forward([42])
    experts = {n for n in used if ".experts." in n}
    assert len(experts) == layers * moe.top_k * 3
    per_layer = {(n.split(".")[2], n.split(".experts.")[1].split(".")[0]) for n in experts}
    assert len(per_layer) == layers * moe.top_k


@pytest.mark.parametrize("preset", MOE_PRESETS)
def test_chip_follows_the_float_reference(builds, model_cache, preset):
    """Gross errors only: the quantized chip against the float32 model (top-1 agreement and
    KL as the dense tiny model's test), and against the float model of its own dequantized
    weights (the integer datapath alone: nearly always the same top-1)."""
    session = open_session(builds[preset])
    toks = list(range(1, 17))
    r = compare(session, toks, model_cache(preset).path)
    assert r["top1_agreement"] >= 0.5 and r["kl_mean"] < 0.5, r
    d = compare(session, toks, None)
    assert d["top1_agreement"] >= 0.85 and d["kl_mean"] < 0.01, d


def test_verify_passes(builds, cli):
    for p in MOE_PRESETS:
        r = cli("verify", builds[p])
        assert r.code == 0, r.err


def test_changing_one_expert_changes_only_its_tiles(builds, model_cache, tmp_path, cli):
    """qwen2-moe (float32 weights) with one weight of expert 3's up_proj in layer 1 changed:
    only that expert's tiles differ (its up_proj, and its down_proj, whose calibration
    statistics are the up_proj's outputs), named in top_tensors; the metal mask is reused."""
    from maskc.pipeline import CompileOptions, compile_model

    m = tmp_path / "m"
    shutil.copytree(model_cache("qwen2-moe").path, m)
    name = "model.layers.1.mlp.experts.3.up_proj.weight"
    files = sorted(m.glob("*.safetensors"))
    for f in files:
        t = load_file(str(f))
        if name in t:
            t[name] = t[name].copy()
            t[name][5, 7] += 0.5 * float(np.abs(t[name]).max())
            save_file(t, str(f), metadata={"format": "pt"})
    compile_model(m, tmp_path / "b", CompileOptions())
    r = cli("diff-layers", builds["qwen2-moe"], tmp_path / "b", "--json")
    assert r.code == 1, r.err
    doc = json.loads(r.out)
    assert doc["masks_to_remake"] == ["via"]
    via = doc["layers"]["via"]
    assert via["changed_tiles"] >= 1
    changed = {t["tensor"] for t in via["top_tensors"]}
    assert name in changed and changed <= {name, name.replace("up_proj", "down_proj")}
