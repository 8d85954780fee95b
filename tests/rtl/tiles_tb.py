"""cocotb testbench of a generated matrix or embedding module (maskc/rtl/matrix.py): drives the
vectors of the JSON file ``$MASKC_TB_IN`` through the module's start/valid/done handshake and
writes every output row to ``$MASKC_TB_OUT``. The comparison with the emulator is the caller's
(tests/test_rtl_tiles.py, benchmarks/rtl_tiles.py): this file only runs the simulation."""

from __future__ import annotations

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge


def _pack(values, bits):
    mask = (1 << bits) - 1
    out = 0
    for i, v in enumerate(values):
        out |= (int(v) & mask) << (bits * i)
    return out


@cocotb.test()
async def run_vectors(dut):
    with open(os.environ["MASKC_TB_IN"]) as f:
        spec = json.load(f)
    kind = spec["kind"]  # "matrix", "embed", or "mixed" (each vector says its "kind")
    limit = spec["max_cycles"]
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.start.value = 0
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    results = []
    cycles = []
    for vec in spec["vectors"]:
        await RisingEdge(dut.clk)
        if "sel" in vec:
            dut.sel.value = int(vec["sel"])
        if kind == "matrix" or vec.get("kind") == "matrix":
            dut.x.value = _pack(vec["x"], 8)
            dut.s.value = _pack(vec["s"], 3)
            dut.m.value = int(vec["m"])
            dut.e.value = int(vec["e"]) & 0xFFFF
        else:
            dut.token.value = int(vec["token"])
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        rows = []
        n = 0
        while True:
            await RisingEdge(dut.clk)
            await ReadOnly()
            n += 1
            if int(dut.y_valid.value):
                idx = dut.y_row.value if kind != "embed" else dut.y_col.value
                rows.append([int(idx), dut.y.value.to_signed()])
            if int(dut.done.value):
                break
            assert n < limit, f"no done after {limit} cycles"
        results.append(rows)
        cycles.append(n)
    with open(os.environ["MASKC_TB_OUT"], "w") as f:
        json.dump({"results": results, "cycles": cycles}, f)
