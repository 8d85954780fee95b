"""The personalization as Verilog: mask-ROM tiles and matrices (docs/rtl.md)."""

from maskc.rtl.matrix import RtlModule, emit_embed, emit_matrix
from maskc.rtl.tiles import TileKind, tile_kind

__all__ = ["RtlModule", "TileKind", "emit_embed", "emit_matrix", "tile_kind"]
