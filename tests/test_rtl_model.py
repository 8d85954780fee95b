"""The whole model as Verilog (maskc/rtl: top, base-die units, export-rtl, cosim).

* every base-die unit model (maskc/rtl/verilog/units) on Icarus against the emulator's own units
  (maskc/emulate/units.py, kernels.py) on random and extreme inputs;
* ``maskc export-rtl`` of the tiny preset: deterministic, atomic, its bad inputs;
* ``maskc cosim`` of the tiny preset on Icarus and Verilator: the generated tokens and the int32
  logits of every position equal ``maskc emulate --json`` (and the emulator's logits of the
  prompt positions) bit for bit; its bad inputs.

The simulators come from the ``rtl`` extra (cocotb, verilator) and Debian's iverilog; a test
whose simulator is missing is skipped with the reason.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from maskc.emulate import kernels as K
from maskc.emulate import units as U

HERE = Path(__file__).resolve().parent
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
F = 12


def _missing(sim: str) -> str | None:
    from maskc.errors import MaskcError
    from maskc.rtl.cosim import check_simulator

    try:
        check_simulator(sim)
    except MaskcError as e:
        return str(e)
    return None


def _need(sim: str) -> None:
    why = _missing(sim)
    if why:
        pytest.skip(why)


@pytest.fixture(scope="module")
def build(tmp_path_factory, model_cache):
    """The tiny preset compiled for the mini fabric (one die)."""
    from maskc.cli import main

    out = tmp_path_factory.mktemp("rtl-build") / "b"
    try:
        main(["compile", str(model_cache("tiny", 0).path), "-o", str(out), "--fabric", "mini"])
    except SystemExit as e:
        assert not e.code
    return out


@pytest.fixture(scope="module")
def rtl(build, tmp_path_factory):
    from maskc.rtl.export import export_rtl

    out = tmp_path_factory.mktemp("rtl-export") / "rtl"
    export_rtl(build, out)
    return out


# -- the base-die units against the emulator's ------------------------------------------------


def pack(values, bits: int) -> int:
    mask = (1 << bits) - 1
    return sum((int(v) & mask) << (bits * j) for j, v in enumerate(values))


def unpack(value: int, bits: int, n: int, signed: bool = True) -> list[int]:
    out = []
    for j in range(n):
        v = (value >> (bits * j)) & ((1 << bits) - 1)
        out.append(v - (1 << bits) if signed and v >> (bits - 1) else v)
    return out


def run_unit(rtl: Path, work: Path, module: str, params: dict, cases: list, outputs: list):
    """Build ``module`` alone on Icarus and run ``cases`` (tests/rtl/units_tb.py)."""
    from cocotb_tools.runner import get_runner

    if str(HERE / "rtl") not in sys.path:
        sys.path.insert(0, str(HERE / "rtl"))
    work.mkdir(parents=True, exist_ok=True)
    job = work / "job.json"
    res = work / "out.json"
    job.write_text(json.dumps({"cases": [{k: str(v) for k, v in c.items()} for c in cases],
                               "outputs": outputs, "out": str(res)}))  # fmt: skip
    runner = get_runner("icarus")
    runner.build(
        sources=[rtl / "units" / f"{module}.v"],
        includes=[rtl / "units"],
        hdl_toplevel=module,
        parameters=params,
        build_dir=work / "build",
        timescale=("1ns", "1ps"),
        log_file=work / "build.log",
    )
    pypath = ":".join(p for p in sys.path if p)
    runner.test(
        test_module="units_tb",
        hdl_toplevel=module,
        build_dir=work / "build",
        test_dir=rtl,
        results_xml=str(work / "results.xml"),
        extra_env={"MASKC_UNITS_JOB": str(job), "PYTHONPATH": pypath},
        log_file=work / "run.log",
    )
    for case in json.loads(res.read_text()):
        yield {k: int(v) for k, v in case.items()}


def _rng():
    return np.random.default_rng(22)


def _signals(n: int, rows: int) -> np.ndarray:
    """Random and extreme int32 signal rows."""
    r = _rng()
    out = [
        r.integers(-(1 << 20), 1 << 20, n),
        r.integers(INT32_MIN, INT32_MAX, n, endpoint=True),
        np.zeros(n, np.int64),
        np.full(n, INT32_MAX),
        np.full(n, INT32_MIN),
        np.where(np.arange(n) % 2, INT32_MIN, INT32_MAX),
        np.eye(1, n, 5, dtype=np.int64)[0] * 3_000_000,  # one outlier, the rest zero
        r.integers(-3, 4, n),  # tiny values: every group shift
        np.concatenate([r.integers(-(1 << 24), 1 << 24, 32), r.integers(-2, 3, n - 32)]),
    ]
    out += [r.integers(-(1 << (8 + 3 * k)), 1 << (8 + 3 * k), n) for k in range(rows - len(out))]
    return np.stack(out).astype(np.int64)


def _act_cases(got, n):
    ng = (n + 31) // 32
    return (unpack(got["x"], 8, n), unpack(got["s"], 3, ng, False), got["m"],
            unpack(got["e"], 16, 1)[0])  # fmt: skip


def _check_act(rows, want, n):
    x, m, e, s = want
    for t, got in enumerate(rows):
        gx, gs, gm, ge = _act_cases(got, n)
        assert gx == x[t].tolist(), f"row {t}: codes"
        assert gs == s[t].tolist(), f"row {t}: group shifts"
        assert (gm, ge) == (int(m[t]), int(e[t])), f"row {t}: m, e"


@pytest.mark.slow
def test_units_equal_the_emulator(rtl, build, tmp_path):
    _need("icarus")
    from maskc.netlist import load_netlist

    nl = load_netlist(build)
    p = {k: v.astype(np.int64) for k, v in nl.params().items()}
    d = 64
    h = _signals(d, 12)
    act = ["x", "s", "m", "e"]

    # Q8 (the quantize op)
    cases = [{"y": pack(r, 32)} for r in h]
    rows = list(run_unit(rtl, tmp_path / "q", "maskc_quantize", {"N": d, "F": F}, cases, act))
    _check_act(rows, K.q8_rows(h, np.full(len(h), F, np.int64), K.GROUP), d)

    # RMSNorm -> act8, with a real gamma of the build
    gname = "model.layers.0.input_layernorm.weight"
    op = next(o for o in nl.ops if getattr(o, "gamma", None) == gname)
    params = {"D": d, "F": F, "GAMMA_FRAC": op.gamma_frac, "EPS_D": op.eps_d,
              "GAMMA_HEX": f'"tables/{gname.replace(".", "_")}.hex"'}  # fmt: skip
    rows = list(run_unit(rtl, tmp_path / "n", "maskc_rmsnorm", params,
                         [{"h": pack(r, 32)} for r in h], act))  # fmt: skip
    want = U.rmsnorm_rows(h, p[gname], op.gamma_frac, op.eps_d, F, p["lut.rsqrt"])
    _check_act(rows, want, d)

    # SwiGLU -> act8: gates across the sigmoid table's whole range and beyond
    g = np.concatenate([h, (np.arange(d) - 32)[None] * (1 << 14)])
    u = np.roll(np.concatenate([h, h[:1]]), 3, axis=0)
    cases = [{"g": pack(a, 32), "u": pack(b, 32)} for a, b in zip(g, u, strict=True)]
    rows = list(run_unit(rtl, tmp_path / "s", "maskc_swiglu", {"N": d, "F": F}, cases, act))
    _check_act(rows, U.swiglu_rows(g, u, F, p["lut.sigmoid"]), d)

    # add (sat32 both ways)
    cases = [{"a": pack(a, 32), "b": pack(b, 32)} for a, b in zip(h, u[: len(h)], strict=True)]
    rows = list(run_unit(rtl, tmp_path / "a", "maskc_add", {"N": d}, cases, ["y"]))
    want = U.add_rows(h, u[: len(h)])
    assert [unpack(r["y"], 32, d) for r in rows] == want.tolist()

    # RoPE at the first, a middle and the last position of the cache
    heads, hd = 4, 16
    pos = np.array([0, 1, 77, 255] * 3)[: len(h)]
    cases = [{"y": pack(r, 32), "pos": int(q)} for r, q in zip(h, pos, strict=True)]
    params = {"HEADS": heads, "HD": hd, "PB": 8}
    rows = list(run_unit(rtl, tmp_path / "r", "maskc_rope", params, cases, ["out"]))
    want = U.rope_rows(h, heads, hd, pos.astype(np.int64), p["rope.phase_step"], p["lut.cos"])
    assert [unpack(r["out"], 32, d) for r in rows] == want.tolist()

    # argmax: ties go to the lowest id
    lg = np.stack([np.full(16, 5), np.arange(16) % 3, -np.arange(16), np.full(16, INT32_MIN)])
    lg[0, 7] = 9
    lg[0, 11] = 9
    rows = list(run_unit(rtl, tmp_path / "m", "maskc_argmax", {"V": 16, "TB": 4},
                         [{"logits": pack(r, 32)} for r in lg], ["token"]))  # fmt: skip
    assert [r["token"] for r in rows] == [int(np.argmax(r)) for r in lg] == [7, 2, 0, 0]


@pytest.mark.slow
@pytest.mark.parametrize("window", [0, 3])
def test_attention_unit_equals_the_emulator(rtl, build, tmp_path, window):
    """Positions 0..9 in order (the cache fills), a zero value vector, extreme vectors, with
    and without a sliding window."""
    _need("icarus")
    from maskc.netlist import load_netlist

    nl = load_netlist(build)
    exp2 = nl.params()["lut.exp2"].astype(np.int64)
    num = nl.doc["numerics"]
    heads, kvh, hd, ctx, n = 4, 2, 16, 16, 10
    r = _rng()
    q = r.integers(-(1 << 16), 1 << 16, (n, heads * hd))
    k = r.integers(-(1 << 16), 1 << 16, (n, kvh * hd))
    v = r.integers(-(1 << 18), 1 << 18, (n, kvh * hd))
    q[2], k[3], v[4] = INT32_MAX, INT32_MIN, 0  # extremes; an all-zero value vector
    k[5, :hd], v[6, hd:] = 0, INT32_MAX
    params = {"HEADS": heads, "KVH": kvh, "HD": hd, "CTX": ctx, "PB": 4, "WINDOW": window,
              "F": F, "INV_SQRT_HD": num["inv_sqrt_hd_q16"], "LOG2E": num["log2e_q16"]}  # fmt: skip
    cases = [{"q": pack(q[t], 32), "k": pack(k[t], 32), "v": pack(v[t], 32), "pos": t}
             for t in range(n)]  # fmt: skip
    rows = list(run_unit(rtl, tmp_path / "att", "maskc_attention", params, cases, ["out"]))
    cache = [np.zeros((kvh, ctx, hd), np.int8), np.zeros((kvh, ctx), np.int64),
             np.zeros((kvh, ctx), np.int64)]  # fmt: skip
    cv = [np.zeros((kvh, ctx, hd), np.int8), np.zeros((kvh, ctx), np.int64),
          np.zeros((kvh, ctx), np.int64)]  # fmt: skip
    for t in range(n):
        U.kv_store(k[t : t + 1], kvh, hd, F, *cache, t)
        U.kv_store(v[t : t + 1], kvh, hd, F, *cv, t)
        want = U.attention_rows(
            q[t : t + 1], np.array([t], np.int64), heads, kvh, hd, window, F,
            num["inv_sqrt_hd_q16"], num["log2e_q16"], exp2, *cache, *cv,
        )  # fmt: skip
        assert unpack(rows[t]["out"], 32, heads * hd) == want[0].tolist(), f"position {t}"


# -- export-rtl -------------------------------------------------------------------------------


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_export_is_deterministic_and_complete(cli, build, rtl, tmp_path):
    r = cli("export-rtl", build, "-o", tmp_path / "again", "--json")
    assert r.code == 0, r.err
    man = json.loads(r.out)
    assert _tree(tmp_path / "again") == _tree(rtl)  # byte-identical on rerun
    files = _tree(rtl)
    assert set(files) == set(man["files"]) | {"manifest.json"}
    for rel, sha in man["files"].items():
        assert files[rel] == sha
    assert (
        man["netlist_sha256"]
        == hashlib.sha256((build / "netlist" / "netlist.json").read_bytes()).hexdigest()
    )
    flist = (rtl / "files.f").read_text().split()
    assert flist[0] == "+incdir+units" and "maskc_top.v" in flist
    assert all((rtl / f).is_file() for f in flist[1:])
    top = (rtl / "maskc_top.v").read_text()
    for kind in ("maskc_rmsnorm", "maskc_attention", "maskc_swiglu", "maskc_argmax"):
        assert kind in top
    assert "BASE-DIE MODEL" in (rtl / "units" / "maskc_attention.v").read_text()


def test_export_bad_inputs(cli, build, rtl, tmp_path):
    r = cli("export-rtl", tmp_path / "nope", "-o", tmp_path / "o")
    assert r.code in (2, 3) and len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
    dst = tmp_path / "exists"
    dst.mkdir()
    (dst / "mine.txt").write_text("keep")
    r = cli("export-rtl", build, "-o", dst)
    assert r.code == 3 and "--force" in r.err and len(r.err.strip().splitlines()) == 1
    assert [p.name for p in dst.iterdir()] == ["mine.txt"]
    r = cli("export-rtl", build, "-o", dst, "--force")
    assert r.code == 0 and (dst / "maskc_top.v").is_file()


def test_export_refuses_unsupported_ops(cli, build, tmp_path):
    """An op the RTL does not implement: one line naming it, nothing written."""
    from maskc.errors import UnsupportedError
    from maskc.netlist import load_netlist
    from maskc.netlist import ops as O
    from maskc.rtl import top as T

    nl = load_netlist(build)
    nl.ops.insert(5, O.HeadNorm(src="q", out="q", heads=4, gamma=nl.ops[1].gamma,
                                gamma_frac=11, eps_d=1, layer=0))  # fmt: skip
    with pytest.raises(UnsupportedError, match=r"op 5 \(head_norm\) is not supported by the RTL"):
        T.check_supported(nl)


# -- cosim: the whole tiny model ----------------------------------------------------------------

PROMPT = "1,5,9,200"
N_NEW = 3


@pytest.fixture(scope="module")
def emulated(build, tmp_path_factory):
    """``maskc emulate --json --logits-out`` on the prompt: its JSON and every position's
    logits [positions, vocab]."""
    import contextlib
    import io

    from safetensors.numpy import load_file

    from maskc.cli import main

    dump = tmp_path_factory.mktemp("emulate") / "logits.safetensors"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            main(["emulate", str(build), "--tokens", PROMPT, "-n", str(N_NEW), "--json",
                  "--logits-out", str(dump)])  # fmt: skip
        except SystemExit as e:
            assert not e.code
    doc = json.loads(buf.getvalue())
    f = load_file(dump)  # the safetensors library: an independent reader
    rows = f["logits"]
    assert rows.dtype == np.int32
    fed = f["tokens"].tolist()
    prompt = [int(t) for t in PROMPT.split(",")]
    assert fed == prompt + doc["tokens"][:-1]
    return doc, rows


def test_emulate_logits_out(build, emulated):
    """--logits-out holds every position; its generated positions hash to logits_sha256, and
    its prompt positions are the emulator's own prefill."""
    from maskc.emulate.run import open_session

    doc, rows = emulated
    p = len(PROMPT.split(","))
    h = hashlib.sha256(b"".join(np.asarray(r, "<i4").tobytes() for r in rows[p - 1 :]))
    assert h.hexdigest() == doc["logits_sha256"]
    s = open_session(build)
    pre = s.chip.forward([int(t) for t in PROMPT.split(",")])
    assert np.array_equal(pre, rows[:p])


