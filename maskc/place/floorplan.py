"""The floorplan picture of a placement (``BUILD/reports/floorplan.png``)."""

from __future__ import annotations

from maskc.ir import expert_of
from maskc.place.placer import Placement

#: Dies drawn side by side; more go on further rows.
DIES_PER_ROW = 8


def floorplan_png(p: Placement, path) -> None:
    """Draw every die's tile grid, each tile colored by the layer it holds (deterministic PNG).
    In a mixture of experts the tiles of odd-numbered experts are drawn lighter, so each
    expert's run of tiles shows, and the title gives the experts' cell utilization."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    cols, rows = p.grid
    layers = 1 + max((b.layer for b in p.blocks if b.layer is not None), default=0)
    # value 0: empty, 1: embedding, 2: lm_head, 3 + i: layer i
    base = matplotlib.colormaps["viridis"](np.linspace(0, 1, max(layers, 2)))
    cmap = ListedColormap([(0.92, 0.92, 0.92, 1), (0.85, 0.2, 0.2, 1), (0.95, 0.6, 0.1, 1), *base])
    grids = np.zeros((p.dies, rows, cols))
    experts = p.report.get("experts")
    odd = np.zeros((p.dies, rows, cols)) if experts else None
    for b in p.blocks:  # one pass: a 405B plan has two million blocks on 40-60 dies
        v = 3 + b.layer if b.layer is not None else (1 if b.role == "embed" else 2)
        grids[b.die, b.y, b.x] = v
        if odd is not None and b.layer is not None and (expert_of(b.tensor) or 0) % 2:
            odd[b.die, b.y, b.x] = 1
    # at most DIES_PER_ROW dies side by side, further rows below
    ncols = min(p.dies, DIES_PER_ROW)
    nrows = -(-p.dies // ncols)
    fig = Figure(figsize=(4 * ncols + 1, 4.6 * nrows), dpi=100)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for d, ax in enumerate(axes):
        if d >= p.dies:
            ax.set_axis_off()
            continue
        ax.imshow(grids[d], cmap=cmap, vmin=0, vmax=2 + max(layers, 2), interpolation="nearest")
        if odd is not None:
            light = ListedColormap([(1, 1, 1, 0.4)])
            ax.imshow(np.ma.masked_equal(odd[d], 0), cmap=light, interpolation="nearest")
        used = p.report["per_die"][d]["tiles_used"]
        ax.set_title(f"die {d}: {used:,} of {p.tiles_per_die:,} tiles", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    title = f"{p.fabric} floorplan (red: embedding, orange: lm_head, color: layer)"
    if experts:
        title += (
            f"\nlighter: odd experts; expert cell use {100 * experts['cell_utilization']:.1f}% "
            f"({100 * experts['cell_utilization_min']:.1f}-"
            f"{100 * experts['cell_utilization_max']:.1f}% per expert)"
        )
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
