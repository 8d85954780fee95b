"""Move a grid-quantized SmolLM2 off its source grid: a seeded, deterministic perturbation.

SmolLM2 as ``examples/smollm2/prepare.py`` writes it is llama.cpp's Q4_1 dequantized: every
group of 32 weights of a transformer-block matrix is ``min + step * q`` with ``q`` in 0..15
(the embedding Q8_0: ``step * q``, ``q`` in -127..127, ``step = absmax / 127``). A 4-bit build
with groups of 32 then reproduces the source exactly, which no real (bf16) checkpoint allows.
This script adds to every weight of every 2-D matrix an independent uniform draw in
``[-step/2, +step/2)`` of *its own* source group's step (``(max - min) / 15`` per group of 32 for
Q4_1, ``absmax / 127`` for Q8_0): the values become continuous (the lattice convolved with a
box of one step is flat), about as far from the source grid as a fresh rounding would be, and
on no 4-bit grid of 32 or 64 (the script measures it: the share of groups whose values a
16-level uniform grid spanning their own min..max reproduces, to 1e-3 of a step). Norm vectors
are kept.

    python benchmarks/offgrid.py SRC DST [--seed 0]

DST gets the same files as SRC with model.safetensors replaced (written atomically: a temporary
folder renamed into place). The draws come from numpy's PCG64 seeded by ``(seed, tensor index
in sorted name order)``, so the output is byte-identical for the same SRC and seed. Prints the
grid check and writes it to DST/offgrid.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

GROUP = 32


def source_step(w: np.ndarray, name: str) -> np.ndarray:
    """Each weight's own source-grid step ``[R, C]``: Q8_0 (the embedding) ``absmax/127`` per
    group of 32, Q4_1 (every other matrix) ``(max - min)/15`` per group of 32."""
    r, c = w.shape
    x = w.reshape(r, c // GROUP, GROUP).astype(np.float64)
    if "embed_tokens" in name:
        step = np.abs(x).max(-1, keepdims=True) / 127.0
    else:
        step = (x.max(-1, keepdims=True) - x.min(-1, keepdims=True)) / 15.0
    return np.broadcast_to(step, x.shape).reshape(r, c)


def on_grid_share(w: np.ndarray, g: int, levels: int = 16, tol: float = 1e-3) -> float:
    """Share of the groups of ``g`` whose every value lies within ``tol`` steps of the uniform
    ``levels``-level grid spanning the group's own min..max (what rtn reproduces exactly)."""
    r, c = w.shape
    x = w[:, : c // g * g].reshape(r, c // g, g).astype(np.float64)
    mn = x.min(-1, keepdims=True)
    step = (x.max(-1, keepdims=True) - mn) / (levels - 1)
    u = (x - mn) / np.where(step > 0, step, 1.0)
    dev = np.abs(u - np.rint(u)).max(-1)
    return float((dev <= tol).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.dst.exists():
        sys.exit(f"{args.dst}: exists; remove it or choose another folder")
    tensors = load_file(str(args.src / "model.safetensors"))
    out, checks = {}, {}
    for i, name in enumerate(sorted(tensors)):
        w = tensors[name]
        if w.ndim != 2:
            out[name] = w
            continue
        rng = np.random.Generator(np.random.PCG64([args.seed, i]))
        step = source_step(w, name)
        noise = (rng.random(w.shape) - 0.5) * step
        out[name] = (w.astype(np.float64) + noise).astype(np.float32)
        if "embed_tokens" not in name:
            checks[name] = {
                f"{tag}_g{g}": on_grid_share(m, g)
                for tag, m in (("src", w), ("dst", out[name]))
                for g in (32, 64)
            }
    tmp = Path(tempfile.mkdtemp(prefix=".offgrid-", dir=args.dst.parent))
    try:
        for f in sorted(args.src.iterdir()):
            if f.name != "model.safetensors" and f.is_file():
                shutil.copy2(f, tmp / f.name)
        save_file(out, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        keys = sorted({k for c in checks.values() for k in c})
        summary = {k: float(np.mean([c[k] for c in checks.values()])) for k in keys}
        digest = hashlib.sha256((tmp / "model.safetensors").read_bytes()).hexdigest()
        rec = {
            "source": str(args.src),
            "seed": args.seed,
            "perturbation": "uniform in [-step/2, step/2) of each weight's own source group step",
            "on_grid_share_mean_over_matrices": summary,
            "model_sha256": digest,
        }
        (tmp / "offgrid.json").write_text(json.dumps(rec, indent=2) + "\n")
        readme = tmp / "README.md"
        readme.write_text(
            readme.read_text(encoding="utf-8")
            + f"\nMoved off the source grid by benchmarks/offgrid.py --seed {args.seed}: "
            "every matrix weight plus a uniform draw in [-step/2, step/2) of its source "
            "group's step (offgrid.json).\n",
            encoding="utf-8",
        )
        tmp.rename(args.dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for k, v in summary.items():
        print(f"{k}: {v:.4f} of the groups on a 16-level grid spanning their min..max")
    print(f"wrote {args.dst} (model sha256 {digest[:16]})")


if __name__ == "__main__":
    main()
