"""Placement + netlist writing on a real model: weights/s and peak memory.

Compiles MODEL_DIR once (``maskc compile``, 4-bit defaults), then for each fabric runs stages 3
and 4 alone (place, then ``write_netlist`` from the build's quant files) in a fresh process timed
by ``/usr/bin/time -v``, so the peak RSS is that of these stages only (numpy and the quant
files' reader included). Prints a table and writes benchmarks/results/netlist.json.

    python benchmarks/netlist.py [MODEL_DIR]          # default out/smollm2 (the quick start's)
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent


def child(build: Path, fabric: str, out: Path) -> None:
    """Place and write the netlist of ``build``'s quantized matrices into ``out``."""
    from maskc.fabric import load_fabric
    from maskc.ingest.config import load_config
    from maskc.netlist import write_netlist
    from maskc.pipeline import CompileOptions
    from maskc.pipeline.steps import placement as place_step
    from maskc.quantize import QuantStore

    t0 = time.perf_counter()
    fab = load_fabric(fabric)
    arch = load_config(build / "model.json.config")
    rep = json.loads((build / "reports" / "quant.json").read_text())
    index = json.loads((build / "quant" / "index.json").read_text())["tensors"]
    out.mkdir(parents=True)
    # the compile's place step (it also writes reports/placement.json and floorplan.png)
    placement = place_step(arch, rep["tensors"], fab, CompileOptions(fabric=fabric), out)
    t1 = time.perf_counter()
    (out / "quant").symlink_to(build / "quant")
    tok = {
        "path": build / "tokenizer.json",
        "bos_token_id": None,
        "eos_token_id": None,
        "chat_template": None,
    }
    summary = write_netlist(out, arch, QuantStore(out, index), placement, fab, tok)
    t2 = time.perf_counter()
    print(json.dumps({"place_s": t1 - t0, "netlist_s": t2 - t1, **summary}))


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
        return
    model = Path(sys.argv[1] if len(sys.argv) > 1 else "out/smollm2")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        build = Path(tmp) / "b"
        subprocess.run(
            [sys.executable, "-m", "maskc", "compile", str(model), "-o", str(build), "--json"],
            check=True,
            capture_output=True,
        )
        # the child reads the architecture back from config.json
        (build / "model.json.config").write_bytes((model / "config.json").read_bytes())
        for k, fabric in enumerate(("hc1", "mini")):
            cmd = [
                "/usr/bin/time",
                "-v",
                sys.executable,
                __file__,
                "--child",
                str(build),
                fabric,
                str(Path(tmp) / f"n{k}"),
            ]
            r = subprocess.run(cmd, capture_output=True, text=True, check=True)
            doc = json.loads(r.stdout.strip().splitlines()[-1])
            rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)[1])
            secs = doc["place_s"] + doc["netlist_s"]
            rows.append(
                {
                    "model": model.name,
                    "fabric": fabric,
                    **doc,
                    "seconds": secs,
                    "weights_per_s": doc["weights"] / secs,
                    "peak_rss_mb": rss / 1024,
                }
            )
    print(
        f"{'model':<12}{'fabric':>7}{'tiles':>8}{'weights':>13}{'place s':>9}{'netlist s':>11}"
        f"{'M w/s':>8}{'MiB out':>9}{'RSS MB':>8}"
    )
    for r in rows:
        print(
            f"{r['model']:<12}{r['fabric']:>7}{r['tiles']:>8,}{r['weights']:>13,}"
            f"{r['place_s']:>9.2f}{r['netlist_s']:>11.2f}{r['weights_per_s'] / 1e6:>8.1f}"
            f"{r['bytes'] / 2**20:>9.1f}{r['peak_rss_mb']:>8.0f}"
        )
    out = HERE / "results" / "netlist.json"
    out.write_text(
        json.dumps(
            {
                "benchmark": "netlist",
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
