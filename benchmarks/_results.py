"""Writing a benchmark's JSON result: ``benchmarks/results/NAME.json`` with the benchmark's
name, the date and the machine beside its own fields."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def write(name: str, doc: dict) -> Path:
    out = RESULTS / f"{name}.json"
    head = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} usable cores",
    }
    out.write_text(json.dumps({**head, **doc}, indent=2) + "\n")
    print(f"wrote {out}")
    return out
