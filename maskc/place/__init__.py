"""Stage 3, place: quantized matrices -> tile-sized blocks -> positions on the fabric's tile grid.

:mod:`~maskc.place.placer` cuts and places (serpentine, dies as a layer pipeline) and reports;
:mod:`~maskc.place.perf` is the modeled chip (tokens/s, latency, energy);
:mod:`~maskc.place.floorplan` draws the floorplan. The SRAM split is :mod:`maskc.sram`.
"""

from maskc.place.floorplan import floorplan_png
from maskc.place.placer import (
    CELLS_PER_WEIGHT,
    Block,
    MatrixInfo,
    Placement,
    cut,
    place,
    serpentine,
    tiles_of,
)

__all__ = [
    "CELLS_PER_WEIGHT",
    "Block",
    "MatrixInfo",
    "Placement",
    "cut",
    "floorplan_png",
    "place",
    "serpentine",
    "tiles_of",
]
