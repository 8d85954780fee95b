"""Matrix and embedding modules: a netlist matrix's tiles instantiated, their partial ``A`` and
``B`` added per row and rounded once (docs/numerics.md, "Matrix-vector product" and
"Embedding lookup"; ports in docs/rtl.md).

API (for ``maskc export-rtl``): :func:`emit_matrix` and :func:`emit_embed` write a module and its
tiles' ROM images under ``out_dir`` and return an :class:`RtlModule` naming every file they
wrote. Deterministic: the same netlist gives the same bytes. Several matrices may be written
into one directory: tile-kind modules are shared (same name, same content).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maskc.errors import InputError
from maskc.rtl.tiles import (
    ACT_GROUP,
    TileKind,
    bitlen,
    etile_verilog,
    ident,
    rom_verilog,
    tile_images,
    tile_kind,
    tile_verilog,
)

TERM_BITS = 42  #: term() results: |.| <= 2^40, signed
ROM_DIR = "rom"


@dataclass(frozen=True)
class RtlModule:
    """A generated module: its name, the files written for it (paths relative to the output
    directory, sorted), its ports (name -> width) and parameters of note."""

    name: str
    files: tuple[str, ...]
    ports: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)


def _write(out_dir: Path, rel: str, data: bytes | str, files: list[str]) -> None:
    p = out_dir / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    files.append(rel)


def _term_function(fname: str, pw: int) -> list[str]:
    """``term(v, k) = clamp(rsr(v, k), -2^40, 2^40)`` for a ``pw``-bit signed ``v`` with
    ``|v| < 2^(pw - 2)`` (docs/numerics.md, Primitives)."""
    t = TERM_BITS
    lim = "64'sd1099511627776"  # 2^40
    hi, lo = f"{t}'sd1099511627776", f"-{t}'sd1099511627776"
    return [
        f"  // term(v, k) for |v| < 2^{pw - 2}: k >= {pw} rounds every such v to 0; a left",
        "  // shift of more than 41 puts any v != 0 beyond 2^40.",
        f"  function signed [{t - 1}:0] {fname};",
        f"    input signed [{pw - 1}:0] v;",
        "    input signed [19:0] k;",
        f"    reg signed [{pw}:0] r;",
        f"    reg signed [{pw + 42}:0] l;",
        "    begin",
        "      if (k > 0) begin",
        f"        if (k >= {pw}) {fname} = {t}'sd0;",
        "        else begin",
        f"          r = {{v[{pw - 1}], v}};",
        f"          r = r + $signed({{{{{pw}{{1'b0}}}}, 1'b1}} << (k - 1));",
        "          r = r >>> k;",
        f"          if (r > {lim}) {fname} = {hi};",
        f"          else if (r < -{lim}) {fname} = {lo};",
        f"          else {fname} = r;",
        "        end",
        "      end else if (-k > 41) begin",
        f"        if (v == 0) {fname} = {t}'sd0;",
        f"        else if (v[{pw - 1}]) {fname} = {lo};",
        f"        else {fname} = {hi};",
        "      end else begin",
        f"        l = {{{{43{{v[{pw - 1}]}}}}, v}};",
        "        l = l <<< (-k);",
        f"        if (l > {lim}) {fname} = {hi};",
        f"        else if (l < -{lim}) {fname} = {lo};",
        f"        else {fname} = l;",
        "      end",
        "    end",
        "  endfunction",
    ]


def _sat32() -> list[str]:
    return [
        "  function signed [31:0] sat32;",
        "    input signed [47:0] v;",
        "    begin",
        "      if (v > 48'sd2147483647) sat32 = 32'sh7fffffff;",
        "      else if (v < -48'sd2147483648) sat32 = 32'sh80000000;",
        "      else sat32 = v[31:0];",
        "    end",
        "  endfunction",
    ]


def _rom_instance(kind: TileKind, image: str, t: str, raddr: str | None = None) -> str:
    """Wires ``<t>_ra`` (unless ``raddr``), ``<t>_cw``, ``<t>_rw``, ``<t>_lw`` and the ROM
    instance ``r_<t>`` of images ``<image>.cells.hex`` / ``.scale.hex``."""
    rw = max(1, bitlen(kind.tr - 1))
    out = [] if raddr else [f"  wire [{rw - 1}:0] {t}_ra;"]
    out += [
        f"  wire [{4 * kind.columns - 1}:0] {t}_cw;",
        f"  wire [{kind.record_bits - 1}:0] {t}_rw;",
        f"  wire [{kind.level_line_bits - 1}:0] {t}_lw;",
        f'  {kind.name}_rom #(.CELLS("{image}.cells.hex"), .SCALE("{image}.scale.hex")) r_{t} (',
        f"    .raddr({raddr or t + '_ra'}), .cw({t}_cw), .rw({t}_rw), .lw({t}_lw)",
        "  );",
    ]
    return "\n".join(out)


def _blocks(t: dict, sel: list[int]) -> list[tuple[int, int, list[tuple[int, int, int]]]]:
    """Tiles ``sel`` by row block: ``[(r0, rows, [(c0, cols, tile index), ...] by c0)]`` by
    r0."""
    by: dict[int, list] = {}
    rows: dict[int, int] = {}
    for i in sel:
        r0, nr, c0, nc = (int(v) for v in t["block"][i])
        by.setdefault(r0, []).append((c0, nc, i))
        if rows.setdefault(r0, nr) != nr:
            raise InputError(f"tiles of row block {r0} hold different row counts")
    return [(r0, rows[r0], sorted(by[r0])) for r0 in sorted(by)]


def _acc_b(kind: TileKind, cp: int) -> int:
    """Signed bits of ``B``: ``|zero_m| <= 2^(zero_bits - 1)``, ``|X[a]| <= 32 * 127``, shift
    ``<= ZMAX + 7``, over ``cp / 32`` activation groups."""
    if not kind.zero_bits:
        return 2
    worst = (cp // ACT_GROUP) * ACT_GROUP * 127 * (1 << (kind.zero_bits - 1 + kind.zmax + 7))
    return bitlen(worst) + 1


def _tile_files(nl, name, kind, t, sel, out_dir, files, kinds_written, prefix="") -> str:
    """Writes the tile kind's module (once) and the images of tiles ``sel``; the module's
    file."""
    mod_file = f"{kind.name}.v"
    if mod_file not in kinds_written:
        _write(out_dir, mod_file, tile_verilog(kind), files)
        _write(out_dir, f"{kind.name}_rom.v", rom_verilog(kind), files)
    base = ident(prefix + name)
    for i in sel:
        cells, scale = tile_images(t, i, kind, nl.fabric)
        _write(out_dir, f"{ROM_DIR}/{base}.t{i}.cells.hex", cells, files)
        _write(out_dir, f"{ROM_DIR}/{base}.t{i}.scale.hex", scale, files)
    return mod_file


def emit_matrix(
    nl,
    name: str,
    out_dir,
    *,
    bias: str | None = None,
    tiles: list[int] | None = None,
    prefix: str = "",
) -> RtlModule:
    """Writes module ``mx_<name>`` (ports: docs/rtl.md) for matrix ``name`` of netlist ``nl``
    with the params key ``bias`` (int32 ``[R]`` signal) or none, its tile kind's module and its
    tiles' ROM images into ``out_dir``.

    ``tiles`` (for tests and benchmarks): only these tiles (indices in the netlist's order),
    module ``mx_<name>__t<i>_<j>...``: the rows of their row blocks come out (``y_row`` the
    matrix's row), each the sum over the given tiles only (the product with the activations
    outside their columns taken as 0). ``prefix`` goes before the matrix's name in the module's
    and the ROM images' names (several builds in one design)."""
    out_dir = Path(out_dir)
    m = nl.matrices[name]
    kind = tile_kind(nl, name)
    r, c = m["shape"]
    n = m["tiles"]
    t = nl.tile_arrays(name)
    sel = list(range(n)) if tiles is None else sorted(set(tiles))
    if not sel or sel[0] < 0 or sel[-1] >= n:
        raise InputError(f"{nl.path}: matrix {name} has tiles 0..{n - 1}, asked for {tiles}")
    blocks = _blocks(t, sel)
    f = nl.doc["numerics"]["signal_frac"]
    # The netlist's acc_bits bounds sum_g scale_m * S_max << (SMAX - scale_s) (writer.py,
    # matrix_bounds; loader.py recomputes it): the act8 group shifts' 2^7 is not in it,
    # although docs/numerics.md says so. |A| < 2^(acc_bits - 1 + 7).
    acca = int(m["acc_bits"]) + 7
    cpt = max(int(b[2]) + kind.w for b in np.asarray(t["block"]))  # the tiles' padded width
    cpt = max(cpt, -(-c // ACT_GROUP) * ACT_GROUP)
    accb = _acc_b(kind, cpt)
    if acca + 12 + 1 > 120:
        raise InputError(f"{nl.path}: matrix {name}: acc_bits {acca} beyond the RTL's widths")
    files: list[str] = []
    tile_file = _tile_files(nl, name, kind, t, sel, out_dir, files, set(), prefix)
    mod = f"mx_{ident(prefix + name)}" + ("" if tiles is None else "__t" + "_".join(map(str, sel)))
    na = -(-c // ACT_GROUP)
    rb = max(1, bitlen(r - 1))
    nb = len(blocks)
    bb = max(1, bitlen(nb - 1))
    pa, pb = acca + 13, accb + 13
    L = []
    a = L.append
    a(f"// {mod}: matrix {name} [{r}, {c}], {n} tiles of kind {kind.name},")
    a(f"// generated by maskc (maskc/rtl/matrix.py) from the netlist {nl.path.name}.")
    a("// y[r] = sat32(term(A*m, SMAX - scale_e - e - F)")
    a("//             + term(B*m, ZMAX - zero_e - e - F) + bias)")
    a(f"// SMAX = {kind.smax}, ZMAX = {kind.zmax}, F = {f}. A: {acca} bits (the netlist's acc_bits")
    a(f"// {acca - 7}, this matrix's worst case before the act8 shift, + 7 for s_a <= 7);")
    a(f"// B: {accb} bits (|zero_m| <= 2^{max(kind.zero_bits - 1, 0)},")
    a(f"// |X[a]| <= 4064, shift <= ZMAX + 7, {cpt // ACT_GROUP} activation groups).")
    a("// Row blocks run one after the other; a block's tiles run together, one row per cycle.")
    a("/* verilator lint_off WIDTHEXPAND */  // sign extension into wider sums is intended")
    a("/* verilator lint_off WIDTHTRUNC */   // sums bounded by their widths (above)")
    a(f"module {mod} (")
    a("  input  wire clk,")
    a("  input  wire rst,")
    a("  input  wire start,")
    a(f"  input  wire [{8 * c - 1}:0] x,")
    a(f"  input  wire [{3 * na - 1}:0] s,")
    a("  input  wire [11:0] m,")
    a("  input  wire signed [15:0] e,")
    a("  output reg  y_valid,")
    a(f"  output reg  [{rb - 1}:0] y_row,")
    a("  output reg  signed [31:0] y,")
    a("  output reg  done")
    a(");")
    ncp = cpt // ACT_GROUP
    xpad = f"{{{{{8 * (cpt - c)}{{1'b0}}}}, x}}" if cpt > c else "x"
    spad = f"{{{{{3 * (ncp - na)}{{1'b0}}}}, s}}" if ncp > na else "s"
    a(f"  wire [{8 * cpt - 1}:0] xp = {xpad};  // columns past C read 0")
    a(f"  wire [{3 * ncp - 1}:0] sp = {spad};")
    a("  reg busy, go;")
    a(f"  reg [{bb - 1}:0] blk;")
    a(f"  reg [{rb - 1}:0] rowc;")
    if bias is not None:
        bv = np.asarray(nl.params()[bias]).astype(np.int64)
        if bv.shape != (r,):
            raise InputError(f"{nl.path}: bias {bias} is shaped {list(bv.shape)}, want [{r}]")
        btxt = "".join(f"{int(v) & 0xFFFFFFFF:08x}\n" for v in bv)
        bfile = f"{ROM_DIR}/{ident(prefix + name)}.bias.hex"
        _write(out_dir, bfile, btxt, files)
        a(f"  reg [31:0] bias_rom [0:{r - 1}];")
        a(f'  initial $readmemh("{bfile}", bias_rom);')
        a("  wire signed [31:0] bias_r = bias_rom[rowc];")
    else:
        a("  wire signed [31:0] bias_r = 32'sd0;")
    for bi, (_r0, nr, row) in enumerate(blocks):
        for c0, _nc, i in row:
            a(f"  wire t{i}_valid, t{i}_done;")
            a(f"  wire signed [{acca - 1}:0] t{i}_a;")
            a(f"  wire signed [{accb - 1}:0] t{i}_b;")
            a(f"  wire signed [7:0] t{i}_se, t{i}_ze;")
            a(_rom_instance(kind, f"{ROM_DIR}/{ident(prefix + name)}.t{i}", f"t{i}"))
            a(f"  {kind.name} #(")
            a(f"    .NR({nr}), .ACCA({acca}), .ACCB({accb})")
            a(f"  ) t{i} (")
            a(f"    .clk(clk), .rst(rst), .start(go && blk == {bi}),")
            a(f"    .x(xp[{8 * c0 + 8 * kind.w - 1}:{8 * c0}]),")
            a(f"    .s(sp[{3 * (c0 // ACT_GROUP) + 3 * kind.na - 1}:{3 * (c0 // ACT_GROUP)}]),")
            a(f"    .valid(t{i}_valid), .a(t{i}_a), .b(t{i}_b), .se(t{i}_se), .ze(t{i}_ze),")
            a(f"    .done(t{i}_done), .raddr(t{i}_ra), .cw(t{i}_cw), .rw(t{i}_rw), .lw(t{i}_lw)")
            a("  );")
    a("  reg vsel, dsel;")
    a(f"  reg [{rb - 1}:0] next_r0;  // the first row of the next row block")
    a("  always @* begin")
    a("    case (blk)")
    for bi in range(nb - 1):
        a(f"      {bi}: next_r0 = {blocks[bi + 1][0]};")
    a(f"      default: next_r0 = {blocks[0][0]};")
    a("    endcase")
    a("  end")
    a(f"  reg signed [{acca - 1}:0] asum;")
    a(f"  reg signed [{accb - 1}:0] bsum;")
    a("  reg signed [7:0] se_r, ze_r;")
    a("  always @* begin")
    a("    vsel = 1'b0; dsel = 1'b0; asum = 0; bsum = 0; se_r = 8'sd0; ze_r = 8'sd0;")
    a("    case (blk)")
    for bi, (_r0, _nr, row) in enumerate(blocks):
        i0 = row[0][2]
        a(f"      {bi}: begin")
        a(f"        vsel = t{i0}_valid; dsel = t{i0}_done; se_r = t{i0}_se; ze_r = t{i0}_ze;")
        a("        asum = " + " + ".join(f"t{i}_a" for _, _, i in row) + ";")
        a("        bsum = " + " + ".join(f"t{i}_b" for _, _, i in row) + ";")
        a("      end")
    a("      default: ;")
    a("    endcase")
    a("  end")
    L += _term_function("term_a", pa)
    L += _term_function("term_b", pb)
    L += _sat32()
    a(f"  wire signed [{pa - 1}:0] va = asum * $signed({{1'b0, m}});")
    a(f"  wire signed [{pb - 1}:0] vb = bsum * $signed({{1'b0, m}});")
    a(f"  wire signed [19:0] ka = {kind.smax} - se_r - e - {f};")
    a(f"  wire signed [19:0] kb = {kind.zmax} - ze_r - e - {f};")
    tb = "term_b(vb, kb)" if kind.zero_bits else f"{TERM_BITS}'sd0"
    a(f"  wire signed [47:0] ysum = term_a(va, ka) + {tb} + bias_r;")
    a("  always @(posedge clk) begin")
    a("    if (rst) begin")
    a("      busy <= 1'b0; go <= 1'b0; blk <= 0; rowc <= 0; y_valid <= 1'b0; done <= 1'b0;")
    a("      y_row <= 0; y <= 32'sd0;")
    a("    end else begin")
    a("      go <= 1'b0; y_valid <= 1'b0; done <= 1'b0;")
    a("      if (!busy && start) begin")
    a(f"        busy <= 1'b1; blk <= 0; go <= 1'b1; rowc <= {blocks[0][0]};")
    a("      end")
    a("      if (busy && vsel) begin")
    a("        y_valid <= 1'b1; y_row <= rowc; y <= sat32(ysum); rowc <= rowc + 1'b1;")
    a("      end")
    a("      if (busy && dsel) begin")
    a(f"        if (blk == {nb - 1}) begin busy <= 1'b0; done <= 1'b1; end")
    a("        else begin blk <= blk + 1'b1; go <= 1'b1; rowc <= next_r0; end")
    a("      end")
    a("    end")
    a("  end")
    a("endmodule")
    a("/* verilator lint_on WIDTHTRUNC */")
    a("/* verilator lint_on WIDTHEXPAND */")
    _write(out_dir, f"{mod}.v", "\n".join(L) + "\n", files)
    ports = {"clk": 1, "rst": 1, "start": 1, "x": 8 * c, "s": 3 * na, "m": 12, "e": 16,
             "y_valid": 1, "y_row": rb, "y": 32, "done": 1}  # fmt: skip
    params = {"rows": r, "cols": c, "tiles": n, "kind": kind.name, "tile_module": tile_file}
    return RtlModule(mod, tuple(sorted(set(files))), ports, params)


def emit_embed(nl, name: str, out_dir, *, prefix: str = "") -> RtlModule:
    """Writes module ``emb_<name>`` (the ``embed`` op: token in, the row's ``C`` signals out one
    per cycle), the tile kind's read-port module and the tiles' ROM images into ``out_dir``
    (``prefix``: as for :func:`emit_matrix`)."""
    out_dir = Path(out_dir)
    m = nl.matrices[name]
    kind = tile_kind(nl, name)
    r, c = m["shape"]
    n = m["tiles"]
    t = nl.tile_arrays(name)
    f = nl.doc["numerics"]["signal_frac"]
    files: list[str] = []
    ek = f"e{kind.name}"
    _write(out_dir, f"{ek}.v", etile_verilog(kind), files)
    _write(out_dir, f"{kind.name}_rom.v", rom_verilog(kind), files)
    base = ident(prefix + name)
    for i in range(n):
        cells, scale = tile_images(t, i, kind, nl.fabric)
        _write(out_dir, f"{ROM_DIR}/{base}.t{i}.cells.hex", cells, files)
        _write(out_dir, f"{ROM_DIR}/{base}.t{i}.scale.hex", scale, files)
    mod = f"emb_{base}"
    tb, cb = max(1, bitlen(r - 1)), max(1, bitlen(c - 1))
    rw = max(1, bitlen(kind.tr - 1))
    cwb = max(1, bitlen(kind.w - 1))
    lb, smb, zmb = kind.level_bits, max(kind.scale_bits, 1), max(kind.zero_bits, 1)
    # v1 = scale_m * L << (SMAX - scale_s): |v1| < 2^(scale_bits + level_bits - 1 + SMAX)
    p1 = kind.scale_bits + lb + kind.smax + 2
    p2 = zmb + kind.zmax + 2
    L = []
    a = L.append
    a(f"// {mod}: embedding {name} [{r}, {c}], {n} tiles of kind {kind.name},")
    a("// generated by maskc (maskc/rtl/matrix.py). Token t in; h_j for j = 0..C-1 out, one per")
    a("// cycle (docs/numerics.md, Embedding lookup):")
    a("//   h_j = sat32(term(scale_m * L << (SMAX - scale_s), SMAX - scale_e - F)")
    a("//             + term(zero_m << (ZMAX - zero_s), ZMAX - zero_e - F))")
    a("/* verilator lint_off WIDTHEXPAND */  // sign extension into wider sums is intended")
    a("/* verilator lint_off WIDTHTRUNC */   // indices bounded by the tiles' shapes")
    a(f"module {mod} (")
    a("  input  wire clk,")
    a("  input  wire rst,")
    a("  input  wire start,")
    a(f"  input  wire [{tb - 1}:0] token,")
    a("  output reg  y_valid,")
    a(f"  output reg  [{cb - 1}:0] y_col,")
    a("  output reg  signed [31:0] y,")
    a("  output reg  done")
    a(");")
    a("  reg busy;")
    a(f"  reg [{cb - 1}:0] col;")
    a(f"  reg signed [{lb - 1}:0] lev;")
    a(f"  reg [{smb - 1}:0] sm;")
    a("  reg [3:0] ss, zs;")
    a(f"  reg signed [{zmb - 1}:0] zm;")
    a("  reg signed [7:0] se, ze;")
    for i in range(n):
        r0, nr, c0, nc = (int(v) for v in t["block"][i])
        a(f"  wire signed [{lb - 1}:0] t{i}_lev;")
        a(f"  wire [{smb - 1}:0] t{i}_sm;")
        a(f"  wire [3:0] t{i}_ss, t{i}_zs;")
        a(f"  wire signed [{zmb - 1}:0] t{i}_zm;")
        a(f"  wire signed [7:0] t{i}_se, t{i}_ze;")
        a(f"  wire [{rw - 1}:0] t{i}_row = token - {r0};")
        a(f"  wire [{cwb - 1}:0] t{i}_col = col - {c0};")
        conds = [
            f"(token >= {r0})" if r0 else "",
            f"(token < {r0 + nr})" if r0 + nr < 1 << tb else "",
            f"(col >= {c0})" if c0 else "",
            f"(col < {c0 + nc})" if c0 + nc < 1 << cb else "",
        ]
        a(f"  wire t{i}_sel = " + (" && ".join(x for x in conds if x) or "1'b1") + ";")
        a(_rom_instance(kind, f"{ROM_DIR}/{base}.t{i}", f"t{i}", raddr=f"t{i}_row"))
        a(f"  {ek} t{i} (")
        a(f"    .cw(t{i}_cw), .rw(t{i}_rw), .lw(t{i}_lw), .col(t{i}_col),")
        a(f"    .lev(t{i}_lev), .sm(t{i}_sm),")
        a(f"    .ss(t{i}_ss), .zm(t{i}_zm), .zs(t{i}_zs), .se(t{i}_se), .ze(t{i}_ze)")
        a("  );")
    a("  always @* begin")
    a("    lev = 0; sm = 0; ss = 0; zm = 0; zs = 0; se = 0; ze = 0;")
    for i in range(n):
        a(f"    if (t{i}_sel) begin lev = t{i}_lev; sm = t{i}_sm; ss = t{i}_ss; zm = t{i}_zm;"
          f" zs = t{i}_zs; se = t{i}_se; ze = t{i}_ze; end")  # fmt: skip
    a("  end")
    L += _term_function("term_a", p1)
    L += _term_function("term_b", p2)
    L += _sat32()
    a(f"  wire signed [{p1 - 1}:0] v1 = ($signed({{1'b0, sm}}) * lev) <<< ({kind.smax} - ss);")
    a(f"  wire signed [{p2 - 1}:0] v2 = zm <<< ({kind.zmax} - zs);")
    a(f"  wire signed [19:0] k1 = {kind.smax} - se - {f};")
    a(f"  wire signed [19:0] k2 = {kind.zmax} - ze - {f};")
    t2 = "term_b(v2, k2)" if kind.zero_bits else f"{TERM_BITS}'sd0"
    a(f"  wire signed [47:0] hsum = term_a(v1, k1) + {t2};")
    a("  reg last;")
    a("  always @(posedge clk) begin")
    a("    if (rst) begin")
    a("      busy <= 1'b0; last <= 1'b0; col <= 0; y_valid <= 1'b0; done <= 1'b0;")
    a("      y_col <= 0; y <= 32'sd0;")
    a("    end else begin")
    a("      y_valid <= 1'b0; done <= last; last <= 1'b0;")
    a("      if (busy) begin")
    a("        y_valid <= 1'b1; y_col <= col; y <= sat32(hsum);")
    a(f"        if (col == {c - 1}) begin busy <= 1'b0; last <= 1'b1; end")
    a("        else col <= col + 1'b1;")
    a("      end else if (start) begin")
    a("        busy <= 1'b1; col <= 0;")
    a("      end")
    a("    end")
    a("  end")
    a("endmodule")
    a("/* verilator lint_on WIDTHTRUNC */")
    a("/* verilator lint_on WIDTHEXPAND */")
    _write(out_dir, f"{mod}.v", "\n".join(L) + "\n", files)
    ports = {"clk": 1, "rst": 1, "start": 1, "token": tb, "y_valid": 1, "y_col": cb, "y": 32,
             "done": 1}  # fmt: skip
    return RtlModule(mod, tuple(sorted(set(files))), ports, {"rows": r, "cols": c, "tiles": n})
