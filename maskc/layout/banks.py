"""Which tiles go into which layer file: tile names, tile positions, and the banks (a die per
GDSII file pair, at most ``BANK_CELLS`` cells per OASIS file pair) in data-flow order."""

from __future__ import annotations

#: ROM cells per OASIS file (bank): bounds the memory of writing and of reading back
BANK_CELLS = 1 << 24


def tile_name(pos) -> str:
    d, x, y = (int(v) for v in pos)
    return f"T{d}_{x}_{y}"


def iter_tiles(nl, segments):
    """``(matrix name, meta, tile arrays, tile index)`` of every tile of ``segments``
    (``[[matrix, first tile, end tile], ...]``), in order."""
    t, cur = None, None
    for name, first, end in segments:
        if name != cur:
            t, cur = nl.tile_arrays(name), name
        for i in range(first, end):
            yield name, nl.matrices[name], t, i


def tile_positions(nl, segments):
    """``(matrix name, tile index, (die, x, y))`` of every tile of ``segments``, reading only
    the tiles' positions."""
    for name, first, end in segments:
        pos = nl.tile_arrays(name, ("pos",))["pos"]
        for i in range(first, end):
            yield name, i, tuple(int(v) for v in pos[i])


def plan_banks(nl, fabric, fmt: str) -> list[dict]:
    """Tiles in data-flow order, grouped per die (GDS) or per die into banks of at most
    ``BANK_CELLS`` cells (OASIS): ``[{"die", "tiles": [[matrix, first, end], ...], "stem",
    "top"}]``. One bank is named ``via``/``metal``; several ``via.d<die>.b<k>``."""
    order: list[str] = []
    for op in nl.doc["ops"]:
        n = op.get("matrix")
        if n is not None and n not in order:
            order.append(n)
    limit = BANK_CELLS // fabric.cells_per_tile if fmt == "oas" else None
    banks: list[dict] = []
    for n in order:
        dies = nl.tile_arrays(n, ("pos",))["pos"][:, 0].tolist()
        for i, die in enumerate(dies):
            last = banks[-1] if banks else None
            if last is None or last["die"] != die or (limit is not None and last["n"] >= limit):
                banks.append({"die": die, "tiles": [], "n": 0})
                last = banks[-1]
            seg = last["tiles"][-1] if last["tiles"] else None
            if seg is not None and seg[0] == n and seg[2] == i:
                seg[2] = i + 1
            else:
                last["tiles"].append([n, i, i + 1])
            last["n"] += 1
    for k, bank in enumerate(banks):
        bank["stem"] = "" if len(banks) == 1 else f".d{bank['die']}.b{k:03d}"
        bank["top"] = f"D{bank['die']}_B{k:03d}"
        del bank["n"]
    return banks
