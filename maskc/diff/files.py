"""Two layer files compared decoded: ``via.gds``, ``via.oas``, ``metal.gds`` ... given directly.

Each file is read with its fabric, from the netlist beside it in its build folder (whose
manifest may be missing); every tile cell's shapes are read back and compared as sets, tile by
tile, so memory is one tile pair.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maskc.diff.tally import LAYERS, TILE, Comparison, count, new_layer
from maskc.errors import InputError, UsageError


def _file_side(path: Path):
    """(layer name, netlist, fabric) of a layer file inside a build folder's ``layers/``."""
    from maskc.netlist import load_netlist

    if path.suffix not in (".gds", ".oas") or not path.is_file():
        raise InputError(f"{path}: not a build folder or a .gds/.oas layer file")
    layer = path.name.split(".")[0]
    if layer not in LAYERS:
        raise InputError(f"{path}: not a maskc layer file (names start with via or metal)")
    build = path.parent.parent
    if path.parent.name != "layers" or not (build / "netlist" / "netlist.json").is_file():
        raise InputError(
            f"{path}: a layer file is read with its fabric, from the build's "
            "netlist/ beside layers/; none found"
        )
    nl = load_netlist(build)
    return layer, nl, nl.fabric


def diff_files(pa: Path, pb: Path, progress=None) -> Comparison:
    """Layer files ``pa`` and ``pb`` of one kind, every tile cell decoded."""
    from maskc.layout import Geometry
    from maskc.layout.read import LayerFile

    la, nla, fa = _file_side(pa)
    lb, nlb, fb = _file_side(pb)
    if la != lb:
        raise UsageError(f"{pa} is a {la} layer and {pb} a {lb} layer: compare like with like")
    if nla.doc["fabric"] != nlb.doc["fabric"]:
        return Comparison(False, fa.name, fb.name, {})
    geo = Geometry(fa)
    spec = (geo.via, geo.size) if la == "via" else (geo.metal, None)
    try:
        xa, xb = LayerFile(str(pa), geo, *spec), LayerFile(str(pb), geo, *spec)
    except Exception as e:  # gdstk and the GDS reader raise plain errors on a broken file
        from maskc.errors import VerifyError

        raise VerifyError(f"{pa} / {pb}: unreadable layer file ({e})") from e
    tiles = sorted({n for n in [*xa.names, *xb.names] if TILE.fullmatch(n)})
    owner = {}
    for nl in (nla, nlb):
        from maskc.layout import tile_name

        for name in nl.matrices:
            for pos in nl.tile_arrays(name, ("pos",))["pos"].tolist():
                owner.setdefault(tile_name(pos), name)
    rep = new_layer(len([n for n in xb.names if TILE.fullmatch(n)]))
    if progress:
        progress.start(f"decoding the {la} layers", len(tiles))
    for n in tiles:
        sa, sb = xa.shapes(n), xb.shapes(n)
        ka = _keys(sa)
        kb = _keys(sb)
        rep["shapes_a"] += len(ka)
        count(rep, n, owner.get(n), len(np.setdiff1d(kb, ka)), len(np.setdiff1d(ka, kb)))
        if progress:
            progress.advance(1)
    problems = xa.problems + xb.problems
    xa.close()
    xb.close()
    if problems:
        from maskc.errors import VerifyError

        raise VerifyError(f"{pa} / {pb}: {problems[0]}")
    from maskc.layout.tiles import site_owners

    info = site_owners(nlb)
    info |= {k: v for k, v in site_owners(nla).items() if k not in info}
    return Comparison(True, fa.name, fb.name, {la: rep}, fa, tuple(tiles), None, info)


def _keys(corners) -> np.ndarray:
    if corners is None or not len(corners):
        return np.zeros(0, np.int64)
    c = np.asarray(corners, np.int64)
    return np.unique((c[:, 0] << 32) + (c[:, 1] & 0xFFFFFFFF))
