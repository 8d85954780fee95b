"""The die's SRAM: the model's params (the boot image, :mod:`maskc.boot`), the KV cache of the
die's layers, and the region left for LoRA adapters, in that order from address 0.

One plan, used three times: placement sizes the KV cache for the build's context and reports
each die's split (:func:`sram_report`); the netlist records the allocation
(:func:`netlist_sram`); at run time, adapters are checked against it (:func:`sram_fit`,
:func:`require_fit`). docs/sram.md has the budgets.

The KV cache stores, per token, layer and kv head, the key and the value as int8 codes with one
4-byte scale word each (docs/numerics.md, "Attention"); an adapter stores int8 codes of ``A``
and ``s*B`` with one scale word per row (:func:`maskc.adapters.module_bytes`).
"""

from __future__ import annotations

import re

from maskc.adapters import MAX_RANK, SCALE_WORD_BYTES, TARGETS, Adapter, matrix_name
from maskc.errors import FitError, UsageError

#: Bytes per cached key or value element (int8 KV cache, docs/numerics.md).
KV_BYTES_PER_ELEMENT = 1
#: Bytes of the scale word stored with every cached key or value vector of one kv head.
KV_SCALE_BYTES = 4


def kv_bytes_per_token(arch, layers: int) -> int:
    """KV cache bytes per token for ``layers`` decoder layers: keys and values, int8 codes plus
    a 4-byte scale word per kv head (docs/numerics.md, "Attention")."""
    per_head = arch.head_dim * KV_BYTES_PER_ELEMENT + KV_SCALE_BYTES
    return layers * 2 * arch.num_kv_heads * per_head


def sram_report(report: dict, matrices: list, fabric, context: int) -> None:
    """Add to each die of a placement ``report``: SRAM bytes, the KV cache at ``context``, the
    adapter region (the rest of the SRAM) and the largest LoRA rank it holds on every target /
    on q, k, v, o (docs/sram.md). ``matrices``: the placed :class:`~maskc.place.MatrixInfo`."""
    shapes = {m.name: {"shape": [m.rows, m.cols]} for m in matrices}
    for d in report["per_die"]:
        kv = d["kv_bytes_per_token"] * context
        rest = fabric.die.sram_bytes - d["params_bytes"] - kv
        d["sram_bytes"] = fabric.die.sram_bytes
        d["kv_bytes"] = kv
        d["adapter_bytes"] = rest
        layers = set(range(d["layers"][0], d["layers"][1] + 1)) if d["layers"] else set()
        d["adapter_max_rank"] = rank_budget(shapes, layers, rest)


def netlist_sram(placement, arch, fabric) -> dict:
    """The netlist's ``sram``: per die, the params region (the boot image), the KV-cache region
    of its layers, sized for the build's context, and the adapter region (the rest) with the
    LoRA ranks it holds, as the placement report split them. ``max_context`` is what the SRAM
    left after ``reserved_for_adapters`` could hold."""
    per_layer = kv_bytes_per_token(arch, 1)
    ctx = placement.context
    dies = []
    for d in placement.report["per_die"]:
        first, last = d["layers"] or (0, -1)  # an expert die: no layers, no KV cache
        dies.append(
            die_sram(
                d["die"],
                fabric.die.sram_bytes,
                d["params_bytes"],
                list(range(first, last + 1)),
                per_layer,
                ctx,
                d["adapter_max_rank"],
            )
        )
    return {
        "context": ctx,
        "max_context": placement.report["max_context"],
        "reserved_for_adapters": placement.report.get("sram_reserved_for_adapters", 0),
        "dies": dies,
    }


def die_sram(
    die: int,
    total: int,
    params_bytes: int | None,
    layers: list[int],
    per_layer: int,
    ctx: int,
    max_rank: dict,
) -> dict:
    """One die of the netlist's ``sram``: from address 0 the params region (``params_bytes``;
    None: a netlist of version < 4, which has none), the KV cache of ``layers``
    (``per_layer`` bytes per token each, ``ctx`` tokens), the adapter region (the rest;
    ``max_rank`` the LoRA ranks it holds). The writer and the loader's check both lay a die
    out through this function, each with its own numbers."""
    pb = params_bytes or 0
    kv = per_layer * len(layers) * ctx
    out = {"die": die, "bytes": total}
    if params_bytes is not None:
        out["params"] = {"base": 0, "bytes": pb}
    out["kv"] = {
        "base": pb,
        "bytes": kv,
        "bytes_per_token": per_layer * len(layers),
        "context": ctx,
        "layers": [
            {"layer": layer, "offset": k * per_layer * ctx, "bytes_per_token": per_layer}
            for k, layer in enumerate(layers)
        ],
    }
    out["adapters"] = {"base": pb + kv, "bytes": total - pb - kv, "max_rank": max_rank}
    return out


