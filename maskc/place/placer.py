"""Placement: quantized matrices cut into tile blocks and placed on the fabric's tile grid.

**Cutting.** A matrix ``[R, C]`` quantized with ``b``-bit codes in groups of ``G`` is stored in
tiles of ``rows`` tile rows, each holding ``W = fabric.weights_per_tile_row(b)`` weights. Its
input dimension is first padded to a multiple of ``G`` (the quantizer's padding); groups never
span two tiles (``G`` must divide ``W``). Blocks are ``rows`` output rows by up to ``W`` input
weights; the last row block and the last column block of a matrix may be partial. Everything a
block does not fill is *padding*, reported as waste.

**Placing.** Deterministic, in the model's data-flow order: the embedding, then every decoder
layer (q, k, v, o, gate, up, down, in that order; inside a matrix, row blocks in order and the
column blocks of one row block next to each other), then an untied lm_head. Tiles of a die are
visited in serpentine order (row 0 left to right, row 1 right to left, ...), so consecutive
blocks sit in adjacent tiles: the column blocks whose partial sums are added together are
neighbours, each layer occupies one contiguous band of the die (its activation buses stay
short and local), and consecutive layers are next to each other.

**Mixtures of experts.** Every expert is in ROM (a chip has no other memory for weights). A
layer's router, its shared expert and then its experts, each expert's gate, up and down one
after the other, follow in the same data-flow order, so the tiles of one expert are consecutive
on the serpentine path, on one die. The report gives each expert's die, tiles and cell
utilization (``experts``); the modeled chip fires only the selected experts' tiles
(:mod:`maskc.place.perf`). When no split of whole layers fits, ``--dies auto`` spreads each
layer's experts over expert dies beside its home die (:mod:`maskc.place.spread`; the report's
``experts.home_dies`` and ``experts.expert_dies``); an explicit ``--dies N`` never does.

**Dies.** With several dies the decoder layers are split into contiguous runs (a layer
pipeline) that minimize the largest die's tile count; the embedding goes with the first layer
and the lm_head with the last (a tied head reuses the embedding's tiles on die 0). Each die keeps
the KV cache of its own layers in its SRAM. Between consecutive dies one hidden-state vector per
token crosses the link. On a fabric with cards (``[card]``) the split balances the pipeline
instead: the runs minimize the slowest die's modeled time per token (:mod:`maskc.place.perf`),
and ``auto`` fills every die of the fewest cards that hold the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from maskc.boot import die_entries, region_bytes
from maskc.errors import FitError, InputError
from maskc.ir import expert_of
from maskc.place.perf import layer_cycles, modeled_performance, pipeline_links
from maskc.place.spread import spread_experts
from maskc.sram import kv_bytes_per_token, sram_report

#: ROM cells per weight, by code width (3-bit codes are packed four to three 4-bit cells).
CELLS_PER_WEIGHT = {2: 0.5, 3: 0.75, 4: 1.0, 8: 2.0}


@dataclass(frozen=True)
class MatrixInfo:
    """What placement needs to know of one quantized matrix."""

    name: str
    role: str
    layer: int | None
    rows: int
    cols: int
    bits: int
    group_size: int


@dataclass(frozen=True)
class Block:
    """One tile's content: output rows ``row0 .. row0+rows`` and input weights
    ``col0 .. col0+cols`` of matrix ``tensor`` (``cols`` counts real weights; the rest of the
    tile row is padding), at tile ``(x, y)`` of die ``die``."""

    tensor: str
    role: str
    layer: int | None
    bits: int
    row0: int
    rows: int
    col0: int
    cols: int
    die: int
    x: int
    y: int


@dataclass(frozen=True)
class Placement:
    fabric: str
    dies: int
    tiles_per_die: int
    grid: tuple[int, int]  #: (tile columns, tile rows) of a die
    blocks: tuple[Block, ...]
    context: int  #: tokens of KV cache each die can hold for its layers
    report: dict

    def validate(self) -> None:
        seen = set()
        cols, rows = self.grid
        for b in self.blocks:
            key = (b.die, b.x, b.y)
            if key in seen:
                raise InputError(f"placement: tile {key} holds two blocks")
            seen.add(key)
            if not (0 <= b.die < self.dies and 0 <= b.x < cols and 0 <= b.y < rows):
                raise InputError(f"placement: block of {b.tensor} is off the grid at {key}")


def serpentine(cols: int, rows: int):
    """Tile positions of a die in serpentine order: ``(x, y)``."""
    for y in range(rows):
        xs = range(cols) if y % 2 == 0 else range(cols - 1, -1, -1)
        for x in xs:
            yield x, y


def cut(m: MatrixInfo, fabric) -> list[tuple[int, int, int, int]]:
    """Blocks of matrix ``m`` as ``(row0, rows, col0, cols)`` in placement order."""
    w = fabric.weights_per_tile_row(m.bits)
    if w % m.group_size:
        raise InputError(
            f"{m.name}: group size {m.group_size} does not divide the {w} weights of a "
            f"{fabric.name} tile row at {m.bits} bits; use a group size in "
            f"{list(fabric.tile.group_sizes)} (--group-size or a quant.toml rule)"
        )
    tr = fabric.tile.rows
    out = []
    for r0 in range(0, m.rows, tr):
        for c0 in range(0, m.cols, w):
            out.append((r0, min(tr, m.rows - r0), c0, min(w, m.cols - c0)))
    return out


def tiles_of(m: MatrixInfo, fabric) -> int:
    w = fabric.weights_per_tile_row(m.bits)
    return math.ceil(m.rows / fabric.tile.rows) * math.ceil(m.cols / w)


def _partition(loads: list[int], parts: int, first: int = 0, last: int = 0) -> list[int]:
    """Split ``loads`` (in order) into ``parts`` non-empty contiguous runs minimizing the
    largest run's sum, the first run carrying ``first`` more and the last ``last`` more (the
    embedding and the lm_head); returns the start index of each run (deterministic: the
    earliest optimal cuts)."""
    n = len(loads)
    prefix = [0]
    for v in loads:
        prefix.append(prefix[-1] + v)
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(parts + 1)]
    cut_at = [[0] * (n + 1) for _ in range(parts + 1)]
    best[0][0] = 0
    for p in range(1, parts + 1):
        extra = (first if p == 1 else 0) + (last if p == parts else 0)
        prev, here, cuts = best[p - 1], best[p], cut_at[p]
        # run p ends at i; at least one load per run before it and after it
        for i in range(p, n - (parts - p) + 1):
            top = prefix[i] + extra
            for j in range(p - 1, i):
                cost = max(prev[j], top - prefix[j])
                if cost < here[i]:
                    here[i], cuts[i] = cost, j
    starts, i = [], n
    for p in range(parts, 0, -1):
        j = cut_at[p][i]
        starts.append(j)
        i = j
    return starts[::-1]


def place(
    matrices: list[MatrixInfo],
    arch,
    fabric,
    dies: int | str = "fabric",
    context: int | None = 2048,
    reserve: int = 0,
    tensors: list[tuple[str, int]] = (),
) -> Placement:
    """Place ``matrices`` (canonical order) on ``fabric``; ``dies``: a number, ``"auto"`` (the
    fewest that fit) or ``"fabric"`` (the fabric's own count). ``reserve``: SRAM bytes per die
    kept for adapters; the KV cache gets the rest. ``context`` None: as many tokens as that
    rest holds (at most the model's ``max_position_embeddings``). ``tensors``: (name, elements)
    of the model's non-matrix tensors (norm gammas, biases), which with the die constants fill
    each die's params region at the start of its SRAM (:mod:`maskc.boot`). Raises FitError
    (exit 4) with the numbers and what would make it fit."""
    layers = arch.num_layers
    if not 0 <= reserve < fabric.die.sram_bytes:
        raise FitError(
            f"{fabric.name}: --reserve-sram {reserve:,} bytes leaves no SRAM for the KV cache "
            f"(a die has {fabric.die.sram_bytes:,})"
        )
    sram = fabric.die.sram_bytes - reserve
    fit_context = context or 1
    per_layer = [0] * layers
    embed_tiles = head_tiles = 0
    for m in matrices:
        t = tiles_of(m, fabric)
        if m.layer is not None:
            per_layer[m.layer] += t
        elif m.role == "embed":
            embed_tiles += t
        else:
            head_tiles += t
    total = embed_tiles + head_tiles + sum(per_layer)
    tpd = fabric.tiles_per_die
    kv_layer = kv_bytes_per_token(arch, 1) * fit_context
    balance = fabric.card is not None  # cards: balance the pipeline's modeled stage times
    fit = {"tpd": tpd, "kv_layer": kv_layer, "sram": sram}
    cost = {
        "layer": layer_cycles(arch, fabric, fit_context),
        "head": fabric.system.cycles_per_tile_op,
        "tied": arch.tie_word_embeddings,
    }

    def split(k: int):
        if balance:
            got = _split_pipeline(per_layer, embed_tiles, head_tiles, k, fit, cost)
            if got is not None:
                return got
        return _split(per_layer, embed_tiles, head_tiles, k)  # (or the numbers of the misfit)

    def fits(k: int) -> bool:
        if balance:
            return _split_pipeline(per_layer, embed_tiles, head_tiles, k, fit, cost) is not None
        return _fits(per_layer, embed_tiles, head_tiles, k, tpd, kv_layer, sram)

    spread = None  # the experts of a layer over several dies (maskc.place.spread)
    if dies == "auto":
        fewest = max(1, min(layers, -(-total // tpd)))  # no fewer dies hold the tiles
        n = next((k for k in range(fewest, layers + 1) if fits(k)), None)
        if n is not None and balance:  # every die of the cards it needs: shorter stages
            per_card = fabric.dies_per_card
            n = min(layers, -(-n // per_card) * per_card)
        if n is None and arch.moe is not None:  # a layer over several dies: its experts
            spread = _spread(matrices, arch, fabric)
            n = None if spread is None else spread.dies
        if n is None:
            raise FitError(
                f"{fabric.name}: the model needs {total:,} tiles and its largest layer alone "
                f"{max(per_layer):,} tiles plus embedding; no split over up to {layers} dies of "
                f"{tpd:,} tiles (and its KV cache for {fit_context} tokens in "
                f"{sram:,} bytes of SRAM) fits"
                + ("" if arch.moe is None else ", nor its experts spread over more dies")
                + ". Use fewer bits, a smaller --context or a fabric with more tiles per die"
            )
        dies = n
    elif dies == "fabric":
        dies = fabric.system.dies
    dies = int(dies)
    if spread is not None:
        die_layers = [spread.layers_of(d) for d in range(dies)]
        need = list(spread.need)
    else:
        if dies < 1 or dies > layers:
            raise InputError(f"--dies must be between 1 and {layers} (the number of layers)")
        starts, ends, need = split(dies)
        die_layers = [list(range(a, b)) for a, b in zip(starts, ends, strict=True)]
    die_of_layer = [0] * layers
    for d, run in enumerate(die_layers):
        for i in run:
            die_of_layer[i] = d
    boot = die_entries(list(tensors), die_of_layer, dies, arch.head_dim)
    params = [region_bytes(e) for e in boot]
    max_ctx = min(
        max(sram - params[d], 0) // kv_bytes_per_token(arch, len(run))
        for d, run in enumerate(die_layers)
        if run
    )
    if context is None:
        context = max(1, min(max_ctx, arch.max_position_embeddings))
    kv_need = [kv_bytes_per_token(arch, len(run)) * context for run in die_layers]
    over = [d for d in range(dies) if need[d] > tpd]
    sram_over = [d for d in range(dies) if kv_need[d] + params[d] > sram]
    if over or sram_over:
        d = (over or sram_over)[0]
        hint = "--dies auto to spread the layers" if dies == 1 else "more dies (--dies auto)"
        raise FitError(
            f"{fabric.name}: does not fit on {dies} die(s): die {d} needs {need[d]:,} tiles of "
            f"{tpd:,} and {kv_need[d] + params[d]:,} bytes of SRAM of {sram:,}"
            + (f" (after --reserve-sram {reserve:,})" if reserve else "")
            + f" for a {context}-token KV cache (model total {total:,} tiles). Try fewer bits "
            f"(--bits 3), {hint}, a smaller --context"
            + (" or --reserve-sram" if reserve else "")
            + ", or a larger fabric"
        )

    cols, rows = fabric.die.tile_columns, fabric.die.tile_rows
    cursors = [serpentine(cols, rows) for _ in range(dies)]
    blocks: list[Block] = []
    for m in matrices:
        e = expert_of(m.name) if spread is not None else None
        if e is not None:
            d = spread.expert_die[m.layer][e]
        elif m.layer is not None:
            d = die_of_layer[m.layer]
        else:
            d = 0 if m.role == "embed" else die_of_layer[-1]
        for r0, nr, c0, nc in cut(m, fabric):
            x, y = next(cursors[d])
            blocks.append(Block(m.name, m.role, m.layer, m.bits, r0, nr, c0, nc, d, x, y))
    report = _report(blocks, fabric, dies, need, die_layers, arch, context, max_ctx, spread)
    if arch.moe is not None:
        report["experts"] = expert_report(blocks, arch, fabric)
    if spread is not None:
        report["experts"]["home_dies"] = list(spread.home)
        report["experts"]["expert_dies"] = [list(x) for x in spread.expert_die]
        for d, row in enumerate(report["per_die"]):
            if not die_layers[d]:
                row["experts_of"] = [{"layer": a, "experts": es} for a, es in spread.served(d)]
    for d, row in enumerate(report["per_die"]):
        row["params_bytes"] = params[d]
    p = Placement(fabric.name, dies, tpd, (cols, rows), tuple(blocks), context, report)
    p.validate()
    report["sram_reserved_for_adapters"] = reserve
    sram_report(report, matrices, fabric, context)
    report["performance"] = modeled_performance(p, arch, fabric, context)
    return p


def expert_report(blocks, arch, fabric) -> dict:
    """Per routed expert of every layer: its die, tiles, the cells its weights fill and their
    share of those tiles' cells; and the totals the modeled chip uses (expert tiles, of which
    ``activation_rate`` fire per token)."""
    moe = arch.moe
    rows: dict[tuple[int, int], dict] = {}
    for b in blocks:
        e = expert_of(b.tensor)
        if e is None:
            continue
        r = rows.setdefault((b.layer, e), {"die": b.die, "tiles": 0, "cells": 0.0})
        r["tiles"] += 1
        r["cells"] += b.rows * b.cols * CELLS_PER_WEIGHT[b.bits]
    cpt = fabric.cells_per_tile
    per_expert = [
        {
            "layer": layer,
            "expert": e,
            "die": r["die"],
            "tiles": r["tiles"],
            "cell_utilization": r["cells"] / (r["tiles"] * cpt),
        }
        for (layer, e), r in sorted(rows.items())
    ]
    tiles = sum(r["tiles"] for r in per_expert)
    util = [r["cell_utilization"] for r in per_expert]
    return {
        "num_experts": moe.num_experts,
        "top_k": moe.top_k,
        "activation_rate": moe.activation_rate,
        "expert_tiles": tiles,
        "cell_utilization": sum(r["cells"] for r in rows.values()) / (tiles * cpt)
        if tiles
        else 0.0,
        "cell_utilization_min": min(util, default=0.0),
        "cell_utilization_max": max(util, default=0.0),
        "per_expert": per_expert,
    }


def _split(per_layer: list[int], embed: int, head: int, k: int):
    """The best split of the layers over ``k`` dies: (start layers, end layers, tiles per die),
    the embedding counted on the first die and the lm_head on the last."""
    starts = _partition(per_layer, k, embed, head)
    ends = [*starts[1:], len(per_layer)]
    need = [sum(per_layer[a:b]) for a, b in zip(starts, ends, strict=True)]
    need[0] += embed
    need[-1] += head
    return starts, ends, need


def _split_pipeline(per_layer: list[int], embed: int, head: int, k: int, fit: dict, cost: dict):
    """The split of the layers over ``k`` dies that balances the pipeline: contiguous runs
    minimizing the slowest die's modeled time per token (``cost["layer"]`` cycles per layer,
    ``cost["head"]`` for the lm_head stage on the last die, or on die 0 when ``cost["tied"]``),
    then that die's tiles, among the runs whose dies hold their tiles and KV cache (``fit``).
    Returns (start layers, end layers, tiles per die), or ``None`` when no split fits.

    A run's cost is computed from its layers alone, so a later change can weigh other units
    (experts) by giving them their own per-unit cycles and tiles here."""
    n = len(per_layer)
    if not 1 <= k <= n:
        return None
    prefix = [0]
    for v in per_layer:
        prefix.append(prefix[-1] + v)
    head_on = 1 if cost["tied"] else k
    none = (math.inf, math.inf)
    best = [[none] * (n + 1) for _ in range(k + 1)]
    cut_at = [[0] * (n + 1) for _ in range(k + 1)]
    best[0][0] = (0.0, 0)
    for p in range(1, k + 1):
        extra = (embed if p == 1 else 0) + (head if p == k else 0)
        head_cycles = cost["head"] if p == head_on else 0
        prev, here, cuts = best[p - 1], best[p], cut_at[p]
        for i in range(p, n - (k - p) + 1):
            for j in range(p - 1, i):
                if prev[j][0] == math.inf:
                    continue
                tiles = prefix[i] - prefix[j] + extra
                if tiles > fit["tpd"] or (i - j) * fit["kv_layer"] > fit["sram"]:
                    continue
                c = max(prev[j], ((i - j) * cost["layer"] + head_cycles, tiles))
                if c < here[i]:
                    here[i], cuts[i] = c, j
    if best[k][n][0] == math.inf:
        return None
    starts, i = [], n
    for p in range(k, 0, -1):
        j = cut_at[p][i]
        starts.append(j)
        i = j
    starts = starts[::-1]
    ends = [*starts[1:], n]
    need = [prefix[b] - prefix[a] for a, b in zip(starts, ends, strict=True)]
    need[0] += embed
    need[-1] += head
    return starts, ends, need


def _fits(per_layer, embed, head, k, tpd, kv_per_layer: int, sram: int) -> bool:
    """Whether ``k`` dies hold the model: tiles per die, and each die's KV cache in its SRAM."""
    starts, ends, need = _split(per_layer, embed, head, k)
    most_layers = max(b - a for a, b in zip(starts, ends, strict=True))
    return max(need) <= tpd and most_layers * kv_per_layer <= sram


