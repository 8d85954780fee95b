"""A float model folder packed as a pre-quantized checkpoint (GPTQ, AWQ GEMM or
compressed-tensors ``pack-quantized``), for measuring what maskc's exact import gives on a real
model (issue 21): round to nearest with float16 scales, packed by the test-side packers of
tests/prequant_pack.py (written from each format's published description, docs/import-design.md).

    python benchmarks/pack_checkpoint.py MODEL_DIR OUT_DIR [--method gptq|awq|compressed-tensors]
        [--bits 4] [--group 64] [--sym] [--desc-act]

Then e.g. ``python benchmarks/emulate_fidelity.py OUT_DIR --bits 4 --out
benchmarks/results/prequant_fidelity.json``: the emulated chip against the checkpoint's own
dequantization.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--method", default="gptq", choices=["gptq", "awq", "compressed-tensors"])
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group", type=int, default=64)
    ap.add_argument("--sym", action="store_true")
    ap.add_argument(
        "--desc-act", action="store_true", help="GPTQ: every linear layer in an activation order"
    )
    args = ap.parse_args()
    if args.out.exists():
        sys.exit(f"{args.out} exists")
    sys.path.insert(0, str(HERE.parent / "tests"))
    from prequant_pack import LINEAR, quantize_folder

    qc, refs = quantize_folder(
        args.model,
        args.out,
        args.method,
        bits=args.bits,
        group=args.group,
        sym=args.sym,
        desc_act=LINEAR if args.desc_act else (),
    )
    print(f"wrote {args.out}: {len(refs)} layers, quantization_config {qc}")


if __name__ == "__main__":
    main()
