"""The emulator's memory and decode time on a build of a few layers, split into the embedding,
the lm_head and one layer, extrapolated to the full model's layer count (for 8B-shaped builds
compiled with ``maskc testmodel --shape llama-3.1-8b --layers 2``).

Reports the load time, the prepared matrices' resident bytes (per layer and for the rest), the
process's peak RSS (``ru_maxrss``), and per decoded token the wall and CPU seconds of the
embedding, the lm_head product and the rest per layer (greedy, after a 4-token prompt). Writes
benchmarks/results/emulate_scale.json.

    python benchmarks/emulate_scale.py BUILD [--threads 2] [--tokens 16] [--layers 32]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--layers", type=int, default=32, help="extrapolate to this many layers")
    args = ap.parse_args()

    import numpy as np

    from maskc.emulate import backend

    backend.set_threads(args.threads)
    from maskc.emulate.chip import Chip
    from maskc.netlist import load_netlist

    t0 = time.perf_counter()
    chip = Chip(load_netlist(args.build))
    load_s = time.perf_counter() - t0
    wall = {"embed": 0.0, "lm_head": 0.0}
    cpu = dict(wall)
    matmul, embed = Chip.matmul, Chip.embed

    def timed(key, fn, *a):
        w, c = time.perf_counter(), time.process_time()
        y = fn(*a)
        wall[key] += time.perf_counter() - w
        cpu[key] += time.process_time() - c
        return y

    def mm(self, a, mat, bias):
        if "lm_head" in mat.name:
            return timed("lm_head", matmul, self, a, mat, bias)
        return matmul(self, a, mat, bias)

    Chip.matmul = mm
    Chip.embed = lambda self, m, ids: timed("embed", embed, self, m, ids)
    chip.reset()
    tok = int(np.argmax(chip.forward([1, 2, 3, 4])[-1]))
    for k in wall:
        wall[k] = cpu[k] = 0.0
    n = args.tokens
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        tok = int(np.argmax(chip.forward([tok])[0]))
    tot_w, tot_c = (time.perf_counter() - w0) / n, (time.process_time() - c0) / n
    layers = chip.n_layers

    def split(tot, d):
        e, lm = d["embed"] / n, d["lm_head"] / n
        per_layer = (tot - e - lm) / layers
        full = e + lm + args.layers * per_layer
        return {
            "s_per_token": round(tot, 4),
            "embed_s": round(e, 4),
            "lm_head_s": round(lm, 4),
            "per_layer_s": round(per_layer, 4),
            f"extrapolated_{args.layers}_layers_s_per_token": round(full, 3),
            f"extrapolated_{args.layers}_layers_tokens_per_s": round(1 / full, 3),
        }

    # layer 0's matrices (a stack's members are views of it: their shares)
    layer_bytes = sum(
        sum(a.nbytes for a in m.arrays()) for name, m in chip.mats.items() if ".layers.0." in name
    )
    resident = chip.resident_bytes()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = {
        "build": str(args.build),
        "threads": args.threads,
        "layers": layers,
        "load_s": round(load_s, 1),
        "resident_bytes": resident,
        "resident_bytes_per_layer": layer_bytes,
        "resident_bytes_rest": resident - layers * layer_bytes,
        "peak_rss_bytes": peak,
        f"extrapolated_{args.layers}_layers_peak_rss_bytes": peak
        + (args.layers - layers) * layer_bytes,
        "wall": split(tot_w, wall),
        "cpu": split(tot_c, cpu),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(out, indent=1))
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "emulate_scale.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
