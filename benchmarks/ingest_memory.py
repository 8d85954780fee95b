"""Ingest memory and speed: peak RSS must follow the largest tensor, not the model size.

Generates two synthetic Llama models with the same tensor shapes but 4 and 32 layers (8x the
parameters), plus any model folders given on the command line (e.g. the converted SmolLM2), and
runs ``load_model(...).check_data()`` (what ``maskc inspect`` does: every tensor read once) in a
fresh process for each, recording wall time and peak resident memory above the interpreter's
baseline. Prints a table and writes benchmarks/results/ingest_memory.json.

    python benchmarks/ingest_memory.py [MODEL_DIR ...]
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

CHILD = r"""
import sys, time, json
import numpy, tokenizers, maskc.ingest  # baseline: interpreter + libraries
from maskc.ingest import load_model

def status(key):  # kB, from the kernel's accounting of this process
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])

with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
    f.write("5")
base = status("VmRSS")
t = time.perf_counter()
m = load_model(sys.argv[1])
m.check_data()
dt = time.perf_counter() - t
peak = status("VmHWM")
largest = max(m.locations[s.name][1].nbytes for s in m.specs)
largest_f32 = max(s.parameters for s in m.specs) * 4
total = sum(m.locations[s.name][1].nbytes for s in m.specs)
print(json.dumps({"seconds": dt, "peak_above_base_mb": (peak - base) / 1024,
                  "largest_tensor_mb": largest / 2**20, "largest_f32_mb": largest_f32 / 2**20,
                  "model_mb": total / 2**20, "parameters": m.total_parameters}))
"""


def measure(path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def main() -> None:
    from maskc.testmodels import PRESETS, generate

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = replace(
            PRESETS["tiny"],
            vocab_size=8192,
            hidden_size=512,
            intermediate_size=1536,
            num_heads=8,
            num_kv_heads=4,
            tie_word_embeddings=False,
        )
        for layers in (4, 32):
            spec = replace(base, name=f"synthetic-{layers}L", num_layers=layers)
            t = time.perf_counter()
            gen = generate(Path(tmp) / spec.name, spec, seed=0)
            print(f"generated {spec.name} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
            rows.append({"model": spec.name, **measure(gen.path)})
        for arg in sys.argv[1:]:
            rows.append({"model": arg, **measure(Path(arg))})

    hdr = f"{'model':<28}{'params':>13}{'model MB':>10}{'largest MB':>11}{'peak MB':>9}{'s':>7}"
    print(hdr)
    for r in rows:
        print(
            f"{r['model'][-28:]:<28}{r['parameters']:>13,}{r['model_mb']:>10.1f}"
            f"{r['largest_tensor_mb']:>11.1f}{r['peak_above_base_mb']:>9.1f}{r['seconds']:>7.2f}"
        )
    res = {
        "benchmark": "ingest_memory",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
        "rows": rows,
    }
    out = Path(__file__).parent / "results" / "ingest_memory.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
