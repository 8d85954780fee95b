"""How the static pictures draw a die's tile grid: ``reports/floorplan.png`` and
``diff-layers --png`` share this, so they read the same way.

- **Orientation**: tile ``(x, y)`` of ``T<die>_<x>_<y>`` is drawn with x growing to the right
  and **y growing downwards: y = 0 is the top row** (the placer's serpentine starts there,
  top left).
- **Zoom**: when the used tiles cover a small part of the die (SmolLM2 fills 2.2% of
  ``hc1``), the view is the used region plus a margin, and a small picture of the whole die
  beside it shows where that region is (a red frame). Tiles keep their grid positions (the
  axes are in tile coordinates); a very wide region is drawn with stretched tiles, said in
  the axis label.
- **Colours**: an unused tile is light grey in both pictures; the floorplan colours a used
  tile by what it holds (embedding red, lm_head orange, layers on one viridis scale);
  the heatmap draws unchanged used tiles mid grey and changed ones on one log scale shared by
  every die.
- **Labels**: each layer is named (``L7``) on the middle tile of its run, the embedding and
  the lm_head too; when few enough tiles are in view, each tensor's run is named as well
  (``q``, ``k``, ``v``, ``o``, ``gate``, ``up``, ``down``), and neighbouring tensors of a
  layer alternate in shade.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

#: an unused tile (both pictures)
EMPTY = (0.93, 0.93, 0.93, 1.0)
#: a used tile that did not change (heatmap)
UNCHANGED = (0.72, 0.72, 0.72, 1.0)
EMBED = (0.85, 0.2, 0.2, 1.0)
LM_HEAD = (0.95, 0.6, 0.1, 1.0)
#: zoom only when the used region's box is under this share of the die's area
ZOOM_BELOW = 0.5
#: name each tensor's run when at most this many used tiles are in view
TENSOR_LABELS_UP_TO = 400
#: a view wider than this many times its height stretches its tiles
MAX_ASPECT = 4.0
#: short names of the roles (labels)
SHORT = {
    "q_proj": "q",
    "k_proj": "k",
    "v_proj": "v",
    "o_proj": "o",
    "gate_proj": "gate",
    "up_proj": "up",
    "down_proj": "down",
    "embed": "embed",
    "lm_head": "lm_head",
}
_ROLE = re.compile(r"(gate_up_proj|q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)")


@dataclass(frozen=True)
class TileMap:
    """The used tiles of a build: per tile its die, x, y, the code of what it holds (1
    embedding, 2 lm_head, 3 + i layer i) and the index of its tensor in ``tensors``; the
    tiles are in placement (serpentine) order."""

    cols: int
    rows: int
    dies: int
    die: np.ndarray
    x: np.ndarray
    y: np.ndarray
    code: np.ndarray
    tensor: np.ndarray
    tensors: tuple[str, ...]
    roles: tuple[str, ...]  #: per tensor
    layers: int  #: number of layers (codes 3 .. 2 + layers)
    #: per tile, 1 on every other tensor of a layer (in placement order), else 0
    odd: np.ndarray

    def grid(self, d: int, values: np.ndarray | None = None, fill: float = 0.0) -> np.ndarray:
        """Die ``d`` as a ``[rows, cols]`` array of ``values`` (default: the codes)."""
        g = np.full((self.rows, self.cols), fill, dtype=float)
        sel = self.die == d
        v = self.code if values is None else values
        g[self.y[sel], self.x[sel]] = v[sel]
        return g


def role_of(tensor: str, role: str | None = None) -> str:
    """A tensor's role for its label: the placement's, else from its name."""
    if role:
        return role
    if "embed_tokens" in tensor:
        return "embed"
    if "lm_head" in tensor:
        return "lm_head"
    m = _ROLE.search(tensor)
    return m.group(1) if m else tensor


def tile_map(cols: int, rows: int, dies: int, entries) -> TileMap:
    """A :class:`TileMap` from ``entries``: ``(die, x, y, tensor, layer or None, role)`` in
    placement order."""
    die, xs, ys, code, tid = [], [], [], [], []
    names: dict[str, int] = {}
    roles: list[str] = []
    top = -1
    for d, x, y, tensor, layer, role in entries:
        r = role_of(tensor, role)
        if tensor not in names:
            names[tensor] = len(names)
            roles.append(r)
        die.append(d)
        xs.append(x)
        ys.append(y)
        if layer is not None:
            code.append(3 + layer)
            top = max(top, layer)
        else:
            code.append(1 if r == "embed" else 2)
        tid.append(names[tensor])
    arrays = [np.asarray(v, dtype=np.int64) for v in (die, xs, ys, code, tid)]
    return TileMap(
        cols, rows, dies, *arrays, tuple(names), tuple(roles), top + 1, _odd(arrays[3], arrays[4])
    )


def _odd(code: np.ndarray, tensor: np.ndarray) -> np.ndarray:
    """1 on every other tensor run within each run of one code (a layer), vectorized (a 405B
    plan has two million tiles)."""
    if not len(code):
        return np.zeros(0)
    new_t = np.concatenate([[0], (np.diff(tensor) != 0).astype(np.int64)])
    new_c = np.concatenate([[True], np.diff(code) != 0])
    count = np.cumsum(new_t)
    start = np.maximum.accumulate(np.where(new_c, np.arange(len(code)), 0))
    return ((count - count[start]) % 2).astype(float)


def layer_cmap(layers: int):
    """The floorplan's colours, by code: 0 empty, 1 embedding, 2 lm_head, 3 + i layer i."""
    import matplotlib
    from matplotlib.colors import ListedColormap

    base = matplotlib.colormaps["viridis"](np.linspace(0, 1, max(layers, 2)))
    return ListedColormap([EMPTY, EMBED, LM_HEAD, *base])


