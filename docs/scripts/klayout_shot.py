"""The KLayout picture of docs/layout.md: a build's via layer opened with its layers/maskc.lyp in
KLayout's own LayoutView (the PyPI ``klayout`` module, rendered offscreen), zoomed to one tile.

    python docs/scripts/klayout_shot.py BUILD [--tile T0_196_0] [--box X0,Y0,X1,Y1]
        [-o docs/img/klayout-via.png]

What ``klayout layers/via.oas -l layers/maskc.lyp`` shows on screen, without a display."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build", type=Path)
    ap.add_argument("--tile", default=None, help="T<die>_<x>_<y> (default: the first placed)")
    ap.add_argument("-o", "--output", type=Path, default=Path("docs/img/klayout-via.png"))
    ap.add_argument("--size", default="1000x700", help="pixels, WxH")
    ap.add_argument(
        "--box",
        default=None,
        help="x0,y0,x1,y1 in um from the tile's origin (default: the whole tile)",
    )
    args = ap.parse_args()

    import klayout.db as db
    import klayout.lay as lay

    from maskc.netlist import load_netlist

    nl = load_netlist(args.build)
    index = json.loads((args.build / "layers" / "index.json").read_text())
    # the bank holding the tile: its tiles are [matrix, first, end] runs of the netlist's tiles
    want = args.tile
    via = None
    for bank in index["banks"]:
        for name, first, end in bank["tiles"]:
            pos = nl.tile_arrays(name, ("pos",))["pos"]
            for i in range(first, end):
                tname = "T{}_{}_{}".format(*(int(v) for v in pos[i]))
                if want is None:
                    want = tname
                if tname == want:
                    via = args.build / "layers" / bank["files"]["via"]
                    break
            if via:
                break
        if via:
            break
    if via is None:
        raise SystemExit(f"{args.tile}: no such placed tile in {args.build}")
    _, x, y = (int(v) for v in want[1:].split("_"))
    g = nl.fabric.geometry
    um = g.dbu_nm / 1000
    w, h = (int(v) for v in args.size.split("x"))
    view = lay.LayoutView()
    view.set_config("background-color", "#ffffff")
    view.set_config("grid-visible", "false")
    view.load_layout(str(via), True)
    view.load_layer_props(str(args.build / "layers" / "maskc.lyp"))
    view.max_hier()
    x0, y0 = x * g.tile_pitch_x * um, y * g.tile_pitch_y * um
    box = (0.0, 0.0, g.tile_pitch_x * um, g.tile_pitch_y * um)
    if args.box:
        box = tuple(float(v) for v in args.box.split(","))
    view.zoom_box(db.DBox(x0 + box[0], y0 + box[1], x0 + box[2], y0 + box[3]))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    view.save_image(str(args.output), w, h)
    print(f"wrote {args.output}: {via.name}, tile {want}, {w}x{h}")


if __name__ == "__main__":
    main()
