"""Builds the report tests share: the tiny model on ``mini``, and the same model with one
weight changed (a change map with exactly one changed tile)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

#: the tensor whose weight :func:`one_weight_changed` moves
CHANGED = "model.layers.0.mlp.down_proj.weight"


def one_weight_changed(src: Path, dst: Path) -> str:
    """A copy of the model with one weight of layer 0's down_proj moved inside its group (the
    group's min and max kept, so only that weight's code changes)."""
    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, dst)
    w = load_file(str(dst / "model.safetensors"))
    g = w[CHANGED][3, 0:32].copy()
    order = np.argsort(g)
    w[CHANGED] = w[CHANGED].copy()
    w[CHANGED][3, order[8]] = g[order[24]]
    save_file(w, str(dst / "model.safetensors"))
    return CHANGED


def compile_pair(model: Path, root: Path, fabric: str = "mini") -> tuple[Path, Path]:
    """(A, B): ``model`` and the one-weight-changed copy compiled on ``fabric`` (rtn)."""
    from maskc.pipeline import CompileOptions, compile_model

    one_weight_changed(model, root / "model-b")
    a, b = root / "a", root / "b"
    for m, out in ((model, a), (root / "model-b", b)):
        compile_model(m, out, CompileOptions(fabric=fabric, method="rtn"))
    return a, b
