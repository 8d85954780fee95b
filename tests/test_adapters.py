"""LoRA adapters in SRAM (issue 9): PEFT loading and validation, the SRAM integer format
against exact rational arithmetic, bit-exactness with adapters against the independent
integer reference (tests/intref.py), SRAM budgets (--reserve-sram, exit 4 with numbers),
``inspect ADAPTER --build`` and the KV-cache overflow policy."""

from __future__ import annotations

import json
import math
import re
import shutil
from fractions import Fraction
from pathlib import Path

import intref
import numpy as np
import pytest
from helpers import assert_bad

from maskc.adapters import load_adapter, module_bytes, vq_rows
from maskc.emulate.run import generate, open_session
from maskc.emulate.sampling import SamplingParams
from maskc.errors import FitError, UsageError
from maskc.safetensors_io import SafetensorsFile, write_safetensors
from maskc.sram import parse_size
from maskc.testmodels import write_lora_adapter

PROMPT = [1, 2, 3, 4, 5]
SETTINGS = [SamplingParams(), SamplingParams(temperature=0.9, top_k=30, top_p=0.9, seed=11)]
ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def sram_fabric(dirpath: Path, sram_bytes: int) -> str:
    """The built-in mini fabric with ``sram_bytes`` of SRAM per die (a TOML path)."""
    from maskc.fabric import load_fabric

    text = load_fabric("mini").to_toml()
    text = re.sub(r"(?m)^name = .*$", 'name = "small-sram"', text, count=1)
    text = re.sub(r"(?m)^sram_bytes = .*$", f"sram_bytes = {sram_bytes}", text, count=1)
    p = dirpath / "small-sram.toml"
    p.write_text(text)
    return str(p)


@pytest.fixture(scope="module")
def env(model_cache, tmp_path_factory):
    """Builds of three presets and adapters for them (written the way PEFT saves them)."""
    from maskc.ingest import load_model
    from maskc.pipeline import CompileOptions, compile_model

    root = tmp_path_factory.mktemp("adapters")
    out = {"root": root}
    for preset in ("tiny", "tiny-qwen2", "tiny-gqa-bf16"):
        m = model_cache(preset)
        compile_model(m.path, root / f"b-{preset}", CompileOptions(verify=False))
        out[preset] = root / f"b-{preset}"
        out[f"arch-{preset}"] = load_model(m.path).arch
        out[f"model-{preset}"] = m.path
    a = out["arch-tiny"]
    out["full"] = write_lora_adapter(root / "full", a, rank=4, seed=1, b_std=0.05)
    out["part"] = write_lora_adapter(
        root / "part",
        a,
        rank=2,
        seed=2,
        targets=("q_proj", "down_proj"),
        layers=[1],
        dtype="BF16",
        use_rslora=True,
        alpha=3.0,
    )
    out["qwen"] = write_lora_adapter(
        root / "qwen",
        out["arch-tiny-qwen2"],
        rank=3,
        seed=3,
        targets=("k_proj", "v_proj", "up_proj"),
        dtype="F16",
    )
    out["gqa"] = write_lora_adapter(root / "gqa", out["arch-tiny-gqa-bf16"], rank=8, seed=4)
    return out


