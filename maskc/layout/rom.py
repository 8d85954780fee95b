"""What a tile's ROM holds, as bits: the values of its 4-bit cells, the bit string of its scale
ROM, and the configuration word its metal straps set.

Two directions, written separately so that ``maskc verify`` does not share a bug with the
writers: the encoders (:func:`cell_values`, :func:`scale_bits`, :func:`config_word`,
:class:`TileRom`), pure functions of the netlist's tile arrays, give the bits the layout writers
place; the decoders (:func:`codes_from_cells` with :func:`cell_data_bits`,
:func:`parse_scale_bits` with :func:`scale_rom_layout`, :func:`parse_config_bits`) turn the bits
read back into values that verify compares with the netlist's. Both take the scale ROM's fields,
their order, widths and signs from the ROM format's one field table (:mod:`maskc.romformat`).
"""

from __future__ import annotations

import numpy as np

from maskc.romformat import QuantFormat, fields_of, scale_rom_fields

EMPTY = -1


def cell_values(codes: np.ndarray, rows: int, cols: int, bits: int, fabric) -> np.ndarray:
    """The 4-bit value of every cell of one tile, int16 ``[TR, columns]``, ``EMPTY`` where the
    tile holds no weight (padding). ``codes``: the tile's codes ``[TR, W]``; ``rows``/``cols``:
    the block's real rows and weights."""
    tr, ncell = fabric.tile.rows, fabric.tile.columns
    out = np.full((tr, ncell), EMPTY, np.int16)
    c = codes[:rows, :cols].astype(np.int16)
    if bits == 4 or (bits == 3 and fabric.tile.three_bit != "packed"):
        out[:rows, :cols] = c
    elif bits == 8:  # two cells per weight: high nibble, then low nibble
        out[:rows, 0 : 2 * cols : 2] = c >> 4
        out[:rows, 1 : 2 * cols : 2] = c & 15
    elif bits == 3:  # four 3-bit codes -> one 12-bit word -> three cells (high to low)
        n4 = -(-cols // 4)
        pad = np.zeros((rows, n4 * 4), np.int16)
        pad[:, :cols] = c
        q = pad.reshape(rows, n4, 4)
        word = (q[..., 0] << 9) | (q[..., 1] << 6) | (q[..., 2] << 3) | q[..., 3]
        used = -(-cols * 3 // 4)  # cells holding real bits
        trip = np.stack([word >> 8, (word >> 4) & 15, word & 15], axis=-1).reshape(rows, -1)
        out[:rows, :used] = trip[:, :used]
    else:
        raise ValueError(f"cell_values: bits must be 3, 4 or 8, got {bits}")
    return out


def codes_from_cells(cells: np.ndarray, rows: int, cols: int, bits: int, fabric) -> np.ndarray:
    """The inverse of :func:`cell_values`: the block's codes ``[rows, cols]`` (uint8)."""
    v = cells[:rows].astype(np.int16)
    if bits == 4 or (bits == 3 and fabric.tile.three_bit != "packed"):
        return v[:, :cols].astype(np.uint8)
    if bits == 8:
        return ((v[:, 0 : 2 * cols : 2] << 4) | v[:, 1 : 2 * cols : 2]).astype(np.uint8)
    n4 = -(-cols // 4)
    used = -(-cols * 3 // 4)
    trip = np.zeros((rows, n4 * 3), np.int16)
    trip[:, :used] = v[:, :used]
    t = trip.reshape(rows, n4, 3)
    word = (t[..., 0] << 8) | (t[..., 1] << 4) | t[..., 2]
    q = np.stack([word >> 9, (word >> 6) & 7, (word >> 3) & 7, word & 7], axis=-1)
    return q.reshape(rows, -1)[:, :cols].astype(np.uint8)


def cell_data_bits(rows: int, cols: int, bits: int, fabric) -> np.ndarray:
    """Which bits of every cell of one tile hold weight bits, for a block of ``rows`` x
    ``cols`` weights: uint8 masks ``[TR, columns]``, written from the cell formats of
    docs/fabric.md (not from :func:`cell_values`); every other bit is padding, without a via.
    8-bit codes fill two cells per weight, 4-bit codes one, unpacked 3-bit codes bits 0..2 of
    one; packed 3-bit codes are a row's bit stream (first code's most significant bit first)
    filling each cell from its bit 3 down."""
    out = np.zeros((fabric.tile.rows, fabric.tile.columns), np.uint8)
    if bits == 8:
        out[:rows, : 2 * cols] = 15
    elif bits == 4:
        out[:rows, :cols] = 15
    elif bits == 3 and fabric.tile.three_bit != "packed":
        out[:rows, :cols] = 7
    elif bits == 3:
        full, rest = divmod(3 * cols, 4)
        out[:rows, :full] = 15
        if rest:
            out[:rows, full] = (15 << (4 - rest)) & 15
    else:
        raise ValueError(f"cell_data_bits: bits must be 3, 4 or 8, got {bits}")
    return out


# -- scale ROM bits -----------------------------------------------------------------------------


def _rom_fields(fmt: dict, axis: str) -> list[tuple[str, int, bool]]:
    """The ``axis`` ("group" or "row") fields of a tile's scale ROM in ROM order, as
    ``(name, bits, signed)``: read from the ROM format's field table
    (:func:`maskc.romformat.scale_rom_fields`)."""
    f = QuantFormat(**fmt)
    return [(x.name, x.rom_bits(f), x.signed) for x in scale_rom_fields(f) if x.axis == axis]


def group_fields(fmt: dict) -> list[tuple[str, int, bool]]:
    """Per-group fields of one tile row in ROM order: (name, bits, signed)."""
    return _rom_fields(fmt, "group")


def row_fields(fmt: dict) -> list[tuple[str, int, bool]]:
    """The row exponents of one tile row in ROM order: (name, bits, signed)."""
    return _rom_fields(fmt, "row")


def tensor_fields(fmt: dict) -> list[tuple[str, int, bool]]:
    """The per-matrix fields after the level table (nvfp4's ``tensor_m``): (name, bits,
    signed)."""
    f = QuantFormat(**fmt)
    return [(x.name, x.rom_bits(f), x.signed) for x in fields_of(f) if x.axis == "tensor"]


def _to_bits(values: np.ndarray, nbits: int) -> np.ndarray:
    """Two's-complement ``nbits``-bit patterns of ``values`` (any shape) -> uint8 [..., nbits],
    most significant bit first."""
    v = values.astype(np.int64) & ((1 << nbits) - 1)
    shifts = np.arange(nbits - 1, -1, -1, dtype=np.int64)
    return ((v[..., None] >> shifts) & 1).astype(np.uint8)


def _from_bits(bits: np.ndarray, signed: bool) -> np.ndarray:
    n = bits.shape[-1]
    v = (bits.astype(np.int64) << np.arange(n - 1, -1, -1, dtype=np.int64)).sum(axis=-1)
    if signed:
        v = np.where(v >= 1 << (n - 1), v - (1 << n), v)
    return v


def scale_bits(t: dict, i: int, fmt: dict, tile_rows: int, groups: int) -> np.ndarray:
    """The scale-ROM bit string of tile ``i`` of a matrix (uint8, one entry per bit): per tile
    row, every group's fields (``group_fields`` order), then the row exponents (8 bits each); after
    all rows, the level table (``level_bits`` per level), then nvfp4's ``tensor_m`` (24 bits:
    every tile of the matrix holds it)."""
    parts = [_to_bits(t[name][i][:, :groups], nb) for name, nb, _ in group_fields(fmt)]
    rows = np.concatenate(parts, axis=-1).reshape(tile_rows, -1)
    ex = [_to_bits(t[name][i], nb) for name, nb, _ in row_fields(fmt)]
    rows = np.concatenate([rows, *ex], axis=-1)
    levels = _to_bits(t["levels"], fmt["level_bits"]).reshape(-1)
    tensor = [_to_bits(np.asarray(t[name]), nb).reshape(-1) for name, nb, _ in tensor_fields(fmt)]
    return np.concatenate([rows.reshape(-1), levels, *tensor])


def record_bits(fmt: dict, groups: int) -> int:
    """Scale-ROM bits of one tile row: its groups' fields and its row exponents."""
    return groups * sum(nb for _, nb, _ in group_fields(fmt)) + sum(
        nb for _, nb, _ in row_fields(fmt)
    )


def scale_rom_layout(fmt: dict, tile_rows: int, groups: int) -> dict:
    """Where every field of a tile's scale ROM lies in its bit string, from the ROM format's
    field table (docs/layout.md), for the decoder (a code path of its own: it never calls
    :func:`scale_bits`, which writes the bits).

    Per tile row: ``groups`` records of the group fields present in the format (``scale_m``
    ``scale_bits`` wide, ``scale_s`` ``scale_shift_bits``, and with a zero point ``zero_m``
    ``zero_bits``, signed, and ``zero_s`` ``zero_shift_bits``), then the row exponents
    ``scale_e`` (and ``zero_e`` with a zero point), 8 bits signed each; after the last row the
    level table, ``2**bits`` levels of ``level_bits`` bits, signed; then the per-matrix fields
    (nvfp4: ``tensor_m``, 24 bits unsigned). Returns ``{"group": [(field, offset in the group
    record, bits, signed)], "group_bits", "row": [(field, offset in the row record, bits,
    signed)], "row_bits", "levels": (offset, bits, count), "tensor": [(field, offset, bits,
    signed)], "bits"}``.
    """
    group, k = [], 0
    for name, nb, signed in _rom_fields(fmt, "group"):  # walk one group's record
        group.append((name, k, nb, signed))
        k += nb
    group_bits = k
    row, k = [], groups * group_bits
    for name, nb, signed in _rom_fields(fmt, "row"):
        row.append((name, k, nb, signed))
        k += nb
    row_bits = k
    n_levels, level_bits = 1 << fmt["bits"], fmt["level_bits"]
    start = tile_rows * row_bits
    tensor, k = [], start + n_levels * level_bits
    for name, nb, signed in tensor_fields(fmt):
        tensor.append((name, k, nb, signed))
        k += nb
    return {
        "group": group,
        "group_bits": group_bits,
        "row": row,
        "row_bits": row_bits,
        "levels": (start, level_bits, n_levels),
        "tensor": tensor,
        "bits": k,
    }


def parse_scale_bits(bits: np.ndarray, fmt: dict, tile_rows: int, groups: int) -> dict:
    """The decoder of a tile's scale ROM (the inverse of :func:`scale_bits`, written from
    :func:`scale_rom_layout`): the bit string -> ``{field: values}``, group fields ``[tile_rows,
    groups]``, row exponents ``[tile_rows]``, ``levels`` ``[2**bits]`` (int64). Bits past the
    layout's end are not read."""
    lay = scale_rom_layout(fmt, tile_rows, groups)
    bits = np.asarray(bits, np.uint8)
    if len(bits) < lay["bits"]:
        raise ValueError(f"parse_scale_bits: {len(bits)} bits, the layout needs {lay['bits']}")
    row0 = (np.arange(tile_rows, dtype=np.int64) * lay["row_bits"])[:, None]
    group0 = row0[:, :, None] + (np.arange(groups, dtype=np.int64) * lay["group_bits"])[:, None]
    out = {}
    for name, off, nb, signed in lay["group"]:
        out[name] = _from_bits(bits[group0 + off + np.arange(nb)], signed)
    for name, off, nb, signed in lay["row"]:
        out[name] = _from_bits(bits[row0 + off + np.arange(nb)], signed)
    start, nb, n = lay["levels"]
    at = start + (np.arange(n, dtype=np.int64) * nb)[:, None] + np.arange(nb)
    out["levels"] = _from_bits(bits[at], True)
    for name, off, nb, signed in lay["tensor"]:
        out[name] = _from_bits(bits[off : off + nb][None, :], signed)
    return out


# -- the tile configuration word (metal layer) --------------------------------------------------

#: (field, bits) of the 64-bit configuration word, most significant first
CONFIG_FIELDS = (("enabled", 1), ("mode", 2), ("layer", 8), ("role", 4), ("row_block", 12),
                 ("col_block", 12), ("rows", 12), ("cols", 13))  # fmt: skip
#: the role field's codes (4 bits): a matrix's role is its index here (docs/layout.md)
ROLES = ("embed", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
         "lm_head", "router", "shared_expert_gate", "expert_gate_proj", "expert_up_proj",
         "expert_down_proj")  # fmt: skip
#: roles that share a code: Qwen2-MoE's shared expert is the dense MLP of its layer (a layer
#: has one or the other), and 4 bits hold 16 codes
ROLE_ALIASES = {"shared_gate_proj": "gate_proj", "shared_up_proj": "up_proj",
                "shared_down_proj": "down_proj"}  # fmt: skip


def role_code(role: str) -> int:
    """The configuration word's code of matrix role ``role``."""
    return ROLES.index(ROLE_ALIASES.get(role, role))


MODES = {3: 0, 4: 1, 8: 2}


def config_word(meta: dict, block: list[int], fabric) -> dict:
    """The configuration of one placed tile (what the metal straps encode)."""
    r0, nr, c0, nc = block
    tr = fabric.tile.rows
    w = fabric.weights_per_tile_row(meta["format"]["bits"])
    return {
        "enabled": 1,
        "mode": MODES[meta["format"]["bits"]],
        "layer": 255 if meta["layer"] is None else meta["layer"],
        "role": role_code(meta["role"]),
        "row_block": r0 // tr,
        "col_block": c0 // w,
        "rows": nr,
        "cols": nc,
    }


def config_bits(cfg: dict) -> np.ndarray:
    return np.concatenate([_to_bits(np.array(cfg[k]), n) for k, n in CONFIG_FIELDS])


def parse_config_bits(bits: np.ndarray) -> dict:
    out, k = {}, 0
    for name, n in CONFIG_FIELDS:
        out[name] = int(_from_bits(bits[k : k + n], False))
        k += n
    return out


# -- one tile, as nibble grids ------------------------------------------------------------------


def scale_lines(nbits: int, columns: int) -> int:
    """Lines of the scale ROM holding ``nbits`` bits, ``columns`` 4-bit slots per line."""
    return -(-nbits // (4 * columns))


def bits_to_nibbles(bits: np.ndarray, columns: int) -> np.ndarray:
    """A bit string (uint8, one entry per bit) -> nibble grid ``[lines, columns]`` (uint8): bit
    ``b`` is bit ``b % 4`` of slot ``b // 4``, slots filling lines left to right."""
    lines = scale_lines(len(bits), columns)
    pad = np.zeros(lines * columns * 4, np.uint8)
    pad[: len(bits)] = bits
    q = pad.reshape(lines, columns, 4)
    return (q * (1 << np.arange(4, dtype=np.uint8))).sum(axis=2).astype(np.uint8)


def nibbles_to_bits(grid: np.ndarray, nbits: int) -> np.ndarray:
    """The inverse of :func:`bits_to_nibbles` (extra bits past ``nbits`` are dropped)."""
    b = (grid[..., None].astype(np.uint8) >> np.arange(4, dtype=np.uint8)) & 1
    return b.reshape(-1)[:nbits].astype(np.uint8)


class TileRom:
    """The ROM content of one placed tile.

    * ``array``: uint8 ``[tile rows, columns]``, every cell's 4-bit value (0 where the tile
      holds no weight: an unused cell has no via);
    * ``scale``: uint8 ``[lines, columns]``, the scale-ROM bit string packed 4 bits per slot;
    * ``scale_bits``: the length of that bit string; ``config``: the configuration word (dict).
    """

    def __init__(self, t: dict, i: int, meta: dict, fabric) -> None:
        fmt = meta["format"]
        tr, w = meta["tile_shape"]
        self.groups = w // fmt["group_size"]
        r0, nr, c0, nc = (int(v) for v in t["block"][i])
        self.block = (r0, nr, c0, nc)
        self.pos = tuple(int(v) for v in t["pos"][i])
        self.array = np.maximum(cell_values(t["codes"][i], nr, nc, fmt["bits"], fabric), 0)
        self.array = self.array.astype(np.uint8)
        bits = scale_bits(t, i, fmt, tr, self.groups)
        self.scale_bits = len(bits)
        self.scale = bits_to_nibbles(bits, fabric.tile.columns)
        self.config = config_word(meta, [r0, nr, c0, nc], fabric)
