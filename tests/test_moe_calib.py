"""Calibration of mixtures of experts (issue 20): each routed expert's statistics come from the
tokens the float router sends to it, checked against an independent routing written here; the
router and the shared expert see every token; an expert no token selects is quantized without
calibration (with a warning and the report saying which); ``--bits 3`` and ``--method gptq``
compile, verify and are deterministic on the MoE presets."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from maskc.ingest import load_model
from maskc.quantize.calibrate import LayerCalibrator
from maskc.reference import FloatLlama
from maskc.testmodels.presets import MOE_PRESETS


def _windows(model, lengths, seed=1):
    """Calibration windows: the float embedding rows of seeded random token ids."""
    emb = model.read("model.embed_tokens.weight")
    rng = np.random.default_rng(seed)
    return [emb[rng.integers(0, emb.shape[0], n)].astype(np.float32) for n in lengths]


def _route(h: np.ndarray, router: np.ndarray, top_k: int) -> list[list[int]]:
    """Each token's selected experts, written from the definition (not maskc.reference's code):
    the probabilities of the router's logits, the top_k largest, ties to the lower index."""
    logits = h @ router.T  # float32 [T, E], as the float32 reference computes it
    out = []
    for row in logits:
        e = np.exp(row - row.max())
        p = e / e.sum()
        out.append(sorted(range(len(p)), key=lambda j: (-float(p[j]), j))[:top_k])
    return out


def _mlp_in(arch, get, layer: int, x: np.ndarray) -> np.ndarray:
    """The float activations entering layer ``layer``'s MLP on the residual stream ``x``, from
    a separate float model."""
    seen = []
    ref = FloatLlama(arch, get)
    ref.observer = lambda i, site, v: seen.append(v.copy()) if site == "mlp_in" else None
    ref.block(layer, x, 0)
    (h,) = seen
    return h


def _silu(x):
    return x / (np.float32(1.0) + np.exp(-x))


@pytest.mark.parametrize("preset", MOE_PRESETS)
def test_each_experts_statistics_are_the_tokens_routed_to_it(model_cache, preset):
    model = load_model(model_cache(preset).path)
    a = model.arch
    moe = a.moe
    mixtral = a.architecture == "MixtralForCausalLM"
    windows = _windows(model, [23, 17])
    cal = LayerCalibrator(FloatLlama(a, model.read), windows, hessian=True)
    for layer in range(a.num_layers):
        # the float activations entering the MLP, from a separate float model
        h = np.concatenate([_mlp_in(a, model.read, layer, x) for x in cal.windows])
        n_tok = sum(len(x) for x in cal.windows)
        assert h.shape[0] == n_tok

        stats = cal.observe(layer)
        p = f"model.layers.{layer}." + ("block_sparse_moe." if mixtral else "mlp.")
        names = ("w1", "w3", "w2") if mixtral else ("gate_proj", "up_proj", "down_proj")
        chosen = _route(h, model.read(p + "gate.weight"), moe.top_k)
        # the router (and the shared expert) see every token
        assert stats["mlp_in"].count == n_tok
        np.testing.assert_allclose(stats["mlp_in"].importance, (h.astype(np.float64) ** 2).mean(0))
        if moe.shared_expert_intermediate_size:
            assert stats["shared_expert.down_in"].count == n_tok
        else:
            assert "shared_expert.down_in" not in stats
        assert "down_in" not in stats  # no dense MLP in a mixture
        selected = 0
        for e in range(moe.num_experts):
            toks = [t for t, c in enumerate(chosen) if e in c]
            site_in, site_down = f"experts.{e}.mlp_in", f"experts.{e}.down_in"
            if not toks:
                assert site_in not in stats and site_down not in stats
                continue
            selected += 1
            x = h[toks]
            st = stats[site_in]
            assert st.count == len(toks)
            # exactly those tokens' rows, in token order
            np.testing.assert_array_equal(np.concatenate(st.rows), x)
            xd = x.astype(np.float64)
            np.testing.assert_allclose(st.importance, (xd**2).mean(0), rtol=1e-12)
            np.testing.assert_allclose(st.hessian, xd.T @ xd / len(toks), rtol=1e-5, atol=1e-6)
            gate, up = (model.read(f"{p}experts.{e}.{n}.weight") for n in names[:2])
            act = (_silu(x @ gate.T) * (x @ up.T)).astype(np.float64)
            sd = stats[site_down]
            assert sd.count == len(toks)
            np.testing.assert_allclose(sd.importance, (act**2).mean(0), rtol=1e-5)
            np.testing.assert_allclose(sd.hessian, act.T @ act / len(toks), rtol=1e-4, atol=1e-6)
        assert sum(stats[f"experts.{e}.mlp_in"].count for e in range(moe.num_experts)
                   if f"experts.{e}.mlp_in" in stats) == n_tok * moe.top_k  # fmt: skip
        assert selected >= moe.top_k
        # the next layer is calibrated on the float layer's output (weights unchanged here)
        cal.advance(layer)