_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
}


def parse_size(text: str, whole: int, what: str) -> int:
    """``"8MiB"``, ``"8000000"``, ``"1.5GB"`` or ``"25%"`` (of ``whole``) -> bytes
    (UsageError naming ``what`` otherwise)."""
    t = str(text).strip().lower().replace("_", "").replace(" ", "")
    mt = re.fullmatch(r"(\d+(?:\.\d+)?)(%|[kmg]i?b|b)?", t)
    if not mt:
        raise UsageError(f"{what} {text!r}: give bytes (e.g. 8MiB, 8000000) or a share (25%)")
    value, unit = float(mt[1]), mt[2] or ""
    n = int(whole * value / 100) if unit == "%" else int(value * _UNITS[unit])
    if unit == "%" and value > 100:
        raise UsageError(f"{what} {text!r}: a share is at most 100%")
    return n


def die_layers(sram: dict) -> list[set[int]]:
    """The layers whose KV cache (and adapters) each die holds (netlist ``sram``)."""
    return [{lay["layer"] for lay in d["kv"]["layers"]} for d in sram["dies"]]


def sram_fit(sram: dict, adapters: list[Adapter], context: int) -> list[dict]:
    """Per die: SRAM bytes, KV cache at ``context`` tokens, the adapters' bytes and what is
    left (negative: does not fit)."""
    rows = []
    for d, layers in zip(sram["dies"], die_layers(sram), strict=True):
        kv = d["kv"]["bytes_per_token"] * context
        need = sum(a.sram_bytes(layers) for a in adapters)
        bpt = d["kv"]["bytes_per_token"]
        pb = d["params"]["bytes"] if "params" in d else 0  # netlist version < 4: none
        rows.append(
            {
                "die": d["die"],
                "sram_bytes": d["bytes"],
                "params_bytes": pb,
                "kv_bytes": kv,
                "context": context,
                "adapter_bytes": need,
                "free_bytes": d["bytes"] - pb - kv - need,
                # an expert die (no layers) holds no KV cache: it bounds nothing
                "max_context": max(0, (d["bytes"] - pb - need) // bpt)
                if bpt
                else sram["max_context"],
            }
        )
    return rows


def require_fit(sram: dict, adapters: list[Adapter], context: int) -> list[dict]:
    """:func:`sram_fit`, raising FitError (exit 4) with the numbers when a die overflows."""
    rows = sram_fit(sram, adapters, context)
    for r in rows:
        if r["free_bytes"] < 0:
            names = ", ".join(a.path.name for a in adapters)
            hint = (
                f"use --context {r['max_context']:,} or less"
                if r["max_context"] >= 1
                else "use a smaller rank or fewer target modules"
            )
            raise FitError(
                f"adapter {names} needs {r['adapter_bytes']:,} bytes of SRAM on die {r['die']}, "
                f"which has {r['sram_bytes']:,} with {r['params_bytes']:,} taken by the model's "
                f"params and {r['kv_bytes']:,} by the KV cache of {context:,} tokens "
                f"({r['sram_bytes'] - r['params_bytes'] - r['kv_bytes']:,} free); {hint}"
            )
    return rows


def rank_budget(matrices: dict, layers: set[int], region_bytes: int) -> dict:
    """The largest rank that fits ``region_bytes`` with LoRA on every target of ``layers``,
    and with LoRA on the attention projections only (q, k, v, o)."""
    out = {}
    for label, mods in (
        ("all", list(TARGETS)),
        ("attention", ["q_proj", "k_proj", "v_proj", "o_proj"]),
    ):
        shapes = [
            matrices[matrix_name(ly, mod)]["shape"]
            for ly in sorted(layers)
            for mod in mods
            if matrix_name(ly, mod) in matrices
        ]
        fixed = sum(SCALE_WORD_BYTES * r for r, _ in shapes)
        per_rank = sum(r + c + SCALE_WORD_BYTES for r, c in shapes)
        rank = (region_bytes - fixed) // per_rank if per_rank and region_bytes > fixed else 0
        out[label] = int(min(rank, MAX_RANK))
    return out