def copy_adapter(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_config(path: Path, **changes) -> Path:
    cfg = json.loads((path / "adapter_config.json").read_text())
    for k, v in changes.items():
        if v is ...:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (path / "adapter_config.json").write_text(json.dumps(cfg))
    return path


def edit_tensors(path: Path, fn) -> Path:
    f = SafetensorsFile(path / "adapter_model.safetensors")
    tensors = {k: f.read(k).astype(np.float32) for k in f.tensors}
    tensors = fn(tensors)
    write_safetensors(path / "adapter_model.safetensors", tensors, {"format": "pt"})
    return path


# -- the SRAM format against exact arithmetic --------------------------------------------------


def test_vq_rows_is_exact_rational_rounding():
    rng = np.random.default_rng(5)
    """maskc's float64 implementation against tests/intref.py's exact Fractions."""
    rows = [
        rng.normal(0, 1, 40),
        rng.normal(0, 1e-3, 40) * rng.integers(0, 2, 40),
        np.array([0.0] * 7),
        np.array([1.0, -1.0, 0.5, -0.5, 1 / 127, -3 / 254]),  # ties at half steps
        np.array([127 * 2.0**20, 2.0**20 * 0.5, -(2.0**20) * 1.5, 3.0]),
        np.array([1e-39, -2e-40, 0.0, 5e-41]),  # below 2^-99: stored as zero
        np.array([3e-30, 1e-30, -2e-30, 0.0]),
        rng.normal(0, 50, 40).astype(np.float32).astype(np.float64) * 0.3,
    ]
    width = max(len(r) for r in rows)
    for r in rows:
        v = np.zeros((1, width))
        v[0, : len(r)] = r
        c, m, e = vq_rows(v)
        want_c, want_m, want_e = intref.vq([Fraction(x) for x in v[0]])
        assert (c[0].tolist(), int(m[0]), int(e[0])) == (want_c, want_m, want_e), r


def test_sram_bytes_and_size_parsing(env):
    ad = load_adapter(env["full"])
    a = env["arch-tiny"]
    assert ad.rank == 4 and ad.scale == 16.0 / 4 and len(ad.modules) == 7 * a.num_layers
    h, i = a.hidden_size, a.intermediate_size
    q, kv = a.num_heads * a.head_dim, a.num_kv_heads * a.head_dim
    per_layer = (
        module_bytes(q, h, 4)
        + 2 * module_bytes(kv, h, 4)
        + module_bytes(h, q, 4)
        + 2 * module_bytes(i, h, 4)
        + module_bytes(h, i, 4)
    )
    assert ad.sram_bytes() == a.num_layers * per_layer
    assert module_bytes(10, 20, 3) == 3 * 20 + 10 * 3 + 4 * (3 + 10)
    part = load_adapter(env["part"])
    assert part.scale == 3.0 / math.sqrt(2) and [m.layer for m in part.modules] == [1, 1]
    assert parse_size("8MiB", 100, "x") == 8 << 20
    assert parse_size("25%", 1000, "x") == 250
    assert parse_size("1_000", 1, "x") == 1000
    assert parse_size("1.5kB", 1, "x") == 1500
    for bad in ("12x", "-1", "", "150%"):
        with pytest.raises(UsageError):
            parse_size(bad, 100, "--reserve-sram")


# -- bit-exact against the independent reference ------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "adapters"),
    [
        ("tiny", ["full"]),
        ("tiny", ["part"]),
        ("tiny", ["full", "part"]),
        ("tiny-qwen2", ["qwen"]),
        ("tiny-gqa-bf16", ["gqa"]),
    ],
)
def test_emulator_with_adapters_equals_the_integer_reference(env, preset, adapters):
    dirs = [env[a] for a in adapters]
    session = open_session(env[preset], adapters=dirs)
    ref = intref.IntRef(env[preset], adapters=dirs)
    plain = open_session(env[preset])
    for sp in SETTINGS:
        rows: list = []
        g = generate(session, PROMPT, 8, sp, stop_at_eos=False, keep_logits=rows)
        toks, ref_rows = intref.generate(
            ref, PROMPT, 8, sp.temperature, sp.top_k, sp.top_p, sp.seed
        )
        assert g.tokens == toks, (preset, adapters, sp)
        for a, b in zip(rows, ref_rows, strict=True):
            assert a.tolist() == b
        assert g.logits_sha256 == intref.logits_sha256(ref_rows)
        base = generate(plain, PROMPT, 8, sp, stop_at_eos=False)
        assert base.logits_sha256 != g.logits_sha256  # the adapter changes the computation


