"""The quantization report (``BUILD/reports/quant.json``) and its figure (``quant_error.png``).

:func:`quant_report` sums the per-tensor rows up; :func:`output_error` runs the whole
quantized model (its exact stored values, in float) against the float model on a short text
(KL, top-1 agreement, ppl), and :func:`sensitivity` does so with one layer quantized at a time.

The figure's top panels: weight SNR (dB) of every quantized matrix by layer, one small panel
per role on its own y range (the other roles faint behind it, so a series never hides under
another) and a panel of the roles' means. Bottom panel (when ``--sensitivity`` ran): KL
divergence of the model's next-token distribution when only that layer is quantized, so users
see which layers hurt. The PNG is deterministic (no timestamp or software version in its
metadata).
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import numpy as np

from maskc.evaluate import kl_top1, log_softmax
from maskc.reference import FloatLlama

ROLES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


#: the colour of each role in the error figure (matplotlib's tab10, in ROLES order)
ROLE_COLORS = {r: f"C{i}" for i, r in enumerate(ROLES)}


def error_png(report: dict, path: Path) -> None:
    """Draw ``report`` (the dict written to reports/quant.json) to ``path``: one small panel
    per role (q/k/v/o/gate/up/down, each on its own y range, the other roles faint behind
    where they fall in it) and their means side by side, so no series hides under another
    (on SmolLM2 at 3 bits gate_proj's SNR lies on up_proj's), and the per-layer sensitivity
    below when it ran."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows = [r for r in report["tensors"] if r["quantized"] and r["layer"] is not None]
    sens = report.get("sensitivity")
    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r["snr_db"] is not None:  # None: stored exactly
            series.setdefault(r["role"], []).append((r["layer"], r["snr_db"]))
    roles = [r for r in ROLES if r in series] + sorted(set(series) - set(ROLES))
    ncols = 4
    nrows = max(1, -(-len(roles) // ncols))
    fig = Figure(
        figsize=(11, 2.1 * nrows + (2.6 if sens else 0) + 0.6), dpi=90, layout="constrained"
    )
    spec = fig.add_gridspec(
        nrows + (1 if sens else 0), ncols, height_ratios=[1] * nrows + ([1.3] if sens else [])
    )
    tot = report["totals"]
    bpw = tot.get("bpw_blocks")
    fig.suptitle(
        "weight SNR (dB) per layer, one panel per role on its own y range (grey: the other "
        "roles where they fall in it)" + (f"; blocks {bpw:.3f} bits/weight" if bpw else ""),
        fontsize=10,
    )
    ys = [v for pts in series.values() for _, v in pts]
    lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
    pad = max(0.05 * (hi - lo), 0.1)
    first = None
    for i, role in enumerate(roles):
        ax = fig.add_subplot(spec[i // ncols, i % ncols], sharex=first)
        first = first or ax
        for other in roles:  # the rest, faint, for comparison
            if other != role:
                xs, vs = _by_layer(series[other])
                ax.plot(xs, vs, color="0.82", linewidth=0.7, zorder=1)
        xs, vs = _by_layer(series[role])
        color = ROLE_COLORS.get(role, "C7")
        ax.plot(xs, vs, color=color, marker="o", markersize=2.5, linewidth=1.2, zorder=3)
        ax.set_title(f"{role} (mean {np.mean(vs):.2f} dB)", fontsize=9, color=color)
        own = max(0.25, 0.1 * (max(vs) - min(vs)))
        ax.set_ylim(min(vs) - own, max(vs) + own)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        if i % ncols == 0:
            ax.set_ylabel("SNR (dB)", fontsize=8)
        if i // ncols == nrows - 1 or i + ncols >= len(roles):
            ax.set_xlabel("layer", fontsize=8)
    if roles and len(roles) % ncols:  # the free panel: each role's mean, side by side
        ax = fig.add_subplot(spec[nrows - 1, ncols - 1])
        means = [float(np.mean([v for _, v in series[r]])) for r in roles]
        ax.barh(range(len(roles)), means, color=[ROLE_COLORS.get(r, "C7") for r in roles])
        ax.set_yticks(range(len(roles)), roles, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_title("mean over layers", fontsize=9)
        ax.set_xlabel("SNR (dB)", fontsize=8)
        ax.tick_params(labelsize=7)
    if not roles:  # every layer stored exactly
        ax = fig.add_subplot(spec[0, :])
        ax.text(0.5, 0.5, "every layer is stored exactly (no weight error)", ha="center")
        ax.set_axis_off()
    if sens:
        ax2 = fig.add_subplot(spec[nrows, :])
        ax2.bar([s["layer"] for s in sens], [s["kl_mean"] for s in sens], color="tab:red")
        ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax2.set_xlabel("layer quantized alone", fontsize=8)
        ax2.set_ylabel("mean KL (nats)", fontsize=8)
        ax2.set_title("output sensitivity: only this layer quantized", fontsize=10)
        ax2.grid(True, axis="y", alpha=0.3)
    fig.savefig(path, format="png", metadata={"Software": None})


def _by_layer(points: list[tuple[int, float]]) -> tuple[list[int], list[float]]:
    """A series' points sorted by layer; several per layer (the experts of a mixture of
    experts) become their median, the line the panel draws."""
    per: dict[int, list[float]] = {}
    for layer, v in points:
        per.setdefault(layer, []).append(v)
    xs = sorted(per)
    return xs, [float(np.median(per[x])) for x in xs]


def default_report_text() -> str:
    """The built-in English text the output-level error is measured on."""
    return resources.files("maskc.data").joinpath("report_text.txt").read_text(encoding="utf-8")


def avg_bpw(rows: list[dict]) -> float | None:
    """ROM bits per weight over report rows (``rom_bits``, ``shape``), weighted by size."""
    n = sum(math.prod(r["shape"]) for r in rows)
    return sum(r["rom_bits"] for r in rows) / n if n else None


def quant_report(total_parameters: int, rows: list[dict], res, calib) -> dict:
    """The report of a quantized model: its rows, totals (bits per weight in the transformer
    blocks and over everything quantized, ROM bits), the calibration text and the config's
    warnings."""
    q = [r for r in rows if r["quantized"]]
    blocks = [r for r in q if r["role"] not in ("embed", "lm_head")]
    return {
        "version": 1,
        "tensors": rows,
        "totals": {
            "parameters": total_parameters,
            "quantized_parameters": sum(math.prod(r["shape"]) for r in q),
            "float_parameters": sum(math.prod(r["shape"]) for r in rows if not r["quantized"]),
            "bpw_blocks": avg_bpw(blocks),
            "bpw_quantized": avg_bpw(q),
            "rom_bits": sum(r["rom_bits"] for r in q),
        },
        "calibration": None
        if calib is None
        else {"text": calib.name, "tokens": len(calib.ids), "random_tokens": calib.random},
        "warnings": res.to_json()["warnings"],
    }


def logits(arch, get, ids, rows=None) -> np.ndarray | None:
    """The float32 reference's logits of ``ids`` with the weights ``get`` serves (the
    embedding and lm_head in blocks of rows from ``rows(name, a, b)`` if given); None when
    float32 overflows on the way (a model whose weights are in range but whose activations
    are not: docs/numerics.md, "What the chip can represent")."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        out = FloatLlama(arch, get, cache_weights=False, get_rows=rows).forward(ids)
    return out if np.isfinite(out).all() else None


def output_error(arch, store, ids, ref, ev) -> dict | None:
    """The whole quantized model (``store``'s exact values) against the float logits ``ref``;
    None when either model overflows float32."""
    ev.start("measuring output error", 1)
    qlog = logits(arch, store.dequantized, ids, store.dequantized_rows)
    ev.advance()
    return None if qlog is None else compare_logits(ref, qlog, ids)


def compare_logits(ref, qlog, ids, chunk: int = 32) -> dict | None:
    """KL, top-1 agreement and ppl of ``qlog`` against ``ref`` (``[T, V]`` logits), computed
    over blocks of positions so memory stays a few ``[chunk, V]`` float64 arrays; None when a
    result is beyond float64 (a perplexity above 1.8e308)."""
    t = len(ids)
    kl = np.empty(t)
    agree = np.empty(t, dtype=bool)
    nll_ref = np.zeros(t - 1)
    nll_q = np.zeros(t - 1)
    tgt = np.asarray(ids[1:])
    for a in range(0, t, chunk):
        b = min(a + chunk, t)
        kl[a:b], agree[a:b] = kl_top1(ref[a:b], qlog[a:b])
        e = min(b, t - 1)
        if a < e:
            rows = np.arange(e - a)
            nll_ref[a:e] = -log_softmax(ref[a:e])[rows, tgt[a:e]]
            nll_q[a:e] = -log_softmax(qlog[a:e])[rows, tgt[a:e]]
    with np.errstate(over="ignore", invalid="ignore"):
        out = {
            "tokens": t,
            "kl_mean": float(kl.mean()),
            "kl_max": float(kl.max()),
            "top1_agreement": float(agree.mean()),
            "ppl_float": float(np.exp(nll_ref.mean())),
            "ppl_quantized": float(np.exp(nll_q.mean())),
        }
    return out if all(math.isfinite(v) for v in out.values()) else None


def sensitivity(arch, float_get, store, ids, ref, ev, float_rows=None) -> list[dict] | None:
    """Per layer: the output error against the float logits ``ref`` when only that layer's
    matrices are quantized (the float embedding and lm_head by rows from ``float_rows``); None
    when a layer's run overflows float32."""
    out = []
    ev.start("sensitivity per layer", arch.num_layers)
    for i in range(arch.num_layers):
        prefix = f"model.layers.{i}."

        def get(name, prefix=prefix):
            return store.dequantized(name) if name.startswith(prefix) else float_get(name)

        qlog = logits(arch, get, ids, float_rows)
        err = None if qlog is None else compare_logits(ref, qlog, ids)
        if err is None:
            return None
        out.append({"layer": i, **err})
        ev.advance()
    return out
