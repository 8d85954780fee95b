"""Quantization quality and speed on a real model: method x bits x group -> ppl, bpw, time.

For every configuration it runs the real pipeline (``maskc.pipeline.compile_model``, as
``maskc compile`` does) into a temporary build, then measures perplexity of the *dequantized*
build with the float32 reference on two English texts, with the fixed protocol of
maskc/evaluate.py (windows of 512 tokens from position 0, no BOS, all but each window's first
token scored), capped to the first ``--tokens`` tokens of each text. The float model is measured
the same way.

Calibration uses maskc's built-in text (the *second half* of persuasion.txt); perplexity
uses the first ``--tokens`` tokens of persuasion.txt and gpl-3.txt, so calibration text is never
scored, and gpl-3 is never used to choose anything.

    python benchmarks/quant_quality.py MODEL_DIR [--tokens 4096] [--only NAME ...] [--text F]

Prints a table and writes benchmarks/results/quant_quality.json (runs with extra ``--text``
files only print).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
TEXTS = {"persuasion": HERE / "texts" / "persuasion.txt", "gpl-3": HERE / "texts" / "gpl-3.txt"}

#: name -> compile options (CompileOptions fields); "calib": True uses the calibration half.
CONFIGS = {
    # the built-in profiles
    "default-4": {"bits": 4},
    "default-3": {"bits": 3},
    "default-3-no-mixed": {"bits": 3, "mixed": False},
    "default-3-no-calib": {"bits": 3, "calibrate": False},
    # FP4 formats (issue 21): the formats' reference recipes, the neighbour search and GPTQ
    "mxfp4-ocp": {"weight_format": "mxfp4", "method": "ocp"},
    "mxfp4-search": {"weight_format": "mxfp4", "method": "search"},
    "mxfp4-search-calib": {"weight_format": "mxfp4", "method": "search", "calib": True},
    "nvfp4-nv": {"weight_format": "nvfp4", "method": "nv"},
    "nvfp4-search": {"weight_format": "nvfp4", "method": "search"},
    "nvfp4-search-calib": {"weight_format": "nvfp4", "method": "search", "calib": True},
    # FP4 GPTQ: error feedback through the inverse Hessian, block scales by the search
    "mxfp4-gptq-calib": {"weight_format": "mxfp4", "method": "gptq", "calib": True},
    "nvfp4-gptq-calib": {"weight_format": "nvfp4", "method": "gptq", "calib": True},
    # single methods, uniform bits (no mixed precision)
    "rtn-4-g32": {"bits": 4, "method": "rtn", "group_size": 32},
    "lsq-4-g32": {"bits": 4, "method": "lsq", "group_size": 32},
    "rtn-4-g64": {"bits": 4, "method": "rtn", "group_size": 64},
    "lsq-4-g64": {"bits": 4, "method": "lsq", "group_size": 64},
    # 4-bit off the source grid (issue 24; benchmarks/offgrid.py): calibrated variants
    "lsq-4-g32-calib": {"bits": 4, "method": "lsq", "group_size": 32, "calib": True},
    "lsq-4-g64-calib": {"bits": 4, "method": "lsq", "group_size": 64, "calib": True},
    "gptq-4-g32-calib": {"bits": 4, "method": "gptq", "group_size": 32, "calib": True},
    "gptq-4-g64-calib": {"bits": 4, "method": "gptq", "group_size": 64, "calib": True},
    "lsq-4-g64-codebook": {
        "bits": 4,
        "method": "lsq",
        "group_size": 64,
        "calibrate": False,
        "toml": "[defaults]\ncodebook = true\n",
    },
    "lsq-4-g32-codebook": {
        "bits": 4,
        "method": "lsq",
        "group_size": 32,
        "calibrate": False,
        "toml": "[defaults]\ncodebook = true\n",
    },
    "rtn-3-g32": {"bits": 3, "method": "rtn", "group_size": 32, "mixed": False, "calibrate": False},
    "lsq-3-g32": {"bits": 3, "method": "lsq", "group_size": 32, "mixed": False, "calibrate": False},
    "lsq-3-g32-calib": {
        "bits": 3,
        "method": "lsq",
        "group_size": 32,
        "mixed": False,
        "calib": True,
    },
    "lsq-3-g64-calib": {
        "bits": 3,
        "method": "lsq",
        "group_size": 64,
        "mixed": False,
        "calib": True,
    },
    "gptq-3-g32-calib": {
        "bits": 3,
        "method": "gptq",
        "group_size": 32,
        "mixed": False,
        "calib": True,
    },
    "gptq-3-g64-mixed-calib": {"bits": 3, "method": "gptq", "group_size": 64, "calib": True},
    # the defaults with a 4-bit embedding / lm_head (a rule), for the all-tensor ROM budget
    "default-4-embed4": {"bits": 4, "embed_bits": 4},
    "default-3-embed4": {"bits": 3, "embed_bits": 4},
}


def ppl_of(arch, get, ids, ctx=512) -> float:
    from maskc.evaluate import perplexity
    from maskc.reference import FloatLlama

    model = FloatLlama(arch, get, cache_weights=True)
    return perplexity(lambda seg: model.forward(list(seg)), ids, ctx).ppl


def rom_area(build: Path) -> dict:
    """The build's placed ROM: tiles used and their area on the die (reports/placement.json)."""
    p = json.loads((build / "reports" / "placement.json").read_text())
    return {
        "tiles_used": p["tiles_used"],
        "rom_mm2": p["performance"]["die_area_used_mm2"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--tokens", type=int, default=4096, help="tokens per text (cap)")
    ap.add_argument("--only", nargs="*", help="configuration names to run")
    ap.add_argument(
        "--text",
        action="append",
        type=Path,
        default=[],
        help="also measure on this UTF-8 text (repeatable; named by file stem)",
    )
    ap.add_argument(
        "--results",
        type=Path,
        default=HERE / "results" / "quant_quality.json",
        help="JSON to merge the rows into (one file per model)",
    )
    args = ap.parse_args()
    texts = dict(TEXTS) | {p.stem: p for p in args.text}

    from tokenizers import Tokenizer

    from maskc.ingest import load_model
    from maskc.pipeline import CompileOptions, compile_model
    from maskc.quantize import QuantStore

    m = load_model(args.model)
    tok = Tokenizer.from_file(str(m.tokenizer_path))
    ids = {
        k: tok.encode(p.read_text(encoding="utf-8"), add_special_tokens=False).ids[: args.tokens]
        for k, p in texts.items()
    }
    rows = []
    t = time.perf_counter()
    base = {k: ppl_of(m.arch, m.read, v) for k, v in ids.items()}
    rows.append(
        {
            "config": "float32",
            "bpw_blocks": 32.0,
            **base,
            "quant_s": 0.0,
            "eval_s": time.perf_counter() - t,
        }
    )
    print(f"float32: {base}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        from maskc.quantize.driver import builtin_calibration_text

        calib = Path(tmp) / "calib.txt"  # the built-in text: persuasion's second half
        calib.write_text(builtin_calibration_text())
        for name, cfg in CONFIGS.items():
            if args.only and name not in args.only:
                continue
            cfg = dict(cfg)
            use_calib = cfg.pop("calib", False)
            embed_bits = cfg.pop("embed_bits", None)
            toml = cfg.pop("toml", None)
            qcfg = None
            if toml:
                qcfg = Path(tmp) / f"{name}.toml"
                qcfg.write_text(toml)
            if embed_bits:
                qcfg = Path(tmp) / f"{name}.toml"
                rule = f"bits = {embed_bits}\ngroup_size = 32\nmethod = 'lsq'\n"
                qcfg.write_text("[[rule]]\nmatch = 'model\\.embed_tokens|lm_head'\n" + rule)
            opts = CompileOptions(
                **cfg, calib=calib if use_calib else None, eval_tokens=64, quant_config=qcfg
            )
            # the defaults calibrate on the built-in text (= the same half of persuasion)
            out = Path(tmp) / name
            t = time.perf_counter()
            res = compile_model(args.model, out, opts)
            qs = time.perf_counter() - t
            index = json.loads((out / "quant" / "index.json").read_text())["tensors"]
            get = QuantStore(out, index).dequantized
            t = time.perf_counter()
            ppl = {k: ppl_of(m.arch, get, v) for k, v in ids.items()}
            row = {
                "config": name,
                "options": cfg | {"calib": use_calib, "embed_bits": embed_bits, "toml": toml},
                "bpw_blocks": res.report["totals"]["bpw_blocks"],
                "bpw_quantized": res.report["totals"]["bpw_quantized"],
                "rom_bits": res.report["totals"]["rom_bits"],
                **rom_area(out),
                **ppl,
                "quant_s": qs,
                "eval_s": time.perf_counter() - t,
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)

    names = list(ids)
    print(
        f"{'config':<24}{'bpw':>7}{'ROM Mbit':>9}{'tiles':>7}{'mm2':>7}"
        + "".join(f"{n[:14]:>16}{'ratio':>7}" for n in names)
        + f"{'compile s':>10}"
    )
    for r in rows:
        cells = "".join(f"{r[n]:>16.3f}{r[n] / base[n]:>7.3f}" for n in names)
        rom = (
            f"{r['rom_bits'] / 1e6:>9.1f}{r['tiles_used']:>7}{r['rom_mm2']:>7.2f}"
            if "rom_bits" in r
            else f"{'':>23}"
        )
        print(f"{r['config']:<24}{r['bpw_blocks']:>7.3f}{rom}{cells}{r['quant_s']:>10.1f}")
    if args.text:  # extra texts: print only, do not mix them into the recorded results
        return
    out = args.results
    out.parent.mkdir(exist_ok=True)
    # merge with earlier runs (same model and token cap): one row per configuration
    old_rows = []
    if out.exists():
        prev = json.loads(out.read_text())
        if prev.get("model") == str(args.model) and prev.get("cap") == args.tokens:
            old_rows = prev["rows"]
    merged = {r["config"]: r for r in old_rows} | {r["config"]: r for r in rows}
    order = ["float32", *CONFIGS]
    out.write_text(
        json.dumps(
            {
                "benchmark": "quant_quality",
                "date": time.strftime("%Y-%m-%d"),
                "machine": f"{platform.machine()}, {platform.python_version()}",
                "model": str(args.model),
                "cap": args.tokens,
                "tokens_per_text": {k: len(v) for k, v in ids.items()},
                "protocol": (
                    "ctx 512 windows from 0, stride 512, no BOS; calib = 2nd half of persuasion"
                ),
                "rows": sorted(merged.values(), key=lambda r: order.index(r["config"])),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
