"""The README quick start's main job, step by step, timed: what a new user waits for.

Runs, in a scratch folder, exactly the chain of README's first quick-start command after the
install (prepare the SmolLM2 folder, inspect it, compile it at 4 bits into OASIS layers,
verify, emulate 16 tokens), each step as its own ``maskc`` process, and prints the wall time
of each. Run it on an idle machine (the README quotes these numbers). Prints a table and
writes benchmarks/results/quickstart.json.

    python benchmarks/quickstart.py [--work DIR] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import write

ROOT = Path(__file__).resolve().parent.parent


def steps(work: Path) -> list[tuple[str, list[str]]]:
    model, build = work / "smollm2", work / "smollm2-4bit"
    maskc = [sys.executable, "-m", "maskc"]
    return [
        (
            "prepare",
            [sys.executable, str(ROOT / "examples/smollm2/prepare.py"), str(model), "--force"],
        ),
        ("inspect", [*maskc, "inspect", str(model)]),
        (
            "compile",
            [*maskc, "compile", str(model), "-o", str(build), "--layout-format", "oas", "--force"],
        ),
        ("verify", [*maskc, "verify", str(build)]),
        (
            "emulate",
            [*maskc, "emulate", str(build), "--prompt", "The capital of France is", "-n", "16"],
        ),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="maskc-quickstart-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for name, cmd in steps(work):
            t0 = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True)
            dt = time.perf_counter() - t0
            if r.returncode != 0:
                sys.exit(f"{name} failed (exit {r.returncode}):\n{r.stderr[-2000:]}")
            rows.append({"step": name, "seconds": round(dt, 1)})
            print(f"{name:<8} {dt:8.1f} s", flush=True)
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    total = sum(r["seconds"] for r in rows)
    print(f"{'total':<8} {total:8.1f} s")
    write("quickstart", {"steps": rows, "total_seconds": round(total, 1)})


if __name__ == "__main__":
    main()