def zoom_box(tm: TileMap) -> tuple[int, int, int, int] | None:
    """``(x0, x1, y0, y1)`` (half-open, in tiles) of the region to show, the same on every die:
    the used tiles' bounding box with a margin; None (the whole die) when that box is not
    much smaller than the die."""
    if not len(tm.x):
        return None
    x0, x1 = int(tm.x.min()), int(tm.x.max()) + 1
    y0, y1 = int(tm.y.min()), int(tm.y.max()) + 1
    mx = max(1, (x1 - x0) // 20)
    my = max(1, (y1 - y0) // 20)
    x0, x1 = max(0, x0 - mx), min(tm.cols, x1 + mx)
    y0, y1 = max(0, y0 - my), min(tm.rows, y1 + my)
    if (x1 - x0) * (y1 - y0) >= ZOOM_BELOW * tm.cols * tm.rows:
        return None
    return x0, x1, y0, y1


def figure_layout(tm: TileMap, box, per_row: int, width: float = 9.0):
    """A figure and, per die, its main axes and (when zoomed) the whole-die inset axes."""
    from matplotlib.figure import Figure

    x0, x1, y0, y1 = box or (0, tm.cols, 0, tm.rows)
    ratio = (y1 - y0) / (x1 - x0)
    ncols = min(tm.dies, per_row)
    nrows = -(-tm.dies // ncols)
    main_w = width if ncols == 1 else 4.0
    main_h = float(np.clip(main_w * ratio, 1.6, main_w * 1.1))
    fig = Figure(
        figsize=(ncols * main_w * (1.3 if box else 1.0) + 1.2, nrows * (main_h + 1.3)),
        dpi=100,
        layout="constrained",
    )
    if box:
        spec = fig.add_gridspec(nrows, ncols * 2, width_ratios=[4, 1] * ncols)
    else:
        spec = fig.add_gridspec(nrows, ncols)
    axes = []
    for d in range(nrows * ncols):
        r, c = divmod(d, ncols)
        if d >= tm.dies:
            continue
        if box:
            axes.append((fig.add_subplot(spec[r, 2 * c]), fig.add_subplot(spec[r, 2 * c + 1])))
        else:
            axes.append((fig.add_subplot(spec[r, c]), None))
    return fig, axes


def show_grid(ax, grid: np.ndarray, box, **imshow) -> None:
    """Draw ``grid`` ([rows, cols]) in tile coordinates, y = 0 at the top, limited to ``box``."""
    rows, cols = grid.shape
    ax.imshow(
        grid,
        origin="upper",
        extent=(-0.5, cols - 0.5, rows - 0.5, -0.5),
        interpolation="nearest",
        aspect="auto",
        **imshow,
    )
    x0, x1, y0, y1 = box or (0, cols, 0, rows)
    ax.set_xlim(x0 - 0.5, x1 - 0.5)
    ax.set_ylim(y1 - 0.5, y0 - 0.5)  # y = 0 at the top
    wide = (x1 - x0) > MAX_ASPECT * (y1 - y0)
    ax.set_xlabel("tile x" + ("  (tiles stretched vertically)" if wide else ""), fontsize=8)
    ax.set_ylabel("tile y (0 at the top)", fontsize=8)
    ax.tick_params(labelsize=7)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if not wide:
        ax.set_aspect("equal", adjustable="box")


def shade_tensors(ax, tm: TileMap, d: int) -> None:
    """Lighten every other tensor of a layer (in placement order), so tensor runs show."""
    from matplotlib.colors import ListedColormap

    g = tm.grid(d, tm.odd)
    rows, cols = g.shape
    ax.imshow(
        np.ma.masked_equal(g, 0),
        cmap=ListedColormap([(1, 1, 1, 0.35)]),
        origin="upper",
        extent=(-0.5, cols - 0.5, rows - 0.5, -0.5),
        interpolation="nearest",
        aspect="auto",
    )


def _runs(keys: np.ndarray) -> list[tuple[int, int]]:
    """``(start, end)`` of each run of equal values in ``keys``."""
    if not len(keys):
        return []
    cut = np.flatnonzero(np.diff(keys)) + 1
    starts = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [len(keys)]])
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def _tile_px(ax) -> float:
    """About how many pixels wide one tile is drawn in ``ax`` (its limits already set)."""
    fig = ax.get_figure()
    x0, x1 = ax.get_xlim()
    return ax.get_position().width * fig.get_figwidth() * fig.dpi / max(x1 - x0, 1.0)


def _label(tm: TileMap, i: int, role: str) -> str:
    """The short name of tile ``i``'s tensor: ``q``, ``gate``, ``e3`` (expert 3), ..."""
    from maskc.ir import expert_of

    e = expert_of(tm.tensors[int(tm.tensor[i])])
    return f"e{e}" if e is not None else SHORT.get(role, role)


def label_runs(ax, tm: TileMap, d: int) -> None:
    """Name each layer (``L7``; and, with few tiles in view, each tensor: ``L7 q``, ``k``,
    ...) and the embedding and lm_head on the middle tile of its run on die ``d``; a name
    wider than its run is drawn is left out (so names never overlap)."""
    import matplotlib.patheffects as pe

    sel = np.flatnonzero(tm.die == d)
    halo = [pe.withStroke(linewidth=2, foreground="white")]
    by_tensor = len(sel) <= TENSOR_LABELS_UP_TO
    px = _tile_px(ax)
    fig = ax.get_figure()

    def put(a: int, b: int, text: str, size: float) -> bool:
        run = sel[a:b]
        across = (b - a) if np.all(tm.y[run] == tm.y[run[0]]) else tm.cols
        if len(text) * size * 0.62 * fig.dpi / 72 > across * px:
            return False
        mid = sel[(a + b) // 2]
        ax.text(
            tm.x[mid], tm.y[mid], text, ha="center", va="center", fontsize=size, path_effects=halo
        )
        return True

    for a, b in _runs(tm.code[sel]):
        c = int(tm.code[sel[a]])
        if c >= 3 and by_tensor:
            continue  # named with its tensors below
        put(a, b, "embed" if c == 1 else "lm_head" if c == 2 else f"L{c - 3}", 7)
    if not by_tensor:
        return
    for a, b in _runs(tm.tensor[sel]):
        c = int(tm.code[sel[a]])
        if c < 3:
            continue
        text = _label(tm, sel[a], tm.roles[int(tm.tensor[sel[a]])])
        first = a == 0 or tm.code[sel[a - 1]] != c
        if not (first and put(a, b, f"L{c - 3} {text}", 6)):
            put(a, b, text, 6)


def draw_inset(ax, tm: TileMap, d: int, box) -> None:
    """The whole die ``d`` small: used tiles dark, the zoomed region framed in red."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Rectangle

    used = tm.grid(d, np.ones(len(tm.code)))
    ax.imshow(
        used,
        cmap=ListedColormap([EMPTY, (0.25, 0.25, 0.25, 1)]),
        vmin=0,
        vmax=1,
        origin="upper",
        interpolation="nearest",
        extent=(-0.5, tm.cols - 0.5, tm.rows - 0.5, -0.5),
    )
    x0, x1, y0, y1 = box
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="red", lw=1.2))
    ax.set_title(f"whole die {d}\n({tm.cols} x {tm.rows} tiles)", fontsize=7)
    ax.set_xticks([0, tm.cols - 1])
    ax.set_yticks([0, tm.rows - 1])
    ax.tick_params(labelsize=6)
