"""Mask-ROM tiles as Verilog: the tile kinds of a netlist, each tile's ROM images, and the tile
modules that decode them and compute a row's partial products (docs/numerics.md, "Matrix-vector
product"; docs/rtl.md).

The generator reads only the netlist (:class:`maskc.netlist.Netlist`): the tile arrays, the
format, the fabric. The ROM images are **the bits the via layer holds**, written with the layout's
encoders (:func:`maskc.layout.rom.cell_values`, :func:`maskc.layout.rom.scale_bits`): the Verilog
decodes them itself (packed 3-bit codes, 8-bit codes in two cells, the scale ROM's field
records), so the RTL is a reader of the bit format of its own, and ``maskc verify --rtl`` decodes
the images back with the layout's decoders and compares them with the netlist
(:mod:`maskc.rtl.verify`).

ROM images, per placed tile, ``$readmemh`` files beside the Verilog (``rom/``):

* ``<m>.t<i>.cells.hex``: ``TR`` lines, one per tile row, each the row's ``columns`` cells as hex
  digits, cell 0 first (a digit is the cell's 4 via bits, bit 3 the most significant): the line
  read as one number has cell 0 in its top 4 bits, so the row is a bit stream, most significant
  bit first, that the codes are read from: code ``j`` of ``b`` bits is stream bits
  ``b*j .. b*j + b - 1`` (4-bit: one cell; 8-bit: two cells, high nibble first; packed 3-bit:
  four codes in three cells). Padding cells are 0 (no via).
* ``<m>.t<i>.scale.hex``: ``TR + 1`` lines of ``SW`` bits (``SW`` the wider of a row record
  and the level table, rounded up to whole hex digits), each left-aligned (the first bit of the
  line is its most significant bit, zeros after): line ``r < TR`` is tile row ``r``'s record
  (every group's ``scale_m``, ``scale_s``, ``zero_m``, ``zero_s`` in the format's widths, then
  ``scale_e`` and ``zero_e``, 8 bits each), line ``TR`` the level table (``2^b`` levels of
  ``level_bits``, code 0 first). The records and the table, concatenated, are the tile's
  scale-ROM bit string, exactly as the via layer holds it (docs/layout.md).

Why ``$readmemh`` rather than a ``case`` ROM: one module per tile *kind* (the ROM contents are
a parameter, the file name) instead of one module per tile, and the same synthesis result
(``benchmarks/rtl_synth.py`` measures both).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskc.errors import InputError
from maskc.layout.rom import cell_values, scale_bits, scale_rom_layout

ACT_GROUP = 32  #: activation group (act8 shifts)
HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def bitlen(n: int) -> int:
    return int(n).bit_length()


def ident(name: str) -> str:
    """A Verilog identifier from a tensor name (every other character becomes ``_``)."""
    return "".join(c if c.isalnum() else "_" for c in name)


@dataclass(frozen=True)
class TileKind:
    """One tile configuration: everything the tile module's logic depends on (the ROM contents
    and the used rows are per instance)."""

    bits: int
    packed3: bool  #: 3-bit codes four to three cells (else one per cell, bits 0..2)
    columns: int  #: 4-bit cells per tile row
    tr: int  #: tile rows
    w: int  #: weights per tile row
    g: int  #: group size
    scale_bits: int
    scale_shift_bits: int
    zero_bits: int
    zero_shift_bits: int
    level_bits: int

    @property
    def name(self) -> str:
        b = f"{self.bits}p" if self.bits == 3 and self.packed3 else str(self.bits)
        return (
            f"tile_b{b}_g{self.g}_s{self.scale_bits}x{self.scale_shift_bits}"
            f"_z{self.zero_bits}x{self.zero_shift_bits}_l{self.level_bits}"
            f"_r{self.tr}_c{self.columns}"
        )

    @property
    def fmt(self) -> dict:
        return {
            "bits": self.bits,
            "group_size": self.g,
            "scale_bits": self.scale_bits,
            "scale_shift_bits": self.scale_shift_bits,
            "zero_bits": self.zero_bits,
            "zero_shift_bits": self.zero_shift_bits,
            "level_bits": self.level_bits,
        }

    @property
    def groups(self) -> int:
        return self.w // self.g

    @property
    def na(self) -> int:
        """Activation groups of 32 per tile row."""
        return self.w // ACT_GROUP

    @property
    def layout(self) -> dict:
        return scale_rom_layout(self.fmt, self.tr, self.groups)

    @property
    def record_bits(self) -> int:
        return self.layout["row_bits"]

    @property
    def level_line_bits(self) -> int:
        return (1 << self.bits) * self.level_bits

    @property
    def scale_width(self) -> int:
        """Bits of one scale-image line (whole hex digits)."""
        return -(-max(self.record_bits, self.level_line_bits) // 4) * 4

    @property
    def smax(self) -> int:
        return (1 << self.scale_shift_bits) - 1

    @property
    def zmax(self) -> int:
        return (1 << self.zero_shift_bits) - 1

    @property
    def s_width(self) -> int:
        """Signed bits of a group sum ``S``: ``|S| <= 32 * 127 * 2^(level_bits - 1)``."""
        return bitlen(ACT_GROUP * 127 * (1 << (self.level_bits - 1))) + 1


def tile_kind(nl, name: str) -> TileKind:
    """The tile kind of matrix ``name``; a format the RTL does not implement is refused (one
    line naming the matrix and the reason)."""
    m = nl.matrices[name]
    f = m["format"]
    kind = f.get("kind", "int")
    where = f"{nl.path}: matrix {name}"
    if kind != "int":
        raise InputError(
            f"{where}: format {kind}: the RTL generator implements the integer formats only "
            "(FP4 matrices are not exported yet)"
        )
    bits = f["bits"]
    if bits not in (3, 4, 8):
        raise InputError(f"{where}: {bits}-bit codes: the RTL implements 3-, 4- and 8-bit codes")
    tr, w = m["tile_shape"]
    g = f["group_size"]
    if g % ACT_GROUP or w % g:
        raise InputError(
            f"{where}: group size {g} with {w} weights per tile row: the RTL needs groups of a "
            "multiple of 32 that divide the tile row"
        )
    fab = nl.fabric.tile
    return TileKind(
        bits=bits,
        packed3=fab.three_bit == "packed",
        columns=fab.columns,
        tr=tr,
        w=w,
        g=g,
        scale_bits=f["scale_bits"],
        scale_shift_bits=f.get("scale_shift_bits", 0),
        zero_bits=f["zero_bits"],
        zero_shift_bits=f.get("zero_shift_bits", 0),
        level_bits=f["level_bits"],
    )


# -- ROM images ---------------------------------------------------------------------------------


def _hex_lines(nibbles: np.ndarray) -> bytes:
    """uint8 ``[lines, digits]`` of values < 16 -> the text, one line per row."""
    n, d = nibbles.shape
    out = np.full((n, d + 1), ord("\n"), np.uint8)
    out[:, :d] = HEX[nibbles]
    return out.tobytes()


def tile_images(t: dict, i: int, kind: TileKind, fabric) -> tuple[bytes, bytes]:
    """The two ``$readmemh`` images of tile ``i`` (see the module docstring): the cells and
    the scale ROM, as the layers hold them."""
    _, nr, _, nc = (int(v) for v in t["block"][i])
    cells = np.maximum(cell_values(t["codes"][i], nr, nc, kind.bits, fabric), 0).astype(np.uint8)
    bits = scale_bits(t, i, kind.fmt, kind.tr, kind.groups)
    rb, lb, sw = kind.record_bits, kind.level_line_bits, kind.scale_width
    lines = np.zeros((kind.tr + 1, sw), np.uint8)
    lines[: kind.tr, :rb] = bits[: kind.tr * rb].reshape(kind.tr, rb)
    lines[kind.tr, :lb] = bits[kind.tr * rb : kind.tr * rb + lb]
    q = lines.reshape(kind.tr + 1, sw // 4, 4)
    nib = (q[..., 0] << 3) | (q[..., 1] << 2) | (q[..., 2] << 1) | q[..., 3]
    return _hex_lines(cells), _hex_lines(nib.astype(np.uint8))


def read_image(path: Path, width_bits: int) -> list[int]:
    """A ``$readmemh`` image as written here: one hex number per line."""
    out = []
    for ln in path.read_text().split():
        v = int(ln, 16)
        if v >> width_bits:
            raise ValueError(f"{path}: a line wider than {width_bits} bits")
        out.append(v)
    return out


# -- Verilog ------------------------------------------------------------------------------------


def _fields(kind: TileKind) -> tuple[dict, dict]:
    """``{name: (offset in the record, bits, signed)}`` of the group and row fields."""
    lay = kind.layout
    grp = {n: (o, b, s) for n, o, b, s in lay["group"]}
    row = {n: (o, b, s) for n, o, b, s in lay["row"]}
    return grp, row


def _field_expr(src: str, width: int, off: int, nb: int) -> str:
    """The bits ``off .. off + nb - 1`` (first bit most significant) of the left-aligned line
    ``src`` of ``width`` bits."""
    return f"{src}[{width - 1 - off} -: {nb}]"


def _code_expr(kind: TileKind, j: int) -> str:
    cw = 4 * kind.columns
    if kind.bits == 3 and not kind.packed3:  # one per cell, bits 0..2
        return f"cw[{cw - 1 - 4 * j - 1} -: 3]"
    return f"cw[{cw - 1 - kind.bits * j} -: {kind.bits}]"


def tile_verilog(kind: TileKind) -> str:
    """The tile module of ``kind``: ROM images by parameter, one row per cycle."""
    grp, row = _fields(kind)
    cw, lb = 4 * kind.columns, kind.level_bits
    ll = kind.level_line_bits
    rbw = kind.record_bits
    sbw = kind.s_width
    rw = max(1, bitlen(kind.tr - 1))
    shw = bitlen(max(kind.smax, kind.zmax) + 7)
    g_per_a = kind.g // ACT_GROUP
    asym = kind.zero_bits > 0
    L = []
    a = L.append
    a(f"// {kind.name}: one mask-ROM tile kind, generated by maskc (maskc/rtl/tiles.py).")
    a(f"// {kind.tr} rows x {kind.columns} cells; {kind.w} weights of {kind.bits} bits per row,")
    a(f"// groups of {kind.g}: scale_m {kind.scale_bits} + scale_s {kind.scale_shift_bits}, ")
    a(f"// zero_m {kind.zero_bits} + zero_s {kind.zero_shift_bits} bits, levels of {lb} bits.")
    a("// Per row r (docs/numerics.md, Matrix-vector product), over its activation groups a:")
    a("//   S[a] = sum x_j * L[code_j]        X[a] = sum x_j")
    a("//   A = sum scale_m * S[a] << (SMAX - scale_s + s_a)")
    a("//   B = sum zero_m  * X[a] << (ZMAX - zero_s + s_a)")
    a("// ACCA / ACCB: the accumulator widths the matrix computes from the netlist's acc_bits")
    a("// and the offset's bound; every partial sum of the tile is bounded by the same sum of")
    a("// absolute values, so the arithmetic is exact in those widths.")
    a("// Handshake: start (1 cycle) -> valid high for rows 0..NR-1 (a, b, se, ze registered),")
    a("// done pulses in the cycle after the last row. x and s held stable meanwhile.")
    a("/* verilator lint_off WIDTHEXPAND */  // sign/zero extension into wider sums is intended")
    a("/* verilator lint_off WIDTHTRUNC */   // each sum is bounded by its target width (above)")
    a(f"module {kind.name} #(")
    a(f"  parameter integer NR = {kind.tr},")
    a("  parameter integer ACCA = 48,")
    a("  parameter integer ACCB = 40")
    a(") (")
    a("  input  wire clk,")
    a("  input  wire rst,")
    a("  input  wire start,")
    a(f"  input  wire [{8 * kind.w - 1}:0] x,")
    a(f"  input  wire [{3 * kind.na - 1}:0] s,")
    a("  output reg  valid,")
    a("  output reg  signed [ACCA-1:0] a,")
    a("  output reg  signed [ACCB-1:0] b,")
    a("  output reg  signed [7:0] se,")
    a("  output reg  signed [7:0] ze,")
    a("  output reg  done,")
    a(f"  output wire [{rw - 1}:0] raddr,        // the ROM ({kind.name}_rom): row address")
    a(f"  input  wire [{cw - 1}:0] cw,           // the row's cells")
    a(f"  input  wire [{rbw - 1}:0] rw,           // the row's scale record")
    a(f"  input  wire [{ll - 1}:0] lw            // the level table")
    a(");")
    a(f"  reg [{rw - 1}:0] row;")
    a("  reg busy, last;")
    a("  assign raddr = row;")
    grec = kind.layout["group_bits"]

    def gfield(name: str, g: int) -> str:
        if name not in grp or grp[name][1] == 0:
            return "1'b0"
        off, nb, _ = grp[name]
        return _field_expr("rw", rbw, g * grec + off, nb)

    # The MAC as functions called only while the tile is busy (a simulator evaluates them only
    # then; synthesis gives the same logic in front of the registers a and b).
    ins = (
        f"    input [{cw - 1}:0] fcw;\n    input [{rbw - 1}:0] frw;\n"
        f"    input [{8 * kind.w - 1}:0] fx;\n    input [{3 * kind.na - 1}:0] fs;"
    )
    ins_b = (
        f"    input [{rbw - 1}:0] frw;\n    input [{8 * kind.w - 1}:0] fx;\n"
        f"    input [{3 * kind.na - 1}:0] fs;"
    )
    a("  /* verilator lint_off UNUSEDSIGNAL */  // each function reads its own record fields")
    a(f"  wire signed [{lb - 1}:0] lv [0:{(1 << kind.bits) - 1}];  // the level table")
    for c in range(1 << kind.bits):
        a(f"  assign lv[{c}] = {_field_expr('lw', ll, c * lb, lb)};")
    fstart = len(L)
    a("  function signed [ACCA-1:0] mac_a;  // A of the row: sum over the groups")
    a(ins)
    a(f"    reg signed [{sbw - 1}:0] sg;  // S[a]: |S| <= 32 * 127 * 2^{lb - 1}")
    a(f"    reg [{shw - 1}:0] sh;")
    a("    begin")
    a("      mac_a = 0;")
    for an in range(kind.na):
        g = an // g_per_a
        a(f"      sg = 0;  // activation group {an}, weight group {g}")
        for j in range(an * 32, an * 32 + 32):
            a(f"      sg = sg + $signed(x[{8 * j + 7}:{8 * j}]) * lv[{_code_expr(kind, j)}];")
        sa = f"s[{3 * an + 2}:{3 * an}]"
        a(f"      sh = {kind.smax} - {gfield('scale_s', g)} + {sa};")
        sm = gfield("scale_m", g)
        a(f"      mac_a = mac_a + (($signed({{1'b0, {sm}}}) * sg) <<< sh);")
    a("    end")
    a("  endfunction")
    a("  function signed [ACCB-1:0] mac_b;  // B of the row")
    a(ins_b)
    a("    reg signed [13:0] xg;  // X[a]: |X| <= 32 * 127")
    a(f"    reg [{shw - 1}:0] sh;")
    a("    begin")
    a("      mac_b = 0;")
    if asym:
        for an in range(kind.na):
            g = an // g_per_a
            cols = range(an * 32, an * 32 + 32)
            a("      xg = " + " + ".join(f"$signed(x[{8 * j + 7}:{8 * j}])" for j in cols) + ";")
            sa = f"s[{3 * an + 2}:{3 * an}]"
            a(f"      sh = {kind.zmax} - {gfield('zero_s', g)} + {sa};")
            zm = gfield("zero_m", g)
            a(f"      mac_b = mac_b + (($signed({zm}) * xg) <<< sh);")
    else:
        a("      xg = 0; sh = 0;  // symmetric: no offset")
    a("    end")
    a("  endfunction")
    a("  /* verilator lint_on UNUSEDSIGNAL */")
    for k in range(fstart, len(L)):  # the functions read their arguments, not the ports
        for old, new in ((r"\bcw\[", "fcw["), (r"\brw\[", "frw["),
                         (r"\bx\[", "fx["), (r"\bs\[", "fs[")):  # fmt: skip
            L[k] = re.sub(old, new, L[k])
    for nm, port in (("scale_e", "se_w"), ("zero_e", "ze_w")):
        if nm in row:
            off, nb, _ = row[nm]
            a(f"  wire signed [7:0] {port} = {_field_expr('rw', rbw, off, nb)};")
        else:
            a(f"  wire signed [7:0] {port} = 8'sd0;")
    a("  always @(posedge clk) begin")
    a("    if (rst) begin")
    a("      busy <= 1'b0; last <= 1'b0; valid <= 1'b0; done <= 1'b0; row <= 0;")
    a("    end else begin")
    a("      valid <= 1'b0;")
    a("      done <= last;")
    a("      last <= 1'b0;")
    a("      if (busy) begin")
    a("        valid <= 1'b1;")
    a("        a <= mac_a(cw, rw, x, s); b <= mac_b(rw, x, s);")
    a("        se <= se_w; ze <= ze_w;")
    a("        if (row == NR - 1) begin busy <= 1'b0; last <= 1'b1; end")
    a("        else row <= row + 1'b1;")
    a("      end else if (start) begin")
    a("        busy <= 1'b1; row <= 0;")
    a("      end")
    a("    end")
    a("  end")
    a("endmodule")
    a("/* verilator lint_on WIDTHTRUNC */")
    a("/* verilator lint_on WIDTHEXPAND */")
    return "\n".join(L) + "\n"


def etile_verilog(kind: TileKind) -> str:
    """The embedding read port of tile kind ``kind`` (``e<kind name>``): the fields of one
    weight ``(row, col)`` of the tile, combinational (docs/numerics.md, "Embedding lookup")."""
    grp, row = _fields(kind)
    cw, lb = 4 * kind.columns, kind.level_bits
    nlev = 1 << kind.bits
    ll = kind.level_line_bits
    rbw = kind.record_bits
    cb = max(1, bitlen(kind.w - 1))
    grec = kind.layout["group_bits"]
    gb = max(1, bitlen(kind.groups - 1))
    L = []
    a = L.append
    a(f"// e{kind.name}: the embedding read port of {kind.name} (maskc/rtl/tiles.py):")
    a("// the level and the group and row fields of weight (row, col), combinational.")
    a("/* verilator lint_off WIDTHEXPAND */  // index arithmetic in wider integers is intended")
    a("/* verilator lint_off WIDTHTRUNC */   // indices are bounded by the tile's shape")
    a(f"module e{kind.name} (")
    a(f"  input  wire [{cw - 1}:0] cw,           // the row's cells ({kind.name}_rom)")
    a(f"  input  wire [{rbw - 1}:0] rw,           // the row's scale record")
    a(f"  input  wire [{ll - 1}:0] lw,           // the level table")
    a(f"  input  wire [{cb - 1}:0] col,")
    a(f"  output wire signed [{lb - 1}:0] lev,")
    a(f"  output wire [{max(kind.scale_bits, 1) - 1}:0] sm,")
    a("  output wire [3:0] ss,")
    a(f"  output wire signed [{max(kind.zero_bits, 1) - 1}:0] zm,")
    a("  output wire [3:0] zs,")
    a("  output wire signed [7:0] se,")
    a("  output wire signed [7:0] ze")
    a(");")
    a(f"  wire signed [{lb - 1}:0] lv [0:{nlev - 1}];")
    for c in range(nlev):
        a(f"  assign lv[{c}] = {_field_expr('lw', ll, c * lb, lb)};")
    if kind.bits == 3 and not kind.packed3:
        a(f"  wire [2:0] code = cw[{cw - 2} - 4 * col -: 3];")
    else:
        a(f"  wire [{kind.bits - 1}:0] code = cw[{cw - 1} - {kind.bits} * col -: {kind.bits}];")
    a("  assign lev = lv[code];")
    a(f"  wire [{gb - 1}:0] grp = col / {kind.g};")
    a(f"  wire [31:0] base = grp * {grec};")
    for nm, port, w in (
        ("scale_m", "sm", max(kind.scale_bits, 1)),
        ("scale_s", "ss", 4),
        ("zero_m", "zm", max(kind.zero_bits, 1)),
        ("zero_s", "zs", 4),
    ):
        if nm in grp and grp[nm][1]:
            off, nb, _ = grp[nm]
            a(f"  assign {port} = rw[{rbw - 1 - off} - base -: {nb}];")
        else:
            a(f"  assign {port} = {w}'d0;")
    for nm, port in (("scale_e", "se"), ("zero_e", "ze")):
        if nm in row:
            off, nb, _ = row[nm]
            a(f"  assign {port} = {_field_expr('rw', rbw, off, nb)};")
        else:
            a(f"  assign {port} = 8'sd0;")
    a("endmodule")
    a("/* verilator lint_on WIDTHTRUNC */")
    a("/* verilator lint_on WIDTHEXPAND */")
    return "\n".join(L) + "\n"


def rom_verilog(kind: TileKind) -> str:
    """The ROM of tile kind ``kind`` (``<kind name>_rom``): the two images by parameter, read
    asynchronously (a row address in, the row's cells and scale record and the level table
    out). Kept apart from the datapath so that the datapath module is one module per kind and
    widths, whatever the ROM contents (a simulator compiles it once)."""
    cw, sw = 4 * kind.columns, kind.scale_width
    rbw, ll = kind.record_bits, kind.level_line_bits
    rw = max(1, bitlen(kind.tr - 1))
    L = [
        f"// {kind.name}_rom: the mask ROM of one {kind.name} tile (maskc/rtl/tiles.py): its via",
        "// layer's bits, as $readmemh images (cells: one line per row, cell 0 first; scale:",
        "// one left-aligned line per row record, then the level table).",
        f"module {kind.name}_rom #(",
        '  parameter CELLS = "cells.hex",',
        '  parameter SCALE = "scale.hex"',
        ") (",
        f"  input  wire [{rw - 1}:0] raddr,",
        f"  output wire [{cw - 1}:0] cw,",
        f"  output wire [{rbw - 1}:0] rw,",
        f"  output wire [{ll - 1}:0] lw",
        ");",
        f"  reg [{cw - 1}:0] cells [0:{kind.tr - 1}];",
        f"  reg [{sw - 1}:0] scale [0:{kind.tr}];",
        "  initial begin",
        "    $readmemh(CELLS, cells);",
        "    $readmemh(SCALE, scale);",
        "  end",
        "  /* verilator lint_off UNUSEDSIGNAL */  // a line is as wide as the wider of a record",
        "  // and the level table: each line uses its own part",
        f"  wire [{sw - 1}:0] sline = scale[raddr];",
        f"  wire [{sw - 1}:0] lline = scale[{kind.tr}];",
        "  /* verilator lint_on UNUSEDSIGNAL */",
        "  assign cw = cells[raddr];",
        f"  assign rw = sline[{sw - 1}:{sw - rbw}];",
        f"  assign lw = lline[{sw - 1}:{sw - ll}];",
        "endmodule",
    ]
    return "\n".join(L) + "\n"


def rom_case_verilog(kind: TileKind, module: str, cells: bytes, scale: bytes) -> str:
    """One tile's ROM as a ``case`` statement (module ``module``, the ports of
    ``<kind>_rom``): the alternative to the ``$readmemh`` images that benchmarks/rtl_synth.py
    synthesizes for comparison (the generator writes the images)."""
    cw, sw = 4 * kind.columns, kind.scale_width
    rbw, ll = kind.record_bits, kind.level_line_bits
    rw = max(1, bitlen(kind.tr - 1))
    cl, sl = cells.decode().split(), scale.decode().split()
    lv = int(sl[kind.tr], 16) >> (sw - ll)
    L = [
        f"module {module} (",
        f"  input  wire [{rw - 1}:0] raddr,",
        f"  output reg  [{cw - 1}:0] cw,",
        f"  output reg  [{rbw - 1}:0] rw,",
        f"  output wire [{ll - 1}:0] lw",
        ");",
        f"  assign lw = {ll}'h{lv:x};",
        "  always @* begin",
        "    case (raddr)",
    ]
    for r in range(kind.tr):
        rec = int(sl[r], 16) >> (sw - rbw)
        L.append(f"      {r}: begin cw = {cw}'h{cl[r]}; rw = {rbw}'h{rec:x}; end")
    L += ["      default: begin cw = 0; rw = 0; end", "    endcase", "  end", "endmodule", ""]
    return "\n".join(L)
