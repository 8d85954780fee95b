"""``diff-layers --png``: the changed shapes per tile over each die's tile grid."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from maskc.diff.result import DiffResult
from maskc.diff.tally import TILE


def heatmap_png(result: DiffResult, path) -> None:
    """Per-tile changes (vias + straps) over each die's tile grid."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    fab = result.fabric
    per: dict[int, dict] = {}
    for changed in result.tiles.values():
        for n, v in changed.items():
            d, x, y = (int(g) for g in TILE.fullmatch(n).groups())
            per.setdefault(d, {})
            per[d][x, y] = per[d].get((x, y), 0) + v
    dies = sorted(per) or [0]
    if fab is not None:
        cols, rows = fab.die.tile_columns, fab.die.tile_rows
    else:
        cols = 1 + max((x for d in per.values() for x, _ in d), default=0)
        rows = 1 + max((y for d in per.values() for _, y in d), default=0)
    fig = Figure(figsize=(6 * len(dies), 5.5), dpi=100)
    axes = fig.subplots(1, len(dies), squeeze=False)[0]
    used = [tuple(int(g) for g in TILE.fullmatch(n).groups()) for n in result.sites]
    for ax, d in zip(axes, dies, strict=True):
        bg = np.full((rows, cols), np.nan)
        for dd, x, y in used:
            if dd == d and x < cols and y < rows:
                bg[y, x] = 1.0
        ax.imshow(bg, origin="lower", cmap="Greys", vmin=0, vmax=5, interpolation="nearest")
        grid = np.full((rows, cols), np.nan)
        for (x, y), v in per.get(d, {}).items():
            grid[y, x] = v
        top = max(2, np.nanmax(grid) if per.get(d) else 2)
        im = ax.imshow(
            grid,
            origin="lower",
            cmap="magma_r",
            interpolation="nearest",
            norm=LogNorm(vmin=1, vmax=top),
        )
        ax.set_title(
            f"die {d}: changed shapes per tile ({len(per.get(d, {})):,} changed tiles; "
            "grey: unchanged tiles)",
            fontsize=9,
        )
        ax.set_xlabel("tile x")
        ax.set_ylabel("tile y")
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(textwrap.fill(result.verdict, 70 * len(dies)), fontsize=8)
    fig.savefig(Path(path), metadata={"Software": None})
