"""What ``maskc report`` shows, read from a build: every number comes from a file the build
records (``model.json``, ``reports/quant.json``, ``reports/placement.json``, the netlist and
``manifest.json``), opened with every hash checked. Nothing is recomputed here except sums,
the per-layer aggregates of the per-tensor errors and the adapter budget at other contexts
(:func:`maskc.sram.rank_budget`, the compile's own function)."""

from __future__ import annotations

from pathlib import Path

from maskc.errors import InputError

#: KV-cache sizes the budget table lists (those up to the build's max_context, plus the build's
#: own context and max_context)
BUDGET_CONTEXTS = (256, 1024, 2048, 4096, 8192, 16384, 32768, 131072)


def _fmt(meta: dict, method: str | None) -> str:
    f = meta["format"]
    kind = f.get("kind")
    base = f"{f['bits']}-bit" if not kind or kind == "int" else str(kind)
    s = f"{base} g{f['group_size']}"
    if f["bits"] == 3 and (not kind or kind == "int"):
        s += " (3-bit codes packed four to three 4-bit cells)"
    return f"{s} {method}" if method else s


def tiles_of(nl, methods: dict | None = None) -> list[dict]:
    """Every placed tile: die, x, y, tile name, matrix, layer, role, format (with the
    quantization method from ``methods``, tensor -> method, when given), block; sorted by
    die, row, column."""
    out = []
    for name in sorted(nl.matrices):
        meta = nl.matrices[name]
        arr = nl.tile_arrays(name, ("pos", "block"))
        fmt = _fmt(meta, (methods or {}).get(name))
        for pos, blk in zip(arr["pos"].tolist(), arr["block"].tolist(), strict=True):
            d, x, y = (int(v) for v in pos)
            r0, nr, c0, nc = (int(v) for v in blk)
            out.append(
                {
                    "die": d,
                    "x": x,
                    "y": y,
                    "tile": f"T{d}_{x}_{y}",
                    "tensor": name,
                    "layer": meta.get("layer"),
                    "role": meta.get("role"),
                    "expert": meta.get("expert"),
                    "format": fmt,
                    "rows": [r0, r0 + nr],
                    "cols": [c0, c0 + nc],
                }
            )
    out.sort(key=lambda t: (t["die"], t["y"], t["x"]))
    return out


def layer_errors(tensors: list[dict]) -> list[dict]:
    """Per decoder layer: quantized tensors, weights, bits/weight and the weight-weighted mean
    relative error; the worst tensor's error and SNR."""
    per: dict = {}
    for t in tensors:
        if not t.get("quantized") or t.get("layer") is None or t.get("rel_error") is None:
            continue
        n = 1
        for s in t["shape"]:
            n *= s
        p = per.setdefault(t["layer"], {"layer": t["layer"], "tensors": 0, "weights": 0})
        p["tensors"] += 1
        p["weights"] += n
        p["_err"] = p.get("_err", 0.0) + n * t["rel_error"]
        p["_bits"] = p.get("_bits", 0.0) + n * t["bpw"]
        if t["rel_error"] >= p.get("max_rel_error", -1.0):
            p["max_rel_error"] = t["rel_error"]
            p["worst"] = t["name"]
        if t.get("snr_db") is not None:
            p["min_snr_db"] = min(p.get("min_snr_db", t["snr_db"]), t["snr_db"])
    rows = []
    for k in sorted(per):
        p = per[k]
        rows.append(
            {
                "layer": k,
                "tensors": p["tensors"],
                "weights": p["weights"],
                "bpw": p.pop("_bits") / p["weights"],
                "mean_rel_error": p.pop("_err") / p["weights"],
                "max_rel_error": p["max_rel_error"],
                "worst": p["worst"],
                "min_snr_db": p.get("min_snr_db"),
            }
        )
    return rows


def budget(nl) -> list[dict]:
    """The adapter and context budget: per KV-cache size, per die, the SRAM left for adapters
    and the largest LoRA rank it holds on every projection / on q, k, v, o only."""
    from maskc.sram import die_layers, rank_budget

    sram = nl.doc.get("sram")
    if not sram:
        return []
    ctxs = {c for c in BUDGET_CONTEXTS if c <= sram["max_context"]}
    ctxs |= {sram["context"], sram["max_context"]}
    shapes = {n: {"shape": m["shape"]} for n, m in nl.matrices.items()}
    rows = []
    for ctx in sorted(c for c in ctxs if c >= 1):
        dies = []
        for d, layers in zip(sram["dies"], die_layers(sram), strict=True):
            pb = d["params"]["bytes"] if "params" in d else 0
            kv = d["kv"]["bytes_per_token"] * ctx
            free = d["bytes"] - pb - kv
            rank = rank_budget(shapes, layers, free) if free > 0 else {"all": 0, "attention": 0}
            dies.append({"die": d["die"], "kv_bytes": kv, "adapter_bytes": free, "max_rank": rank})
        rows.append(
            {
                "context": ctx,
                "build": ctx == sram["context"],
                "max": ctx == sram["max_context"],
                "dies": dies,
            }
        )
    return rows


def collect(path) -> dict:
    """Everything the report shows of the build at ``path`` (hashes checked: exit 5 on a
    corrupt build; a ``--plan-only`` build or one without reports is exit 3)."""
    from maskc.build import open_build, verify_status
    from maskc.netlist import load_netlist

    b = open_build(path)
    files = b.manifest["files"]
    for rel in ("reports/quant.json", "reports/placement.json", "netlist/netlist.json"):
        if rel not in files:
            raise InputError(
                f"{b.path}: the build has no {rel} (a --plan-only build?); maskc report needs a "
                "compiled build: run maskc compile without --plan-only"
            )
    model = b.json("model.json")
    quant = b.json("reports/quant.json")
    placement = b.json("reports/placement.json")
    nl = load_netlist(b.path)
    fab = nl.fabric
    arch = model["architecture"]
    return {
        "name": Path(b.path).name,
        "manifest": {
            "maskc_version": b.manifest.get("maskc_version"),
            "stages": b.stages,
            "files": len(files),
            "bytes": sum(int(v.get("bytes", 0)) for v in files.values()),
        },
        "model": {
            "architecture": arch.get("architecture"),
            "model_type": arch.get("model_type"),
            "layers": arch.get("num_layers"),
            "hidden": arch.get("hidden_size"),
            "vocab": arch.get("vocab_size"),
            "source": model.get("source", {}),
        },
        "fabric": {
            "name": fab.name,
            "description": fab.fabric.description,
            "process": fab.fabric.process,
            "columns": fab.die.tile_columns,
            "rows": fab.die.tile_rows,
        },
        "quant": quant,
        "placement": placement,
        "tiles": tiles_of(nl, {t["name"]: t.get("method") for t in quant.get("tensors", [])}),
        "layer_errors": layer_errors(quant.get("tensors", [])),
        "budget": budget(nl),
        "sram": nl.doc.get("sram"),
        "verify": verify_status(b),
    }
