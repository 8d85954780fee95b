"""Mixtures of experts up to placement: config.json of Mixtral, Qwen2-MoE and Qwen3-MoE into a
ModelArch (transformers' defaults), the quantization settings of the new roles, the placement
(experts together, per-expert utilization), the modeled chip (only the selected experts' tiles
fire), ``--plan-only`` of the published shapes from config.json alone. The full compile, the
chip and its checks are tests/test_moe_chip.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maskc.errors import InputError, UnsupportedError
from maskc.fabric import load_fabric
from maskc.ingest.config import parse_config
from maskc.ir import ModelArch, MoeConfig, expected_tensors, expert_of, parameter_count
from maskc.pipeline.options import CompileOptions, Quiet
from maskc.pipeline.runner import PLAN, run_steps
from maskc.testmodels.presets import MOE_PRESETS

BASE = {"hidden_size": 64, "num_attention_heads": 4, "vocab_size": 320, "num_hidden_layers": 2}


def _cfg(arch: str, **kw) -> dict:
    extra = {"intermediate_size": 96} if arch == "MixtralForCausalLM" else {}
    return {"architectures": [arch], **BASE, **extra, **kw}


# --------------------------------------------------------------------------- config.json


def test_defaults_are_the_transformers_config_classes():
    """A config naming only the shapes means MixtralConfig's / Qwen2MoeConfig's /
    Qwen3MoeConfig's defaults (transformers 5.x, read at the source)."""
    m = parse_config(_cfg("MixtralForCausalLM"), "c")
    assert m.moe == MoeConfig(8, 2, 96, 0, True) and not m.qk_norm
    assert (m.rope_theta, m.rms_norm_eps, m.max_position_embeddings) == (1e6, 1e-5, 131072)
    assert not m.attention_bias and m.sliding_window is None
    q2 = parse_config(_cfg("Qwen2MoeForCausalLM"), "c")
    assert q2.moe == MoeConfig(60, 4, 1408, 5632, False) and q2.attention_bias
    assert (q2.rope_theta, q2.rms_norm_eps, q2.intermediate_size) == (10000.0, 1e-6, 5632)
    assert not parse_config(_cfg("Qwen2MoeForCausalLM", qkv_bias=False), "c").attention_bias
    q3 = parse_config(_cfg("Qwen3MoeForCausalLM"), "c")
    assert q3.moe == MoeConfig(128, 8, 768, 0, False) and q3.qk_norm and not q3.attention_bias
    assert (q3.max_position_embeddings, q3.intermediate_size) == (32768, 6144)


def test_expert_count_under_either_name_and_training_fields_ignored():
    a = parse_config(_cfg("Qwen3MoeForCausalLM", num_local_experts=16, num_experts_per_tok=2), "c")
    b = parse_config(
        _cfg(
            "Qwen3MoeForCausalLM",
            num_experts=16,
            num_experts_per_tok=2,
            router_aux_loss_coef=0.5,
            output_router_logits=True,
        ),
        "c",
    )
    assert a == b and a.moe.num_experts == 16
    m = parse_config(_cfg("MixtralForCausalLM", num_experts=4, router_jitter_noise=0.1), "c")
    assert m.moe.num_experts == 4


@pytest.mark.parametrize(
    "arch, fields, cls, needle",
    [
        ("Qwen3MoeForCausalLM", {"num_experts": 4, "num_local_experts": 8}, InputError, "disagree"),
        ("Qwen3MoeForCausalLM", {"num_experts": 0}, UnsupportedError, "'num_experts' is 0"),
        ("Qwen3MoeForCausalLM", {"num_experts": 4, "num_experts_per_tok": 5}, InputError,
         "num_experts_per_tok must be an integer in [1, 4]"),
        ("Qwen3MoeForCausalLM", {"num_experts": 2000}, InputError, "num_experts"),
        ("Qwen2MoeForCausalLM", {"decoder_sparse_step": 2}, UnsupportedError,
         "decoder_sparse_step 2"),
        ("Qwen2MoeForCausalLM", {"mlp_only_layers": [0]}, UnsupportedError, "mlp_only_layers"),
        ("Qwen2MoeForCausalLM", {"mlp_only_layers": 3}, InputError, "mlp_only_layers"),
        ("Qwen2MoeForCausalLM", {"shared_expert_intermediate_size": 0}, UnsupportedError,
         "shared_expert_intermediate_size 0"),
        ("Qwen2MoeForCausalLM", {"norm_topk_prob": "yes"}, InputError, "norm_topk_prob"),
        ("Qwen3MoeForCausalLM", {"attention_bias": True}, UnsupportedError, "attention_bias"),
        ("Qwen3MoeForCausalLM", {"use_sliding_window": True}, UnsupportedError, "sliding"),
        ("Qwen3MoeForCausalLM", {"moe_intermediate_size": -1}, InputError,
         "moe_intermediate_size"),
        ("Qwen3MoeForCausalLM", {"num_hidden_layers": 1000, "num_experts": 1000}, InputError,
         "expert MLPs"),
    ],
)  # fmt: skip
def test_bad_moe_fields_are_one_line_input_errors(arch, fields, cls, needle):
    with pytest.raises(cls) as e:
        parse_config(_cfg(arch, **fields), "cfg.json")
    assert needle in str(e.value) and str(e.value).startswith("cfg.json: ")


