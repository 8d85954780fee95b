"""DEFLATE of the OASIS via files: one bank's writing CPU time and via-file size with each
compression setting of the CBLOCKs (the records are the same; only their compression differs).

Writes the chosen banks of a compiled build again (into a temporary folder) with
``maskc.layout.oasis`` under each setting after one untimed write, timing the process CPU of
each write:
``huffman`` (zlib's Z_HUFFMAN_ONLY: what maskc uses), ``0``-``9`` (zlib levels with string
matching; gdstk's writer, used before 2026-12-06, offered only these). Prints a table and
writes benchmarks/results/oas_deflate.json. docs/layout.md has the table that chose.

    python benchmarks/oas_deflate.py BUILD [--banks 0,4] [--settings huffman,4,6,9]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import zlib
from pathlib import Path

HERE = Path(__file__).parent


def _setting(s: str) -> tuple[int, int]:
    return (9, zlib.Z_HUFFMAN_ONLY) if s == "huffman" else (int(s), zlib.Z_DEFAULT_STRATEGY)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build", type=Path)
    ap.add_argument("--banks", default="0", help="bank indices, comma-separated")
    ap.add_argument(
        "--settings", default="huffman,4,6", help="huffman or zlib levels, comma-separated"
    )
    args = ap.parse_args()

    import maskc.layout.oasis as O
    from maskc.layout.banks import plan_banks
    from maskc.netlist import load_netlist

    nl = load_netlist(args.build)
    banks = plan_banks(nl, nl.fabric, "oas")
    chosen = O.VIA_DEFLATE
    rows = []
    try:
        for i in (int(x) for x in args.banks.split(",")):
            bank = dict(banks[i])
            bank["files"] = {k: f"{k}{bank['stem']}.oas" for k in ("via", "metal")}
            with tempfile.TemporaryDirectory() as d:  # warm-up: imports, page cache
                O._write_oas_bank(str(nl.path), bank, d)
            for s in args.settings.split(","):
                O.VIA_DEFLATE = _setting(s)
                with tempfile.TemporaryDirectory() as d:
                    t0 = time.process_time()
                    O._write_oas_bank(str(nl.path), bank, d)
                    cpu = time.process_time() - t0
                    size = (Path(d) / bank["files"]["via"]).stat().st_size
                rows.append(
                    {"bank": i, "first": bank["tiles"][0][0], "setting": s, "cpu_s": cpu,
                     "via_bytes": size}
                )  # fmt: skip
                print(f"bank {i:4d} {s:>8}: {cpu:7.2f} s CPU, via {size:>13,} B")
    finally:
        O.VIA_DEFLATE = chosen
    out = HERE / "results" / "oas_deflate.json"
    out.write_text(json.dumps({"build": str(args.build), "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
