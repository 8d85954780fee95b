"""The quantization report (``BUILD/reports/quant.json``) and its figure (``quant_error.png``).

:func:`quant_report` sums the per-tensor rows up; :func:`output_error` runs the whole
quantized model (its exact stored values, in float) against the float model on a short text
(KL, top-1 agreement, ppl), and :func:`sensitivity` does so with one layer quantized at a time.

The figure's top panel: weight SNR (dB) of every quantized matrix, by layer and role. Bottom
panel (when ``--sensitivity`` ran): KL divergence of the model's next-token distribution when
only that layer is quantized, so users see which layers hurt. The PNG is deterministic (no
timestamp or software version in its metadata).
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import numpy as np

from maskc.evaluate import kl_top1, log_softmax
from maskc.reference import FloatLlama

ROLES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def error_png(report: dict, path: Path) -> None:
    """Draw ``report`` (the dict written to reports/quant.json) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rows = [r for r in report["tensors"] if r["quantized"] and r["layer"] is not None]
    sens = report.get("sensitivity")
    fig = Figure(figsize=(10, 6.5 if sens else 4), dpi=100)
    axes = fig.subplots(2 if sens else 1, 1, squeeze=False)[:, 0]
    ax = axes[0]
    for role in ROLES:
        pts = [
            (r["layer"], r["snr_db"])
            for r in rows
            if r["role"] == role and r["snr_db"] is not None  # None: stored exactly
        ]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", markersize=3, linewidth=1, label=role)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel("weight SNR (dB)")
    tot = report["totals"]
    bpw = tot.get("bpw_blocks")
    ax.set_title(
        "weight error per layer" + (f"  (blocks {bpw:.3f} bits/weight)" if bpw else ""),
        fontsize=10,
    )
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # none when every layer is stored exactly
        ax.legend(fontsize=7, ncol=4)
    if sens:
        ax2 = axes[1]
        ax2.bar([s["layer"] for s in sens], [s["kl_mean"] for s in sens], color="tab:red")
        ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax2.set_xlabel("layer quantized alone")
        ax2.set_ylabel("mean KL (nats)")
        ax2.set_title("output sensitivity: only this layer quantized", fontsize=10)
        ax2.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})


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
        "calibration": None if calib is None else {"text": calib.name, "tokens": len(calib.ids)},
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
