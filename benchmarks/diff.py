"""``maskc diff-layers`` on SmolLM2-135M against KLayout's geometric XOR of the same via layers.

Builds (OASIS, 4-bit defaults unless noted) of MODEL_DIR: A the model, B the same model with 1%
of every matrix's weights perturbed (seeded), C a 3-bit build. Times ``maskc diff-layers A B``
and ``A C`` (fresh processes, ``/usr/bin/time -v``), then a tiled KLayout XOR of A's and B's via
layers: each tile cell of A against the same tile cell of B (``Region ^ Region``), bank file
by bank file. Checks that both count the same differing vias and prints the speed ratio.
Prints a table and writes benchmarks/results/diff.json.

    python benchmarks/diff.py [MODEL_DIR]          # default out/smollm2 (the quick start's)
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def perturbed(src: Path, dst: Path, frac: float = 0.01) -> None:
    """``src`` with ``frac`` of every matrix's weights moved by half the matrix's std."""
    from safetensors.numpy import load_file, save_file

    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.name != "model.safetensors":
            (dst / f.name).symlink_to(f.resolve())
    w = load_file(str(src / "model.safetensors"))
    rng = np.random.default_rng(0)
    for name in sorted(w):
        if w[name].ndim == 2:
            a = w[name].astype(np.float32).copy()
            idx = rng.random(a.shape) < frac
            a[idx] += 0.5 * float(a.std()) * rng.standard_normal(int(idx.sum())).astype(np.float32)
            w[name] = a.astype(w[name].dtype)
    save_file(w, str(dst / "model.safetensors"))


def klayout_xor(a: Path, b: Path) -> tuple[int, float]:
    """Differing vias of two builds' via layers by KLayout, tile cell by tile cell."""
    import klayout.db as db

    t0 = time.perf_counter()
    ia = json.loads((a / "layers" / "index.json").read_text())["banks"]
    ib = json.loads((b / "layers" / "index.json").read_text())["banks"]
    n = 0
    for ba, bb in zip(ia, ib, strict=True):
        la, lb = db.Layout(), db.Layout()
        la.read(str(a / "layers" / ba["files"]["via"]))
        lb.read(str(b / "layers" / bb["files"]["via"]))
        va, vb = la.layer(60, 0), lb.layer(60, 0)
        for cell in la.each_cell():
            if not re.fullmatch(r"T\d+_\d+_\d+", cell.name):
                continue
            other = lb.cell(cell.name)
            ra = db.Region(cell.begin_shapes_rec(va))
            rb = db.Region(other.begin_shapes_rec(vb))
            n += (ra ^ rb).count()
    return n, time.perf_counter() - t0


def timed(args: list[str]) -> tuple[dict, float, float]:
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "maskc", "diff-layers", *args, "--json"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    secs = time.perf_counter() - t0
    if r.returncode not in (0, 1):
        raise SystemExit(r.stderr)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)[1])
    return json.loads(r.stdout), secs, rss / 1024


def main() -> None:
    model = Path(sys.argv[1] if len(sys.argv) > 1 else "out/smollm2")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        perturbed(model, tmp / "model-b")
        builds = {}
        for key, src, extra in (
            ("A", model, []),
            ("B", tmp / "model-b", []),
            ("C", model, ["--bits", "3"]),
        ):
            builds[key] = tmp / key
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "maskc",
                    "compile",
                    str(src),
                    "-o",
                    str(builds[key]),
                    "--layout-format",
                    "oas",
                    "--no-verify",
                    *extra,
                ],
                check=True,
                capture_output=True,
            )
        for other in ("B", "C"):
            doc, secs, rss = timed([str(builds["A"]), str(builds[other])])
            via = doc["layers"].get("via", {})
            changed = via.get("added", 0) + via.get("removed", 0)
            rows.append(
                {
                    "pair": f"A vs {other}",
                    "tool": "maskc diff-layers",
                    "seconds": secs,
                    "rss_mb": rss,
                    "via_changed": changed,
                    "verdict": doc["verdict"],
                    "changed_tiles": via.get("changed_tiles"),
                }
            )
        n, secs = klayout_xor(builds["A"], builds["B"])
        rows.append(
            {
                "pair": "A vs B",
                "tool": "KLayout tiled XOR (via)",
                "seconds": secs,
                "rss_mb": None,
                "via_changed": n,
                "changed_tiles": None,
                "verdict": "",
            }
        )
        shutil.rmtree(tmp / "model-b")
    ours = rows[0]
    ratio = rows[2]["seconds"] / ours["seconds"]
    agree = rows[2]["via_changed"] == ours["via_changed"]
    print(f"{'pair':<8}{'tool':<26}{'seconds':>9}{'RSS MB':>8}{'vias changed':>14}{'tiles':>7}")
    for r in rows:
        rss = f"{r['rss_mb']:.0f}" if r["rss_mb"] else "-"
        print(
            f"{r['pair']:<8}{r['tool']:<26}{r['seconds']:>9.2f}{rss:>8}{r['via_changed']:>14,}"
            f"{r['changed_tiles'] or '-':>7}"
        )
    print(f"maskc is {ratio:.0f}x faster than the KLayout XOR; counts agree: {agree}")
    out = HERE / "results" / "diff.json"
    out.write_text(
        json.dumps(
            {
                "benchmark": "diff",
                "date": time.strftime("%Y-%m-%d"),
                "machine": f"{platform.machine()}, Python {platform.python_version()}",
                "rows": rows,
                "speedup_vs_klayout": ratio,
                "counts_agree": agree,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
