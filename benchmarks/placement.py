"""Placement plans and their speed: tiles, utilization, modeled performance, weights/s.

Plans (``maskc compile --plan-only``: config.json only, no weights) for a Llama-3.1-8B-shaped
config on ``hc1`` at 4 and 3 bits and for SmolLM2-135M's config on ``mini`` and ``hc1``, each in
a fresh process timed with ``/usr/bin/time -v`` (wall time, peak RSS). Prints a table and writes
benchmarks/results/placement.json.

    python benchmarks/placement.py [SMOLLM2_DIR]     # default out/smollm2 (the quick start's)
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
LLAMA_8B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "rope_scaling": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
}


def run(config: Path, fabric: str, bits: int, out: Path) -> dict:
    cmd = [
        "/usr/bin/time",
        "-v",
        sys.executable,
        "-m",
        "maskc",
        "compile",
        str(config),
        "-o",
        str(out),
        "--plan-only",
        "--fabric",
        fabric,
        "--bits",
        str(bits),
        "--json",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    doc = json.loads(r.stdout)
    wall = re.search(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)", r.stderr)
    secs = int(wall[1] or 0) * 3600 + int(wall[2]) * 60 + float(wall[3])
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)[1]) / 1024
    p = doc["placement"]
    perf = p["performance"]["at_context_1"]
    return {
        "parameters": doc["parameters"],
        "bpw_blocks": doc["bpw_blocks"],
        "tiles_used": p["tiles_used"],
        "tiles_available": p["tiles_available"],
        "dies": p["dies"],
        "max_context": p["max_context"],
        "tokens_per_s_per_user": perf["tokens_per_s_per_user"],
        "energy_mj_per_token": perf["energy_mj_per_token"],
        "seconds": secs,
        "weights_per_s": doc["parameters"] / secs,
        "peak_rss_mb": rss,
    }


def main() -> None:
    smol = Path(sys.argv[1] if len(sys.argv) > 1 else "out/smollm2") / "config.json"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        llama = Path(tmp) / "llama-3.1-8b.json"
        llama.write_text(json.dumps(LLAMA_8B))
        cases = [("Llama-3.1-8B shape", llama, "hc1", 4), ("Llama-3.1-8B shape", llama, "hc1", 3)]
        if smol.is_file():
            cases += [
                ("SmolLM2-135M", smol, "mini", 4),
                ("SmolLM2-135M", smol, "mini", 3),
                ("SmolLM2-135M", smol, "hc1", 4),
            ]
        for k, (model, cfg, fabric, bits) in enumerate(cases):
            res = run(cfg, fabric, bits, Path(tmp) / f"p{k}")
            rows.append({"model": model, "fabric": fabric, "bits": bits, **res})
    print(
        f"{'model':<20}{'fabric':>7}{'bits':>5}{'tiles':>9}{'of':>9}{'use':>7}{'bpw':>7}"
        f"{'tok/s/user':>12}{'mJ/tok':>8}{'s':>6}{'M w/s':>8}{'RSS MB':>8}"
    )
    for r in rows:
        print(
            f"{r['model']:<20}{r['fabric']:>7}{r['bits']:>5}{r['tiles_used']:>9,}"
            f"{r['tiles_available']:>9,}{r['tiles_used'] / r['tiles_available']:>7.1%}"
            f"{r['bpw_blocks']:>7.3f}{r['tokens_per_s_per_user']:>12,.0f}"
            f"{r['energy_mj_per_token']:>8.2f}{r['seconds']:>6.1f}"
            f"{r['weights_per_s'] / 1e6:>8.0f}{r['peak_rss_mb']:>8.0f}"
        )
    out = HERE / "results" / "placement.json"
    out.write_text(
        json.dumps(
            {
                "benchmark": "placement",
                "date": time.strftime("%Y-%m-%d"),
                "machine": f"{platform.machine()}, Python {platform.python_version()}",
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
