"""The emulator beside a busy process: decode tokens/s idle and with ``--busy`` CPU-bound
processes running on the same cores, under each threading setting (issue 18: "no collapse
under load").

Each setting runs in a fresh process (the OpenMP runtime reads its environment when it
loads): ``default`` (what ``maskc emulate`` does: the C kernel and its pool), ``numba`` (the
numba kernels with libgomp's active waiting, as before issue 18), ``spin`` (OMP_WAIT_POLICY=
active), ``passive`` (OMP_WAIT_POLICY=passive), ``workqueue`` (numba's own pool), and
``1thread``. Decode = tokens/s of 32 greedy tokens after a short
prompt, best of 3. The busy processes are Python loops, started before the emulator and
stopped after it. Prints a table and writes benchmarks/results/emulate_load.json.

    python benchmarks/emulate_load.py BUILD [--busy 1] [--settings default,numba,1thread]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _results import write

CHILD = r"""
import json, sys, time
from maskc.emulate.run import open_session, generate
from maskc.emulate.sampling import SamplingParams
from maskc.emulate import backend
if sys.argv[2] == "1":
    backend.set_threads(1)
s = open_session(sys.argv[1])
p = s.encode("The capital of France is")
generate(s, p, 4, SamplingParams(), stop_at_eos=False)  # warm-up
best = 0.0
for _ in range(3):
    g = generate(s, p, 32, SamplingParams(), stop_at_eos=False)
    best = max(best, (len(g.tokens) - 1) / g.decode_s)
import numba
try:
    layer = numba.threading_layer()
except ValueError:  # no numba parallel loop ran (the C kernel's decode)
    layer = "-"
print(json.dumps({"decode_tps": best, "layer": layer, "kernel": backend.describe()}))
"""

SETTINGS = {
    "default": {},
    "numba": {"MASKC_KERNEL": "numba", "OMP_WAIT_POLICY": "active"},  # the kernels before issue 18
    "spin": {"OMP_WAIT_POLICY": "active"},
    "passive": {"OMP_WAIT_POLICY": "passive"},
    "workqueue": {"NUMBA_THREADING_LAYER": "workqueue"},
    "spin1k": {"GOMP_SPINCOUNT": "1000"},
    "spin10k": {"GOMP_SPINCOUNT": "10000"},
    "spin100k": {"GOMP_SPINCOUNT": "100000"},
    "1thread": {},
}


def run(build: Path, setting: str) -> dict:
    drop = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MASKC_KERNEL")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(SETTINGS[setting])
    one = "1" if setting == "1thread" else "0"
    r = subprocess.run(
        [sys.executable, "-c", CHILD, str(build), one], capture_output=True, text=True, env=env
    )
    if r.returncode:
        raise SystemExit(f"child failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build", type=Path)
    ap.add_argument("--busy", type=int, default=1, help="busy processes beside the emulator")
    ap.add_argument("--settings", default="default,numba,1thread")
    args = ap.parse_args()
    rows = []
    for setting in args.settings.split(","):
        idle = run(args.build, setting)
        hogs = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)
        ]
        try:
            time.sleep(0.5)
            busy = run(args.build, setting)
        finally:
            for h in hogs:
                h.kill()
                h.wait()
        row = {
            "setting": setting,
            "layer": idle["layer"],
            "idle_tps": idle["decode_tps"],
            "busy_tps": busy["decode_tps"],
            "kept": busy["decode_tps"] / idle["decode_tps"],
        }
        rows.append(row)
        print(
            f"{setting:<10} ({row['layer']:<9}) idle {row['idle_tps']:7.1f} tok/s, beside "
            f"{args.busy} busy: {row['busy_tps']:7.1f} tok/s ({100 * row['kept']:.0f}%)",
            flush=True,
        )
    write("emulate_load", {"busy": args.busy, "rows": rows})


if __name__ == "__main__":
    main()
