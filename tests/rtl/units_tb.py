"""cocotb testbench for one base-die unit (maskc/rtl/verilog/units): drives the cases of the job
file ``MASKC_UNITS_JOB`` (``cases``: per case the input ports' values as unsigned integers;
``outputs``: the ports to read) through start/done, in order (attention keeps its KV cache
between cases), and writes the outputs' values to ``out``. Used by tests/test_rtl_model.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge


@cocotb.test()
async def units(dut):
    job = json.loads(Path(os.environ["MASKC_UNITS_JOB"]).read_text())
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.start.value = 0
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    results = []
    for case in job["cases"]:
        for port, value in case.items():
            getattr(dut, port).value = int(value)
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        for _ in range(4):
            await ReadOnly()
            if int(dut.done.value) == 1:
                break
            await RisingEdge(dut.clk)
        else:
            raise AssertionError("done never came")
        results.append({p: str(int(getattr(dut, p).value)) for p in job["outputs"]})
        await RisingEdge(dut.clk)
    with open(job["out"], "w") as f:
        json.dump(results, f)
