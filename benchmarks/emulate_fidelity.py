"""Fidelity of the emulated chip (the integer datapath) on a real model.

For the default 4-bit and 3-bit builds of MODEL_DIR (compiled here with ``maskc compile``'s
defaults) and, with ``--format``, the FP4 builds (``maskc compile --format mxfp4|nvfp4``),
perplexity with the fixed protocol of maskc/evaluate.py (windows of ``--ctx`` tokens
from position 0, no BOS, all but each window's first token scored) on each text, of:

* ``float``: the float32 reference on the original weights;
* ``deq``: the float32 reference on the build's dequantized weights (what the quantizer alone
  costs);
* ``chip``: ``maskc emulate --ppl``, the bit-exact integer datapath on the netlist.

``chip / deq`` is the integer datapath's own cost (issue budget: at most 1.02); ``chip / float``
the whole chip's. Also the greedy continuation of "The capital of France is". Prints a table
and writes benchmarks/results/emulate_fidelity.json.

    python benchmarks/emulate_fidelity.py MODEL_DIR [--ctx 512] [--tokens N] [--text F ...]
        [--bits 4 --bits 3] [--format mxfp4 --format nvfp4]

Rows of earlier runs of other builds are kept in the JSON (one row per build and text).
MODEL_DIR may be a pre-quantized checkpoint (benchmarks/pack_checkpoint.py makes one): then
``float`` is the checkpoint's own dequantization (what maskc imports exactly), and ``--out``
keeps its results apart.
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
TEXTS = [HERE / "texts" / "persuasion.txt", HERE / "texts" / "gpl-3.txt"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--tokens", type=int, default=None, help="cap each text to N tokens")
    ap.add_argument("--text", type=Path, action="append", help="texts (default: both)")
    ap.add_argument("--bits", type=int, action="append", help="default: 4 and 3")
    ap.add_argument(
        "--format", action="append", choices=["mxfp4", "nvfp4"], help="FP4 builds (default: none)"
    )
    ap.add_argument("--group-size", type=int, help="integer builds: this group size")
    ap.add_argument("--method", help="integer builds: this method (default: the built-in)")
    ap.add_argument(
        "--no-calib", action="store_true", help="integer builds: compile with --no-calib"
    )
    ap.add_argument(
        "--calib-source", choices=("text", "random", "mixed"), help="compile's --calib-source"
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=HERE / "results" / "emulate_fidelity.json",
        help="results JSON (default: benchmarks/results/emulate_fidelity.json)",
    )
    args = ap.parse_args()

    from maskc.emulate.run import generate, open_session, perplexity, reference_getter
    from maskc.emulate.sampling import SamplingParams
    from maskc.evaluate import perplexity as float_ppl
    from maskc.ingest import load_model
    from maskc.pipeline import CompileOptions, compile_model
    from maskc.reference import FloatLlama

    texts = args.text or TEXTS
    m = load_model(args.model)

    def ppl_of(model: FloatLlama, ids):
        def fwd(seg):
            model.reset()
            return model.forward(list(seg))

        return float_ppl(fwd, ids, args.ctx, None).ppl

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        extra, tag = {}, ""
        if args.group_size:
            extra["group_size"], tag = args.group_size, f"{tag} g{args.group_size}"
        if args.method:
            extra["method"], tag = args.method, f"{tag} {args.method}"
        if args.no_calib:
            extra["calibrate"], tag = False, f"{tag} no-calib"
        if args.calib_source:
            extra["calib_source"] = args.calib_source
            tag = f"{tag} calib-{args.calib_source}"
        bits_list = args.bits or ([] if args.format else [4, 3])
        builds = [(f"{b}-bit{tag}", {"bits": b, **extra}) for b in bits_list]
        builds += [(f, {"weight_format": f}) for f in args.format or []]
        for bits, opts in builds:
            b = Path(tmp) / bits.replace(" ", "_")
            t0 = time.perf_counter()
            compile_model(args.model, b, CompileOptions(**opts))
            print(f"compiled {bits} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            session = open_session(b)
            arch, get = reference_getter(session, None)
            g = generate(session, session.encode("The capital of France is"), 12, SamplingParams())
            for text in texts:
                ids = session.encode(text.read_text(encoding="utf-8"))
                if args.tokens:
                    ids = ids[: args.tokens]
                t0 = time.perf_counter()
                chip = perplexity(session, ids, args.ctx, None)
                t_chip = time.perf_counter() - t0
                deq = ppl_of(FloatLlama(arch, get), ids)
                flt = ppl_of(FloatLlama(m.arch, m.read), ids)
                rows.append(
                    {
                        "build": bits,
                        "text": text.name,
                        "tokens": len(ids),
                        "tokens_scored": chip.tokens_scored,
                        "ppl_float": flt,
                        "ppl_deq": deq,
                        "ppl_chip": chip.ppl,
                        "chip_over_deq": chip.ppl / deq,
                        "chip_over_float": chip.ppl / flt,
                        "deq_over_float": deq / flt,
                        "emulate_s": t_chip,
                        "paris": session.decode(g.tokens),
                    }
                )
                r = rows[-1]
                print(
                    f"{bits} {text.name}: float {flt:.3f} deq {deq:.3f} chip "
                    f"{chip.ppl:.3f} ({r['chip_over_deq']:.4f}x deq, "
                    f"{r['chip_over_float']:.4f}x float) in {t_chip:.0f} s",
                    file=sys.stderr,
                )
    print(
        f"{'build':>7} {'text':<16}{'tokens':>8}{'float':>9}{'deq':>9}{'chip':>9}"
        f"{'chip/deq':>10}{'chip/float':>11}{'emu s':>7}"
    )
    for r in rows:
        print(
            f"{r['build']:>7} {r['text']:<16}{r['tokens']:>8}{r['ppl_float']:>9.3f}"
            f"{r['ppl_deq']:>9.3f}{r['ppl_chip']:>9.3f}{r['chip_over_deq']:>10.4f}"
            f"{r['chip_over_float']:>11.4f}{r['emulate_s']:>7.0f}"
        )
    for bits in dict.fromkeys(r["build"] for r in rows):
        p = next(r["paris"] for r in rows if r["build"] == bits)
        print(f"{bits} greedy: 'The capital of France is' -> {p!r}")
    if args.text is None:
        out = args.out
        if out.exists():  # keep earlier rows of the builds not run now (same model and ctx)
            prev = json.loads(out.read_text())
            if prev.get("model") == str(args.model) and prev.get("ctx") == args.ctx:
                now = {r["build"] for r in rows}
                old = [r | {"build": r.get("build", f"{r.get('bits')}-bit")} for r in prev["rows"]]
                rows = [r for r in old if r["build"] not in now] + rows
        out.write_text(
            json.dumps(
                {
                    "benchmark": "emulate_fidelity",
                    "date": time.strftime("%Y-%m-%d"),
                    "machine": f"{platform.machine()}, Python {platform.python_version()}",
                    "model": str(args.model),
                    "ctx": args.ctx,
                    "rows": rows,
                },
                indent=2,
            )
            + "\n"
        )
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
