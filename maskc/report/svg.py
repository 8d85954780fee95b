"""Inline SVG of the report: the floorplan and the change map (tiles of a die, zoomed to the
used area, with an inset of the whole die) and the error chart (one line per role, every series
visible). Every string from the build goes through :func:`esc`; coordinates are formatted with
fixed precision, so the bytes depend only on the build."""

from __future__ import annotations

import html
import math

#: Okabe-Ito colours (distinguishable with colour-blindness), then more
PALETTE = (
    "#0072b2",
    "#e69f00",
    "#009e73",
    "#cc79a7",
    "#56b4e9",
    "#d55e00",
    "#000000",
    "#f0e442",
    "#7f7f7f",
    "#8c564b",
)
#: stroke-dasharray per series (with colour and marker, a line hidden under another still shows)
DASHES = ("", "6 3", "2 2", "8 3 2 3", "4 4", "1 3", "10 2", "3 6", "6 2 2 2", "12 4")
MARKERS = ("circle", "square", "triangle", "diamond", "down", "cross", "plus", "star", "x", "bar")


#: smallest drawn tile on the floorplan, in CSS pixels (hoverable; labels stay legible)
MIN_TILE_PX = 12.0


def esc(s: object) -> str:
    """A string from the build made safe for HTML text and attribute values."""
    return html.escape(str(s), quote=True)


def num(v: float, digits: int = 3) -> str:
    """A coordinate: fixed precision, no trailing zeros, no ``-0``."""
    s = f"{v:.{digits}f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def layer_colour(layer: int | None, role: str | None) -> str:
    """The floorplan's colour of a tile: the embedding red, an lm_head orange, decoder layer
    ``i`` a hue stepped by the golden angle (neighbouring layers differ)."""
    if layer is None:
        return "#d62728" if role == "embed" else "#ff7f0e"
    hue = (layer * 137.508 + 200) % 360
    return f"hsl({hue:.0f},55%,{45 + 10 * (layer % 2)}%)"


def _label(t: dict) -> str:
    if t["layer"] is None:
        return str(t["role"] or "global")
    return f"L{t['layer']}"


def tile_title(t: dict, extra: str = "") -> str:
    layer = "-" if t["layer"] is None else t["layer"]
    s = (
        f"{t['tile']}: {t['tensor']} | layer {layer} | {t['role']} | {t['format']} | "
        f"rows {t['rows'][0]}-{t['rows'][1] - 1}, cols {t['cols'][0]}-{t['cols'][1] - 1}"
    )
    return s + extra


