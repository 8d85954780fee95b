"""``maskc compile --dask`` against a local compile: a ``dask scheduler`` and N ``dask worker``
processes started from the command line (``--nworkers 1 --nthreads 1`` each), the build compared
byte for byte with a local one, and the wall time with 1, 2 and 4 workers (and local --jobs).

    python benchmarks/dask_compile.py MODEL [--workers 1 2 4] [--format oas] [--scratch DIR]

Prints a table and writes benchmarks/results/dask_compile.json. MODEL: e.g. one made by
``maskc testmodel OUT --hidden 2048 --intermediate 5632 --layers 8 --heads 16 --kv-heads 4
--vocab 32000`` (490M weights). Compiles with --no-calib, 4 bits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def compile_(model: Path, out: Path, fmt: str, extra: list[str]) -> float:
    cmd = [sys.executable, "-m", "maskc", "compile", str(model), "-o", str(out), "--force"]
    cmd += ["--no-calib", "--bits", "4", "--layout-format", fmt, "--no-verify", *extra]
    env = {**os.environ, "MASKC_PROGRESS": "0", "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--format", default="oas")
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/maskc-dask-bench"))
    ap.add_argument("--port", type=int, default=8799)
    a = ap.parse_args()
    a.scratch.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rows = []
    ref = a.scratch / "local-1"
    for jobs in sorted({1, *a.workers}):
        out = a.scratch / f"local-{jobs}"
        rows.append(
            {
                "run": f"local --jobs {jobs}",
                "seconds": compile_(a.model, out, a.format, ["--jobs", str(jobs)]),
            }
        )
        same = files(out) == files(ref)
        rows[-1]["identical"] = same
        if out != ref:
            shutil.rmtree(out)
    for n in a.workers:
        addr = f"tcp://127.0.0.1:{a.port}"
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
        sched = subprocess.Popen(
            ["dask", "scheduler", "--port", str(a.port), "--no-dashboard"], **quiet
        )
        workers = [
            subprocess.Popen(
                ["dask", "worker", addr, "--nworkers", "1", "--nthreads", "1", "--no-dashboard"],
                **quiet,
            )
            for _ in range(n)
        ]
        try:
            time.sleep(5)
            out = a.scratch / f"dask-{n}"
            sec = compile_(a.model, out, a.format, ["--dask", addr])
            rows.append(
                {
                    "run": f"--dask, {n} worker(s)",
                    "seconds": sec,
                    "identical": files(out) == files(ref),
                }
            )
            shutil.rmtree(out)
        finally:
            for p in [*workers, sched]:
                p.terminate()
            for p in [*workers, sched]:
                p.wait()
    base = rows[0]["seconds"]
    print(f"{'run':<24} {'wall s':>8} {'speed-up':>9} identical")
    for r in rows:
        r["speedup"] = round(base / r["seconds"], 3)
        print(f"{r['run']:<24} {r['seconds']:8.1f} {r['speedup']:9.2f} {r['identical']}")
    doc = {
        "model": str(a.model),
        "format": a.format,
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
    }
    res = ROOT / "benchmarks" / "results" / "dask_compile.json"
    res.write_text(json.dumps(doc, indent=1) + "\n")
    shutil.rmtree(ref)
    print("wrote", res)


if __name__ == "__main__":
    main()
