"""The fabric description: a validated TOML file parsed into frozen dataclasses.

A fabric is the fixed structured-ASIC base die maskc compiles onto: a grid of ROM-MAC tiles,
fixed-function units, on-die SRAM, inter-die links, and the geometry of the two customizable
layers (a via layer and a metal layer). docs/fabric.md is the user-facing schema (every field,
its unit and its checks) and explains the built-in fabrics.

Every table is a frozen dataclass; each field's ``metadata`` (``kind``, ``unit``, range) drives
one generic parser, so the checks below are the only place a field's type and range are
defined. The file is untrusted input: size-capped, UTF-8, every key known, every value of the
right type and range, and the tables consistent with each other (:meth:`Fabric.validate`).
Every failure is an :class:`~maskc.errors.InputError` (exit 3) naming the file, table and key.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from maskc.errors import InputError
from maskc.tomlio import read_toml, show_value

#: Size cap on a fabric file (it is untrusted input).
MAX_FABRIC_BYTES = 1 << 20
#: Longest accepted string value (names, descriptions, notes).
MAX_STRING_CHARS = 2000
#: Version of the schema; recorded in :meth:`Fabric.to_json`.
SCHEMA_VERSION = 1
#: Sanity cap on transistor density (MTr/mm2): no process is near it; catches unit typos.
MAX_DENSITY_MTR_PER_MM2 = 500.0
#: Tolerance of the tile area against ``tile_pitch_x * tile_pitch_y``.
AREA_TOLERANCE = 0.01
#: ``tile.three_bit`` modes.
THREE_BIT_MODES = ("packed", "cell")


def _f(kind: str, unit: str = "", lo: float | None = None, hi: float | None = None, **kw: Any):
    """A dataclass field described for the parser: ``kind`` is ``int``, ``float``, ``str``,
    ``choice``, ``int_list`` or ``table``; ``lo``/``hi`` bound numbers inclusively."""
    return field(metadata={"kind": kind, "unit": unit, "lo": lo, "hi": hi, **kw})


_POS_INT = {"lo": 1}


def _table(cls: type, optional: bool = False) -> dict[str, Any]:
    """Field metadata of a sub-table parsed into ``cls``; ``optional``: the table may be
    absent (the field is then ``None`` and the table is left out of the output)."""
    return {"kind": "table", "unit": "", "lo": None, "hi": None, "cls": cls, "optional": optional}


@dataclass(frozen=True)
class FabricInfo:
    """``[fabric]``: what the fabric is (documentation and sanity checks)."""

    name: str = _f("str")
    description: str = _f("str")
    process: str = _f("str")
    die_area_mm2: float = _f("float", "mm2", lo=0.01, hi=1e5)
    transistors_per_die: int = _f("int", "transistors", **_POS_INT)


@dataclass(frozen=True)
class Tile:
    """``[tile]``: one ROM-MAC tile (cells of 4-bit codes plus the scale ROM)."""

    rows: int = _f("int", "cells", lo=1, hi=1 << 16)
    columns: int = _f("int", "cells", lo=1, hi=1 << 16)
    bits_per_cell: int = _f("choice", "bits", choices=(4,))
    three_bit: str = _f("choice", choices=THREE_BIT_MODES)
    group_sizes: tuple[int, ...] = _f("int_list", "weights", lo=1, hi=4096)
    group_field_bits: int = _f("int", "bits", lo=1, hi=64)
    row_field_bits: int = _f("int", "bits", lo=0, hi=64)
    scale_rom_bits: int = _f("int", "bits", **_POS_INT)
    area_um2: float = _f("float", "um2", lo=1e-3, hi=1e9)


@dataclass(frozen=True)
class Die:
    """``[die]``: the tile grid, SRAM and links of one die."""

    tile_columns: int = _f("int", "tiles", lo=1, hi=1 << 16)
    tile_rows: int = _f("int", "tiles", lo=1, hi=1 << 16)
    sram_bytes: int = _f("int", "bytes", **_POS_INT)
    link_gb_per_s: float = _f("float", "GB/s", lo=0.0, hi=1e6)


@dataclass(frozen=True)
class Unit:
    """``[units.NAME]``: a kind of fixed-function unit on each die."""

    count: int = _f("int", "units", lo=1, hi=1 << 20)
    ops_per_cycle: int = _f("int", "ops/cycle", lo=1, hi=1 << 30)


@dataclass(frozen=True)
class Units:
    """``[units]``: the fixed-function units (all six are required)."""

    rmsnorm: Unit = field(metadata=_table(Unit))
    rope: Unit = field(metadata=_table(Unit))
    attention: Unit = field(metadata=_table(Unit))
    swiglu: Unit = field(metadata=_table(Unit))
    softmax: Unit = field(metadata=_table(Unit))
    sampling: Unit = field(metadata=_table(Unit))


@dataclass(frozen=True)
class System:
    """``[system]``: dies, clock and the tile operation's timing."""

    dies: int = _f("int", "dies", lo=1, hi=1024)
    clock_mhz: float = _f("float", "MHz", lo=1.0, hi=10000.0)
    cycles_per_tile_op: int = _f("int", "cycles", lo=1, hi=1 << 20)
    notes: str = _f("str")


