"""Renderers shared by the commands: reports of a build (quantization, placement, netlist,
layers), the diff table, the modeled chip time and size formatting. Each prints on
:data:`maskc.cli.app.out` (or the console it is given)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from maskc.cli.app import out


def size(n: int) -> str:
    """Bytes with a decimal unit: 1234567 -> '1.2 MB'."""
    for unit, k in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= k:
            return f"{n / k:,.1f} {unit}"
    return f"{n} B"


def si(value: float, unit: str) -> str:
    """``value`` with a decimal prefix (k, M, G, T, P): 1.13e10 bits -> '11.3 Gbit'."""
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def mib(n: int) -> str:
    """Bytes in MiB: 1048576 -> '1.0 MiB'."""
    return f"{n / (1 << 20):,.1f} MiB"


def _method(row: dict) -> str:
    """The method column: "imported, exact" for a layer imported with zero weight error."""
    if row["method"] == "imported":
        return "imported, exact" if row["rel_error"] == 0 else "imported"
    return row["method"]


def print_quant_report(report: dict) -> None:
    """The per-tensor quantization table, the output-level error and the sensitivity."""
    table = Table(title="quantization", show_footer=True)
    tot = report["totals"]
    table.add_column("tensor", footer="blocks / all quantized")
    table.add_column("shape")
    table.add_column("bits", justify="right")
    table.add_column("group", justify="right")
    table.add_column("method")
    table.add_column(
        "bits/weight",
        justify="right",
        footer=f"{tot['bpw_blocks'] or 0:.3f} / {tot['bpw_quantized'] or 0:.3f}",
    )
    table.add_column("rel. error", justify="right")
    table.add_column("SNR dB", justify="right")
    for r in report["tensors"]:
        if not r["quantized"] and r["role"] not in ("embed", "lm_head"):
            continue
        if r["quantized"]:
            table.add_row(
                r["name"],
                "x".join(map(str, r["shape"])),
                r.get("format") or str(r["bits"]),  # an FP4 format names itself
                str(r["group_size"]),
                _method(r),
                f"{r['bpw']:.3f}",
                "-" if r["rel_error"] is None else f"{r['rel_error']:.4f}",
                "exact" if r["snr_db"] is None else f"{r['snr_db']:.2f}",
            )
        else:
            table.add_row(r["name"], "x".join(map(str, r["shape"])), "float", "", "", "32", "", "")
    out.print(table)
    o = report.get("output")
    if o:
        out.print(
            f"output vs float on {o['tokens']} tokens: mean KL {o['kl_mean']:.4f} nats, "
            f"top-1 agreement {100 * o['top1_agreement']:.1f}%, ppl {o['ppl_quantized']:.3f} vs "
            f"{o['ppl_float']:.3f} float ({o['ppl_quantized'] / o['ppl_float']:.3f}x)"
        )
    sens = report.get("sensitivity")
    if sens:
        st = Table(
            "layer", "mean KL", "top-1 agreement", title="sensitivity: only this layer quantized"
        )
        for r in sens:
            st.add_row(str(r["layer"]), f"{r['kl_mean']:.5f}", f"{100 * r['top1_agreement']:.1f}%")
        out.print(st)


def print_placement(p: dict) -> None:
    """The placement report: per die, tiles per layer, KV cache, SRAM split, modeled speed."""
    t = Table(
        "die",
        "layers",
        "tiles used",
        "of",
        "tile use",
        "cell use in used tiles",
        "padding cells",
        title=f"placement on {p['fabric']}",
    )
    for d in p["per_die"]:
        t.add_row(
            str(d["die"]),
            f"{d['layers'][0]}-{d['layers'][1]}"
            if d["layers"]
            else "experts of " + ", ".join(f"{x['layer']}" for x in d.get("experts_of", ())),
            f"{d['tiles_used']:,}",
            f"{d['tiles_available']:,}",
            f"{100 * d['tile_utilization']:.1f}%",
            f"{100 * d['cell_utilization_of_used_tiles']:.1f}%",
            f"{d['padding_cells']:,}",
        )
    out.print(t)
    out.print(f"tiles per layer: {_runs(sorted(p['per_layer_tiles'].items(), key=layer_order))}")
    ex = p.get("experts")
    if ex:
        out.print(
            f"experts: top {ex['top_k']} of {ex['num_experts']} per layer, all in ROM: "
            f"{ex['expert_tiles']:,} tiles, {100 * ex['activation_rate']:.1f}% of them fire per "
            f"token; cell use {100 * ex['cell_utilization']:.1f}% (per expert "
            f"{100 * ex['cell_utilization_min']:.1f}-{100 * ex['cell_utilization_max']:.1f}%, "
            "reports/placement.json)"
        )
        if "expert_dies" in ex:
            away = sum(
                e != h for h, es in zip(ex["home_dies"], ex["expert_dies"], strict=True) for e in es
            )
            out.print(
                f"experts over several dies: each layer on a home die of its own (attention, "
                f"router, shared expert, KV cache), {away:,} of its experts on expert dies "
                "(docs/fabric.md)"
            )
    reserve = p.get("sram_reserved_for_adapters", 0)
    out.print(
        f"KV cache: {p['context_requested']:,} tokens, at most {p['max_context']:,} fit in each "
        "die's SRAM"
        + (f" beside the {reserve:,} bytes reserved for adapters" if reserve else "")
        + "; floorplan in reports/floorplan.png"
    )
    sram_lines: list[tuple[list[int], str]] = []  # consecutive dies with the same split: one line
    for d in p["per_die"]:
        if "adapter_bytes" not in d:
            continue
        if not d["layers"]:  # an expert die (experts spread over dies)
            text = (
                f"{d['sram_bytes']:,} bytes = params {d['params_bytes']:,}; an expert die: no "
                "KV cache, no adapters"
            )
        else:
            r = d["adapter_max_rank"]
            text = (
                f"{d['sram_bytes']:,} bytes = params {d['params_bytes']:,} + KV cache "
                f"{d['kv_bytes']:,} "
                f"({d['kv_bytes_per_token']:,} per token) + adapters {d['adapter_bytes']:,}: "
                f"LoRA rank up to {r['all']} on all 7 projections of its layers, "
                f"{r['attention']} on q/k/v/o only (docs/sram.md)"
            )
        if sram_lines and sram_lines[-1][1] == text and sram_lines[-1][0][-1] == d["die"] - 1:
            sram_lines[-1][0].append(d["die"])
        else:
            sram_lines.append(([d["die"]], text))
    for dies, text in sram_lines:
        which = f"die {dies[0]}" if len(dies) == 1 else f"dies {dies[0]}-{dies[-1]}"
        out.print(f"SRAM {which}: {text}")
    perf = p.get("performance")
    if perf:
        a, b = perf["at_context_1"], perf["at_context"]
        out.print(
            f"modeled: {a['tokens_per_s_per_user']:,.0f} tokens/s per user at context 1, "
            f"{b['tokens_per_s_per_user']:,.0f} at {b['context']} ({b['latency_us']:.1f} us, "
            f"{b['energy_mj_per_token']:.3f} mJ per token); {perf['die_area_used_mm2']:.1f} mm2 "
            "of tiles; model in docs/fabric.md"
        )
        t_us = b.get("time_us")
        if t_us:
            parts = ", ".join(
                f"{k.replace('_', ' ')} {v:.1f} us ({100 * v / b['latency_us']:.0f}%)"
                for k, v in sorted(t_us.items(), key=lambda kv: (-kv[1], kv[0]))
            )  # largest first: a report read back from JSON has its keys in text order
            out.print(f"time per token at {b['context']}: {parts}")
        pipe = b.get("pipeline")
        if pipe and perf.get("dies", 1) > 1:
            out.print(
                f"pipeline at {b['context']}: {perf['dies']} dies on {perf['cards']} card(s); "
                f"slowest stage {pipe['slowest_stage']} ({pipe['slowest_stage_us']:.1f} us); "
                f"{pipe['users_in_flight']} user(s) in flight (the KV cache holds "
                f"{pipe['users_kv_cache_holds']:,}, {pipe['users_to_fill']} fill the "
                f"pipeline): {pipe['tokens_per_s']:,.0f} tokens/s in all, "
                f"{pipe['energy_mj_per_token']:.3f} mJ per token"
            )
            lb = b["link_bytes_per_token"]
            out.print(
                f"links per token: {lb['die_to_die']:,} bytes die to die, "
                f"{lb['card_to_card']:,} bytes card to card; per die: "
                + ", ".join(
                    f"{s['die']} (card {s['card']}) {s['time_us']:.1f} us" for s in b["stages"]
                )
            )


def layer_order(item: tuple[str, int]) -> tuple[int, int, str]:
    """Sort key of a ``per_layer_tiles`` entry: the embedding, the layers by number (a JSON
    report's keys come back in text order: 0, 1, 10, 11, ..., 2), then lm_head and the rest."""
    k = item[0]
    if k == "embed":
        return (0, 0, k)
    if k.isdigit():
        return (1, int(k), k)
    return (2, 0, k)


def _runs(items: list[tuple[str, int]]) -> str:
    """``embed: 9, 0-31: 4 each, lm_head: 9``: consecutive layers with the same count merged."""
    out: list[tuple[str, str, int, int]] = []  # (first, last, value, count)
    for k, v in items:
        if out and k.isdigit() and out[-1][0].isdigit() and out[-1][2] == v:
            first, last, _, n = out[-1]
            if int(k) == int(last) + 1:
                out[-1] = (first, k, v, n + 1)
                continue
        out.append((k, k, v, 1))
    return ", ".join(f"{a}: {v:,}" if n == 1 else f"{a}-{b}: {v:,} each" for a, b, v, n in out)


def print_netlist(n: dict) -> None:
    """One line on the netlist: matrices, tiles, weights, size."""
    out.print(
        f"netlist: {n['matrices']} matrices in {n['tiles']:,} tiles, {n['weights']:,} weights, "
        f"{n['bytes'] / 2**20:,.1f} MiB (maskc inspect BUILD --netlist prints its text form; "
        "maskc emulate BUILD runs it)"
    )


def print_layers(lay: dict, record: dict | None = None) -> None:
    """One line on the layer files (format, sizes, verified or not) and the advice, if any.
    ``record``: what :func:`maskc.build.verify_status` says of the build's ``maskc verify``
    record (``inspect``; compile has none)."""
    b = lay["bytes"]
    names = ", ".join(lay["files"]) if len(lay["files"]) <= 2 else f"{len(lay['files'])} files"
    if record is not None and record["state"] == "verified":
        checked = (
            f"verified by maskc verify ({record['tiles']:,} tiles and the boot image against "
            f"the netlist, every file hash), manifest sha256 {record['manifest_sha256'][:16]}..."
        )
    elif lay.get("verified"):
        checked = "read back and verified against the netlist by maskc compile"
    elif record is not None and record["state"] == "stale":
        checked = f"not verified: {record['why']}; run maskc verify BUILD"
    else:
        checked = "not verified yet: maskc verify BUILD"
    out.print(
        f"layers ({lay['format'].upper()}): {names} in BUILD/layers/; via {size(b['via'])}, "
        f"metal {size(b['metal'])}, {lay['bytes_per_weight']:.2f} bytes/weight; {checked}"
    )
    if lay.get("advice"):
        out.print(f"[yellow]advice:[/yellow] {lay['advice']}")


def print_diff(doc: dict, png) -> None:
    """``diff-layers``: a table per layer and the verdict, from the ``--json`` document."""
    if not doc["same_base_die"]:
        out.print(f"[bold red]{doc['verdict']}[/bold red]")
        return
    t = Table(title=f"diff-layers {doc['a']} -> {doc['b']}")
    for col in (
        "layer",
        "identical",
        "added",
        "removed",
        "changed tiles",
        "changed",
        "top tensors",
    ):
        t.add_column(col, justify="left" if col in ("layer", "top tensors") else "right")
    for name, rep in doc["layers"].items():
        tops = ", ".join(f"{x['tensor']} ({x['vias_or_straps']:,})" for x in rep["top_tensors"])
        t.add_row(
            name,
            "yes" if rep["identical"] else "[red]no[/red]",
            f"{rep['added']:,}",
            f"{rep['removed']:,}",
            f"{rep['changed_tiles']:,} / {rep['total_tiles']:,}",
            f"{100 * rep['changed_fraction']:.3f}%",
            tops or "-",
        )
    out.print(t)
    dies = sorted({int(d) for rep in doc["layers"].values() for d in rep.get("dies", {})})
    if len(dies) > 1:  # each die has its own masks
        out.print(
            f"masks per die ({len(dies)} dies): "
            + "; ".join(
                f"{n}: {', '.join(map(str, v)) or 'none'} changes"
                for n, v in doc["dies_to_remake"].items()
            )
        )
    out.print(f"[bold]verdict:[/bold] {doc['verdict']}")
    if png is not None:
        out.print(f"[green]wrote[/green] {png}")


def print_modeled(us: float | None, to: Console | None = None) -> None:
    """The modeled chip time per token (``us``), or that the build has no placement report."""
    c = to or out
    if us is None:
        c.print("modeled chip time: no placement report in this build", markup=False)
    else:
        c.print(
            f"modeled chip: {us:.1f} us per token ({1e6 / us:,.0f} tokens/s per user; "
            "docs/fabric.md)",
            markup=False,
        )
