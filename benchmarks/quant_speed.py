"""Quantizer speed and memory: weights per second of each method, peak RSS of a whole compile.

Part 1 times the quantizers alone (``quantize_stack`` on every transformer-block matrix of the
model, stacked as the pipeline stacks them), with the calibration statistics precomputed for
the methods that use them, and reports weights/s. Part 2 runs ``maskc compile`` end to end in
a fresh process for the 4-bit and 3-bit defaults and records wall time and peak RSS
(``/usr/bin/time -v``) against the size of the largest tensor.

    python benchmarks/quant_speed.py MODEL_DIR

Prints a table and writes benchmarks/results/quant_speed.json.
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

import numpy as np

HERE = Path(__file__).parent
SITES = {
    "q_proj": "attn_in",
    "k_proj": "attn_in",
    "v_proj": "attn_in",
    "o_proj": "o_in",
    "gate_proj": "mlp_in",
    "up_proj": "mlp_in",
    "down_proj": "down_in",
}


def main() -> None:
    from maskc.ingest import load_model
    from maskc.quantize import PROFILES, quantize_stack
    from maskc.quantize.calibrate import LayerCalibrator
    from maskc.quantize.driver import builtin_calibration_text
    from maskc.reference import FloatLlama

    model_dir = Path(sys.argv[1])
    m = load_model(model_dir)
    a = m.arch
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(m.tokenizer_path)).encode(builtin_calibration_text()).ids
    ids = ids[:2048]
    embed = m.read("model.embed_tokens.weight")
    windows = [embed[np.asarray(ids[i : i + 512])] for i in range(0, len(ids), 512)]
    del embed
    weights: dict[str, np.ndarray] = {}
    cal = LayerCalibrator(FloatLlama(a, weights.__getitem__, cache_weights=False), windows, True)

    configs = {
        "rtn-4-g32": PROFILES[4].__class__(**{**PROFILES[4].to_json(), "method": "rtn"}),
        "lsq-4-g32 (4-bit default)": PROFILES[4],
        "lsq-3-g64 + importance (3-bit default)": PROFILES[3],
        "gptq-3-g64": PROFILES[3].__class__(**{**PROFILES[3].to_json(), "method": "gptq"}),
    }
    secs = dict.fromkeys(configs, 0.0)
    n_weights = 0
    calib_s = 0.0
    for i in range(a.num_layers):
        p = f"model.layers.{i}."
        specs = [s for s in m.specs if s.layer == i]
        weights.clear()
        weights.update({s.name: m.read(s.name) for s in specs})
        t = time.perf_counter()
        stats = cal.observe(i)
        cal.advance(i)
        calib_s += time.perf_counter() - t
        groups: dict[str, list] = {}
        for s in specs:
            if s.role in SITES:
                groups.setdefault(SITES[s.role], []).append(s)
                n_weights += s.parameters
        for name, setting in configs.items():
            t = time.perf_counter()
            for site, group in groups.items():
                st = stats[site]
                quantize_stack(
                    [s.name for s in group],
                    [weights[s.name] for s in group],
                    setting,
                    st.importance,
                    st.hessian,
                )
            secs[name] += time.perf_counter() - t
        print(f"layer {i}: {p} done", file=sys.stderr)

    rows = [{"method": k, "seconds": v, "weights_per_s": n_weights / v} for k, v in secs.items()]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for bits in (4, 3):
            out = Path(tmp) / f"b{bits}"
            cmd = [
                "/usr/bin/time",
                "-v",
                sys.executable,
                "-m",
                "maskc",
                "compile",
                str(model_dir),
                "-o",
                str(out),
                "--bits",
                str(bits),
            ]
            r = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)[1])
            wall = re.search(r"Elapsed \(wall clock\) time .*: (.+)", r.stderr)[1]
            runs.append({"compile": f"--bits {bits}", "wall": wall, "peak_rss_mb": rss / 1024})
    largest = max(s.parameters for s in m.specs) * 4 / 2**20

    print(f"{'quantizer':<42}{'seconds':>9}{'M weights/s':>13}")
    for r in rows:
        print(f"{r['method']:<42}{r['seconds']:>9.1f}{r['weights_per_s'] / 1e6:>13.2f}")
    print(f"calibration forward (observe + advance, {len(ids)} tokens): {calib_s:.1f} s")
    model_mb = m.total_parameters * 4 / 2**20
    for r in runs:
        print(
            f"maskc compile {r['compile']}: wall {r['wall']}, peak RSS {r['peak_rss_mb']:.0f} MB"
            f" (largest tensor {largest:.0f} MB float32, model {model_mb:.0f} MB)"
        )
    res = {
        "benchmark": "quant_speed",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "model": str(model_dir),
        "block_weights": n_weights,
        "quantizers": rows,
        "calibration_s": calib_s,
        "calibration_tokens": len(ids),
        "compiles": runs,
        "largest_tensor_mb": largest,
    }
    out = HERE / "results" / "quant_speed.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
