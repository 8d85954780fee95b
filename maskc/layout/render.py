"""``maskc render``: a picture of one tile as the layer files hold it (read back, not from the
netlist), labelled with what it holds (tensor, tile index, rows and columns, format): the
scale ROM's via sites, every cell's value (for packed 3-bit tiles the decoded 3-bit codes:
four codes share three 4-bit cells) and a zoom on the first cells drawn to scale with their
vias and metal straps."""

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

    from maskc.layout.rom import codes_from_cells
    from maskc.layout.tiles import find_tile as tile_info

    info = tile_info(nl, tile)
    m = nl.matrices[info["tensor"]]
    bits = m["format"]["bits"]
    rows = info["rows"][1] - info["rows"][0]
    cols = info["cols"][1] - info["cols"][0]
    packed = bits == 3 and nl.fabric.tile.three_bit == "packed"
    used_cells = -(-cols * 3 // 4) if packed else 2 * cols if bits == 8 else cols

    fig = Figure(figsize=(12, 6.2), dpi=90, layout="constrained")
    spec = fig.add_gridspec(2, 2, width_ratios=[1.15, 1], height_ratios=[1, 6])
    ax0 = fig.add_subplot(spec[0, 0])
    ax1 = fig.add_subplot(spec[1, 0])
    ax2 = fig.add_subplot(spec[:, 1])
    layer = "" if info["layer"] is None else f", layer {info['layer']}"
    fig.suptitle(
        f"{tile} (die {info['die']}, x {info['x']}, y {info['y']}): {info['tensor']}{layer}, "
        f"tile {info['index'] + 1} of {info['of']}\nrows {info['rows'][0]}-{info['rows'][1] - 1}"
        f" x columns {info['cols'][0]}-{info['cols'][1] - 1} of the {m['shape'][0]} x "
        f"{m['shape'][1]} matrix; format {info['format']}; {len(vias):,} vias, "
        f"{len(straps):,} metal straps (read back from the layer files)",
        fontsize=9,
    )
    # top left: the scale ROM band, one pixel per via site
    sbits = ((sc[:, :, None] >> np.arange(4)) & 1).reshape(sc.shape[0], -1)
    if sbits.size:
        ax0.imshow(sbits, cmap="Greys", origin="lower", interpolation="nearest", aspect="auto")
    ax0.set_title(
        f"scale ROM, above the array: {sc.shape[0]} lines of via sites\n(each row's group "
        "step/offset fields and exponents, then the level table)",
        fontsize=8,
    )
    ax0.set_xticks([])
    ax0.set_yticks([])
    # bottom left: the block's weights, one pixel each (3-bit codes decoded from their cells)
    if packed:
        img = codes_from_cells(arr, rows, cols, bits, nl.fabric).astype(float)
        vmax, what = 7, "3-bit code"
        note = (
            f"the block's {rows} x {cols} 3-bit codes, decoded: four 3-bit codes are packed "
            "into three 4-bit cells (one 12-bit word; docs/layout.md), so the cells on the "
            "right hold 0-15"
        )
        ax1.set_xlabel("weight column in the block", fontsize=8)
    else:
        img = arr.astype(float)
        vmax, what = 15, "cell value (4 via sites = 4 bits)"
        note = (
            f"every cell's value (4 bits, 16 products), {arr.shape[0]} rows x {arr.shape[1]} cells"
        )
        if bits == 8:
            note += "; 8-bit codes are two cells, high nibble first"
        ax1.set_xlabel("cell along the row", fontsize=8)
    if not packed:  # padding (outside the block) in grey
        pad = np.ones(img.shape, dtype=bool)
        pad[:rows, :used_cells] = False
        img = np.ma.masked_array(img, pad)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad=(0.85, 0.85, 0.85))
    im = ax1.imshow(
        img, cmap=cmap, vmin=0, vmax=vmax, origin="lower", interpolation="nearest", aspect="auto"
    )
    fig.colorbar(im, ax=ax1, shrink=0.8, pad=0.01).set_label(what, fontsize=8)
    if not packed and (used_cells < arr.shape[1] or rows < arr.shape[0]):
        note += "; grey: padding"
    ax1.set_title(note, fontsize=8, wrap=True)
    ax1.set_ylabel("cell row (row 0 at the bottom, as in the layout)", fontsize=8)
    ax1.tick_params(labelsize=7)
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
        "metal straps (blue),\ncell values (red"
        + (": 4-bit cells of packed 3-bit codes)" if packed else ")"),
        fontsize=8,
    )
    ax2.set_xlabel("x (dbu)", fontsize=8)
    ax2.tick_params(labelsize=7)
    out_png = Path(out_png)
    fig.savefig(out_png, metadata={"Software": None})
    return {
        "tile": tile,
        "tensor": info["tensor"],
        "index": info["index"],
        "rows": info["rows"],
        "cols": info["cols"],
        "format": info["format"],
        "left": "decoded 3-bit codes" if packed else "cell values",
        "vias": len(vias),
        "straps": len(straps),
        "zoom_values": arr[:z, :z].tolist(),
        "png": str(out_png),
    }
