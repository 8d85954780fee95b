"""The floorplan picture of a placement (``BUILD/reports/floorplan.png``); how it is drawn
(orientation, zoom, colours, labels) is :mod:`maskc.place.dieview`'s, shared with the
``diff-layers --png`` heatmap."""

from __future__ import annotations

from maskc.ir import expert_of
from maskc.place.placer import Placement

#: Dies drawn side by side; more go on further rows.
DIES_PER_ROW = 8


def floorplan_png(p: Placement, path) -> None:
    """Draw every die's tile grid, each tile coloured by the layer it holds, zoomed to the
    used tiles with the whole die beside it, layers (and, when few, tensors) named
    (deterministic PNG). In a mixture of experts the tiles of odd-numbered experts are drawn
    lighter, so each expert's run of tiles shows, and the title gives the experts' cell
    utilization; otherwise neighbouring tensors of a layer alternate in shade."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib.colors import ListedColormap

    from maskc.place import dieview as dv

    cols, rows = p.grid
    tm = dv.tile_map(
        cols, rows, p.dies, ((b.die, b.x, b.y, b.tensor, b.layer, b.role) for b in p.blocks)
    )
    cmap = dv.layer_cmap(tm.layers)
    box = dv.zoom_box(tm)
    experts = p.report.get("experts")
    odd = None
    if experts:
        odd = np.array(
            [
                1.0 if b.layer is not None and (expert_of(b.tensor) or 0) % 2 else 0.0
                for b in p.blocks
            ]
        )
    fig, axes = dv.figure_layout(tm, box, DIES_PER_ROW)
    top = 2 + max(tm.layers, 2)
    for d, (ax, inset) in enumerate(axes):
        dv.show_grid(ax, tm.grid(d), box, cmap=cmap, vmin=-0.5, vmax=top + 0.5)
        if odd is not None:
            light = ListedColormap([(1, 1, 1, 0.4)])
            g = tm.grid(d, odd)
            ax.imshow(
                np.ma.masked_equal(g, 0),
                cmap=light,
                origin="upper",
                extent=(-0.5, cols - 0.5, rows - 0.5, -0.5),
                interpolation="nearest",
                aspect="auto",
            )
        else:
            dv.shade_tensors(ax, tm, d)
        dv.label_runs(ax, tm, d)
        used = p.report["per_die"][d]["tiles_used"]
        view = (
            "" if box is None else f"; view: tiles x {box[0]}-{box[1] - 1}, y {box[2]}-{box[3] - 1}"
        )
        ax.set_title(f"die {d}: {used:,} of {p.tiles_per_die:,} tiles{view}", fontsize=9)
        if inset is not None:
            dv.draw_inset(inset, tm, d, box)
    if tm.layers:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import ListedColormap, Normalize
        from matplotlib.ticker import MaxNLocator

        layer_colors = ListedColormap(cmap.colors[3 : 3 + tm.layers])
        sm = ScalarMappable(Normalize(-0.5, tm.layers - 0.5), layer_colors)
        cb = fig.colorbar(sm, ax=[a for a, _ in axes], shrink=0.9, pad=0.01)
        cb.locator = MaxNLocator(integer=True, nbins=8)
        cb.update_ticks()
        cb.set_label("layer", fontsize=8)
        cb.ax.tick_params(labelsize=7)
    head = ", orange lm_head" if (tm.code == 2).any() else ""
    title = f"{p.fabric} floorplan: red embedding{head}, viridis layers 0-{tm.layers - 1}"
    if experts:
        title += (
            f"\nlighter: odd experts; expert cell use {100 * experts['cell_utilization']:.1f}% "
            f"({100 * experts['cell_utilization_min']:.1f}-"
            f"{100 * experts['cell_utilization_max']:.1f}% per expert)"
        )
    else:
        title += "; neighbouring tensors alternate in shade"
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, format="png", metadata={"Software": None})
