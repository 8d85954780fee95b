"""``maskc render``: a picture of one tile as the layer files hold it (read back, not from the
netlist): the whole tile's via sites as a bitmap beside a zoom on its first cells drawn to
scale with their vias and metal straps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maskc.errors import InputError


def find_tile(b, nl, tile: str) -> dict:
    """The bank (from ``layers/index.json``) holding tile ``tile``; exit 2 naming valid tiles."""
    from maskc.errors import UsageError
    from maskc.layout.banks import tile_name, tile_positions

    index = b.json("layers/index.json")
    names = []
    for bank in index["banks"]:
        for _n, _i, pos in tile_positions(nl, bank["tiles"]):
            nm = tile_name(pos)
            if nm == tile:
                return bank
            names.append(nm)
    raise UsageError(
        f"--tile {tile}: no such tile in {b.path}; tiles are named T<die>_<x>_<y>, "
        f"e.g. {', '.join(names[:3])} ({len(names):,} in all; maskc inspect {b.path} --tiles "
        "lists them with their tensors)"
    )


def render_tile(path, tile: str, out_png, zoom: int = 8) -> dict:
    """Draw tile ``tile`` of the build at ``path`` into ``out_png``; returns what was drawn
    (via count, straps, the zoom's cell values)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from maskc.build import open_build
    from maskc.layout.geometry import Geometry
    from maskc.layout.read import LayerFile, extract_tile
    from maskc.netlist import load_netlist

    b = open_build(path)
    if "layers/index.json" not in b.manifest["files"]:
        raise InputError(f"{b.path}: the build has no layers/ (recompile it with this maskc)")
    nl = load_netlist(b.path)
    geo = Geometry(nl.fabric)
    bank = find_tile(b, nl, tile)
    root = b.path / "layers"
    via = LayerFile(str(root / bank["files"]["via"]), geo, geo.via, geo.size)
    metal = LayerFile(str(root / bank["files"]["metal"]), geo, geo.metal, None)
    vias, straps = via.shapes(tile), metal.shapes(tile)
    via.close()
    metal.close()
    if vias is None or straps is None:
        raise InputError(f"{root}: tile {tile} is missing from the layer files (maskc verify)")
    lines = int(np.ceil((vias[:, 1].max(initial=geo.scale_y) - geo.scale_y + 1) / geo.line_pitch))
    arr, sc, _ = extract_tile(vias, geo, max(lines, 0))

    fig = Figure(figsize=(13, 6.5), dpi=110)
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.15, 1]})
    # left: every via site of the tile, one pixel per site (array, gap, scale ROM)
    bits = ((arr[:, :, None] >> np.arange(4)) & 1).reshape(arr.shape[0], -1)
    sbits = ((sc[:, :, None] >> np.arange(4)) & 1).reshape(sc.shape[0], -1)
    img = np.concatenate([bits, np.zeros((1, bits.shape[1]), bits.dtype), sbits])
    ax1.imshow(img, cmap="Greys", origin="lower", interpolation="nearest", aspect="auto")
    ax1.axhline(arr.shape[0], color="tab:orange", lw=0.8)
    ax1.set_title(
        f"{tile}: {len(vias):,} vias ({arr.shape[0]} rows x {arr.shape[1]} cells x 4 "
        f"bit sites; scale ROM above the line)",
        fontsize=9,
    )
    ax1.set_xlabel("bit site along the row (cell x 4 + bit)")
    ax1.set_ylabel("cell row / scale-ROM line")
    # right: the first zoom x zoom cells to scale, with vias, straps and values
    z = min(zoom, arr.shape[0], arr.shape[1])
    x_hi, y_hi = geo.ox + z * geo.cpx, geo.oy + z * geo.cpy
    for x, y in straps.tolist():
        w = geo.cfg_len if x == geo.cfg_x0 else geo.row_strap_len
        if y < y_hi and x < x_hi:
            ax2.add_patch(
                Rectangle((x, y), min(w, x_hi - x), geo.strap_w, color="tab:blue", alpha=0.35, lw=0)
            )
    for x, y in vias.tolist():
        if x < x_hi and y < y_hi:
            ax2.add_patch(Rectangle((x, y), geo.size, geo.size, color="black", lw=0))
    for r in range(z):
        for k in range(z):
            ax2.add_patch(
                Rectangle(
                    (geo.ox + k * geo.cpx, geo.oy + r * geo.cpy),
                    geo.cpx,
                    geo.cpy,
                    fill=False,
                    lw=0.3,
                    color="grey",
                )
            )
            ax2.text(
                geo.ox + k * geo.cpx + geo.cpx / 2,
                geo.oy + r * geo.cpy + geo.cpy * 0.6,
                f"{int(arr[r, k])}",
                ha="center",
                va="center",
                fontsize=7,
                color="tab:red",
            )
    ax2.set_xlim(geo.cfg_x0 - geo.spx, x_hi)
    ax2.set_ylim(geo.oy - geo.spy, y_hi)
    ax2.set_aspect("equal")
    ax2.set_title(
        f"first {z}x{z} cells to scale (dbu = {geo.dbu_m * 1e9:g} nm): vias (black), "
        "metal straps (blue), cell values (red)",
        fontsize=9,
    )
    ax2.set_xlabel("x (dbu)")
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, metadata={"Software": None})
    return {
        "tile": tile,
        "vias": len(vias),
        "straps": len(straps),
        "zoom_values": arr[:z, :z].tolist(),
        "png": str(out_png),
    }