def test_expert_hessian_on_demand_equals_the_running_sum():
    """An expert's rows are kept and summed when asked: the same float64 values as the running
    sum of the dense sites, bit for bit."""
    from maskc.quantize.calibrate import SiteStats

    rng = np.random.default_rng(0)
    parts = [rng.standard_normal((n, 12)).astype(np.float32) for n in (5, 1, 9)]
    eager, lazy = SiteStats(), SiteStats(rows=[])
    for x in parts:
        eager.add(x, True)
        lazy.add(x, True)
    assert lazy.xtx is None and eager.rows is None
    assert np.array_equal(lazy.hessian, eager.hessian)
    assert np.array_equal(lazy.importance, eager.importance)
    assert SiteStats(rows=[]).hessian is None


BUILDS = {  # preset -> compile options: each calibrated path on one preset (verify included)
    "mixtral": ("--bits", "3"),
    "qwen2-moe": ("--method", "gptq"),
    "qwen3-moe": ("--bits", "3", "--method", "gptq"),
}


def _tree_bytes(root):
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("preset", sorted(BUILDS))
def test_calibrated_moe_compiles_and_verifies(model_cache, tmp_path, cli, preset):
    args = BUILDS[preset]
    r = cli("compile", model_cache(preset).path, "-o", tmp_path / "b", *args, "--verify")
    assert r.code == 0, r.err
    assert "mixture of experts" not in r.err and "without calibration" not in r.err
    rep = json.loads((tmp_path / "b" / "reports" / "quant.json").read_text())
    assert rep["layers"]["verified"] is True  # the layers read back and equal the netlist
    cal = rep["calibration"]
    assert cal["text"].startswith("built-in") and cal["tokens"] > 0
    assert cal["unselected_experts"] == {}  # every expert chose some of 4,096 tokens
    gptq = "gptq" in args
    for t in rep["tensors"]:
        if t["role"] in ("router", "shared_expert_gate"):
            assert (t["bits"], t["method"]) == (8, "rtn")  # the embedding's built-in
        elif t["quantized"] and t["role"] not in ("embed", "lm_head"):
            assert t["method"] == ("gptq" if gptq else "lsq"), t["name"]
            if "--bits" in args:
                assert t["bits"] == (4 if t["role"].endswith("down_proj") or t["role"] in (
                    "k_proj", "v_proj", "o_proj") else 3), t["name"]  # fmt: skip
    assert rep["output"] is not None and math.isfinite(rep["output"]["kl_mean"])


def test_calibrated_moe_is_deterministic(model_cache, tmp_path, cli):
    """Two gptq compiles of a mixture, one quantizing the row blocks on 1 thread and one on 2:
    byte-identical builds."""
    path = model_cache("qwen3-moe").path
    for j in ("1", "2"):
        args = ("--method", "gptq", "--calib-tokens", "512", "--jobs", j, "--no-verify")
        assert cli("compile", path, "-o", tmp_path / j, *args).code == 0
    assert _tree_bytes(tmp_path / "1") == _tree_bytes(tmp_path / "2")


def test_an_expert_no_token_selects_is_quantized_without_calibration(model_cache, tmp_path):
    """3 calibration tokens x top 3 of 8 experts leave experts unselected in every layer: their
    matrices are lsq without statistics (gptq needs them), the others gptq; one warning line
    names how many of which layers, and the report lists them."""
    from maskc.pipeline import CompileOptions, compile_model

    class Events:
        def __init__(self):
            self.warnings: list[str] = []

        def start(self, what, total):
            pass

        def advance(self, n=1, detail=""):
            pass

        def warn(self, message):
            self.warnings.append(message)

    path = model_cache("qwen3-moe").path
    ev = Events()
    opts = CompileOptions(method="gptq", calib_tokens=3, verify=False)
    compile_model(path, tmp_path / "b", opts, ev)
    rep = json.loads((tmp_path / "b" / "reports" / "quant.json").read_text())
    unselected = rep["calibration"]["unselected_experts"]
    # the same routing, independently: which experts the 3 tokens choose in layer 0
    model = load_model(path)
    a = model.arch
    assert rep["calibration"]["tokens"] == 3
    assert set(unselected) == {str(i) for i in range(a.num_layers)}
    from maskc.quantize.driver import builtin_calibration_text, tokenize

    ids = tokenize(model, builtin_calibration_text())[:3]
    x = model.read("model.embed_tokens.weight")[ids].astype(np.float32)
    h = _mlp_in(a, model.read, 0, x)
    chosen = _route(h, model.read("model.layers.0.mlp.gate.weight"), a.moe.top_k)
    want = sorted(set(range(a.moe.num_experts)) - {e for c in chosen for e in c})
    assert unselected["0"] == want
    for t in rep["tensors"]:
        if t["role"].startswith("expert_"):
            e = int(t["name"].split(".experts.")[1].split(".")[0])
            off = e in unselected[str(t["layer"])]
            assert t["method"] == ("lsq" if off else "gptq"), t["name"]
    n = sum(len(v) for v in unselected.values())
    lines = [w for w in ev.warnings if "calibration token" in w]
    assert len(lines) == 1 and "\n" not in lines[0]
    per = ", ".join(f"layer {i}: {len(v)}" for i, v in sorted(unselected.items()))
    assert f"{n} routed experts of {a.num_layers * a.moe.num_experts} ({per})" in lines[0]
    # and the same inputs give the same build and the same warning
    ev2 = Events()
    compile_model(path, tmp_path / "c", opts, ev2)
    assert [w for w in ev2.warnings if "calibration token" in w] == lines
    assert _tree_bytes(tmp_path / "b") == _tree_bytes(tmp_path / "c")