def _spread(matrices, arch, fabric):
    """:func:`maskc.place.spread.spread_experts` of the placed matrices."""
    units = [(m.layer, expert_of(m.name), tiles_of(m, fabric), m.role == "embed") for m in matrices]
    return spread_experts(units, arch.num_layers, arch.moe.num_experts, fabric.tiles_per_die)


def _report(blocks, fabric, dies, need, die_layers, arch, context, max_ctx, spread) -> dict:
    cells_per_tile = fabric.cells_per_tile
    used_cells = [0.0] * dies
    layer_tiles: dict[str, int] = {}
    for b in blocks:
        used_cells[b.die] += b.rows * b.cols * CELLS_PER_WEIGHT[b.bits]
        key = "embed" if b.role == "embed" else "lm_head" if b.layer is None else str(b.layer)
        layer_tiles[key] = layer_tiles.get(key, 0) + 1
    per_die = []
    for d in range(dies):
        alloc = need[d] * cells_per_tile
        per_die.append(
            {
                "die": d,
                "layers": [die_layers[d][0], die_layers[d][-1]] if die_layers[d] else [],
                "tiles_used": need[d],
                "tiles_available": fabric.tiles_per_die,
                "tile_utilization": need[d] / fabric.tiles_per_die,
                "cell_utilization_of_used_tiles": used_cells[d] / alloc if alloc else 0.0,
                "padding_cells": int(alloc - used_cells[d]),
                "kv_bytes_per_token": kv_bytes_per_token(arch, len(die_layers[d])),
                "card": fabric.card_of_die(d),
            }
        )
    ep = (spread.home, spread.expert_die) if spread is not None else ()
    links = pipeline_links(arch, fabric, dies, *ep)  # hidden states (int32) per token
    return {
        "fabric": fabric.name,
        "dies": dies,
        "tiles_used": sum(need),
        "tiles_available": fabric.tiles_per_die * dies,
        "per_die": per_die,
        "per_layer_tiles": layer_tiles,
        "context_requested": context,
        "max_context": max_ctx,
        "links": links,
    }