def test_tensors_names_roles_and_json_round_trip():
    a = parse_config(
        _cfg("Qwen2MoeForCausalLM", num_experts=3, num_experts_per_tok=2, moe_intermediate_size=8),
        "c",
    )
    layer0 = [t for t in expected_tensors(a) if t.layer == 0]
    roles = [t.role for t in layer0]
    assert (
        roles[roles.index("router") :]
        == [
            "router",
            "shared_expert_gate",
            "shared_gate_proj",
            "shared_up_proj",
            "shared_down_proj",
        ]
        + ["expert_gate_proj", "expert_up_proj", "expert_down_proj"] * 3
    )
    assert [t.expert for t in layer0 if t.expert is not None] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert all(expert_of(t.name) == t.expert for t in expected_tensors(a))
    assert ModelArch.from_json(json.loads(json.dumps(a.to_json())), "x") == a
    dense = parse_config(
        {"architectures": ["LlamaForCausalLM"], **BASE, "intermediate_size": 8}, "c"
    )
    assert "moe" not in dense.to_json() and "qk_norm" not in dense.to_json()  # as before MoE


# --------------------------------------------------------------------------- compile, plan


def _plan(path: Path, out: Path, **kw):
    opts = CompileOptions(fabric="mini", **kw)
    return run_steps(PLAN, out, path, opts, Quiet())


@pytest.mark.parametrize("preset", MOE_PRESETS)
def test_plan_keeps_each_expert_together_and_reports_it(preset, model_cache, tmp_path, cli):
    gen = model_cache(preset)
    v = _plan(gen.path, tmp_path / "plan", bits=3)
    arch, p = v["arch"], v["placement"]
    moe = arch.moe
    # each expert's tiles are one run of consecutive serpentine positions on one die
    order = [(b.layer, expert_of(b.tensor)) for b in p.blocks]
    runs = [k for i, k in enumerate(order) if i == 0 or order[i - 1] != k]
    experts = [k for k in runs if k[1] is not None]
    assert len(experts) == len(set(experts)) == arch.num_layers * moe.num_experts
    rep = json.loads((tmp_path / "plan" / "reports" / "placement.json").read_text())["experts"]
    assert (rep["num_experts"], rep["top_k"]) == (moe.num_experts, moe.top_k)
    assert [(r["layer"], r["expert"]) for r in rep["per_expert"]] == sorted(experts)
    cpt = load_fabric("mini").cells_per_tile
    for r in rep["per_expert"]:
        blocks = [
            b for b in p.blocks if (b.layer, expert_of(b.tensor)) == (r["layer"], r["expert"])
        ]
        assert r["tiles"] == len(blocks) and {b.die for b in blocks} == {r["die"]}
        cells = sum(b.rows * b.cols * (1 if b.bits == 4 else 0.75) for b in blocks)
        assert r["cell_utilization"] == pytest.approx(cells / (len(blocks) * cpt))
    assert rep["expert_tiles"] == sum(r["tiles"] for r in rep["per_expert"])
    # settings: the routers at 8 bits (like the embedding), experts at --bits, their down at 4
    q = {r["name"]: r for r in v["rows"] if r["quantized"]}
    for name, r in q.items():
        want = {"router": 8, "shared_expert_gate": 8, "embed": 8, "lm_head": 8}.get(r["role"])
        if r["role"] in ("expert_down_proj", "shared_down_proj", "k_proj", "v_proj", "o_proj"):
            want = 4
        assert r["bits"] == (want or 3), name


@pytest.mark.parametrize("preset", MOE_PRESETS)
def test_modeled_chip_fires_only_the_selected_experts(preset, model_cache, tmp_path):
    v = _plan(model_cache(preset).path, tmp_path / "plan")
    arch, p = v["arch"], v["placement"]
    perf, fab = p.report["performance"], load_fabric("mini")
    placed = len(p.blocks)
    expert_tiles = sum(1 for b in p.blocks if expert_of(b.tensor) is not None)
    rate = arch.moe.top_k / arch.moe.num_experts
    assert perf["expert_activation_rate"] == rate and perf["tiles_placed"] == placed
    assert perf["tiles_per_token"] == pytest.approx(placed - expert_tiles * (1 - rate))
    assert perf["sequential_stages"] == 5 * arch.num_layers + 1  # the router is a stage
    e = perf["at_context_1"]["energy_mj"]["tiles"]
    assert e == pytest.approx(perf["tiles_per_token"] * fab.power.tile_op_pj * 1e-9)
    assert perf["die_area_used_mm2"] == pytest.approx(placed * fab.tile.area_um2 * 1e-6)


@pytest.mark.parametrize(
    "shape, params, experts, rate",
    [
        ("mixtral-8x7b", 46_702_792_704, 8 * 32, 2 / 8),
        ("qwen3-30b-a3b", 30_532_122_624, 128 * 48, 8 / 128),
    ],
)
def test_published_shapes_plan_from_config_alone(shape, params, experts, rate, tmp_path, cli):
    """Mixtral-8x7B (46.7B) and Qwen3-30B-A3B (30.5B) from config.json alone on hc1, the dies
    chosen: every expert placed, a quarter / a sixteenth of their tiles firing per token."""
    model, out = tmp_path / shape, tmp_path / "plan"
    assert cli("testmodel", model, "--shape", shape, "--config-only").code == 0
    r = cli("compile", model, "-o", out, "--plan-only", "--dies", "auto", "--json")
    assert r.code == 0, r.err
    plan = json.loads((out / "reports" / "plan.json").read_text())
    assert (
        plan["parameters"]
        == params
        == parameter_count(ModelArch.from_json(plan["architecture"], "x"))
    )
    p = plan["placement"]
    assert len(p["experts"]["per_expert"]) == experts and p["experts"]["activation_rate"] == rate
    assert p["tiles_used"] <= p["tiles_available"] and p["dies"] > 1
    perf = p["performance"]
    assert perf["tiles_per_token"] < 0.5 * perf["tiles_placed"]
