"""How much of the calibration statistics one token per window holds (the attention sink).

For every layer and input site of MODEL (attn_in, o_in, mlp_in, down_in: what lsq's
per-column weights and gptq's Hessian sum), the share of the summed squared inputs over the
built-in calibration text (``--tokens``, windows of ``--ctx`` from position 0, the float32
model, as ``maskc compile`` calibrates) that comes from each window's first token, and from its
first four. Prints one line per layer and writes JSON with ``--out``.

    python benchmarks/calib_sink.py MODEL [--tokens 4096] [--ctx 512] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    from maskc.ingest import load_model
    from maskc.quantize.calibrate import LayerCalibrator, calibration_windows
    from maskc.quantize.driver import builtin_calibration_text, tokenize
    from maskc.reference import FloatLlama

    m = load_model(args.model)
    model = FloatLlama(m.arch, m.read, cache_weights=True)
    ids = tokenize(m, builtin_calibration_text())[: args.tokens]
    emb = m.read("model.embed_tokens.weight")
    wins = [emb[w].astype(np.float32) for w in calibration_windows(ids, args.ctx)]
    cal = LayerCalibrator(model, wins)
    rows = []
    for layer in range(m.arch.num_layers):
        sums: dict[str, list[float]] = {}

        def obs(_i, site, x, sums=sums):
            sq = x.astype(np.float64) ** 2
            s = sums.setdefault(site, [0.0, 0.0, 0.0])
            s[0] += sq[0].sum()
            s[1] += sq[:4].sum()
            s[2] += sq.sum()

        model.observer = obs
        for x in cal.windows:
            model.block(layer, x, 0)
        model.observer = None
        row = {
            site: {"first": v[0] / v[2], "first4": v[1] / v[2]} for site, v in sorted(sums.items())
        }
        rows.append({"layer": layer, **row})
        print(
            layer,
            " ".join(f"{k}:{v['first']:.2f}/{v['first4']:.2f}" for k, v in row.items()),
            flush=True,
        )
        cal.advance(layer)
    if args.out:
        args.out.write_text(json.dumps({"model": str(args.model), "layers": rows}, indent=1))


if __name__ == "__main__":
    main()