@pytest.mark.slow
def test_adapter_closer_to_float_merged_than_without(env, cli):
    """--compare merges the adapter into the float reference: the chip with the adapter tracks
    it far better than the chip without it does."""
    b, model = env["tiny"], env["model-tiny"]
    strong = write_lora_adapter(env["root"] / "strong", env["arch-tiny"], rank=8, seed=9, b_std=0.3)
    toks = ",".join(str(t) for t in range(1, 40))
    with_ad = json.loads(
        cli("emulate", b, "--compare", model, "--adapter", strong, "--tokens", toks, "--json").out
    )
    assert "merged in float" in with_ad["reference"]
    from maskc.emulate.run import compare

    plain = open_session(b)
    plain.chip.adapters = [load_adapter(strong)]  # merged into the reference; the chip has none
    without = compare(plain, list(range(1, 40)), model)
    assert with_ad["kl_mean"] < 0.5 * without["kl_mean"], (with_ad["kl_mean"], without["kl_mean"])


def test_adapters_leave_the_build_untouched(env, cli):
    b = env["tiny"]
    before = (b / "manifest.json").read_bytes()
    hashes = {p.name: p.read_bytes() for p in sorted((b / "layers").iterdir())}
    r = cli("emulate", b, "--tokens", "1,2,3", "-n", "3", "--adapter", env["full"], "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["adapters"][0]["rank"] == 4 and doc["adapters"][0]["sram_bytes"] > 0
    assert (b / "manifest.json").read_bytes() == before
    assert {p.name: p.read_bytes() for p in sorted((b / "layers").iterdir())} == hashes


# -- SRAM budget ----------------------------------------------------------------------------------

#: the tiny model's params region (docs/sram.md, "The boot image"): 5 norms of 64 int16 (128
#: bytes) with two 64-byte-aligned int64 constants each, 8 RoPE steps (64) and the attention
#: scale (64): 5 * (128 + 64 + 64) + 64 + 64
PARAMS = 1_408


def test_adapter_that_does_not_fit_is_exit_4_with_the_numbers(env, model_cache, tmp_path, cli):
    from maskc.pipeline import CompileOptions, compile_model

    # tiny: 2 layers x 2 kv heads x (32 + 4) x 2 = 160 bytes per token; 256 tokens = 40,960
    fab = sram_fabric(tmp_path, 50_000)
    b = tmp_path / "b"
    compile_model(model_cache("tiny").path, b, CompileOptions(fabric=fab, verify=False))
    need = load_adapter(env["full"]).sram_bytes()
    assert PARAMS + 40_960 + need > 50_000
    r = cli("emulate", b, "--tokens", "1,2", "--adapter", env["full"])
    assert r.code == 4 and "Traceback" not in r.err
    msg = r.err.strip().splitlines()[-1]
    assert f"{need:,}" in msg and "50,000" in msg and "40,960" in msg and "1,408" in msg
    fit_ctx = (50_000 - PARAMS - need) // 160
    assert f"--context {fit_ctx:,} or less" in msg
    assert (
        cli(
            "emulate",
            b,
            "--tokens",
            "1,2",
            "-n",
            "2",
            "--adapter",
            env["full"],
            "--context",
            str(fit_ctx),
        ).code
        == 0
    )
    r = cli("inspect", env["full"], "--build", b, "--json")
    assert r.code == 4
    doc = json.loads(r.out)
    assert doc["build"]["fits"] is False and doc["build"]["dies"][0]["free_bytes"] < 0
    r = cli("inspect", env["full"], "--build", b, "--context", str(fit_ctx), "--json")
    assert r.code == 0 and json.loads(r.out)["build"]["fits"] is True


def test_reserve_sram_sets_the_split_and_reports_the_rank_budget(model_cache, tmp_path, cli):
    from maskc.netlist import load_netlist

    fab = sram_fabric(tmp_path, 100_000)
    r = cli(
        "compile",
        model_cache("tiny").path,
        "-o",
        tmp_path / "b",
        "--fabric",
        fab,
        "--reserve-sram",
        "60000",
        "--no-verify",
        "--json",
    )
    assert r.code == 0, r.err
    die = json.loads(r.out)["placement"]["per_die"][0]
    # 40,000 bytes minus the params region for the KV cache, at 160 bytes per token
    ctx = (40_000 - PARAMS) // 160
    assert die["params_bytes"] == PARAMS and die["kv_bytes"] == ctx * 160
    assert die["adapter_bytes"] == 100_000 - PARAMS - ctx * 160
    sram = load_netlist(tmp_path / "b").doc["sram"]
    assert sram["context"] == ctx and sram["max_context"] == ctx
    assert sram["reserved_for_adapters"] == 60_000
    ranks = sram["dies"][0]["adapters"]["max_rank"]
    # the largest rank whose all-target adapter fits the region, and one more does not
    from maskc.ingest import load_model
    from maskc.testmodels import lora_shapes

    shapes = lora_shapes(load_model(model_cache("tiny").path).arch).values()
    cost = lambda k: sum(module_bytes(rr, cc, k) for rr, cc in shapes)  # noqa: E731
    assert cost(ranks["all"]) <= 60_000 < cost(ranks["all"] + 1)
    assert ranks["attention"] > ranks["all"]
    r = cli(
        "compile",
        model_cache("tiny").path,
        "-o",
        tmp_path / "c",
        "--fabric",
        fab,
        "--reserve-sram",
        "100%",
        "--no-verify",
    )
    assert r.code == 4 and "--reserve-sram" in r.err and not (tmp_path / "c").exists()
    r = cli("compile", model_cache("tiny").path, "-o", tmp_path / "c", "--reserve-sram", "lots")
    assert r.code == 2 and not (tmp_path / "c").exists()


# -- the context policy -------------------------------------------------------------------------


def test_kv_cache_overflow_is_refused_or_stops_by_choice(env, cli):
    b = env["tiny"]
    long = ",".join(["5"] * 20)
    r = cli("emulate", b, "--tokens", long, "--context", "16")
    assert r.code == 4 and "20 tokens" in r.err and "holds 16" in r.err and "at most" in r.err
    r = cli("emulate", b, "--tokens", "1,2,3,4,5", "-n", "20", "--context", "16", "--ignore-eos")
    assert r.code == 4 and "--max-new-tokens 12 or less" in r.err
    r = cli(
        "emulate",
        b,
        "--tokens",
        "1,2,3,4,5",
        "-n",
        "20",
        "--context",
        "16",
        "--ignore-eos",
        "--context-full",
        "stop",
        "--json",
    )
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert len(doc["tokens"]) == 12 and doc["stopped_at_context"] is True
    r = cli("emulate", b, "--tokens", "1,2", "--context-full", "drop")
    assert r.code == 2
    with pytest.raises(FitError):
        open_session(b, context=16).chip.forward(list(range(1, 18)))


# -- bad adapters: exit 3 with the reason ---------------------------------------------------------


def _bad_cases(env, tmp: Path):
    full = env["full"]
    layer0 = "base_model.model.model.layers.0"

    def c(name, **cfg):
        return edit_config(copy_adapter(full, tmp / name), **cfg)

    def t(name, fn):
        return edit_tensors(copy_adapter(full, tmp / name), fn)

    def nan(ts):
        ts[f"{layer0}.self_attn.q_proj.lora_A.weight"][0, 0] = np.nan
        return ts

    def drop_b(ts):
        del ts[f"{layer0}.mlp.up_proj.lora_B.weight"]
        return ts

    def dora(ts):
        ts[f"{layer0}.self_attn.q_proj.lora_magnitude_vector"] = np.ones(64, np.float32)
        return ts

    def embed(ts):
        ts["base_model.model.model.embed_tokens.lora_embedding_A"] = np.ones((4, 8), np.float32)
        return ts

    def transpose(ts):
        k = f"{layer0}.self_attn.o_proj.lora_A.weight"
        ts[k] = np.ascontiguousarray(ts[k][:, :-1])
        return ts

    def layer9(ts):
        for k in list(ts):
            if ".layers.1." in k:
                ts[k.replace(".layers.1.", ".layers.9.")] = ts.pop(k)
        return ts

    no_weights = copy_adapter(full, tmp / "no-weights")
    (no_weights / "adapter_model.safetensors").unlink()
    no_cfg = copy_adapter(full, tmp / "no-config")
    (no_cfg / "adapter_config.json").unlink()
    no_cfg.joinpath("README.md").write_text("not an adapter")
    bad_json = copy_adapter(full, tmp / "bad-json")
    (bad_json / "adapter_config.json").write_text("{r: 4")
    trunc = copy_adapter(full, tmp / "truncated")
    data = (trunc / "adapter_model.safetensors").read_bytes()
    (trunc / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    return [
        (tmp / "missing", ("no such",), 3),
        (no_weights, ("adapter_model.safetensors", "no such file"), 3),
        (bad_json, ("adapter_config.json", "json"), 3),
        (trunc, ("adapter_model.safetensors",), 3),
        (c("rank0", r=0), ("r = 0", "rank"), 3),
        (c("rank-mismatch", r=5), ("r = 5",), 3),
        (c("dora", use_dora=True), ("use_dora", "variant"), 3),
        (c("bias", bias="all"), ("bias",), 3),
        (c("mts", modules_to_save=["lm_head"]), ("modules_to_save",), 3),
        (c("prefix", peft_type="PREFIX_TUNING"), ("peft_type",), 3),
        (
            c("unknown-target", target_modules=["q_proj", "lm_head"]),
            ("lm_head", "not supported"),
            3,
        ),
        (c("untargeted", target_modules=["q_proj"]), ("target_modules",), 3),
        (c("layers", layers_to_transform=[0]), ("layers_to_transform",), 3),
        (c("no-targets", target_modules=...), ("target_modules",), 3),
        (c("alpha", lora_alpha=-1), ("lora_alpha",), 3),
        (c("rank-pattern", rank_pattern={"q_proj": 8}), ("rank_pattern",), 3),
        (t("nan", nan), ("nan", "q_proj.lora_A"), 3),
        (t("no-b", drop_b), ("up_proj", "lora_B"), 3),
        (t("dora-tensor", dora), ("lora_magnitude_vector",), 3),
        (t("embedding", embed), ("embed_tokens",), 3),
        (t("shape", transpose), ("o_proj", "another base model"), 3),
        (t("layer9", layer9), ("layer 9", "2 layers"), 3),
        (env["gqa"], ("another base model",), 3),
    ]


def test_bad_adapters_exit_3_with_the_reason(env, tmp_path, cli):
    for path, needles, code in _bad_cases(env, tmp_path):
        for args in (
            ("emulate", env["tiny"], "--tokens", "1,2", "--adapter", path),
            ("inspect", path, "--build", env["tiny"]),
        ):
            r = cli(*args)
            if code == 3 and args[0] == "inspect" and not (path / "adapter_config.json").is_file():
                assert r.code in (2, 3), (path.name, r.err)  # not recognizable as an adapter
                continue
            assert_bad(r, *needles)


def test_inspect_adapter_alone(env, cli):
    r = cli("inspect", env["part"], "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert (
        doc["rank"] == 2 and doc["use_rslora"] is True and doc["targets"] == ["q_proj", "down_proj"]
    )
    assert doc["layers"] == [1] and doc["sram_bytes"] == load_adapter(env["part"]).sram_bytes()
    r = cli("inspect", env["part"])
    assert r.code == 0 and "rank 2" in r.out
    r = cli("inspect", env["model-tiny"], "--build", env["tiny"])
    assert r.code == 2


def test_all_targets_listed_match_the_numerics_contract():
    text = Path(__file__).parents[1].joinpath("docs", "numerics.md").read_text()
    for t in ALL:
        assert f"`{t}`" in text
