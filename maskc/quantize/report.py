"""The quantization report's figure: error per layer (``BUILD/reports/quant_error.png``).

Top panel: weight SNR (dB) of every quantized matrix, by layer and role. Bottom panel (when
``--sensitivity`` ran): KL divergence of the model's next-token distribution when only that
layer is quantized, so users see which layers hurt. The PNG is deterministic (no timestamp or
software version in its metadata).
"""

from __future__ import annotations

from pathlib import Path

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
        pts = [(r["layer"], r["snr_db"]) for r in rows if r["role"] == role]
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
