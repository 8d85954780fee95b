"""Cheap screening of quantization settings: the quantize stage only, then float perplexity.

Runs the pipeline's settings, calibration and quantize stages (``maskc.pipeline.steps``, what
``maskc compile`` runs; no placement, netlist or layers) into a temporary folder and measures
perplexity of the dequantized weights with the float32 reference and the fixed protocol of
maskc/evaluate.py on the first ``--tokens`` tokens of both texts (default 1,024: two windows
each). For choosing what to confirm with benchmarks/quant_quality.py or emulate_fidelity.py
(the recorded protocol); where docs/benchmarks.md quotes a screen it says so, and its rows are
kept in benchmarks/results/ (quant_screen_issue24.json).

    python benchmarks/quant_screen.py MODEL --tokens 1024 \\
        --config 'bits=4,group_size=64,method=gptq,calib=1' [--config ...] [--float]

A config is comma-separated CompileOptions fields (``calib=1``: the built-in calibration text
as a file, ``calib=PATH``: that text, ``toml=...``: quant config text with ``;`` for
newlines). Prints one JSON line each, with the transformer blocks' ROM bits per weight
(``bpw_blocks``: padding included, so a group size that does not divide a matrix's width shows
its real cost).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
TEXTS = {"persuasion": HERE / "texts" / "persuasion.txt", "gpl-3": HERE / "texts" / "gpl-3.txt"}


def parse(cfg: str) -> dict:
    out = {}
    for kv in cfg.split(","):
        k, v = kv.split("=", 1)
        out[k] = int(v) if v.lstrip("-").isdigit() else v
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--config", action="append", default=[])
    ap.add_argument("--float", action="store_true", help="also the float32 model")
    args = ap.parse_args()

    from tokenizers import Tokenizer

    from maskc.evaluate import perplexity
    from maskc.pipeline import steps
    from maskc.pipeline.options import CompileOptions, Quiet
    from maskc.quantize.driver import builtin_calibration_text
    from maskc.quantize.report import avg_bpw
    from maskc.reference import FloatLlama

    m, arch, specs = steps.ingest(args.model, CompileOptions())
    tok = Tokenizer.from_file(str(m.tokenizer_path))
    ids = {
        k: tok.encode(p.read_text(encoding="utf-8"), add_special_tokens=False).ids[: args.tokens]
        for k, p in TEXTS.items()
    }

    def ppl(get) -> dict:
        model = FloatLlama(arch, get, cache_weights=True)
        return {k: perplexity(lambda s: model.forward(list(s)), v, 512).ppl for k, v in ids.items()}

    if args.float:
        print(json.dumps({"config": "float32", **ppl(m.read)}), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        calib = Path(tmp) / "calib.txt"
        calib.write_text(builtin_calibration_text())
        for i, cfg in enumerate(args.config):
            o = parse(cfg)
            if "calibrate" in o:  # calibrate=0: --no-calib (CompileOptions wants False)
                o["calibrate"] = bool(o["calibrate"])
            use_calib = o.pop("calib", 0)
            calib_file = calib if use_calib == 1 else Path(use_calib) if use_calib else None
            toml = o.pop("toml", None)
            qcfg = None
            if toml:
                qcfg = Path(tmp) / f"{i}.toml"
                qcfg.write_text(toml.replace(";", "\n"))
            opts = CompileOptions(**o, calib=calib_file, quant_config=qcfg)
            ev = Quiet()
            build = Path(tmp) / f"b{i}"
            t = time.perf_counter()
            res = steps.settings(specs, opts, ev)
            cal = steps.calibration(m, res, opts, ev)
            q, _ = steps.quantize(m, res, cal, build, ev, opts, steps.fabric(opts))
            qs = time.perf_counter() - t
            blocks = [r for r in q.rows if r["quantized"] and r["layer"] is not None]
            row = {"config": cfg, **ppl(q.store.dequantized), "quant_s": round(qs, 1)}
            row["bpw_blocks"] = round(avg_bpw(blocks), 4)  # the ROM budget, padding included
            print(json.dumps(row), flush=True)
            shutil.rmtree(build)  # a SmolLM2 build is ~200 MB; a screen may hold dozens
    sys.exit(0)


if __name__ == "__main__":
    main()
