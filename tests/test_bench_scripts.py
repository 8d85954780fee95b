"""The benchmark scripts issue 24's measurements rest on, run small: benchmarks/offgrid.py (the
off-grid protocol: the rescale mode must not change the float model) and
benchmarks/quant_screen.py (one JSON row per configuration)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from maskc.ingest import load_model
from maskc.reference import FloatLlama

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _run(script: str, *args, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [sys.executable, str(BENCH / script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert r.returncode == 0, r.stderr
    return r


def _logits(folder: Path, ids: list[int]) -> np.ndarray:
    m = load_model(folder)
    return np.asarray(FloatLlama(m.arch, m.read).forward(ids), dtype=np.float64)


def test_offgrid_rescale_keeps_the_function_and_leaves_the_grid(model_cache, tmp_path):
    src = model_cache("tiny").path
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    out = _run("offgrid.py", src, a, "--mode", "rescale", "--seed", "3").stdout
    assert "wrote" in out
    _run("offgrid.py", src, b, "--mode", "rescale", "--seed", "3")
    _run("offgrid.py", src, c, "--mode", "rescale", "--seed", "4")
    rec = json.loads((a / "offgrid.json").read_text())
    assert rec["model_sha256"] == json.loads((b / "offgrid.json").read_text())["model_sha256"]
    assert rec["model_sha256"] != json.loads((c / "offgrid.json").read_text())["model_sha256"]
    ws, wd = load_file(str(src / "model.safetensors")), load_file(str(a / "model.safetensors"))
    assert sorted(ws) == sorted(wd)
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"):
        assert not np.allclose(ws[name], wd[name], rtol=0.02)  # every column moved
    # an equivalent transformation: the same function, to float32 rounding
    ids = [1, 17, 42, 99, 300, 5, 64, 12]
    ref, moved = _logits(src, ids), _logits(a, ids)
    assert np.max(np.abs(moved - ref)) <= 1e-4 * max(1.0, np.max(np.abs(ref)))
    assert _run("offgrid.py", src, a, "--mode", "rescale", check=False).returncode != 0


def test_offgrid_needs_no_readme(model_cache, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for f in model_cache("tiny").path.iterdir():
        if f.name != "README.md" and f.is_file():
            (src / f.name).write_bytes(f.read_bytes())
    _run("offgrid.py", src, tmp_path / "dst", "--mode", "noise")
    assert "offgrid.py" in (tmp_path / "dst" / "README.md").read_text()


@pytest.mark.slow
def test_quant_screen_prints_a_row_per_config(model_cache):
    model = model_cache("tiny").path
    cfgs = ("bits=4,group_size=32,calib=1", "bits=4,group_size=64,calibrate=0")
    r = _run(
        "quant_screen.py", model, "--tokens", "96", "--float", *[f"--config={c}" for c in cfgs]
    )
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["config"] for x in rows] == ["float32", *cfgs]
    for x in rows:
        assert np.isfinite(x["persuasion"]) and np.isfinite(x["gpl-3"]), x
    assert 4.0 < rows[2]["bpw_blocks"] < rows[1]["bpw_blocks"] < 5.5  # g64 stores less per weight