@pytest.mark.slow
@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_cosim_whole_model_equals_emulate(cli, build, rtl, emulated, sim, tmp_path):
    _need(sim)
    doc, rows = emulated
    r = cli("cosim", build, "--tokens", PROMPT, "-n", N_NEW, "--simulator", sim, "--rtl", rtl,
            "--workdir", tmp_path / "w", "--json")  # fmt: skip
    res = json.loads(r.out)
    assert r.code == 0, (res.get("first_mismatch"), r.err)
    assert res["equal"] and res["rtl_tokens"] == doc["tokens"] == res["emulator_tokens"]
    assert res["positions"] == rows.shape[0]
    # every position's logits, as the testbench read them, against the emulator's
    got = json.loads((tmp_path / "w" / "rtl_result.json").read_text())
    assert np.array_equal(np.asarray(got["logits"], np.int64), rows.astype(np.int64))
    last = [np.asarray(x, "<i4") for x in got["logits"][len(PROMPT.split(",")) - 1 :]]
    h = hashlib.sha256(b"".join(x.tobytes() for x in last)).hexdigest()
    assert h == doc["logits_sha256"]


def test_cosim_bad_inputs(cli, build, tmp_path):
    r = cli("cosim", tmp_path / "nope", "--tokens", "1,2")
    assert r.code in (2, 3) and len(r.err.strip().splitlines()) == 1
    r = cli("cosim", build, "--tokens", "1,x", "--simulator", "icarus")
    assert r.code == 2 and "--tokens" in r.err
    r = cli("cosim", build, "--tokens", "99999", "--simulator", "icarus")
    assert r.code == 2 and "vocabulary" in r.err
    r = cli("cosim", build, "--tokens", "1", "--simulator", "modelsim")
    assert r.code == 2 and "unknown simulator" in r.err
    r = cli("cosim", build, "--tokens", "1", "--simulator", "icarus", "--rtl", tmp_path)
    assert r.code in (2, 3) and len(r.err.strip().splitlines()) == 1


