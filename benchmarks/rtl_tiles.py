"""Every tile kind of real builds, cosimulated against the emulator's kernels.

For each BUILD (default: SmolLM2-135M compiled at 4 bits and at 3 bits on the ``mini``
fabric), every distinct tile kind (maskc/rtl/tiles.py: code width, packing, group size, field
widths, tile shape) gets ``--tiles`` tiles (spread over the kind's matrices and their tiles:
first, last and evenly between). Each tile becomes a one-tile matrix module
(``emit_matrix(..., tiles=[i])``), all of a build's in one design (one simulator build), and
runs ``--vectors`` act8 vectors (random, and the extremes of tests/test_rtl_tiles.py) on
Verilator and Icarus; every output row is compared with the emulator's kernel
(maskc/rtl/kernelref.py) on the same vector with the activations outside the tile's columns
at 0. Prints a table and writes benchmarks/results/rtl_tiles.json.

    python benchmarks/rtl_tiles.py [BUILD ...] [--tiles 4] [--vectors 8] [--sim verilator,icarus]
                                   [--batch 64]

``--tiles 0`` runs every tile of every kind, ``--batch`` tiles per simulator build (SmolLM2-135M
on ``mini``: 4,416 tiles; Icarus takes about 0.4 s per tile and vector on a 2-core machine).

Builds: ``maskc compile out/smollm2 -o out/s4 --fabric mini`` and ``... -o out/s3 --fabric mini
--bits 3``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "rtl"))

import _results  # noqa: E402
import tiles_sim  # noqa: E402

from maskc.layout import tile_name  # noqa: E402
from maskc.netlist import load_netlist  # noqa: E402
from maskc.rtl import emit_matrix, tile_kind  # noqa: E402
from maskc.rtl import kernelref as KR  # noqa: E402


def vectors(c: int, n: int, seed: int) -> dict:
    out = tiles_sim.vectors(c, seed)
    if n > len(out["x"]):
        rng = np.random.default_rng(seed + 1000)
        k = n - len(out["x"])
        out["x"] = np.concatenate([out["x"], rng.integers(-127, 128, (k, c))])
        out["s"] = np.concatenate([out["s"], rng.integers(0, 8, (k, out["s"].shape[1]))])
        out["m"] = np.concatenate([out["m"], rng.integers(1, 2066, k)])
        out["e"] = np.concatenate([out["e"], rng.integers(-40, 1, k)])
    return {k: a[:n] for k, a in out.items()}


def pick(nl, per_kind: int) -> dict:
    """``{kind name: [(matrix, tile index), ...]}``: ``per_kind`` tiles of every kind (0: all)."""
    kinds: dict[str, list] = {}
    for name in sorted(nl.matrices):
        kinds.setdefault(tile_kind(nl, name).name, []).append(name)
    out = {}
    for k, names in sorted(kinds.items()):
        every = [(n, i) for n in names for i in range(nl.matrices[n]["tiles"])]
        if per_kind <= 0:
            out[k] = every
            continue
        at = np.unique(np.linspace(0, len(every) - 1, per_kind).round().astype(int))
        out[k] = [every[i] for i in at]
    return out


def run_build(
    build: Path, per_kind: int, nvec: int, sims: list[str], work: Path, batch: int
) -> list[dict]:
    """Every picked tile, ``batch`` tiles per simulator build; one row per (simulator, kind)."""
    nl = load_netlist(build)
    picked = [(kind, name, i) for kind, tiles in pick(nl, per_kind).items() for name, i in tiles]
    by: dict[tuple[str, str], dict] = {}
    for b0 in range(0, len(picked), batch):
        part = picked[b0 : b0 + batch]
        print(f"{build.name}: tiles {b0 + 1}-{b0 + len(part)} of {len(picked)}", flush=True)
        _run_batch(nl, part, nvec, sims, work / build.name / f"b{b0}", by, seed=b0)
    return [
        {"build": str(build), "simulator": sim, "kind": kind, **d, "equal": d["mismatches"] == 0,
         "build_s": round(d["build_s"], 1), "run_s": round(d["run_s"], 1),
         "wall_s": round(d["wall_s"], 1)}
        for (sim, kind), d in by.items()
    ]  # fmt: skip


def _run_batch(nl, part: list, nvec: int, sims: list[str], work: Path, by: dict, seed: int):
    rtl = work / "rtl"
    cases = []
    for kind, name, i in part:
        mod = emit_matrix(nl, name, rtl, tiles=[i])
        c = nl.matrices[name]["shape"][1]
        r0, nr, c0, nc = (int(v) for v in np.asarray(nl.tile_arrays(name)["block"][i]))
        v = vectors(c, nvec, seed=seed + len(cases))
        x = np.zeros_like(v["x"])
        x[:, c0 : c0 + nc] = v["x"][:, c0 : c0 + nc]
        ref = KR.matmul(nl, name, x, v["s"], v["m"], v["e"])[:, r0 : r0 + nr]
        nl.release(name)
        vecs = [
            {"kind": "matrix", "x": x[j].tolist(), "s": v["s"][j].tolist(),
             "m": int(v["m"][j]), "e": int(v["e"][j])}
            for j in range(nvec)
        ]  # fmt: skip
        want = [list(zip(range(r0, r0 + nr), rr.tolist(), strict=True)) for rr in ref]
        tile = tile_name(nl.tile_arrays(name)["pos"][i])
        cases.append((kind, name, i, tile, mod, vecs, want))
    mods = [c[4] for c in cases]
    (rtl / "tiles_top.v").write_text(tiles_sim.wrapper(mods))
    sources = [*sorted({f for m in mods for f in m.files if f.endswith(".v")}), "tiles_top.v"]
    spec_vecs = [{**v, "sel": k} for k, c in enumerate(cases) for v in c[5]]
    spec = {"kind": "mixed", "max_cycles": 4000, "vectors": spec_vecs}
    for sim in sims:
        why = tiles_sim.missing(sim)
        if why:
            print(f"{sim}: skipped ({why})")
            continue
        t0 = time.perf_counter()
        res = tiles_sim.run(sim, rtl, "tiles_top", sources, spec, work / sim)
        wall = time.perf_counter() - t0
        got = iter(res["results"])
        cyc = iter(res["cycles"])
        for kind in sorted({c[0] for c in cases}):
            d = by.setdefault((sim, kind), {"tiles": [], "vectors": 0, "rows": 0,
                                            "mismatches": 0, "cycles": [], "build_s": 0.0,
                                            "run_s": 0.0, "wall_s": 0.0})  # fmt: skip
            d["build_s"] += res["build_s"]
            d["run_s"] += res["run_s"]
            d["wall_s"] += wall
        for kind, name, i, tile, _mod, _vecs, want in cases:
            d = by[(sim, kind)]
            d["tiles"].append(f"{tile} ({name} t{i})")
            for w in want:
                g = [tuple(p) for p in next(got)]
                d["cycles"].append(next(cyc))
                d["vectors"] += 1
                d["rows"] += len(w)
                d["mismatches"] += sum(a != tuple(b) for a, b in zip(g, w, strict=False))
                d["mismatches"] += abs(len(g) - len(w))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("builds", nargs="*", default=["out/s4", "out/s3"])
    ap.add_argument("--tiles", type=int, default=4, help="tiles per kind (0: every tile)")
    ap.add_argument("--batch", type=int, default=64, help="tiles per simulator build")
    ap.add_argument("--vectors", type=int, default=8)
    ap.add_argument("--sim", default="verilator,icarus")
    a = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="rtl_tiles.") as tmp:
        for b in a.builds:
            rows += run_build(Path(b), a.tiles, a.vectors, a.sim.split(","), Path(tmp), a.batch)
    print(f"{'build':<14} {'sim':<10} {'kind':<44} {'tiles':>5} {'vec':>4} {'rows':>7} "
          f"{'equal':>6} {'build s':>8} {'run s':>6}")  # fmt: skip
    for r in rows:
        print(f"{Path(r['build']).name:<14} {r['simulator']:<10} {r['kind']:<44} "
              f"{len(r['tiles']):>5} {r['vectors']:>4} {r['rows']:>7} {r['equal']!s:>6} "
              f"{r['build_s']:>8} {r['run_s']:>6}")  # fmt: skip
    _results.write("rtl_tiles", {"tiles_per_kind": a.tiles, "vectors": a.vectors, "rows": rows})
    return 0 if all(r["equal"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
