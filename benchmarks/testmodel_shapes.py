"""Synthetic shape models: wall time, peak memory and write rate of ``maskc testmodel --shape``.

Runs ``maskc testmodel OUT --shape NAME [overrides]`` in a child process and samples the summed
resident memory of the whole process tree (``/proc/*/status`` VmRSS, every 0.1 s), so the peak
covers the interpreter, numpy, the tokenizer and every chunk in flight. Prints a table and writes
benchmarks/results/testmodel_shapes.json. The generated folder is deleted afterwards unless
``--keep DIR`` names where to leave it (it must not exist yet).

    python benchmarks/testmodel_shapes.py                          # llama-3.2-3b, 6.4 GB
    python benchmarks/testmodel_shapes.py --shape llama-3.1-8b --keep /work/big/llama8b
    python benchmarks/testmodel_shapes.py --shape llama-3.1-8b -- --layers 2   # overrides

The weights are SYNTHETIC (docs: README's "Test models"); the target is memory bounded by one
chunk (a few hundred MB for any size), not the model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _proctree import tree_rss_bytes  # benchmarks/_proctree.py (scripts run from benchmarks/)

SAMPLE_SECONDS = 0.1


def tree_rss_mb(pid: int) -> float:
    """Summed VmRSS of ``pid`` and all its descendants, in MB (10^6 bytes)."""
    return tree_rss_bytes(pid) / 1e6


def run(cmd: list[str]) -> tuple[float, float, int]:
    """``cmd``'s wall time, peak tree RSS (MB) and exit code."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, tree_rss_mb(proc.pid))
        time.sleep(SAMPLE_SECONDS)
    return time.perf_counter() - t0, peak, proc.returncode


def folder_bytes(path: Path) -> tuple[int, int]:
    """(bytes of all files, bytes of the .safetensors files)."""
    files = [p for p in path.iterdir() if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    weights = sum(p.stat().st_size for p in files if p.suffix == ".safetensors")
    return total, weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="llama-3.2-3b", help="maskc testmodel --shape NAME")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, help="write the model here and keep it")
    ap.add_argument("--scratch", type=Path, help="folder for the temporary model")
    ap.add_argument("extra", nargs="*", help="more testmodel options after --, e.g. --layers 2")
    a = ap.parse_args()

    tmp = None
    if a.keep is not None:
        out = a.keep
        if out.exists():
            sys.exit(f"{out} exists; remove it or choose another --keep folder")
    else:
        tmp = Path(tempfile.mkdtemp(prefix="testmodel-shapes-", dir=a.scratch))
        out = tmp / "model"
    cmd = [sys.executable, "-m", "maskc", "testmodel", str(out), "--shape", a.shape]
    cmd += ["--seed", str(a.seed), *a.extra]
    try:
        wall, peak, rc = run(cmd)
        if rc != 0:
            sys.exit(f"maskc testmodel failed with exit code {rc}")
        total, weights = folder_bytes(out)
        shards = sorted(p.name for p in out.glob("*.safetensors"))
        cfg = json.loads((out / "config.json").read_text())
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    row = {
        "shape": " ".join([a.shape, *a.extra]),
        "seed": a.seed,
        "layers": cfg["num_hidden_layers"],
        "hidden": cfg["hidden_size"],
        "vocab": cfg["vocab_size"],
        "shards": len(shards),
        "bytes_written": total,
        "weight_bytes": weights,
        "wall_s": wall,
        "peak_tree_rss_mb": peak,
        "mb_per_s": weights / 1e6 / wall,
        "kept": str(a.keep) if a.keep is not None else None,
    }
    hdr = f"{'shape':<24}{'shards':>7}{'written GB':>12}{'wall s':>9}{'peak RSS MB':>13}{'MB/s':>8}"
    print(hdr)
    print(
        f"{row['shape'][:24]:<24}{row['shards']:>7}{total / 1e9:>12.2f}{wall:>9.1f}"
        f"{peak:>13.0f}{row['mb_per_s']:>8.1f}"
    )
    res_path = Path(__file__).parent / "results" / "testmodel_shapes.json"
    res = {"benchmark": "testmodel_shapes", "rows": []}
    if res_path.exists():
        res = json.loads(res_path.read_text())
    res.update(
        date=time.strftime("%Y-%m-%d"),
        machine=f"{platform.machine()}, {os.cpu_count()} cores",
        python=platform.python_version(),
    )
    res["rows"] = [r for r in res.get("rows", []) if r["shape"] != row["shape"]] + [row]
    res_path.parent.mkdir(exist_ok=True)
    res_path.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {res_path}")


if __name__ == "__main__":
    main()