def test_cosim_missing_simulator(cli, build, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    r = cli("cosim", build, "--tokens", "1", "--simulator", "icarus")
    assert r.code == 3 and "iverilog" in r.err and len(r.err.strip().splitlines()) == 1


@pytest.mark.slow
def test_cosim_names_the_first_mismatch(cli, build, rtl, tmp_path):
    """An RTL whose ROM image differs from the layers (row 0 of layer 0's q_proj, every code
    inverted, as a wrong via would): ``maskc cosim`` exits 5 naming the position, the op, the
    matrix row, its tiles and the two values."""
    from maskc.netlist import load_netlist

    _need("icarus")
    bad = tmp_path / "rtl"
    shutil.copytree(rtl, bad)
    name = "model.layers.0.self_attn.q_proj.weight"
    hexf = bad / "rom" / (name.replace(".", "_") + ".t0.cells.hex")
    lines = hexf.read_text().splitlines()
    lines[0] = "".join(f"{15 - int(c, 16):x}" for c in lines[0][:64]) + lines[0][64:]
    hexf.write_text("\n".join(lines) + "\n")
    nl = load_netlist(build)
    t = nl.tile_arrays(name, ("pos", "block"))
    assert t["block"][0][0] == 0  # tile 0 holds row 0
    d, x, y = (int(v) for v in t["pos"][0])
    r = cli("cosim", build, "--tokens", "1,2", "-n", "1", "--simulator", "icarus", "--rtl", bad)
    assert r.code == 5, r.err
    line = r.out.strip().splitlines()[-1]
    assert line.startswith("MISMATCH at position 0: op ") and "(matmul)" in line, line
    assert f"matrix {name} row 0, tiles " in line and f"T{d}_{x}_{y}" in line, line
    r = cli("cosim", build, "--tokens", "1,2", "-n", "1", "--simulator", "icarus", "--rtl", bad,
            "--json")  # fmt: skip
    m = json.loads(r.out)["first_mismatch"]
    assert r.code == 5 and m["position"] == 0 and m["kind"] == "matmul" and m["row"] == 0
    assert m["matrix"] == name and m["rtl"] != m["emulator"]