@dataclass(frozen=True)
class Card:
    """``[card]`` (optional): dies grouped on cards, the links between dies of one card and
    between cards, and each card's own static power. Without it every die is a card of its own
    and the dies' links are ``[die] link_gb_per_s`` at ``[power] link_pj_per_bit``, no latency."""

    dies_per_card: int = _f("int", "dies", lo=1, hi=1024)
    static_w: float = _f("float", "W", lo=0.0, hi=1e5)
    die_link_gb_per_s: float = _f("float", "GB/s", lo=1e-3, hi=1e6)
    die_link_latency_ns: float = _f("float", "ns", lo=0.0, hi=1e9)
    die_link_pj_per_bit: float = _f("float", "pJ/bit", lo=0.0, hi=1e6)
    card_link_gb_per_s: float = _f("float", "GB/s", lo=1e-3, hi=1e6)
    card_link_latency_ns: float = _f("float", "ns", lo=0.0, hi=1e9)
    card_link_pj_per_bit: float = _f("float", "pJ/bit", lo=0.0, hi=1e6)


@dataclass(frozen=True)
class Power:
    """``[power]``: the energy model's figures."""

    static_w_per_die: float = _f("float", "W", lo=0.0, hi=1e4)
    tile_op_pj: float = _f("float", "pJ", lo=0.0, hi=1e9)
    sram_pj_per_byte: float = _f("float", "pJ/byte", lo=0.0, hi=1e6)
    link_pj_per_bit: float = _f("float", "pJ/bit", lo=0.0, hi=1e6)


@dataclass(frozen=True)
class Geometry:
    """``[geometry]``: cell and tile placement in integer database units (dbu)."""

    dbu_nm: int = _f("int", "nm", lo=1, hi=1000)
    cell_pitch_x: int = _f("int", "dbu", lo=1, hi=1 << 30)
    cell_pitch_y: int = _f("int", "dbu", lo=1, hi=1 << 30)
    array_origin_x: int = _f("int", "dbu", lo=0, hi=1 << 30)
    array_origin_y: int = _f("int", "dbu", lo=0, hi=1 << 30)
    tile_pitch_x: int = _f("int", "dbu", lo=1, hi=1 << 40)
    tile_pitch_y: int = _f("int", "dbu", lo=1, hi=1 << 40)


@dataclass(frozen=True)
class ViaLayer:
    """``[layers.via]``: the customizable via layer; one via per used cell, at its code's site."""

    gds_layer: int = _f("int", lo=0, hi=65535)
    gds_datatype: int = _f("int", lo=0, hi=65535)
    size: int = _f("int", "dbu", lo=1, hi=1 << 30)
    site_pitch_x: int = _f("int", "dbu", lo=1, hi=1 << 30)
    site_pitch_y: int = _f("int", "dbu", lo=1, hi=1 << 30)
    sites_x: int = _f("int", "sites", lo=1, hi=256)
    sites_y: int = _f("int", "sites", lo=1, hi=256)


