"""The cocotb testbench of ``maskc cosim`` (run by :mod:`maskc.rtl.cosim` in a simulator, never
imported by maskc itself).

It reads its job from the JSON file named by ``MASKC_COSIM_JOB`` (``prompt``: token ids,
``max_new_tokens``, ``eos``: the end-of-sequence id or null, ``out``: where to write the result),
runs the top module (``maskc_top``, docs/rtl.md) position by position: each prompt token, then
each token the RTL's own greedy argmax picks, until ``max_new_tokens`` tokens or the
end-of-sequence token, exactly as ``maskc emulate`` generates. For every position it records the
int32 logits (read through the top's ``logit_addr``/``logit_data`` read port... and, much faster,
the logits register itself when the simulator exposes it) and the cycles it took.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

MASK32 = (1 << 32) - 1


def _int32(v: int) -> int:
    v &= MASK32
    return v - (1 << 32) if v >> 31 else v


def _words(value: int, n: int) -> list[int]:
    return [_int32(value >> (32 * i)) for i in range(n)]


def _read(dut, regs: list[str]) -> list[int]:
    return [int(getattr(dut, r).value) for r in regs]


async def _run(dut, token: int, pos: int, trace: list, limit: int) -> tuple[int, list]:
    """One position; returns its cycles and, per op of ``trace`` (``[op, kind, registers]``
    in step order), the registers' values when the op finished."""
    dut.token.value = token
    dut.pos.value = pos
    dut.start.value = 1
    await RisingEdge(dut.clk)
    dut.start.value = 0
    cycles = 0
    seen = []
    step = 0
    while True:
        await RisingEdge(dut.clk)
        await ReadOnly()
        cycles += 1
        done = int(dut.done.value) == 1
        now = int(dut.step.value)
        while trace and step < len(trace) and (now > step or done):
            seen.append(_read(dut, trace[step][2]))
            step += 1
        if done:
            break
        if cycles >= limit:
            raise AssertionError(f"position {pos}: no done after {cycles} cycles (step {now})")
    await RisingEdge(dut.clk)
    return cycles, seen


@cocotb.test()
async def cosim(dut):
    job = json.loads(Path(os.environ["MASKC_COSIM_JOB"]).read_text())
    vocab = job["vocab"]
    logits_reg = getattr(dut, job["logits_reg"])
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.start.value = 0
    dut.token.value = 0
    dut.pos.value = 0
    dut.logit_addr.value = 0
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    prompt = list(job["prompt"])
    feed = list(prompt)
    out = {"logits": [], "tokens": [], "cycles": [], "trace": [], "port_checks": 0}
    pos = 0
    while True:
        tok = feed[pos]
        cycles, seen = await _run(dut, tok, pos, job["trace"], job["max_cycles"])
        out["cycles"].append(cycles)
        dut._log.info(f"position {pos}: token {tok}, {cycles} cycles")
        out["trace"].append(seen)
        logits = _words(int(logits_reg.value), vocab)
        # the read port agrees with the register (a few addresses per position)
        for addr in sorted({0, vocab - 1, pos % vocab}):
            dut.logit_addr.value = addr
            await RisingEdge(dut.clk)
            await ReadOnly()
            got = _int32(int(dut.logit_data.value))
            if got != logits[addr]:
                raise AssertionError(f"read port: logits[{addr}] {got} != {logits[addr]}")
            out["port_checks"] += 1
            await RisingEdge(dut.clk)
        out["logits"].append(logits)
        pos += 1
        if pos < len(prompt):
            continue
        nxt = int(dut.next_token.value)
        out["tokens"].append(nxt)
        if len(out["tokens"]) >= job["max_new_tokens"] or nxt == job["eos"]:
            break
        if pos >= job["context"]:
            break
        feed.append(nxt)
    with open(job["out"], "w") as f:
        json.dump(out, f)
