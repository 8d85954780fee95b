"""LoRA adapters in SRAM on SmolLM2-135M: load cost, emulator speed and fidelity, per rank.

For a 4-bit build of MODEL_DIR (compiled here unless BUILD is given) and seeded random adapters
on all seven projections at ranks 4, 8 and 16: SRAM bytes, the time to validate and convert
the adapter to the SRAM integer format, prefill and decode speed of the emulator with it
(against no adapter), and top-1 agreement / KL against the float32 model with the adapter
merged in float, on 128 tokens of the built-in report text. Prints a table and writes
benchmarks/results/adapters.json.

    python benchmarks/adapters.py [MODEL_DIR] [BUILD]      # default out/smollm2
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent


def main(argv: list[str]) -> int:
    from maskc.adapters import load_adapter, to_sram
    from maskc.emulate.run import compare, generate, open_session
    from maskc.emulate.sampling import SamplingParams
    from maskc.ingest import load_model
    from maskc.pipeline import CompileOptions, compile_model
    from maskc.quantize.report import default_report_text
    from maskc.testmodels import write_lora_adapter

    model = Path(argv[0]) if argv else Path("out/smollm2")
    tmp = Path(tempfile.mkdtemp(prefix="maskc-bench-adapters-"))
    build = Path(argv[1]) if len(argv) > 1 else tmp / "build"
    if len(argv) < 2:
        compile_model(model, build, CompileOptions(layout_format="oas", verify=False))
    arch = load_model(model).arch
    rows = []
    prompt = None
    for rank in (0, 4, 8, 16):
        adapters = []
        load_s = 0.0
        sram = 0
        if rank:
            ad_dir = write_lora_adapter(tmp / f"r{rank}", arch, rank=rank, seed=0, b_std=0.04)
            t0 = time.perf_counter()
            ad = load_adapter(ad_dir)
            to_sram(ad)
            load_s = time.perf_counter() - t0
            sram = ad.sram_bytes()
            adapters = [ad_dir]
        s = open_session(build, adapters=adapters)
        if prompt is None:
            prompt = s.encode(default_report_text())[:128]
        g = generate(s, prompt, 33, SamplingParams(), stop_at_eos=False)
        c = compare(s, prompt, model)
        rows.append(
            {
                "rank": rank,
                "sram_bytes": sram,
                "load_s": round(load_s, 3),
                "prefill_tokens_per_s": round(len(prompt) / g.prefill_s, 1),
                "decode_tokens_per_s": round(32 / g.decode_s, 1),
                "top1_agreement": round(c["top1_agreement"], 4),
                "kl_mean": round(c["kl_mean"], 5),
            }
        )
        print(rows[-1], flush=True)
    doc = {
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
        "model": str(model),
        "rows": rows,
    }
    out = HERE / "results" / "adapters.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print("\n| rank | SRAM bytes | load s | prefill tok/s | decode tok/s | top-1 vs float | KL |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['rank'] or 'none'} | {r['sram_bytes']:,} | {r['load_s']} | "
            f"{r['prefill_tokens_per_s']} | {r['decode_tokens_per_s']} | "
            f"{100 * r['top1_agreement']:.1f}% | {r['kl_mean']} |"
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