def die_map(
    die: int,
    cols: int,
    rows: int,
    tiles: list[dict],
    fill,
    extra=None,
    labels: bool = True,
    caption: str = "",
) -> str:
    """One die: ``tiles`` (its used tiles) drawn as unit squares, y = 0 at the top, coloured by
    ``fill(tile)`` (a CSS class name or ``#rrggbb``), the view zoomed to the used area; an inset
    of the whole die marks it. ``extra(tile)`` adds to a tile's tooltip."""
    if tiles:
        x0 = min(t["x"] for t in tiles)
        x1 = max(t["x"] for t in tiles) + 1
        y0 = min(t["y"] for t in tiles)
        y1 = max(t["y"] for t in tiles) + 1
    else:
        x0, y0, x1, y1 = 0, 0, cols, rows
    pad = 1
    used = (max(0, x0 - pad), max(0, y0 - pad))
    used += (min(cols, x1 + pad) - used[0], min(rows, y1 + pad) - used[1])
    vb = " ".join(map(str, used))
    # pixels per tile: the used area fills 1000 px, but a tile stays at least MIN_TILE_PX wide
    # (a band of rows across a big die scrolls sideways instead of shrinking to slivers)
    ppt = min(40.0, max(MIN_TILE_PX, 1000 / used[2]))
    width, height = round(used[2] * ppt), round(used[3] * ppt)
    out = [
        f'<div class="die" data-die="{die}"><div class="diehead">die {die}: {len(tiles):,} '
        f"of {cols * rows:,} tiles used ({cols} x {rows} grid; tile (0, 0) top left){caption} "
        '<button type="button" class="zin">used area</button>'
        '<button type="button" class="zout">whole die</button></div>',
        '<div class="diebody"><div class="scroll">',
        f'<svg class="map" width="{width}" height="{height}" viewBox="{vb}" data-used="{vb}" '
        f'data-whole="0 0 {cols} {rows}" '
        f'preserveAspectRatio="xMidYMid meet" role="img" aria-label="die {die} tile map">',
        f'<rect class="dieface" x="0" y="0" width="{cols}" height="{rows}"/>',
    ]
    for t in tiles:
        f = fill(t)
        cls, style = (f, "") if not f.startswith(("#", "hsl")) else ("", f' style="fill:{f}"')
        title = tile_title(t, extra(t) if extra else "")
        out.append(
            f'<rect class="tile {cls}" x="{t["x"]}" y="{t["y"]}" width="1" height="1"{style}>'
            f"<title>{esc(title)}</title></rect>"
        )
    if labels:
        groups: dict = {}
        for t in tiles:
            groups.setdefault(_label(t), []).append(t)
        for name in sorted(groups, key=lambda k: (k[0] != "L", len(k), k)):
            # in the middle of the group's longest run of tiles along one row, one row high
            runs: dict = {}
            for t in groups[name]:
                runs.setdefault(t["y"], []).append(t["x"])
            y, xs = max(sorted(runs.items()), key=lambda kv: len(kv[1]))
            cx, cy = (min(xs) + max(xs) + 1) / 2, y + 0.5
            size = min(0.8, 1.4 * len(xs) / max(1, len(name)), 14 / ppt)  # <= 14 px
            out.append(
                f'<text class="lbl" x="{num(cx)}" y="{num(cy)}" font-size="{num(size)}">'
                f"{esc(name)}</text>"
            )
    out.append("</svg></div>")
    # the inset: the whole die, the used tiles as one path, the zoomed view outlined
    path = "".join(f"M{t['x']} {t['y']}h1v1h-1z" for t in tiles)
    out += [
        f'<svg class="inset" viewBox="0 0 {cols} {rows}" preserveAspectRatio="xMidYMid meet" '
        f'role="img" aria-label="die {die}, whole">',
        f'<rect class="dieface" x="0" y="0" width="{cols}" height="{rows}"/>',
        f'<path class="insettiles" d="{path}"/>',
        f'<rect class="view" x="{used[0]}" y="{used[1]}" width="{used[2]}" height="{used[3]}"/>',
        "</svg></div></div>",
    ]
    return "\n".join(out)


def _marker(kind: str, x: float, y: float, colour: str, title: str) -> str:
    r = 4.0
    t = f"<title>{esc(title)}</title>"
    a = f'fill="{colour}" stroke="{colour}"'
    if kind == "circle":
        return f'<circle cx="{num(x, 1)}" cy="{num(y, 1)}" r="{r}" {a}>{t}</circle>'
    if kind == "square":
        return (
            f'<rect x="{num(x - r, 1)}" y="{num(y - r, 1)}" width="{2 * r}" '
            f'height="{2 * r}" {a}>{t}</rect>'
        )
    pts = {
        "triangle": ((0, -1.2), (1.1, 0.8), (-1.1, 0.8)),
        "down": ((0, 1.2), (1.1, -0.8), (-1.1, -0.8)),
        "diamond": ((0, -1.3), (1.1, 0), (0, 1.3), (-1.1, 0)),
        "star": (
            (0, -1.3),
            (0.35, -0.4),
            (1.25, -0.4),
            (0.5, 0.2),
            (0.8, 1.1),
            (0, 0.55),
            (-0.8, 1.1),
            (-0.5, 0.2),
            (-1.25, -0.4),
            (-0.35, -0.4),
        ),
        "bar": ((-1.3, -0.4), (1.3, -0.4), (1.3, 0.4), (-1.3, 0.4)),
    }.get(kind)
    if pts:
        p = " ".join(f"{num(x + r * dx, 1)},{num(y + r * dy, 1)}" for dx, dy in pts)
        return f'<polygon points="{p}" {a}>{t}</polygon>'
    # cross / plus / x: strokes
    d = (
        f"M{num(x - r, 1)} {num(y, 1)}H{num(x + r, 1)}M{num(x, 1)} {num(y - r, 1)}V{num(y + r, 1)}"
        if kind == "plus"
        else f"M{num(x - r, 1)} {num(y - r, 1)}L{num(x + r, 1)} {num(y + r, 1)}"
        f"M{num(x - r, 1)} {num(y + r, 1)}L{num(x + r, 1)} {num(y - r, 1)}"
    )
    return f'<path d="{d}" stroke="{colour}" stroke-width="2.5" fill="none">{t}</path>'


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    out = []
    v = first
    while v <= hi + 1e-9 * step:
        out.append(round(v, 12))
        v += step
    return out


