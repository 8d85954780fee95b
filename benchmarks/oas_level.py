"""OASIS compression level: one bank's writing CPU time and via-file size at several zlib
levels (the geometry is the same at every level; only the CBLOCK compression differs).

Writes the chosen banks of a compiled build again (into a temporary folder) with
``maskc.layout.oasis`` at each level, timing the process CPU of each write. Prints a table and
writes benchmarks/results/oas_level.json. docs/layout.md has the table that chose the level.

    python benchmarks/oas_level.py BUILD [--banks 0,4] [--levels 0,1,3,4,5,6,9]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build", type=Path)
    ap.add_argument("--banks", default="0", help="bank indices, comma-separated")
    ap.add_argument("--levels", default="4,6", help="zlib levels, comma-separated")
    args = ap.parse_args()

    import maskc.layout.oasis as O
    from maskc.layout.banks import plan_banks
    from maskc.netlist import load_netlist

    nl = load_netlist(args.build)
    banks = plan_banks(nl, nl.fabric, "oas")
    chosen = O.OAS_LEVEL
    rows = []
    try:
        for i in (int(x) for x in args.banks.split(",")):
            bank = dict(banks[i])
            bank["files"] = {k: f"{k}{bank['stem']}.oas" for k in ("via", "metal")}
            for level in (int(x) for x in args.levels.split(",")):
                O.OAS_LEVEL = level
                with tempfile.TemporaryDirectory() as d:
                    t0 = time.process_time()
                    O._write_oas_bank(str(nl.path), bank, d)
                    cpu = time.process_time() - t0
                    size = (Path(d) / bank["files"]["via"]).stat().st_size
                rows.append(
                    {"bank": i, "first": bank["tiles"][0][0], "level": level, "cpu_s": cpu,
                     "via_bytes": size}
                )  # fmt: skip
                print(f"bank {i:4d} level {level}: {cpu:7.2f} s CPU, via {size:>13,} B")
    finally:
        O.OAS_LEVEL = chosen
    out = HERE / "results" / "oas_level.json"
    out.write_text(json.dumps({"build": str(args.build), "level_in_use": chosen, "rows": rows}))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
