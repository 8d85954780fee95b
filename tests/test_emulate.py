"""``maskc emulate``: bit-exact against the independent integer reference (tests/intref.py),
deterministic, golden, and every mode and bad input of the command."""

from __future__ import annotations

import json
import math
import shutil

import intref
import numpy as np
import pytest
from helpers import micro_fabric

from maskc.emulate.run import generate, open_session, perplexity
from maskc.emulate.sampling import SamplingParams
from maskc.evaluate import log_softmax, ppl_windows

PRESETS = [
    "tiny",
    "tiny-untied",
    "tiny-gqa-bf16",
    "tiny-odd",
    "tiny-sharded",
    "tiny-qwen2",
    "tiny-mistral",
]
SETTINGS = [
    SamplingParams(),  # greedy
    SamplingParams(temperature=0.8, top_k=20, top_p=0.9, seed=7),
    SamplingParams(temperature=1.5, top_k=0, top_p=0.5, seed=3),
]
PROMPT = [1, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def builds(model_cache, tmp_path_factory):
    """Every preset compiled with the defaults (hc1), plus tiny on a fabric of small tiles."""
    from maskc.pipeline import CompileOptions, compile_model

    root = tmp_path_factory.mktemp("emu")
    out = {}
    for p in PRESETS:
        compile_model(model_cache(p).path, root / p, CompileOptions())
        out[p] = root / p
    compile_model(
        model_cache("tiny").path, root / "tiny-micro", CompileOptions(fabric=micro_fabric(root))
    )
    out["tiny-micro"] = root / "tiny-micro"
    return out


@pytest.mark.slow
@pytest.mark.parametrize("preset", [*PRESETS, "tiny-micro"])
def test_emulator_equals_the_integer_reference(builds, preset):
    """Prompt + 8 decode steps, greedy and sampled: identical tokens and integer logits."""
    session = open_session(builds[preset])
    ref = intref.IntRef(builds[preset])
    for sp in SETTINGS:
        rows: list = []
        g = generate(session, PROMPT, 9, sp, stop_at_eos=False, keep_logits=rows)
        toks, ref_rows = intref.generate(
            ref, PROMPT, 9, sp.temperature, sp.top_k, sp.top_p, sp.seed
        )
        assert g.tokens == toks, (preset, sp)
        assert len(rows) == 9
        for a, b in zip(rows, ref_rows, strict=True):
            assert a.tolist() == b
        assert g.logits_sha256 == intref.logits_sha256(ref_rows)


def test_sliding_window_past_the_window(builds):
    """tiny-mistral's window is shorter than this prompt: the window is exercised."""
    doc = json.loads((builds["tiny-mistral"] / "netlist" / "netlist.json").read_text())
    window = doc["architecture"]["sliding_window"]
    prompt = [(7 * i) % 300 + 3 for i in range(window + 6)]
    session = open_session(builds["tiny-mistral"])
    ref = intref.IntRef(builds["tiny-mistral"])
    rows: list = []
    g = generate(session, prompt, 3, SamplingParams(), stop_at_eos=False, keep_logits=rows)
    toks, ref_rows = intref.generate(ref, prompt, 3)
    assert g.tokens == toks and [r.tolist() for r in rows] == ref_rows


def test_batched_prefill_equals_token_by_token(builds):
    session = open_session(builds["tiny-qwen2"])
    ids = [5, 17, 200, 3, 99, 45, 12]
    chip = session.chip
    chip.reset()
    batch = chip.forward(ids)
    chip.reset()
    one = np.stack([chip.forward([t])[0] for t in ids])
    assert np.array_equal(batch, one)


GOLDEN = {
    # maskc testmodel (tiny, seed 0), compiled with the defaults, prompt 1..5, 8 tokens
    "greedy": (
        [113, 97, 97, 251, 3, 97, 293, 293],
        "3a7648302419550d66aa2cf8df0ddb451f07167564ca82fb83a7f17904b808d8",
    ),
    "sampled": (
        [5, 123, 113, 72, 293, 169, 307, 61],
        "01ecab7931fd01dafd1af84e36e69fcefb1d32152852c96e7f2b1015c5c57e1c",
    ),
}


@pytest.mark.parametrize("mode", ["greedy", "sampled"])
def test_golden_tokens(builds, cli, mode):
    args = ["emulate", builds["tiny"], "--tokens", "1,2,3,4,5", "-n", "8", "--ignore-eos"]
    if mode == "sampled":
        args += ["--temperature", "0.8", "--top-k", "20", "--top-p", "0.9", "--seed", "7"]
    r = cli(*args, "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert (doc["tokens"], doc["logits_sha256"]) == GOLDEN[mode]
    assert doc["prompt_tokens"] == [1, 2, 3, 4, 5] and isinstance(doc["text"], str)
    assert doc["timings"]["modeled_chip_us_per_token"] > 0
    # the same run without --json streams text and prints the same hash on stderr
    r2 = cli(*args)
    assert r2.code == 0 and GOLDEN[mode][1][:16] in r2.err and "modeled chip" in r2.err


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["c", "numba"])
def test_same_result_on_one_two_and_four_threads(builds, kernel, monkeypatch):
    """The logits do not depend on the thread count (1, 2, 4: more threads than CPUs too),
    with either matrix-product kernel (maskc/emulate/backend.py)."""
    from maskc.emulate import backend

    if kernel == "c" and backend._kern is None:
        pytest.skip("maskc.emulate._kern is not built")
    monkeypatch.setenv(backend.ENV, kernel)
    session = open_session(builds["tiny-gqa-bf16"])
    prompt = list(range(3, 40))
    out = []
    try:
        for n in (1, 2, 4, 1):
            backend.set_threads(n)
            out.append(generate(session, prompt, 8, SETTINGS[1], stop_at_eos=False).logits_sha256)
    finally:
        from maskc.parallel import usable_cpus

        backend.set_threads(usable_cpus())
    assert out[0] == out[1] == out[2] == out[3]


@pytest.mark.parametrize("preset", ["tiny-micro", "tiny-untied"])
def test_logits_do_not_depend_on_how_the_tiles_are_loaded(builds, preset):
    """Matrices read from the tiles 128 rows at a time give the same logits as the default
    (whole-matrix row blocks), and the same as the independent reference."""
    from maskc.emulate.chip import Chip
    from maskc.netlist import load_netlist

    tokens = [1, 2, 3, 4, 5, 6]
    want = intref.IntRef(builds[preset])
    ref_rows = intref.generate(want, tokens[:5], 2, 0.0, 0, 1.0, 0)[1]
    got = []
    for rows in (128, 256, 1 << 20):
        chip = Chip(load_netlist(builds[preset]), load_rows=rows)
        got.append([chip.forward(tokens[:5])[-1].tolist(), chip.forward([6])[0].tolist()])
    assert got[0] == got[1] == got[2]
    assert got[0][0] == ref_rows[0]


@pytest.mark.parametrize("preset", ["tiny", "tiny-untied", "tiny-micro"])
def test_chip_memory_is_the_packed_matrices_only(builds, preset):
    """No prepared matrix keeps a QuantTensor (the embedding is read from the tiles); 4-bit
    codes take half a byte per weight, the default formats' scale and offset factors two
    bytes per (row, group); the stacked q/k/v and gate/up members are views of their stack,
    and the whole is at most 0.5 + 4/32 bytes per (padded) weight plus the row exponents."""
    from maskc.emulate.chip import Chip
    from maskc.netlist import load_netlist
    from maskc.romformat import QuantTensor

    nl = load_netlist(builds[preset])
    chip = Chip(nl)
    assert not any(isinstance(v, QuantTensor) for v in vars(chip).values())
    padded = 0
    for m in chip.mats.values():
        assert not any(isinstance(v, QuantTensor) for v in vars(m).values())
        pr, cp = m.padded_rows, m.cp  # rows padded to the layout's block (128 or 16)
        padded += pr * cp
        g = nl.matrices[m.name]["format"]["group_size"]
        if nl.matrices[m.name]["format"]["bits"] == 4:
            assert m.packed and m.lev.nbytes == pr * cp // 2
            assert m.msh.dtype == np.int16 and m.msh.size == pr * cp // g
            assert m.zsh.dtype == np.int16 and m.zsh.size == (pr if m.c else m.rows) * cp // g
    stacks = [st for _, st, _ in chip._fused.values()]
    assert stacks
    for group, st, _ in chip._fused.values():
        for k in group:
            assert np.shares_memory(chip.mats[chip.ops[k].matrix].lev, st.lev)
    rows = sum(m.rows for m in chip.mats.values())
    assert chip.resident_bytes() <= padded * (0.5 + 4 / 32) + rows * 16 + sum(
        m.lev.nbytes for m in chip.mats.values() if not m.packed
    )


def test_matrix_rows_are_the_matrix_rows(builds):
    """Netlist.matrix_rows reads any row range of a matrix cut into small tiles exactly as the
    tiles hold it (reassembled by hand with the safetensors library: helpers.raw_fields), and
    keeps no tile array mapped after release."""
    from helpers import raw_fields

    from maskc.netlist import load_netlist

    nl = load_netlist(builds["tiny-micro"])
    for name in list(nl.matrices)[:4]:
        whole = raw_fields(builds["tiny-micro"], name)
        r = nl.matrices[name]["shape"][0]
        for lo, hi in ((0, 1), (r - 1, r), (r // 3, r // 3 + 37), (5, r)):
            hi = min(hi, r)
            part = nl.matrix_rows(name, lo, hi)
            for k in ("codes", "scale_m", "scale_s", "scale_e", "zero_m", "zero_s", "zero_e"):
                a, b = whole.get(k), getattr(part, k)
                assert (a is None) == (b is None), (name, k)
                if a is not None:
                    assert np.array_equal(a[lo:hi], b), (name, k, lo, hi)
        nl.release(name)
        assert name not in nl._maps


def test_stops_at_eos_and_chat_template(builds, cli):
    r = cli("emulate", builds["tiny"], "--prompt", "hello there", "--chat", "-n", "40", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["prompt_tokens"][0] == 1  # <|im_start|> of the ChatML template
    assert doc["stopped_at_eos"] == (doc["tokens"][-1] == 2)
    assert doc["stopped_at_eos"] or len(doc["tokens"]) == 40


def test_ppl_mode_matches_the_reference_logits(builds, cli, tmp_path):
    """--ppl follows the documented protocol; its value is recomputed here from the integer
    reference's logits, window by window."""
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 3)
    b = builds["tiny-gqa-bf16"]
    r = cli("emulate", b, "--ppl", text, "--ctx", "8", "--stride", "5", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    session = open_session(b)
    ids = session.encode(text.read_text())
    ref = intref.IntRef(b)
    nll, n = 0.0, 0
    for w in ppl_windows(len(ids), 8, 5):
        ref.reset()
        rows = np.array([ref.step(t) for t in ids[w.start : w.end]], np.float64) / 4096.0
        lp = log_softmax(rows)
        for pos in range(w.score_from, w.end):
            nll -= lp[pos - 1 - w.start, ids[pos]]
            n += 1
    assert doc["tokens_scored"] == n == len(ids) - 1
    assert math.isclose(doc["ppl"], math.exp(nll / n), rel_tol=1e-9)
    assert perplexity(session, ids, 8, 5).ppl == doc["ppl"]


def test_compare_modes(builds, model_cache, cli):
    b = builds["tiny"]
    r = cli(
        "emulate", b, "--tokens", "1,2,3,4,5,6,7,8", "--compare", model_cache("tiny").path, "--json"
    )
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert len(doc["per_position"]) == 8
    assert doc["top1_agreement"] >= 0.5 and 0 <= doc["kl_mean"] < 0.5, doc
    r = cli("emulate", b, "--tokens", "1,2,3,4,5,6,7,8", "--compare-dequantized")
    assert r.code == 0 and "top-1 agreement" in r.out, r.err
    # a different model is refused
    r = cli("emulate", b, "--tokens", "1,2", "--compare", model_cache("tiny-odd").path)
    assert r.code == 3 and "not the model" in r.err


def test_context_limits(builds, cli):
    b = builds["tiny-micro"]
    doc = json.loads((b / "netlist" / "netlist.json").read_text())
    most = doc["sram"]["max_context"]
    r = cli("emulate", b, "--tokens", "1,2", "-n", "1", "--context", str(most + 1))
    assert r.code == 4 and f"{most:,}" in r.err and "Traceback" not in r.err, r
    r = cli("emulate", b, "--tokens", "1,2,3,4,5,6", "-n", "4", "--context", "8", "--ignore-eos")
    assert r.code == 4 and "8" in r.err, r


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--tokens", "1,x"], 2, "--tokens"),
        (["--tokens", "1,99999"], 3, "vocabulary"),
        (["--prompt", "a", "--tokens", "1"], 2, "not both"),
        (["--chat"], 2, "--chat"),
        (["--ppl", "missing.txt"], 3, "missing.txt"),
        (["--ppl", "x.txt", "--prompt", "a"], 2, "--ppl"),
        (["--compare-dequantized", "--ppl", "x.txt"], 2, "one of"),
        (["--tokens", "1", "--temperature", "-1"], 2, "temperature"),
        (["--tokens", "1", "--top-p", "1.5"], 2, "top-p"),
        ([], 2, "--prompt"),
    ],
)
def test_bad_emulate_arguments(builds, cli, tmp_path, monkeypatch, args, code, needle):
    monkeypatch.chdir(tmp_path)
    r = cli("emulate", builds["tiny"], *args)
    assert r.code == code and needle in r.err and "Traceback" not in r.err, (args, r)


def test_not_a_build_and_a_plan_only_build(tmp_path, cli, model_cache):
    r = cli("emulate", tmp_path, "--tokens", "1")
    assert r.code == 3 and "not a build" in r.err
    out = tmp_path / "plan"
    assert cli("compile", model_cache("tiny").path, "-o", out, "--plan-only").code == 0
    r = cli("emulate", out, "--tokens", "1")
    assert r.code == 3 and "no netlist" in r.err, r


def test_emulate_reads_only_the_build(builds, tmp_path, cli, model_cache):
    """The original model is not needed: delete it and emulate still runs."""
    src = tmp_path / "model"
    shutil.copytree(model_cache("tiny").path, src)
    b = tmp_path / "b"
    assert cli("compile", src, "-o", b).code == 0
    shutil.rmtree(src)
    r = cli("emulate", b, "--tokens", "1,2,3,4,5", "-n", "8", "--ignore-eos", "--json")
    assert r.code == 0 and json.loads(r.out)["tokens"] == GOLDEN["greedy"][0]


QUANT_VARIANTS = {
    # every storage path of the kernels: packed affine codes (asymmetric and symmetric,
    # 3- and 4-bit, groups of 32/64/128), non-affine levels (codebook) and 4-bit embeddings
    "bits3-mixed": (["--bits", "3"], None),
    "g128": (["-g", "128"], None),
    "symmetric": ([], "[[rule]]\nmatch = 'model\\.layers\\..*'\nsymmetric = true\n"),
    "codebook": ([], "[[rule]]\nmatch = 'model\\.layers\\.0\\..*'\ncodebook = true\n"),
    "embed4": ([], "[[rule]]\nmatch = 'model\\.embed_tokens'\nbits = 4\nmethod = 'rtn'\n"),
    "scale12": ([], "[defaults]\nscale_bits = 12\n"),
}


@pytest.mark.parametrize("variant", sorted(QUANT_VARIANTS))
def test_emulator_equals_reference_on_other_formats(model_cache, tmp_path, cli, variant):
    args, toml = QUANT_VARIANTS[variant]
    if toml is not None:
        (tmp_path / "q.toml").write_text(toml)
        args = [*args, "--config", tmp_path / "q.toml"]
    b = tmp_path / "b"
    r = cli("compile", model_cache("tiny-gqa-bf16").path, "-o", b, *args)
    assert r.code == 0, r.err
    session = open_session(b)
    ref = intref.IntRef(b)
    for sp in SETTINGS[:2]:
        g = generate(session, PROMPT, 9, sp, stop_at_eos=False)
        toks, rows = intref.generate(ref, PROMPT, 9, sp.temperature, sp.top_k, sp.top_p, sp.seed)
        assert (g.tokens, g.logits_sha256) == (toks, intref.logits_sha256(rows)), variant


def test_layout_cache_is_used_checked_and_never_poisoned(builds, tmp_path, monkeypatch):
    """The second open of a build reads its prepared matrices from the layout cache with the
    same logits; a damaged cache file is ignored and rewritten; a build whose files do not
    match its manifest fails the hash check (exit 5) and writes nothing to the cache;
    MASKC_CACHE_DIR=off keeps no file."""
    from maskc.emulate import layoutcache
    from maskc.errors import VerifyError

    monkeypatch.setenv(layoutcache.ENV, str(tmp_path / "cache"))
    build = tmp_path / "b"
    shutil.copytree(builds["tiny-gqa-bf16"], build)
    prompt = list(range(3, 20))

    def run():
        s = open_session(build)
        return s.chip.from_cache, generate(s, prompt, 4, SETTINGS[1], stop_at_eos=False)

    first, g1 = run()
    files = list((tmp_path / "cache").glob("*.safetensors"))
    second, g2 = run()
    assert (first, second, len(files)) == (False, True, 1)
    assert g1.logits_sha256 == g2.logits_sha256
    # damaged (a new file put in its place: truncating a file in place would pull the pages
    # from under the earlier chip's memory maps): ignored, then rewritten
    damaged = tmp_path / "damaged"
    damaged.write_bytes(files[0].read_bytes()[:1000])
    damaged.replace(files[0])
    third, g3 = run()
    assert not third and g3.logits_sha256 == g1.logits_sha256
    assert run()[0]
    # a netlist file changed behind the manifest's back: exit 5, and no cache entry for it
    shutil.rmtree(tmp_path / "cache")
    params = build / "netlist" / "params.safetensors"
    raw = bytearray(params.read_bytes())
    raw[-1] ^= 1
    params.write_bytes(bytes(raw))
    with pytest.raises(VerifyError):
        open_session(build)
    assert not list((tmp_path / "cache").glob("*.safetensors"))
    monkeypatch.setenv(layoutcache.ENV, "off")
    params.write_bytes(bytes(raw[:-1]) + bytes([raw[-1] ^ 1]))
    assert not run()[0] and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("preset", ["tiny", "tiny-gqa-bf16"])
def test_a_batch_gives_each_prompt_what_it_gives_alone(builds, preset):
    """generate_batch (every matrix product shared by the sequences, attention per sequence)
    returns, for each prompt, exactly the tokens, logits hash and stop reason of generating it
    alone: greedy and sampled, prompts of different lengths, one stopping at EOS early."""
    from maskc.emulate.run import generate_batch

    s = open_session(builds[preset], context=40)
    prompts = [[1, 2, 3, 4, 5], list(range(7, 30)), [9], list(range(40, 50))]
    for params in SETTINGS:
        for stop in (True, False):
            alone = [generate(s, p, 12, params, stop_at_eos=stop, context_full="stop")
                     for p in prompts]  # fmt: skip
            gens, _, _ = generate_batch(s, prompts, 12, params, stop, "stop")
            for a, b in zip(alone, gens, strict=True):
                assert (a.tokens, a.logits_sha256, a.stopped_at_eos, a.stopped_at_context) == (
                    b.tokens, b.logits_sha256, b.stopped_at_eos, b.stopped_at_context
                )  # fmt: skip


def test_prompts_file_runs_a_batch_from_the_command_line(builds, cli, tmp_path):
    build = builds["tiny"]
    f = tmp_path / "prompts.txt"
    f.write_text("hello world\n\nthe model\n", encoding="utf-8")
    r = cli("emulate", build, "--prompts", f, "-n", "6", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert [x["prompt"] for x in doc["results"]] == ["hello world", "the model"]
    for x in doc["results"]:
        one = json.loads(cli("emulate", build, "--prompt", x["prompt"], "-n", "6", "--json").out)
        assert (x["tokens"], x["logits_sha256"]) == (one["tokens"], one["logits_sha256"])
    assert doc["timings"]["prompts"] == 2
    text = cli("emulate", build, "--prompts", f, "-n", "3")
    assert text.code == 0 and "[2] the model" in text.out and "2 prompts" in text.err
    assert cli("emulate", build, "--prompts", f, "--prompt", "x").code == 2
    assert cli("emulate", build, "--prompts", f, "--ppl", f).code == 2
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    bad = cli("emulate", build, "--prompts", empty)
    assert bad.code == 3 and "--prompts" in bad.err
    assert cli("emulate", build, "--prompts", tmp_path / "missing.txt").code == 3
