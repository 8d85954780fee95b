"""``diff-layers --png``: the changed shapes per tile over each die's tile grid, drawn as the
floorplan is (:mod:`maskc.place.dieview`: y = 0 at the top, zoomed to the used tiles with
the whole die beside them, layers and tensors named)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from maskc.diff.result import DiffResult
from maskc.diff.tally import TILE


def heatmap_png(result: DiffResult, path) -> None:
    """Per-tile changes (vias + straps, over every compared layer) on one log colour scale
    for every die; unchanged used tiles grey, unused tiles light grey."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, LogNorm

    from maskc.place import dieview as dv

    per: dict[tuple[int, int, int], int] = {}
    for changed in result.tiles.values():
        for n, v in changed.items():
            key = tuple(int(g) for g in TILE.fullmatch(n).groups())
            per[key] = per.get(key, 0) + v
    info = dict(result.site_info)
    for n in result.sites:  # a site without an owner (layer files of other builds)
        info.setdefault(n, (n, None, "tile"))
    entries = []
    for n, (tensor, layer, role) in info.items():
        d, x, y = (int(g) for g in TILE.fullmatch(n).groups())
        entries.append((d, x, y, tensor, layer, role))
    for d, x, y in per:
        if f"T{d}_{x}_{y}" not in info:
            entries.append((d, x, y, f"T{d}_{x}_{y}", None, "tile"))
    fab = result.fabric
    if fab is not None:
        cols, rows = fab.die.tile_columns, fab.die.tile_rows
    else:
        cols = 1 + max((e[1] for e in entries), default=0)
        rows = 1 + max((e[2] for e in entries), default=0)
    dies = 1 + max((e[0] for e in entries), default=0)
    tm = dv.tile_map(cols, rows, dies, entries)
    box = dv.zoom_box(tm)
    changes = np.array(
        [per.get((d, x, y), 0) for d, x, y in zip(tm.die, tm.x, tm.y, strict=True)], dtype=float
    )
    top = max(2.0, float(changes.max(initial=0)))
    norm = LogNorm(vmin=1, vmax=top)  # one scale for every die
    cmap = matplotlib.colormaps["magma_r"]
    fig, axes = dv.figure_layout(tm, box, per_row=4)
    for d, (ax, inset) in enumerate(axes):
        used = tm.grid(d, np.ones(len(tm.code)))
        bg = ListedColormap([dv.EMPTY, dv.UNCHANGED])
        dv.show_grid(ax, used, box, cmap=bg, vmin=0, vmax=1)
        g = np.ma.masked_less(tm.grid(d, changes), 1)
        ax.imshow(
            g,
            cmap=cmap,
            norm=norm,
            origin="upper",
            extent=(-0.5, cols - 0.5, rows - 0.5, -0.5),
            interpolation="nearest",
            aspect="auto",
        )
        dv.label_runs(ax, tm, d)
        n_changed = int((changes[tm.die == d] > 0).sum())
        ax.set_title(
            f"die {d}: {n_changed:,} of {int((tm.die == d).sum()):,} used tiles changed "
            "(grey: unchanged, light grey: unused)",
            fontsize=9,
        )
        if inset is not None:
            dv.draw_inset(inset, tm, d, box)
    cb = fig.colorbar(ScalarMappable(norm, cmap), ax=[a for a, _ in axes], shrink=0.9, pad=0.01)
    cb.set_label("vias + straps changed per tile (log)", fontsize=8)
    cb.ax.tick_params(labelsize=7)
    width = 100 if len(axes) == 1 else 140
    fig.suptitle(textwrap.fill(result.verdict, width), fontsize=8)
    fig.savefig(Path(path), metadata={"Software": None})
