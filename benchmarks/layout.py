"""The two customizable layers of a real model: file size per weight, write and verify time,
peak memory, in GDSII and in OASIS (issue 7's targets: GDS <= 8 and OASIS <= 1 bytes per weight
on SmolLM2-135M at 4 bits; OASIS written in < 60 s and GDS in < 3 min on the 2-core machine).

Compiles MODEL_DIR twice with ``maskc compile --no-verify``: the default build (blocks at 4
bits, the tied embedding at its built-in 8 bits) and an all-4-bit build (a rule sets the
embedding to 4 bits too). Then, for each build and format, a fresh process timed by
``/usr/bin/time -v`` writes both layers from the build's netlist and another reads them back
and verifies them, so times and peak RSS are the layout stage's alone (worker processes
included); the peak RSS is the whole process tree's (sampled every 0.1 s, summed over the
processes), the figure the 3 GiB bound of issue 17 is about. Each build's folders are sized
too (bytes per weight of quant/, netlist/ and the whole build with these layers). Prints
tables and writes benchmarks/results/layout.json.

    python benchmarks/layout.py [MODEL_DIR [COMPILE OPTION...]]   # default out/smollm2
    python benchmarks/layout.py m200 --no-calib --only-4bit        # a synthetic model
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _proctree import tree_rss_bytes  # benchmarks/_proctree.py (scripts run from benchmarks/)

HERE = Path(__file__).parent
ALL4 = '[[rule]]\nmatch = "model\\\\.embed_tokens"\nbits = 4\n'


def child(action: str, build: Path, fmt: str, out: Path) -> None:
    from maskc.layout import verify_layers, write_layers
    from maskc.netlist import load_netlist

    nl = load_netlist(build)
    fab = nl.fabric
    t0 = time.perf_counter()
    if action == "write":
        banks = write_layers(nl, fab, out, fmt)
        files = {f: (out / f).stat().st_size for b in banks for f in b["files"].values()}
        (out / "banks.json").write_text(json.dumps(banks))
        print(json.dumps({"seconds": time.perf_counter() - t0, "files": files}))
    else:
        banks = json.loads((out / "banks.json").read_text())
        problems = verify_layers(nl, fab, out, banks)
        print(json.dumps({"seconds": time.perf_counter() - t0, "problems": problems}))


def _tree_rss_mb(pid: int) -> float:
    """Summed VmRSS of ``pid`` and its descendants (MiB)."""
    return tree_rss_bytes(pid) / 2**20


def tree_peak(cmd: list[str]) -> tuple[str, float, float]:
    """Run ``cmd``: its stdout, wall seconds and the peak RSS of its whole process tree (MB)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL, text=True)
        peak = 0.0
        while p.poll() is None:
            peak = max(peak, _tree_rss_mb(p.pid))
            time.sleep(0.1)
        if p.returncode:
            raise subprocess.CalledProcessError(p.returncode, cmd)
        out.seek(0)
        return out.read(), time.perf_counter() - t0, peak


def timed(args: list[str]) -> tuple[dict, float]:
    text, _wall, rss = tree_peak([sys.executable, __file__, *args])
    return json.loads(text.strip().splitlines()[-1]), rss


def folder_bytes(build: Path) -> dict[str, int]:
    """Bytes of each top-level folder of a build (files at the top under ".")."""
    out: dict[str, int] = {}
    for p in build.rglob("*"):
        if p.is_file():
            top = p.relative_to(build).parts[0] if len(p.relative_to(build).parts) > 1 else "."
            out[top] = out.get(top, 0) + p.stat().st_size
    return out


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], Path(sys.argv[3]), sys.argv[4], Path(sys.argv[5]))
        return
    model = Path(sys.argv[1] if len(sys.argv) > 1 else "out/smollm2")
    extra_opts = [a for a in sys.argv[2:] if a != "--only-4bit"]
    variants = [("default (8-bit embedding)", []), ("all 4-bit", ["--config", "ALL4"])]
    if "--only-4bit" in sys.argv[2:]:
        variants = variants[1:]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "all4.toml"
        rules.write_text(ALL4)
        for label, extra in variants:
            extra = [str(rules) if a == "ALL4" else a for a in extra] + extra_opts
            build = Path(tmp) / "b"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "maskc",
                    "compile",
                    str(model),
                    "-o",
                    str(build),
                    "--layout-format",
                    "oas",
                    "--no-verify",
                    "--force",
                    *extra,
                ],
                check=True,
                capture_output=True,
            )
            nl = json.loads((build / "netlist" / "netlist.json").read_text())
            weights = sum(m["shape"][0] * m["shape"][1] for m in nl["matrices"].values())
            sizes = folder_bytes(build)
            for fmt in ("oas", "gds"):
                out = Path(tmp) / f"layers-{fmt}"
                w, w_rss = timed(["--child", "write", str(build), fmt, str(out)])
                v, v_rss = timed(["--child", "verify", str(build), fmt, str(out)])
                total = sum(w["files"].values())
                via = sum(n for f, n in w["files"].items() if f.startswith("via"))
                rows.append(
                    {
                        "model": model.name,
                        "build": label,
                        "format": fmt,
                        "weights": weights,
                        "files": len(w["files"]),
                        "bytes": total,
                        "via_bytes": via,
                        "bytes_per_weight": total / weights,
                        "write_s": w["seconds"],
                        "write_rss_mb": w_rss,
                        "verify_s": v["seconds"],
                        "verify_rss_mb": v_rss,
                        "verified": not v["problems"],
                        "folders_bytes": {k: n for k, n in sizes.items() if k != "layers"},
                        "build_bytes_per_weight": (
                            sum(n for k, n in sizes.items() if k != "layers") + total
                        )
                        / weights,
                    }
                )
                subprocess.run(["rm", "-rf", str(out)], check=True)
    print(
        f"{'build':<27}{'fmt':>4}{'files':>6}{'MB':>9}{'B/weight':>9}{'write s':>9}"
        f"{'RSS MB':>8}{'verify s':>9}{'RSS MB':>8}{'ok':>4}{'build B/w':>10}"
    )
    for r in rows:
        print(
            f"{r['build']:<27}{r['format']:>4}{r['files']:>6}{r['bytes'] / 1e6:>9.1f}"
            f"{r['bytes_per_weight']:>9.3f}{r['write_s']:>9.1f}{r['write_rss_mb']:>8.0f}"
            f"{r['verify_s']:>9.1f}{r['verify_rss_mb']:>8.0f}"
            f"{'yes' if r['verified'] else 'NO':>4}{r['build_bytes_per_weight']:>10.3f}"
        )
    print("bytes per weight of each build folder (without layers/):")
    for r in rows[::2]:
        per = {k: n / r["weights"] for k, n in sorted(r["folders_bytes"].items())}
        print(f"  {r['build']:<27}" + "  ".join(f"{k} {v:.3f}" for k, v in per.items()))
    out = HERE / "results" / "layout.json"
    out.write_text(
        json.dumps(
            {
                "benchmark": "layout",
                "date": time.strftime("%Y-%m-%d"),
                "machine": f"{platform.machine()}, Python {platform.python_version()}",
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
