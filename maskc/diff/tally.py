"""What both diff paths share: popcounts, the per-layer tally and what a comparison found.

A layer's tally (:func:`new_layer`) counts the vias or straps added and removed, the changed
tiles and, per tensor, how many of its tiles and shapes changed; :func:`count` adds one tile.
:class:`Comparison` is what :mod:`maskc.diff.builds` or :mod:`maskc.diff.files` found, before
:func:`maskc.diff.result.finish` turns it into the verdict.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from maskc.fabric import Fabric

LAYERS = ("via", "metal")
#: a tile cell's name, ``T<die>_<x>_<y>``
TILE = re.compile(r"T(\d+)_(\d+)_(\d+)")


#: set bits of every 16-bit value
POP16 = np.unpackbits(np.arange(1 << 16, dtype=">u2").view(np.uint8)).reshape(-1, 16).sum(1)
POP16 = POP16.astype(np.uint8)


def popcount(a: np.ndarray) -> int:
    """Set bits of an array of values below 2^16 (nibble grids here)."""
    return int(POP16[a.astype(np.uint16)].sum())


def new_layer(total_tiles: int) -> dict:
    """An empty tally of one layer: ``total_tiles`` is B's placed tiles."""
    return {
        "added": 0,
        "removed": 0,
        "changed_tiles": 0,
        "total_tiles": total_tiles,
        "shapes_a": 0,
        "tensors": {},
        "tiles": {},
    }


def count(rep: dict, tile: str, tensor: str | None, added: int, removed: int) -> None:
    """Add one tile's shapes ``added`` and ``removed`` to the layer tally ``rep``."""
    rep["added"] += added
    rep["removed"] += removed
    if added or removed:
        rep["changed_tiles"] += 1
        rep["tiles"][tile] = added + removed
        if tensor is not None:
            t = rep["tensors"].setdefault(
                tensor, {"tensor": tensor, "changed_tiles": 0, "vias_or_straps": 0}
            )
            t["changed_tiles"] += 1
            t["vias_or_straps"] += added + removed


@dataclass(frozen=True)
class Comparison:
    """Two builds or two layer files compared, before the verdict.

    ``same_base`` False (different fabrics): ``layers`` is empty, nothing was compared.
    Otherwise ``layers`` maps each compared layer to its tally, ``fabric`` is the fabric both
    are built for and ``sites`` every tile site either side uses (sorted).
    """

    same_base: bool
    fabric_a: str
    fabric_b: str
    layers: dict[str, dict]
    fabric: Fabric | None = None
    sites: tuple[str, ...] = ()
    #: two builds: the SRAM boot images' entries that differ (None: files, not compared)
    boot_changed: tuple[str, ...] | None = None
    #: tile site -> (tensor, layer, role) of what it holds (B's, else A's), in placement
    #: order: what the heatmap labels
    site_info: dict = field(default_factory=dict)
