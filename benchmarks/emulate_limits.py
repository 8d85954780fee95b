"""The emulator's speed limits on this machine: memory bandwidth, integer multiply-accumulate
rate, and what a build asks of them per token (issue 18: "find the limit first").

* **bandwidth**: GB/s of a numba loop summing a 512 MiB array (far larger than the caches),
  with 1 thread and with every thread this process may use;
* **MAC rate**: multiply-accumulates per second per core, data in L1/L2, of the inner loops:
  the C kernel that ``maskc emulate`` runs where the CPU has AVX-512 VNNI (``_kern.c``, one
  and 64 tokens); numba's packed 4-bit block kernel (``kernels._block``, int16 lanes, one
  token), the same kernel over 64 tokens (the weights loaded once per 64 tokens, as in
  prefill), a plain int8 x int8 -> int32 dot product as numba compiles it, and a float32 GEMM
  of numpy's BLAS
  (64 x 4096 by 4096 x 4096, all threads, per core: exact for integer sums below 2^24, the
  GEMM route to prefill). The hardware's peak (AVX-512 VNNI ``vpdpbusd``: 64 int8 MACs per
  instruction) is above all of these;
* **per token**, from a build: bytes of the prepared matrices read per decoded token
  (``Chip.resident_bytes``: every matrix once; a tied embedding is read as the lm_head), and
  MACs per token (rows x columns of every matmul op);
* the **bounds** those give: decode tokens/s if memory-bound at the measured bandwidth, and
  tokens/s if compute-bound at the measured MAC rates on every core. With
  ``--speed benchmarks/results/emulate_speed.json`` it also prints how close each engine of
  that file comes.

Prints a table and writes benchmarks/results/emulate_limits.json.

    python benchmarks/emulate_limits.py BUILD [--speed benchmarks/results/emulate_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from _results import write
from numba import njit, prange


@njit(parallel=True, cache=True)
def _sum_par(a):  # pragma: no cover - compiled
    s = np.uint64(0)
    for i in prange(a.shape[0]):
        s += a[i]
    return s


@njit(cache=True)
def _dot_i8(a, b, reps):  # pragma: no cover - compiled
    s = np.int32(0)
    for _ in range(reps):
        for i in range(a.shape[0]):
            s += np.int32(a[i]) * np.int32(b[i])
    return s


def _best(fn, n=5) -> float:
    best = 1e30
    for _ in range(n):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def bandwidth(threads: int) -> float:
    import numba

    a = np.ones(512 << 17, np.uint64)  # 512 MiB
    numba.set_num_threads(threads)
    _sum_par(a[:1024])
    return a.nbytes / _best(lambda: _sum_par(a)) / 1e9


def mac_rates() -> dict:
    import numba

    from maskc.emulate import kernels as K

    numba.set_num_threads(1)
    rng = np.random.default_rng(0)
    cp = 1024  # 1024 columns x 128 rows of packed codes: 64 KiB, in L2
    lev = rng.integers(0, 256, (1, cp, 64), dtype=np.uint8)
    out = {}
    for tokens in (1, 64):
        x8 = rng.integers(-127, 128, (tokens, cp)).astype(np.int16)
        ng = cp // K.GROUP
        sh = rng.integers(0, 8, (tokens, ng)).astype(np.int64)
        g0 = np.zeros((tokens, ng), np.int64)
        msh = rng.integers(1, 1 << 14, (1, ng, 128)).astype(np.int16)
        res = np.empty((tokens, 128), np.int64)
        args = (lev, True, True, 3, -5, x8, sh, g0, msh, 1, res, 0)
        K._block_out(*args)
        reps = max(1, 2000 // tokens)
        t = _best(lambda args=args, reps=reps: [K._block_out(*args) for _ in range(reps)], 3)
        out[f"emulator packed kernel, {tokens} token(s)"] = reps * tokens * cp * 128 / t
    out.update(c_kernel_rates(rng))
    a = rng.integers(-127, 128, 32768).astype(np.int8)
    b = rng.integers(-127, 128, 32768).astype(np.int8)
    _dot_i8(a, b, 1)
    out["int8 dot product (int32 sums), numba"] = (
        200 * len(a) / _best(lambda: _dot_i8(a, b, 200), 3)
    )
    x = rng.standard_normal((64, 4096)).astype(np.float32)
    w = rng.standard_normal((4096, 4096)).astype(np.float32)
    x @ w
    cores = len(os.sched_getaffinity(0))
    out["float32 GEMM (numpy BLAS), per core"] = 64 * 4096 * 4096 / _best(lambda: x @ w, 3) / cores
    return out


def c_kernel_rates(rng) -> dict:
    """The C kernel (maskc/emulate/_kern.c) on one thread over a 4-bit matrix of 512 x 1024
    (256 KiB of codes, in L2), 1 and 64 tokens; {} when it is not built."""
    from maskc.emulate import backend

    kern = backend._kern
    if kern is None:
        return {}
    kern.set_threads(1)
    rows, cp = 512, 1024
    nt, ng = rows // 16, cp // 32
    codes = rng.integers(0, 256, (nt, ng, 4, 64), dtype=np.uint8)
    msh = rng.integers(1, 1 << 14, (nt, ng, 16)).astype(np.int16)
    z = np.zeros((nt, ng, 16), np.int16)
    k = np.full(nt * 16, 20, np.int32)
    h = kern.matrix(codes, True, nt, ng, 1, -8, True, msh, True, z, True, k, k,
                    np.zeros(1, np.int64), False, rows, cp)  # fmt: skip
    out = {}
    for tokens in (1, 64):
        x = rng.integers(-127, 128, (tokens, cp)).astype(np.int64)
        s = rng.integers(0, 8, (tokens, ng)).astype(np.int64)
        m, e = np.full(tokens, 1000, np.int64), np.full(tokens, -30, np.int64)
        y = np.empty((tokens, rows), np.int64)
        reps = max(1, 2000 // tokens)

        def run(x=x, s=s, m=m, e=e, y=y, reps=reps):
            for _ in range(reps):
                kern.matmul(x, s, m, e, cp, 16, h, y)

        run()
        out[f"C kernel ({kern.isa()}), {tokens} token(s)"] = (
            reps * tokens * cp * rows / _best(run, 3)
        )
    return out


def per_token(build: Path) -> dict:
    from maskc.emulate.run import open_session
    from maskc.netlist import ops as O

    s = open_session(build)
    macs = 0
    for op in s.chip.ops:
        if isinstance(op, O.MatMul):
            r, c = s.netlist.matrices[op.matrix]["shape"]
            macs += r * c
    return {"bytes": s.chip.resident_bytes(), "macs": macs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build", type=Path)
    ap.add_argument("--speed", type=Path, help="an emulate_speed.py JSON to compare with")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    bw1, bwn = bandwidth(1), bandwidth(cores)
    macs = mac_rates()
    tok = per_token(args.build)
    print(f"machine: {platform.processor() or platform.machine()}, {cores} usable cores")
    print(f"{'memory read bandwidth, 1 thread':<52}{bw1:>10.1f} GB/s")
    print(f"{'memory read bandwidth, ' + str(cores) + ' threads':<52}{bwn:>10.1f} GB/s")
    for k, v in macs.items():
        print(f"{'MAC rate per core, ' + k:<52}{v / 1e9:>10.1f} G/s")
    print(f"{'matrix bytes read per decoded token':<52}{tok['bytes'] / 1e6:>10.1f} MB")
    print(f"{'MACs per token':<52}{tok['macs'] / 1e6:>10.1f} M")
    bound_mem = bwn * 1e9 / tok["bytes"]
    one = macs["emulator packed kernel, 1 token(s)"] * cores / tok["macs"]
    many = macs["emulator packed kernel, 64 token(s)"] * cores / tok["macs"]
    vnni = macs["int8 dot product (int32 sums), numba"] * cores / tok["macs"]
    gemm = macs["float32 GEMM (numpy BLAS), per core"] * cores / tok["macs"]
    print(f"{'decode bound by memory (all threads)':<52}{bound_mem:>10.1f} tok/s")
    print(f"{'decode bound by the kernel at 1 token (all cores)':<52}{one:>10.1f} tok/s")
    print(f"{'prefill bound by the kernel at 64 tokens':<52}{many:>10.1f} tok/s")
    print(f"{'prefill bound by an int8 dot product (numba)':<52}{vnni:>10.1f} tok/s")
    for k, v in macs.items():
        if k.startswith("C kernel"):
            bound = v * cores / tok["macs"]
            print(f"{'bound by the ' + k + ', all cores':<52}{bound:>10.1f} tok/s")
    print(f"{'prefill bound by a float32 GEMM (BLAS)':<52}{gemm:>10.1f} tok/s")
    result = {
        "bandwidth_gbs": {"1": bw1, str(cores): bwn},
        "mac_per_s_per_core": macs,
        "per_token": tok,
        "bounds_tps": {"decode_memory": bound_mem, "decode_kernel": one,
                       "prefill_kernel_64": many, "prefill_int8_dot": vnni,
                       "prefill_f32_gemm": gemm},
    }  # fmt: skip
    if args.speed:
        rows = json.loads(args.speed.read_text())["rows"]
        result["engines"] = []
        for r in rows:
            gbs = r["decode_tps"] * tok["bytes"] / 1e9
            gmac = r["prefill_tps"] * tok["macs"] / 1e9
            result["engines"].append({**r, "decode_gbs": gbs, "prefill_gmacs": gmac})
            print(
                f"{r['engine']:<40} decode {r['decode_tps']:7.1f} tok/s = {gbs:5.1f} GB/s "
                f"({100 * gbs / bwn:.0f}% of bandwidth); prefill {r['prefill_tps']:7.1f} "
                f"tok/s = {gmac:5.1f} GMAC/s"
            )
    write("emulate_limits", result)


if __name__ == "__main__":
    main()
