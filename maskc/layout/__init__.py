"""Stages 5-6, layout and verify: the netlist's tiles -> the two customizable layers, and back
(``maskc verify``); docs/layout.md.

* **via layer** (programs the ROM): one via site per stored bit, via present means 1. A ROM
  cell's 4 bits are its first 4 sites; the scale ROM (every group's scale/zero fields, the row
  exponents, the level table) is a bit string packed into lines of 4-bit slots above the array.
* **metal layer** (personalizes the base die): per tile, a strap per used cell row and the
  64-bit configuration word as straps present/absent; it depends only on the placement.

Modules: ``rom`` (a tile's ROM as bits: encoders and decoders), ``geometry`` (where each bit
goes), ``banks`` (tile names, which tiles go in which file), ``gds`` and ``oasis`` (the two
writers; ``gdsii`` the GDSII records), ``writer`` (``write_layers``, ``index.json``), ``read``
(layer files read back; ``gdsread`` the streaming GDSII reader), ``verify`` (decode and compare
with the netlist), ``render`` (``maskc render``).
"""

from __future__ import annotations

from maskc.layout.banks import plan_banks, tile_name, tile_positions
from maskc.layout.geometry import Geometry
from maskc.layout.read import LayerFile
from maskc.layout.rom import (
    TileRom,
    bits_to_nibbles,
    cell_values,
    codes_from_cells,
    nibbles_to_bits,
    record_bits,
    scale_bits,
)
from maskc.layout.verify import check_tile_hashes, tile_hashes, verify_build, verify_layers
from maskc.layout.writer import write_layers

__all__ = [
    "Geometry",
    "LayerFile",
    "TileRom",
    "bits_to_nibbles",
    "cell_values",
    "check_tile_hashes",
    "codes_from_cells",
    "nibbles_to_bits",
    "plan_banks",
    "record_bits",
    "scale_bits",
    "tile_hashes",
    "tile_name",
    "tile_positions",
    "verify_build",
    "verify_layers",
    "write_layers",
]