def line_chart(series: dict[str, list[tuple[int, float]]], ylabel: str, xlabel: str) -> str:
    """Lines of ``(x, y)`` points, one per series: each with its own colour, dash pattern and
    marker, and shifted a little in x, so series that coincide stay visible; a legend."""
    names = list(series)
    xs = sorted({x for s in series.values() for x, _ in s})
    ys = [y for s in series.values() for _, y in s]
    if not xs or not ys:
        return '<p class="empty">no data</p>'
    w, h, ml, mr, mt, mb = 760, 300, 64, 150, 12, 40
    pw, ph = w - ml - mr, h - mt - mb
    xlo, xhi = xs[0] - 0.5, xs[-1] + 0.5
    ylo, yhi = 0.0, max(ys) * 1.08 or 1.0
    spread = min(0.3, 0.6 / max(1, len(names)))

    def px(x: float, k: int) -> float:
        dx = (k - (len(names) - 1) / 2) * spread
        return ml + (x + dx - xlo) / (xhi - xlo) * pw

    def py(y: float) -> float:
        return mt + ph - (y - ylo) / (yhi - ylo) * ph

    out = [
        f'<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        f'aria-label="{esc(ylabel)} by {esc(xlabel)}">',
        f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" class="plotbg"/>',
    ]
    for v in _ticks(ylo, yhi):
        y = py(v)
        out.append(
            f'<line x1="{ml}" x2="{ml + pw}" y1="{num(y, 1)}" y2="{num(y, 1)}" class="grid"/>'
            f'<text x="{ml - 6}" y="{num(y + 4, 1)}" class="tick" text-anchor="end">'
            f"{num(v, 4)}</text>"
        )
    step = max(1, math.ceil(len(xs) / 16))
    for x in xs[::step]:
        out.append(
            f'<text x="{num(px(x, (len(names) - 1) / 2), 1)}" y="{mt + ph + 16}" class="tick" '
            f'text-anchor="middle">{x}</text>'
        )
    out.append(
        f'<text x="{ml + pw / 2}" y="{h - 6}" class="axis" text-anchor="middle">{esc(xlabel)}'
        f'</text><text x="14" y="{mt + ph / 2}" class="axis" text-anchor="middle" '
        f'transform="rotate(-90 14 {mt + ph / 2})">{esc(ylabel)}</text>'
    )
    for k, name in enumerate(names):
        colour = PALETTE[k % len(PALETTE)]
        dash = DASHES[k % len(DASHES)]
        mk = MARKERS[k % len(MARKERS)]
        pts = sorted(series[name])
        d = " ".join(f"{num(px(x, k), 1)},{num(py(y), 1)}" for x, y in pts)
        da = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(
            f'<g class="series" data-series="{esc(name)}"><polyline points="{d}" fill="none" '
            f'stroke="{colour}" stroke-width="1.6"{da}/>'
        )
        for x, y in pts:
            out.append(_marker(mk, px(x, k), py(y), colour, f"{name}, {xlabel} {x}: {y:.4g}"))
        ly = mt + 8 + 18 * k
        out.append(
            f'<line x1="{w - mr + 12}" x2="{w - mr + 40}" y1="{ly}" y2="{ly}" stroke="{colour}"'
            f' stroke-width="1.6"{da}/>'
            + _marker(mk, w - mr + 26, ly, colour, str(name))
            + f'<text x="{w - mr + 46}" y="{ly + 4}" class="tick">{esc(name)}</text></g>'
        )
    out.append("</svg>")
    return "\n".join(out)


def heat(v: float, lo: float, hi: float) -> str:
    """A light-to-dark colour for ``v`` in ``[lo, hi]`` (text stays readable on it)."""
    f = 0.0 if hi <= lo else max(0.0, min(1.0, (v - lo) / (hi - lo)))
    r, g, b = round(255 - 40 * f), round(247 - 140 * f), round(236 - 190 * f)
    return f"#{r:02x}{g:02x}{b:02x}"


def change_colour(n: int, top: int) -> str:
    """A changed tile's colour: log scale from 1 change (yellow) to ``top`` (dark red)."""
    f = 0.0 if top <= 1 else math.log(max(1, n)) / math.log(top)
    r, g, b = round(253 - 120 * f), round(200 - 200 * f), round(60 - 40 * f)
    return f"#{r:02x}{g:02x}{b:02x}"