@dataclass(frozen=True)
class MetalLayer:
    """``[layers.metal]``: the customizable metal layer; straps along x over the via sites."""

    gds_layer: int = _f("int", lo=0, hi=65535)
    gds_datatype: int = _f("int", lo=0, hi=65535)
    strap_width: int = _f("int", "dbu", lo=1, hi=1 << 30)
    strap_pitch: int = _f("int", "dbu", lo=1, hi=1 << 30)


@dataclass(frozen=True)
class Layers:
    """``[layers]``: the two customizable layers."""

    via: ViaLayer = field(metadata=_table(ViaLayer))
    metal: MetalLayer = field(metadata=_table(MetalLayer))


@dataclass(frozen=True)
class Fabric:
    """A whole fabric description. Build it with :func:`parse_fabric` or
    :func:`maskc.fabric.load_fabric`; :meth:`validate` checks the cross-table consistency."""

    fabric: FabricInfo = field(metadata=_table(FabricInfo))
    tile: Tile = field(metadata=_table(Tile))
    die: Die = field(metadata=_table(Die))
    units: Units = field(metadata=_table(Units))
    system: System = field(metadata=_table(System))
    power: Power = field(metadata=_table(Power))
    geometry: Geometry = field(metadata=_table(Geometry))
    layers: Layers = field(metadata=_table(Layers))
    card: Card | None = field(default=None, metadata=_table(Card, optional=True))

    # ------------------------------------------------------------------ derived numbers

    @property
    def name(self) -> str:
        return self.fabric.name

    @property
    def tiles_per_die(self) -> int:
        return self.die.tile_columns * self.die.tile_rows

    @property
    def total_tiles(self) -> int:
        return self.tiles_per_die * self.system.dies

    @property
    def cells_per_tile(self) -> int:
        return self.tile.rows * self.tile.columns

    @property
    def code_bits_per_tile(self) -> int:
        """Mask-ROM bits of the weight codes in one tile (cells x bits per cell)."""
        return self.cells_per_tile * self.tile.bits_per_cell

    @property
    def rom_bits_per_tile(self) -> int:
        """All mask-ROM bits of one tile: codes plus scale ROM."""
        return self.code_bits_per_tile + self.tile.scale_rom_bits

    @property
    def rom_bits_total(self) -> int:
        return self.rom_bits_per_tile * self.total_tiles

    @property
    def cells_total(self) -> int:
        return self.cells_per_tile * self.total_tiles

    @property
    def dies_per_card(self) -> int:
        """Dies on one card: ``[card] dies``, or 1 without a ``[card]`` table."""
        return self.card.dies_per_card if self.card is not None else 1

    def card_of_die(self, die: int) -> int:
        """The card die ``die`` (0-based, in pipeline order) sits on."""
        return die // self.dies_per_card

    def link(self, a: int, b: int) -> dict[str, Any]:
        """The link from die ``a`` to die ``b``: ``kind`` (``"die"``: both on one card,
        ``"card"``: card to card), ``gb_per_s``, ``latency_ns`` and ``pj_per_bit``."""
        c = self.card
        if c is None:  # every die its own card: the single-link model
            d, p = self.die.link_gb_per_s, self.power.link_pj_per_bit
            return {"kind": "card", "gb_per_s": d, "latency_ns": 0.0, "pj_per_bit": p}
        kind = "die" if self.card_of_die(a) == self.card_of_die(b) else "card"
        return {
            "kind": kind,
            **{k: getattr(c, f"{kind}_link_{k}") for k in ("gb_per_s", "latency_ns", "pj_per_bit")},
        }

    @property
    def sram_bytes_total(self) -> int:
        return self.die.sram_bytes * self.system.dies

    def weights_per_tile_row(self, bits: int) -> int:
        """Weights of ``bits`` (3, 4 or 8) one tile row holds: 4 -> one per cell; 8 -> two cells
        each; 3 -> four per three cells (``three_bit = "packed"``) or one per cell."""
        c = self.tile.columns
        if bits == 4:
            return c
        if bits == 8:
            return c // 2
        if bits == 3:
            return c * 4 // 3 if self.tile.three_bit == "packed" else c
        raise ValueError(f"weights_per_tile_row(): bits must be 3, 4 or 8, got {bits}")

    def weights_per_tile(self, bits: int) -> int:
        return self.tile.rows * self.weights_per_tile_row(bits)

    @property
    def max_groups_per_tile_row(self) -> int:
        """Groups in one tile row at the finest group size, in the widest mode (3 or 4 bit)."""
        widest = max(self.weights_per_tile_row(3), self.weights_per_tile_row(4))
        return math.ceil(widest / min(self.tile.group_sizes))

    @property
    def scale_rom_bits_required(self) -> int:
        """``rows * (max_groups_per_tile_row * group_field_bits + row_field_bits)``."""
        t = self.tile
        return t.rows * (self.max_groups_per_tile_row * t.group_field_bits + t.row_field_bits)

    @property
    def clock_hz(self) -> float:
        return self.system.clock_mhz * 1e6

    @property
    def tile_op_ns(self) -> float:
        return self.system.cycles_per_tile_op / self.clock_hz * 1e9

    @property
    def tile_ops_per_s_per_die(self) -> float:
        """Tile operations per second with every tile of a die busy."""
        return self.tiles_per_die * self.clock_hz / self.system.cycles_per_tile_op

    def peak_macs_per_s(self, bits: int = 4) -> float:
        """Multiply-accumulates per second, all tiles of all dies busy, at ``bits``."""
        return self.tile_ops_per_s_per_die * self.system.dies * self.weights_per_tile(bits)

    @property
    def peak_dynamic_w_per_die(self) -> float:
        """Tile power with every tile busy (tile_op_pj x tile operations per second)."""
        return self.tile_ops_per_s_per_die * self.power.tile_op_pj * 1e-12

    @property
    def tile_area_mm2_per_die(self) -> float:
        return self.tiles_per_die * self.tile.area_um2 * 1e-6

    @property
    def tile_pitch_area_um2(self) -> float:
        g = self.geometry
        return g.tile_pitch_x * g.tile_pitch_y * (g.dbu_nm * 1e-3) ** 2

    def derived(self) -> dict[str, Any]:
        """The derived numbers, JSON-ready, in a fixed order."""
        return {
            "tiles_per_die": self.tiles_per_die,
            "total_tiles": self.total_tiles,
            "cells_per_tile": self.cells_per_tile,
            "cells_total": self.cells_total,
            "code_bits_per_tile": self.code_bits_per_tile,
            "rom_bits_per_tile": self.rom_bits_per_tile,
            "rom_bits_total": self.rom_bits_total,
            "scale_rom_bits_required": self.scale_rom_bits_required,
            "weights_per_tile": {str(b): self.weights_per_tile(b) for b in (3, 4, 8)},
            "weights_total_4bit": self.weights_per_tile(4) * self.total_tiles,
            "sram_bytes_total": self.sram_bytes_total,
            "tile_area_mm2_per_die": round(self.tile_area_mm2_per_die, 6),
            "tile_area_fraction_of_die": round(
                self.tile_area_mm2_per_die / self.fabric.die_area_mm2, 6
            ),
            "tile_op_ns": round(self.tile_op_ns, 6),
            "tile_ops_per_s_per_die": round(self.tile_ops_per_s_per_die),
            "peak_macs_per_s_4bit": round(self.peak_macs_per_s(4)),
            "peak_macs_per_s_3bit": round(self.peak_macs_per_s(3)),
            "peak_dynamic_w_per_die": round(self.peak_dynamic_w_per_die, 6),
        } | (
            {"cards": -(-self.system.dies // self.card.dies_per_card)}
            if self.card is not None
            else {}
        )

    # ------------------------------------------------------------------ output

    def tables(self) -> dict[str, Any]:
        """The fields as nested dicts in declaration order (exactly the TOML's content)."""
        return _as_dict(self)

    def to_json(self) -> dict[str, Any]:
        """A deterministic JSON-ready dict: ``schema``, every table, and ``derived``."""
        return {"schema": SCHEMA_VERSION, **self.tables(), "derived": self.derived()}

    @classmethod
    def from_json(cls, d: object, where: str) -> Fabric:
        """The fabric :meth:`to_json` wrote (a netlist's ``fabric``), read back and validated;
        the ``schema`` and ``derived`` entries are recomputed, not trusted."""
        if not isinstance(d, dict):
            raise InputError(f"{where}: fabric must be an object")
        tables = {k: v for k, v in d.items() if k not in ("schema", "derived")}
        return parse_fabric(tables, f"{where}: fabric")

    def to_toml(self) -> str:
        """The fabric as a TOML file that :func:`parse_fabric` reads back into an equal object."""
        lines: list[str] = []
        _emit_toml(self.tables(), [], lines)
        return "\n".join(lines).strip() + "\n"

    # ------------------------------------------------------------------ checks

    def validate(self, where: str = "fabric") -> None:
        """Check every field's type and range, then the consistency between fields.

        Raises :class:`InputError` naming ``where`` (the file), the table and the field."""
        _check_instance(self, where, "")
        t, g, v, m = self.tile, self.geometry, self.layers.via, self.layers.metal
        info = self.fabric

        def bad(table: str, key: str, problem: str) -> InputError:
            return InputError(f"{where}: [{table}] {key} {problem}")

        if t.three_bit == "packed" and t.columns % 3:
            raise bad(
                "tile",
                "columns",
                f'must be a multiple of 3 for three_bit = "packed" '
                f"(4 codes in 3 cells), got {t.columns}",
            )
        if list(t.group_sizes) != sorted(set(t.group_sizes)):
            raise bad("tile", "group_sizes", "must be strictly increasing (no duplicates)")
        for gs in t.group_sizes:
            for bits in (4, 3):
                per_row = self.weights_per_tile_row(bits)
                if per_row % gs:
                    raise bad(
                        "tile",
                        "group_sizes",
                        f"{gs} does not divide the {per_row} "
                        f"{bits}-bit weights of a tile row; a group must not straddle "
                        "tiles",
                    )
        need = self.scale_rom_bits_required
        if t.scale_rom_bits < need:
            raise bad(
                "tile",
                "scale_rom_bits",
                f"is {t.scale_rom_bits}, less than the {need} "
                f"needed: rows {t.rows} x ({self.max_groups_per_tile_row} groups x "
                f"{t.group_field_bits} bits + {t.row_field_bits} bits)",
            )
        if self.tile_area_mm2_per_die > info.die_area_mm2:
            raise bad(
                "die",
                "tile_columns",
                f"x tile_rows = {self.tiles_per_die} tiles of "
                f"{t.area_um2} um2 = {self.tile_area_mm2_per_die:.1f} mm2, more than "
                f"die_area_mm2 {info.die_area_mm2}",
            )
        density = info.transistors_per_die / info.die_area_mm2 / 1e6
        if density > MAX_DENSITY_MTR_PER_MM2:
            raise bad(
                "fabric",
                "transistors_per_die",
                f"gives {density:.0f} MTr/mm2 on "
                f"{info.die_area_mm2} mm2, above the {MAX_DENSITY_MTR_PER_MM2:.0f} "
                "MTr/mm2 sanity limit (a unit typo?)",
            )
        pitch_area = self.tile_pitch_area_um2
        if abs(pitch_area - t.area_um2) > AREA_TOLERANCE * t.area_um2:
            raise bad(
                "tile",
                "area_um2",
                f"is {t.area_um2} but [geometry] tile_pitch_x x "
                f"tile_pitch_y is {pitch_area:g} um2; make them agree (within 1%)",
            )
        if g.array_origin_x + t.columns * g.cell_pitch_x > g.tile_pitch_x:
            raise bad(
                "geometry",
                "tile_pitch_x",
                f"is {g.tile_pitch_x} dbu, smaller than "
                f"array_origin_x + columns x cell_pitch_x = "
                f"{g.array_origin_x + t.columns * g.cell_pitch_x}",
            )
        if g.array_origin_y + t.rows * g.cell_pitch_y > g.tile_pitch_y:
            raise bad(
                "geometry",
                "tile_pitch_y",
                f"is {g.tile_pitch_y} dbu, smaller than "
                f"array_origin_y + rows x cell_pitch_y = "
                f"{g.array_origin_y + t.rows * g.cell_pitch_y}",
            )
        for axis, pitch in (("x", v.site_pitch_x), ("y", v.site_pitch_y)):
            if v.size >= pitch:
                raise bad(
                    "layers.via",
                    "size",
                    f"{v.size} dbu does not fit the via site pitch "
                    f"site_pitch_{axis} {pitch} dbu (must be smaller)",
                )
        if v.sites_x * v.sites_y < t.bits_per_cell:
            raise bad(
                "layers.via",
                "sites_x",
                f"x sites_y = {v.sites_x * v.sites_y} sites, fewer than the "
                f"{t.bits_per_cell} bits of a cell (one via site per stored bit)",
            )
        if v.sites_x * v.site_pitch_x > g.cell_pitch_x:
            raise bad(
                "layers.via",
                "site_pitch_x",
                f"x sites_x = {v.sites_x * v.site_pitch_x} "
                f"dbu, wider than [geometry] cell_pitch_x {g.cell_pitch_x}",
            )
        if v.sites_y * v.site_pitch_y > g.cell_pitch_y:
            raise bad(
                "layers.via",
                "site_pitch_y",
                f"x sites_y = {v.sites_y * v.site_pitch_y} "
                f"dbu, taller than [geometry] cell_pitch_y {g.cell_pitch_y}",
            )
        if m.strap_width >= m.strap_pitch:
            raise bad(
                "layers.metal",
                "strap_width",
                f"{m.strap_width} dbu must be smaller than strap_pitch {m.strap_pitch}",
            )
        if m.strap_width < v.size:
            raise bad(
                "layers.metal",
                "strap_width",
                f"{m.strap_width} dbu is narrower than the "
                f"via ([layers.via] size {v.size}); a via must land on its strap",
            )
        if m.strap_pitch * v.sites_y > g.cell_pitch_y:
            raise bad(
                "layers.metal",
                "strap_pitch",
                f"x sites_y = {m.strap_pitch * v.sites_y} "
                f"dbu (one strap per row of via sites) is taller than [geometry] "
                f"cell_pitch_y {g.cell_pitch_y}",
            )
        if (v.gds_layer, v.gds_datatype) == (m.gds_layer, m.gds_datatype):
            raise bad(
                "layers.metal",
                "gds_layer",
                f"and gds_datatype ({m.gds_layer}/"
                f"{m.gds_datatype}) are the same as [layers.via]'s; the two layers need "
                "different layer/datatype pairs",
            )


def field_units(cls: type = Fabric, prefix: str = "") -> dict[str, str]:
    """``{"table.key": unit}`` for every field (``"layers.via.size": "dbu"``), in file order."""
    got: dict[str, str] = {}
    for f in fields(cls):
        if f.metadata["kind"] == "table":
            got |= field_units(f.metadata["cls"], f"{prefix}{f.name}.")
        else:
            got[prefix + f.name] = f.metadata["unit"]
    return got


# ---------------------------------------------------------------------- parsing


def _range(meta: dict[str, Any]) -> str:
    lo, hi = meta["lo"], meta["hi"]
    if hi is None:
        return f">= {lo:g}"
    return f"in {lo:g}..{hi:g}"


def _check_value(key: str, value: Any, meta: dict[str, Any]) -> str | None:
    """Why ``value`` is invalid for a field described by ``meta`` (a phrase), or ``None``."""
    kind = meta["kind"]
    unit = f" {meta['unit']}" if meta["unit"] else ""
    if kind == "str":
        if not isinstance(value, str):
            return f"must be a string, got {show_value(value)}"
        if len(value) > MAX_STRING_CHARS:
            return f"is too long ({len(value)} characters, max {MAX_STRING_CHARS})"
        if key == "name" and not value.strip():
            return "must not be empty"
        return None
    if kind == "choice":
        if not any(type(value) is type(c) and value == c for c in meta["choices"]):
            shown = ", ".join(json.dumps(c) for c in meta["choices"])
            return f"must be one of {shown}, got {show_value(value)}"
        return None
    if kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            return f"must be an integer, got {show_value(value)}"
        if value < meta["lo"] or (meta["hi"] is not None and value > meta["hi"]):
            return f"must be an integer {_range(meta)}{unit}, got {value}"
        return None
    if kind == "float":
        if not isinstance(value, int | float) or isinstance(value, bool):
            return f"must be a number, got {show_value(value)}"
        if not math.isfinite(value) or not meta["lo"] <= value <= meta["hi"]:
            return f"must be a number {_range(meta)}{unit}, got {value!r}"
        return None
    if kind == "int_list":
        if not isinstance(value, list | tuple) or not value:
            return f"must be a non-empty array of integers, got {show_value(value)}"
        for item in value:
            problem = _check_value(key, item, {**meta, "kind": "int"})
            if problem:
                return f"item {problem}"
        return None
    raise ValueError(f"unknown field kind {kind!r}")  # a bug in the schema


def _parse_table(cls: type, table: Any, where: str, label: str) -> Any:
    """Build ``cls`` from a TOML table, checking keys, types and ranges."""
    shown = f"[{label}]" if label else "top level:"
    if not isinstance(table, dict):
        raise InputError(f"{where}: {shown} must be a table, got {show_value(table)}")
    names = [f.name for f in fields(cls)]
    for key in table:
        if key not in names:
            what = "table" if isinstance(table[key], dict) else "key"
            raise InputError(f"{where}: {shown} unknown {what} {key!r}; valid: {', '.join(names)}")
    values = {}
    for f in fields(cls):
        meta = f.metadata
        sub = f"{label}.{f.name}" if label else f.name
        if f.name not in table and meta.get("optional"):
            values[f.name] = None
            continue
        if f.name not in table:
            what = f"table [{sub}]" if meta["kind"] == "table" else f"key {f.name!r}"
            raise InputError(f"{where}: {shown} missing {what}; see docs/fabric.md")
        value = table[f.name]
        if meta["kind"] == "table":
            values[f.name] = _parse_table(meta["cls"], value, where, sub)
            continue
        problem = _check_value(f.name, value, meta)
        if problem:
            raise InputError(f"{where}: {shown} {f.name} {problem}")
        if meta["kind"] == "float":
            value = float(value)
        elif meta["kind"] == "int_list":
            value = tuple(value)
        values[f.name] = value
    return cls(**values)


def _check_instance(obj: Any, where: str, label: str) -> None:
    """Re-check an already built object's fields (for objects not made by the parser)."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        sub = f"{label}.{f.name}" if label else f.name
        if f.metadata["kind"] == "table":
            if value is None and f.metadata.get("optional"):
                continue
            if not isinstance(value, f.metadata["cls"]):
                raise InputError(f"{where}: [{sub}] must be a table")
            _check_instance(value, where, sub)
            continue
        problem = _check_value(f.name, value, f.metadata)
        if problem:
            raise InputError(f"{where}: [{label}] {f.name} {problem}")


def parse_fabric(doc: dict[str, Any], where: str) -> Fabric:
    """A validated :class:`Fabric` from a parsed TOML document (``where`` names the file)."""
    fab = _parse_table(Fabric, doc, where, "")
    fab.validate(where)
    return fab


def read_fabric_file(path: Path) -> Fabric:
    """Read and validate a fabric TOML file (size-capped, UTF-8); every failure is exit 3."""
    doc, _ = read_toml(path, "fabric file", MAX_FABRIC_BYTES, "a TOML file")
    return parse_fabric(doc, str(path))


# ---------------------------------------------------------------------- output helpers


def _as_dict(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if value is None and f.metadata.get("optional"):
            continue  # an absent optional table stays absent: older fabrics' JSON is unchanged
        if f.metadata["kind"] == "table":
            out[f.name] = _as_dict(value)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


def _toml_scalar(value: Any) -> str:
    if isinstance(value, bool):  # never produced by the schema; kept for safety
        return str(value).lower()
    if isinstance(value, str):
        return json.dumps(value)  # a valid TOML basic string
    if isinstance(value, float):
        return repr(value)  # finite (validated): a valid TOML float
    if isinstance(value, list):
        return "[" + ", ".join(_toml_scalar(v) for v in value) + "]"
    return str(value)


def _emit_toml(table: dict[str, Any], path: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
    if path and scalars:
        lines.append(f"[{'.'.join(path)}]")
    for k, v in scalars.items():
        lines.append(f"{k} = {_toml_scalar(v)}")
    if scalars:
        lines.append("")
    for k, v in table.items():
        if isinstance(v, dict):
            _emit_toml(v, [*path, k], lines)
