"""Published anchors (issue 20, part 5): the chip's published figures for its 8B part beside
what maskc's model gives for the same shape, for a 70B dense model and for a Mixtral-8x7B-class
mixture of experts over several dies and cards (docs/fabric.md, "Published anchors").

Each maskc row is ``maskc compile CONFIG --plan-only`` on a config written by ``maskc
testmodel --shape NAME --config-only`` (no weights): Llama-3.1-8B on the built-in ``hc1`` at
4 and 3 bits on one die, Llama-3.1-70B and Mixtral-8x7B (a mixture of experts: top 2 of 8)
on ``examples/fabrics/hc1-cards.toml`` (hc1 dies on cards of four) with ``--dies auto``.
Prints the table and writes benchmarks/results/anchors.json. Takes about 25 seconds.

    python benchmarks/anchors.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _results import write

ROOT = Path(__file__).resolve().parent.parent
CARDS = ROOT / "examples" / "fabrics" / "hc1-cards.toml"
CONTEXT = 2048
PUBLISHED = {
    "model": "Llama-3.1-8B",
    "bits": "3/4",
    "dies": 1,
    "cards": 1,
    "tokens_per_s_per_user": 17_000,
    "power_w_per_card": 200,
    "die_area_mm2": 815,
    "transistors": 53e9,
}


def maskc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "maskc", *args], capture_output=True, text=True, check=True
    )


def plan(shape: str, fabric: str, bits: int, tmp: Path, dies: str = "fabric") -> dict:
    cfg = tmp / shape
    if not cfg.exists():
        maskc("testmodel", str(cfg), "--shape", shape, "--config-only")
    out = tmp / f"{shape}-{bits}-{Path(fabric).stem}"
    maskc(
        "compile", str(cfg / "config.json"), "-o", str(out), "--plan-only", "--fabric", fabric,
        "--bits", str(bits), "--dies", dies, "--context", str(CONTEXT), "--force",
    )  # fmt: skip
    rep = json.loads((out / "reports" / "placement.json").read_text())
    perf = rep["performance"]
    row = {
        "model": shape,
        "fabric": Path(fabric).stem,
        "bits": bits,
        "dies": perf["dies"],
        "cards": perf["cards"],
        "tiles_used": rep["tiles_used"],
        "tiles_available": rep["tiles_available"],
        "static_w": perf["static_w"],
    }
    for key, b in (("ctx1", perf["at_context_1"]), (f"ctx{CONTEXT}", perf["at_context"])):
        pipe = b["pipeline"]
        row[key] = {
            "tokens_per_s_per_user": b["tokens_per_s_per_user"],
            "latency_us": b["latency_us"],
            "time_us": b["time_us"],
            "energy_mj_per_token": b["energy_mj_per_token"],
            "power_w_one_user": b["energy_mj_per_token"] * 1e-3 * b["tokens_per_s_per_user"],
            "pipeline_tokens_per_s": pipe["tokens_per_s"],
            "users_in_flight": pipe["users_in_flight"],
            "users_to_fill": pipe["users_to_fill"],
            "users_kv_cache_holds": pipe["users_kv_cache_holds"],
            "slowest_stage": pipe["slowest_stage"],
            "power_w_pipeline": pipe["energy_mj_per_token"] * 1e-3 * pipe["tokens_per_s"],
            "link_bytes_per_token": b["link_bytes_per_token"],
        }
    return row


def main() -> None:
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        rows = [
            plan("llama-3.1-8b", "hc1", 4, tmp),
            plan("llama-3.1-8b", "hc1", 3, tmp),
            plan("llama-3.1-70b", str(CARDS), 4, tmp, "auto"),
            plan("llama-3.1-70b", str(CARDS), 3, tmp, "auto"),
            plan("mixtral-8x7b", str(CARDS), 4, tmp, "auto"),
            plan("mixtral-8x7b", str(CARDS), 3, tmp, "auto"),
        ]
    c = f"ctx{CONTEXT}"
    print(
        "| model | fabric | bits | dies / cards | tok/s/user ctx 1 | ctx 2048 | pipeline tok/s "
        "ctx 2048 (users) | W one user ctx 1 | W pipeline ctx 2048 | link bytes/token die / card |"
    )
    print("|---|---|---:|---|---:|---:|---|---:|---:|---|")
    p = PUBLISHED
    print(
        f"| {p['model']} (published) | the chip | {p['bits']} | 1 / 1 | "
        f"~{p['tokens_per_s_per_user']:,} | - | - | ~{p['power_w_per_card']} per card | - | - |"
    )
    for r in rows:
        a, b = r["ctx1"], r[c]
        lb = b["link_bytes_per_token"]
        print(
            f"| {r['model']} | {r['fabric']} | {r['bits']} | {r['dies']} / {r['cards']} | "
            f"{a['tokens_per_s_per_user']:,.0f} | {b['tokens_per_s_per_user']:,.0f} | "
            f"{b['pipeline_tokens_per_s']:,.0f} ({b['users_in_flight']}) | "
            f"{a['power_w_one_user']:.0f} | {b['power_w_pipeline']:.0f} | "
            f"{lb['die_to_die']:,} / {lb['card_to_card']:,} |"
        )
    write("anchors", {"context": CONTEXT, "published": PUBLISHED, "plans": rows})


if __name__ == "__main__":
    main()
