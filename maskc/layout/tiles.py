"""Every tile of a build, by name: ``maskc inspect BUILD --tiles`` and what ``maskc render``
labels its picture with.

A tile is named by its position, ``T<die>_<x>_<y>`` (as the layer files and ``render --tile``
name it), and holds one block of one matrix: rows ``[row0, row0 + rows)`` and columns
``[col0, col0 + cols)`` of the tensor, in the matrix's ROM format."""

from __future__ import annotations

from maskc.errors import InputError


def format_label(fmt: dict, packed: bool = True) -> str:
    """``int4 g32``, ``int3 g64 (4 codes in 3 cells)`` (``packed``: the fabric's
    ``three_bit = "packed"``), ``mxfp4 g32``, ``int8 g32``."""
    kind = fmt.get("kind", "int")
    g = fmt.get("group_size")
    if kind != "int":
        return f"{kind} g{g}"
    text = f"int{fmt['bits']} g{g}"
    return text + " (4 codes in 3 cells)" if fmt["bits"] == 3 and packed else text


def matrix_order(nl) -> list[str]:
    """The netlist's matrices in data-flow order (the order the ops use them), then any
    other in name order."""
    order: list[str] = []
    for op in nl.doc["ops"]:
        n = op.get("matrix")
        if n is not None and n not in order:
            order.append(n)
    return order + sorted(set(nl.matrices) - set(order))


def tiles_of(nl, name: str) -> list[dict]:
    """The tiles of matrix ``name``: one dict each, in tile order."""
    m = nl.matrices[name]
    arr = nl.tile_arrays(name, ("pos", "block"))
    fmt = format_label(m["format"], nl.fabric.tile.three_bit == "packed")
    out = []
    for i, (pos, blk) in enumerate(zip(arr["pos"].tolist(), arr["block"].tolist(), strict=True)):
        d, x, y = pos
        row0, rows, col0, cols = blk
        out.append(
            {
                "tile": f"T{d}_{x}_{y}",
                "die": d,
                "x": x,
                "y": y,
                "tensor": name,
                "index": i,
                "of": m["tiles"],
                "layer": m.get("layer"),
                "role": m.get("role"),
                "expert": m.get("expert"),
                "rows": [row0, row0 + rows],
                "cols": [col0, col0 + cols],
                "format": fmt,
            }
        )
    return out


def list_tiles(nl, tensor: str | None = None) -> list[dict]:
    """Every tile of the netlist ``nl`` (data-flow order, then tile order), or only those of
    the matrix ``tensor`` (an InputError naming it and a few real names if there is none)."""
    if tensor is not None:
        if tensor not in nl.matrices:
            names = matrix_order(nl)
            raise InputError(
                f"{nl.path}: no matrix {tensor!r} in the netlist; matrices are named like "
                f"{', '.join(names[:2])} ({len(names)} in all; maskc inspect BUILD --tiles "
                "lists their tiles)"
            )
        return tiles_of(nl, tensor)
    return [t for n in matrix_order(nl) for t in tiles_of(nl, n)]


def site_owners(nl) -> dict[str, tuple[str, int | None, str | None]]:
    """Tile name -> ``(tensor, layer, role)`` of every tile, in data-flow then tile order
    (the placer's order: a layer's tiles are one run)."""
    out = {}
    for n in matrix_order(nl):
        m = nl.matrices[n]
        for p in nl.tile_arrays(n, ("pos",))["pos"].tolist():
            out[f"T{p[0]}_{p[1]}_{p[2]}"] = (n, m.get("layer"), m.get("role"))
    return out


def find_tile(nl, tile: str) -> dict | None:
    """The listing entry of tile ``tile`` (``T<die>_<x>_<y>``), or None."""
    for n in matrix_order(nl):
        pos = nl.tile_arrays(n, ("pos",))["pos"]
        for i, p in enumerate(pos.tolist()):
            if f"T{p[0]}_{p[1]}_{p[2]}" == tile:
                return tiles_of(nl, n)[i]
    return None
