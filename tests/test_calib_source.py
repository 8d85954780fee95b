"""``--calib-source``: calibration on the built-in or given text, on random token ids (no text,
no tokenizer), or on both; the random ids avoid untrained embedding rows and are the same on
every run; a tokenizer-less model calibrates on random ids by default."""

from __future__ import annotations

import json

import numpy as np
from helpers import assert_bad
from safetensors.numpy import load_file, save_file

from maskc.ingest import load_model
from maskc.quantize import resolve_settings
from maskc.quantize.calibrate import calibration_windows
from maskc.quantize.driver import (
    builtin_calibration_text,
    choose_calibration,
    random_token_ids,
    tokenize,
)

EMBED = "model.embed_tokens.weight"


def _edit_embedding(folder, edit) -> np.ndarray:
    path = folder / "model.safetensors"
    t = load_file(str(path))
    t[EMBED] = edit(t[EMBED].copy())
    save_file(t, str(path), metadata={"format": "pt"})
    return t[EMBED]


def test_random_ids_skip_short_rows_and_repeat(tiny_copy):
    d = tiny_copy()

    def edit(e):
        e[:10] = 0.0  # padding rows
        e[10:20] *= 0.01  # untrained-looking rows, far below a quarter of the median length
        e[20:30] *= 0.3  # short, but above a quarter of the median: drawn
        return e

    e = _edit_embedding(d, edit)
    model = load_model(d)
    ids = random_token_ids(model, 5000)
    assert ids == random_token_ids(model, 5000)  # seeded: the same build every time
    assert random_token_ids(model, 5000, seed=1) != ids
    drawn = np.bincount(ids, minlength=e.shape[0])
    assert drawn[:20].sum() == 0 and drawn[20:30].sum() > 0
    # uniform over the eligible rows: every one drawn about 5000 / eligible times
    eligible = e.shape[0] - 20
    assert set(np.flatnonzero(drawn)) <= set(range(20, e.shape[0]))
    assert drawn[20:].max() < 4 * 5000 / eligible


def _resolution(model, method="lsq"):
    return resolve_settings(model.specs, 4, None, method, None, None, None)


def test_mixed_is_half_text_half_random_in_separate_windows(model_cache):
    model = load_model(model_cache("tiny").path)
    c = choose_calibration(model, _resolution(model), None, None, 200, 64, "mixed")
    text = tokenize(model, builtin_calibration_text())
    assert list(c.ids[:100]) == text[:100]
    assert c.random == 100 and list(c.ids[100:]) == random_token_ids(model, 100)
    assert "built-in" in c.name and "100 random token ids" in c.name
    wins = c.windows()
    assert [len(w) for w in wins] == [64, 36, 64, 36]  # no window holds text and random ids
    assert [w.tolist() for w in wins] == [
        w.tolist()
        for w in calibration_windows(text[:100], 64) + calibration_windows(c.ids[100:], 64)
    ]
    r = choose_calibration(model, _resolution(model), None, None, 200, 64, "random")
    assert r.random == 200 and list(r.ids) == random_token_ids(model, 200)
    t = choose_calibration(model, _resolution(model), None, None, 200, 64, None)
    assert t.random == 0 and list(t.ids) == text[:200]


def test_tokenizerless_model_calibrates_on_random_ids(tiny_copy, tmp_path, cli):
    d = tiny_copy()
    (d / "tokenizer.json").unlink()
    # lsq by default; gptq only when asked for random ids (its Hessians on them are worse)
    for method, more in (("lsq", ()), ("gptq", ("--calib-source", "random"))):
        out = tmp_path / method
        r = cli("compile", d, "-o", out, "--method", method, "--calib-tokens", "256", *more)
        assert r.code == 0, r.err
        assert "calibration" not in r.err  # no warning: it calibrates
        rep = json.loads((out / "reports" / "quant.json").read_text())["calibration"]
        assert rep == {"text": "256 random token ids (seed 0)", "tokens": 256, "random_tokens": 256}
    r = cli("compile", d, "-o", tmp_path / "g", "--method", "gptq")
    assert_bad(r, "tokenizer.json", "--method lsq", "--calib-source random")
    r = cli("compile", d, "-o", tmp_path / "t", "--calib-source", "text")
    assert_bad(r, "tokenizer.json", "--calib-source random")
    assert not (tmp_path / "g").exists() and not (tmp_path / "t").exists()


def test_calib_source_in_the_build(model_cache, tmp_path, cli):
    gen = model_cache("tiny")
    r = cli(
        "compile",
        gen.path,
        "-o",
        tmp_path / "b",
        "--calib-source",
        "mixed",
        "--calib-tokens",
        "128",
    )
    assert r.code == 0, r.err
    rep = json.loads((tmp_path / "b" / "reports" / "quant.json").read_text())["calibration"]
    assert rep["tokens"] == 128 and rep["random_tokens"] == 64
    opts = json.loads((tmp_path / "b" / "model.json").read_text())["options"]
    assert opts["calib_source"] == "mixed"
    r = cli("inspect", tmp_path / "b", "--json")
    assert r.code == 0, r.err


def test_calib_source_usage_errors(model_cache, tmp_path, cli):
    gen = model_cache("tiny")
    text = tmp_path / "calib.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 40)
    for args, needle in (
        (("--calib", text, "--calib-source", "random"), "--calib-source random"),
        (("--no-calib", "--calib-source", "mixed"), "--no-calib"),
        (("--calib-source", "noise"), "text, random or mixed"),
    ):
        r = cli("compile", gen.path, "-o", tmp_path / "b", *args)
        assert r.code == 2 and needle in r.err, (args, r.err)
        assert "Traceback" not in r.err
        assert not (tmp_path / "b").exists()


def test_random_ids_stay_in_the_embedding(model_cache):
    """Asked for more ids than the embedding has rows: drawn with replacement, never past it."""
    model = load_model(model_cache("tiny").path)
    rows = next(s for s in model.specs if s.layer is None).shape[0]
    ids = random_token_ids(model, 4 * rows)
    assert min(ids) >= 0 and max(ids) < rows and len(set(ids)) > rows // 2


def test_random_ids_calibrate_every_expert(model_cache, tmp_path, cli):
    """A mixture of experts calibrated on random ids: the router sends them to every expert
    (none falls back to calibration-free quantization)."""
    r = cli(
        "compile", model_cache("mixtral").path, "-o", tmp_path / "b", "--calib-source", "random"
    )
    assert r.code == 0, r.err
    assert "selected by no calibration token" not in r.err
    cal = json.loads((tmp_path / "b" / "reports" / "quant.json").read_text())["calibration"]
    assert cal["random_tokens"] == cal["tokens"] == 4096 and cal["unselected_experts"] == {}
