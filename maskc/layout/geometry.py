"""Where things are inside a tile cell, in database units (dbu), derived from the fabric.

A ROM cell is a 4-bit slot: bit ``p`` of a cell at column ``k`` of row ``r`` is the via site
``(p % sites_x, p // sites_x)`` of the cell at ``(array_origin_x + k * cell_pitch_x,
array_origin_y + r * cell_pitch_y)``. The scale ROM sits above the array, one cell pitch
after its last row: lines of ``columns`` 4-bit slots at the same x positions, packed as
densely as the via sites allow (line pitch ``ceil(4 / sites_x) * site_pitch_y``). The metal
layer holds a strap per used cell row (the row's product-line enable) and, left of the array,
the tile's 64-bit configuration word as straps present/absent at ``strap_pitch``.
"""

from __future__ import annotations

import math

import numpy as np

from maskc.errors import FitError

#: bits per ROM cell (one via site each)
CELL_BITS = 4


class Geometry:
    """Positions inside a tile (dbu) and the grid unit the layer files use."""

    def __init__(self, fabric) -> None:
        g, v, m, t = fabric.geometry, fabric.layers.via, fabric.layers.metal, fabric.tile
        self.ox, self.oy = g.array_origin_x, g.array_origin_y
        self.cpx, self.cpy = g.cell_pitch_x, g.cell_pitch_y
        self.spx, self.spy = v.site_pitch_x, v.site_pitch_y
        self.sx = v.sites_x
        self.size = v.size
        self.tpx, self.tpy = g.tile_pitch_x, g.tile_pitch_y
        self.rows, self.cols = t.rows, t.columns
        self.via = (v.gds_layer, v.gds_datatype)
        self.metal = (m.gds_layer, m.gds_datatype)
        self.strap_w, self.strap_pitch = m.strap_width, m.strap_pitch
        self.dbu_m = g.dbu_nm * 1e-9
        #: via-site offsets of bits 0..3 inside a cell, int64 [4, 2]
        p = np.arange(CELL_BITS)
        self.bit_off = np.stack([(p % self.sx) * self.spx, (p // self.sx) * self.spy], 1)
        self.scale_y = self.oy + (t.rows + 1) * self.cpy
        self.line_pitch = -(-CELL_BITS // self.sx) * self.spy
        #: configuration straps: left of the array, one slot per bit
        self.cfg_len = 6 * self.spx
        self.cfg_x0 = max(0, self.ox - 8 * self.spx)
        #: the coarsest grid every coordinate lies on (OASIS coordinates are written in it)
        self.grid = math.gcd(
            self.ox,
            self.oy,
            self.cpx,
            self.cpy,
            self.spx,
            self.spy,
            self.size,
            self.tpx,
            self.tpy,
            self.strap_w,
            self.strap_pitch,
            self.cfg_x0,
            self.cfg_len,
            self.line_pitch,
        )

    def check_fits(self, lines: int, where: str) -> None:
        """Exit 4 when a tile's scale ROM of ``lines`` lines runs past the tile pitch."""
        top = self.scale_y + lines * self.line_pitch
        if top > self.tpy:
            raise FitError(
                f"{where}: the scale ROM needs {lines} lines and ends at y = {top} dbu, "
                f"past the tile pitch {self.tpy}; use a fabric with a taller tile "
                "pitch or a larger group size"
            )

    def slot_origin(self, area: str, line: np.ndarray, k: np.ndarray):
        """Lower-left corner (dbu) of 4-bit slots: ``area`` "array" (line = cell row) or
        "scale" (line = scale-ROM line); ``k`` the slot's column."""
        x = self.ox + k.astype(np.int64) * self.cpx
        if area == "array":
            return x, self.oy + line.astype(np.int64) * self.cpy
        return x, self.scale_y + line.astype(np.int64) * self.line_pitch

    def via_positions(self, area: str, grid: np.ndarray) -> np.ndarray:
        """Lower-left corners (dbu, int64 ``[n, 2]``) of the vias of a nibble grid, in row-major
        order (line, column, bit)."""
        line, k, p = np.nonzero((grid[:, :, None] >> np.arange(CELL_BITS)) & 1)
        x, y = self.slot_origin(area, line, k)
        return np.stack([x + self.bit_off[p, 0], y + self.bit_off[p, 1]], 1)

    def config_positions(self, bits: np.ndarray) -> np.ndarray:
        ones = np.nonzero(bits)[0].astype(np.int64)
        return np.stack([np.full(len(ones), self.cfg_x0), self.oy + ones * self.strap_pitch], 1)

    def row_strap_positions(self, rows: int) -> np.ndarray:
        r = np.arange(rows, dtype=np.int64)
        return np.stack([np.full(rows, self.ox), self.oy + r * self.cpy], 1)

    @property
    def row_strap_len(self) -> int:
        return self.cols * self.cpx
