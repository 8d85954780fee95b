"""``maskc compile`` end to end on generated models: build layout, readback, determinism,
reports, inspect BUILD, and every bad input (exit code, one line, nothing left behind)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from helpers import assert_bad, raw_fields

from maskc.testmodels import PRESETS
from maskc.testmodels.presets import dense_preset_names


def tree_hashes(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def raw_dequant(build, name):
    """Dequantize a stored tensor straight from the safetensors arrays (the netlist's tiles) and
    index.json, with numpy only (independent of maskc.romformat.dequantize and of the netlist
    loader)."""
    idx = json.loads((build / "quant" / "index.json").read_text())["tensors"][name]
    t = {f"{name}/{k}": v for k, v in raw_fields(build, name).items()}
    _, c = idx["shape"]
    g = idx["format"]["group_size"]
    col_group = np.arange(c) // g
    codes = t[f"{name}/codes"][:, :c].astype(np.int64)
    levels = t[f"{name}/levels"].astype(np.int64)
    step = t[f"{name}/scale_m"].astype(np.float64) * 2.0 ** (
        t[f"{name}/scale_e"].astype(np.float64)[:, None] - t[f"{name}/scale_s"]
    )
    w = step[:, col_group] * levels[codes]
    if f"{name}/zero_m" in t:
        off = t[f"{name}/zero_m"].astype(np.float64) * 2.0 ** (
            t[f"{name}/zero_e"].astype(np.float64)[:, None] - t[f"{name}/zero_s"]
        )
        w = w + off[:, col_group]
    return w.astype(np.float32)


@pytest.mark.parametrize("preset", sorted(dense_preset_names()))
def test_compile_every_preset(preset, model_cache, tmp_path, cli):
    gen = model_cache(preset)
    out = tmp_path / "build"
    r = cli("compile", gen.path, "-o", out, "--bits", "3", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["totals"]["parameters"] == gen.total_parameters
    idx = json.loads((out / "quant" / "index.json").read_text())["tensors"]
    assert sorted(idx) == sorted(n for n, _, _ in gen.tensors)
    rep = json.loads((out / "reports" / "quant.json").read_text())
    from maskc.ingest import load_model

    m = load_model(gen.path)
    for row in rep["tensors"]:
        name = row["name"]
        if row["quantized"]:
            want = 3
            if row["role"] in ("embed", "lm_head"):
                want = 8
            elif row["role"] in ("k_proj", "v_proj", "o_proj", "down_proj"):
                want = 4  # the 3-bit profile's mixed precision
            assert row["bits"] == want, row
            deq = raw_dequant(out, name)
            w = m.read(name)
            rel = np.linalg.norm(w - deq) / np.linalg.norm(w)
            assert rel == pytest.approx(row["rel_error"], rel=1e-4, abs=1e-7)
        else:
            assert idx[name]["kind"] == "float"
    assert (out / "reports" / "quant_error.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 0 <= doc["output"]["top1_agreement"] <= 1 and doc["output"]["kl_mean"] >= 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]


def test_compile_is_deterministic(model_cache, tmp_path, cli):
    gen = model_cache("tiny-gqa-bf16")
    for d in ("a", "b"):
        r = cli("compile", gen.path, "-o", tmp_path / d, "--sensitivity", "--fabric", "mini")
        assert r.code == 0, r.err
    assert tree_hashes(tmp_path / "a") == tree_hashes(tmp_path / "b")


def test_4bit_better_than_3bit_and_rules(model_cache, tmp_path, cli):
    gen = model_cache("tiny")
    cfg = tmp_path / "q.toml"
    cfg.write_text("[[rule]]\nmatch = 'model\\.layers\\.1\\.mlp\\.down_proj'\nbits = 4\n")
    r3 = json.loads(
        cli(
            "compile",
            gen.path,
            "-o",
            tmp_path / "b3",
            "--bits",
            "3",
            "--config",
            cfg,
            "--no-mixed",
            "--json",
        ).out
    )
    r4 = json.loads(cli("compile", gen.path, "-o", tmp_path / "b4", "--bits", "4", "--json").out)
    assert r4["output"]["kl_mean"] < r3["output"]["kl_mean"]
    rows = json.loads((tmp_path / "b3" / "reports" / "quant.json").read_text())["tensors"]
    bits = {r["name"]: r["bits"] for r in rows if r["quantized"]}
    assert bits["model.layers.1.mlp.down_proj.weight"] == 4
    assert bits["model.layers.0.mlp.down_proj.weight"] == 3


def test_mixed_precision_and_calibration_switches(model_cache, tmp_path, cli):
    gen = model_cache("tiny")
    cfg = tmp_path / "q.toml"
    cfg.write_text("[[rule]]\nmatch = '.*down_proj'\nbits = 3\n")
    r = cli("compile", gen.path, "-o", tmp_path / "a", "--bits", "3", "--config", cfg)
    assert r.code == 0, r.err
    rep = json.loads((tmp_path / "a" / "reports" / "quant.json").read_text())
    bits = {r["role"]: r["bits"] for r in rep["tensors"] if r["quantized"]}
    assert bits["down_proj"] == 3 and bits["v_proj"] == 4 and bits["q_proj"] == 3
    assert rep["calibration"]["text"].startswith("built-in")
    r = cli("compile", gen.path, "-o", tmp_path / "b", "--bits", "3", "--no-mixed", "--no-calib")
    assert r.code == 0, r.err
    rep = json.loads((tmp_path / "b" / "reports" / "quant.json").read_text())
    assert {r["bits"] for r in rep["tensors"] if r["quantized"] and r["layer"] is not None} == {3}
    assert rep["calibration"] is None
    r = cli("compile", gen.path, "-o", tmp_path / "c", "--method", "gptq", "--no-calib")
    assert r.code == 2 and "--no-calib" in r.err
    r = cli("compile", gen.path, "-o", tmp_path / "c", "--calib", cfg, "--no-calib")
    assert r.code == 2


def test_calibrated_gptq(model_cache, tmp_path, cli):
    gen = model_cache("tiny")
    text = tmp_path / "calib.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. 12345 " * 40)
    r = cli(
        "compile",
        gen.path,
        "-o",
        tmp_path / "b",
        "--bits",
        "3",
        "--method",
        "gptq",
        "--calib",
        text,
        "--json",
    )
    assert r.code == 0, r.err
    rows = json.loads((tmp_path / "b" / "reports" / "quant.json").read_text())["tensors"]
    assert {r["method"] for r in rows if r["quantized"] and r["layer"] is not None} == {"gptq"}


def test_gptq_without_calib_uses_builtin_text(model_cache, tmp_path, cli):
    gen = model_cache("tiny")
    assert cli("compile", gen.path, "-o", tmp_path / "b", "--method", "gptq").code == 0
    rep = json.loads((tmp_path / "b" / "reports" / "quant.json").read_text())
    assert rep["calibration"]["text"].startswith("built-in") and rep["calibration"]["tokens"] > 0


def test_gptq_on_text_needs_a_tokenizer(tiny_copy, tmp_path, cli):
    """Text calibration needs the tokenizer (without one, the default is random ids:
    tests/test_calib_source.py)."""
    d = tiny_copy()
    (d / "tokenizer.json").unlink()
    r = cli("compile", d, "-o", tmp_path / "b", "--method", "gptq", "--calib-source", "text")
    assert_bad(r, "tokenizer.json", "--calib-source random")
    assert not (tmp_path / "b").exists()


def test_inspect_build_and_tensor(model_cache, tmp_path, cli):
    gen = model_cache("tiny")
    out = tmp_path / "b"
    assert cli("compile", gen.path, "-o", out).code == 0
    r = cli("inspect", out, "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["stages"] == ["ingest", "quantize", "place", "netlist", "layout"]
    assert doc["quant"]["totals"]["parameters"] == gen.total_parameters
    name = "model.layers.0.self_attn.q_proj.weight"
    r = cli("inspect", out, "--tensor", name, "--json")
    d = json.loads(r.out)
    assert sum(d["code_histogram"]) == 64 * 64
    np.testing.assert_allclose(d["sample_row0"]["dequantized"], raw_dequant(out, name)[0, :8])
    r = cli("inspect", out, "--tensor", name)
    assert r.code == 0 and "code histogram" in r.out
    assert cli("inspect", out).code == 0


# ------------------------------------------------------------------------------ bad inputs


def test_refuses_existing_non_empty_build(model_cache, tmp_path, cli):
    gen = model_cache("tiny")
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert_bad(cli("compile", gen.path, "-o", out), "not empty", "--force")
    assert (out / "keep.txt").read_text() == "x"
    assert cli("compile", gen.path, "-o", out, "--force").code == 0
    assert not (out / "keep.txt").exists()


def test_output_inside_input(tiny_copy, cli):
    """-o inside the model folder is a usage error (exit 2), refused before any work."""
    d = tiny_copy()
    r = cli("compile", d, "-o", d / "build")
    assert r.code == 2 and "overlaps" in r.err, r
    assert not (d / "build").exists()


@pytest.mark.parametrize(
    "args,code,needle",
    [
        (["--bits", "5"], 2, "--bits"),
        (["--group-size", "0"], 2, "group-size"),
        (["--method", "magic"], 2, "unknown method"),
    ],
)
def test_bad_flags(model_cache, tmp_path, cli, args, code, needle):
    out = tmp_path / "b"
    r = cli("compile", model_cache("tiny").path, "-o", out, *args)
    assert r.code == code, r
    assert needle in r.err and "Traceback" not in r.err
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "toml,needle",
    [
        ("[[rule]]\nmatch = '('\nbits = 4\n", "regex"),
        ("[[rule]]\nmatch = 'x'\nbitz = 4\n", "bitz"),
        ("[[rule]]\nmatch = 'x'\nbits = 5\n", "bits"),
        ("bits = = 3", "toml"),
    ],
)
def test_bad_quant_config(model_cache, tmp_path, cli, toml, needle):
    cfg = tmp_path / "q.toml"
    cfg.write_text(toml)
    r = cli("compile", model_cache("tiny").path, "-o", tmp_path / "b", "--config", cfg)
    assert_bad(r, needle)
    assert not (tmp_path / "b").exists()


def test_never_matching_rule_warns_and_strict_fails(model_cache, tmp_path, cli):
    cfg = tmp_path / "q.toml"
    cfg.write_text("[[rule]]\nmatch = 'nothing\\.here'\nbits = 4\n")
    gen = model_cache("tiny")
    r = cli("compile", gen.path, "-o", tmp_path / "b", "--config", cfg)
    assert r.code == 0 and "warning" in r.err and "rule 1" in r.err
    r = cli("compile", gen.path, "-o", tmp_path / "c", "--config", cfg, "--strict")
    assert_bad(r, "rule 1")


@pytest.mark.parametrize(
    "content,needle", [(b"\xff\xfe bad", "not UTF-8"), (b"   ", "empty"), (b"hi", "tokens")]
)
def test_bad_calibration_text(model_cache, tmp_path, cli, content, needle):
    f = tmp_path / "calib.txt"
    f.write_bytes(content)
    r = cli("compile", model_cache("tiny").path, "-o", tmp_path / "b", "--calib", f)
    assert_bad(r, needle)
    assert not (tmp_path / "b").exists()


def test_corrupt_build_is_exit_5(model_cache, tmp_path, cli):
    gen = model_cache("tiny")
    out = tmp_path / "b"
    assert cli("compile", gen.path, "-o", out).code == 0
    f = out / "quant" / "layer-001.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    r = cli("inspect", out)
    assert r.code == 5 and "layer-001" in r.err and "Traceback" not in r.err
    f.unlink()
    assert cli("inspect", out).code == 5
    (out / "manifest.json").write_text(json.dumps({"format": "maskc-build", "version": 99}))
    r = cli("inspect", out)
    assert r.code == 5 and "version" in r.err and "Traceback" not in r.err


@pytest.mark.parametrize("which", ["--calib", "--eval-text", "--config"])
def test_missing_input_files(model_cache, tmp_path, cli, which):
    r = cli("compile", model_cache("tiny").path, "-o", tmp_path / "b", which, tmp_path / "nope")
    assert_bad(r, "nope")
    assert not (tmp_path / "b").exists()


def test_eval_text_not_utf8(model_cache, tmp_path, cli):
    f = tmp_path / "e.txt"
    f.write_bytes(b"ok \xc3\x28 bad")
    r = cli("compile", model_cache("tiny").path, "-o", tmp_path / "b", "--eval-text", f)
    assert_bad(r, "e.txt", "not UTF-8")


def test_tampered_build_with_matching_hashes_is_still_validated(model_cache, tmp_path, cli):
    """Editing a build file and its manifest hash consistently still fails validation when
    the content is invalid (a step shift out of range in a netlist tile, where the quantized
    matrices are stored) - exit 3 naming the tensor, not a crash."""
    import hashlib

    from safetensors.numpy import load_file

    from maskc.safetensors_io import write_safetensors

    gen = model_cache("tiny")
    out = tmp_path / "b"
    assert cli("compile", gen.path, "-o", out).code == 0
    rel = "netlist/tiles/layer-000.safetensors"
    f = out / rel
    t = {k: v for k, v in load_file(f).items() if not k.endswith(":pad")}
    name = "model.layers.0.self_attn.q_proj.weight"
    t[f"{name}/scale_s"][0, 0, 0] = 200  # beyond the format's shift bits
    write_safetensors(f, t, {"maskc": "netlist tiles"}, align=8)
    man = json.loads((out / "manifest.json").read_text())
    digest = hashlib.sha256(f.read_bytes()).hexdigest()
    man["files"][rel] = {"sha256": digest, "bytes": f.stat().st_size}
    (out / "manifest.json").write_text(json.dumps(man))
    assert cli("inspect", out).code == 0  # hashes match the edited manifest
    r = cli("inspect", out, "--tensor", name)
    assert_bad(r, name, "scale_s")


def test_codebook_rule(model_cache, tmp_path, cli):
    gen = model_cache("tiny")
    cfg = tmp_path / "q.toml"
    cfg.write_text("[[rule]]\nmatch = '.*mlp.*'\ncodebook = true\n")
    assert cli("compile", gen.path, "-o", tmp_path / "b", "--config", cfg).code == 0
    idx = json.loads((tmp_path / "b" / "quant" / "index.json").read_text())["tensors"]
    name = "model.layers.0.mlp.up_proj.weight"
    d = json.loads(cli("inspect", tmp_path / "b", "--tensor", name, "--json").out)
    assert idx[name]["kind"] == "quantized" and len(set(np.diff(d["levels"]))) > 1
    np.testing.assert_allclose(
        d["sample_row0"]["dequantized"], raw_dequant(tmp_path / "b", name)[0, :8]
    )
    cfg.write_text("[[rule]]\nmatch = '.*mlp.*'\ncodebook = true\nmethod = 'gptq'\n")
    assert_bad(cli("compile", gen.path, "-o", tmp_path / "c", "--config", cfg), "codebook")


def test_interrupted_compile_leaves_nothing(tmp_path):
    """Ctrl-C in the middle of a compile: exit 130, no build, no temporary folder."""
    import signal
    import subprocess
    import sys
    import time
    from dataclasses import replace

    from maskc.testmodels import generate

    spec = replace(
        PRESETS["tiny"],
        name="slow",
        hidden_size=256,
        intermediate_size=768,
        num_layers=12,
        vocab_size=2048,
        num_heads=4,
        num_kv_heads=2,
    )
    gen = generate(tmp_path / "model", spec, seed=0)
    out = tmp_path / "out"
    out.mkdir()
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "maskc",
            "compile",
            str(gen.path),
            "-o",
            str(out / "b"),
            "--bits",
            "3",
            "--method",
            "gptq",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # a test run started in the background (cmd &) ignores SIGINT, and its children would
        # inherit that: the compile must see Ctrl-C as a terminal's foreground job does
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 60
    while time.time() < deadline and not any(out.iterdir()):
        time.sleep(0.05)  # wait until the temporary build folder exists
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert b"Traceback" not in err
    assert list(out.iterdir()) == []


def test_build_folder_has_normal_permissions(model_cache, tmp_path, cli):
    import os

    assert cli("compile", model_cache("tiny").path, "-o", tmp_path / "b").code == 0
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "b").stat().st_mode & 0o777 == 0o777 & ~umask


@pytest.mark.slow
def test_build_does_not_depend_on_blas_threads(model_cache, tmp_path):
    """The calibrated 3-bit path uses BLAS; builds must be byte-identical with 1 or 2 threads."""
    import os
    import subprocess
    import sys

    gen = model_cache("tiny-gqa-bf16")
    manifests = []
    for threads in ("1", "2"):
        out = tmp_path / f"b{threads}"
        env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
        cmd = [
            sys.executable,
            "-m",
            "maskc",
            "compile",
            str(gen.path),
            "-o",
            str(out),
            "--bits",
            "3",
        ]
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        manifests.append(json.loads((out / "manifest.json").read_text())["files"])
    assert manifests[0] == manifests[1]
