"""Expert parallelism: the experts of a mixture-of-experts layer spread over several dies when
the layer does not fit one (docs/fabric.md, "Experts over several dies").

One pure function, :func:`spread_experts`, used twice: by the placer (``--dies auto`` when no
split of whole layers fits) and by :mod:`maskc.netlist.check`, which recomputes
``placement.expert_dies`` from the matrices' tile counts.

The layout, deterministic, in the model's data-flow order: every decoder layer gets a *home
die* of its own, holding its attention, router, shared expert and KV cache (the embedding on
layer 0's home die, an untied lm_head on the last layer's), then as many of its routed experts
as fit, whole, in expert order; the rest of its experts fill *expert dies*, in expert order,
each expert whole on one die: first the expert die the previous layers left with room (one
expert die may hold experts of several layers), then new ones. Dies are numbered in the order
they are opened: home die of layer 0, its first expert die, home die of layer 1, ... so a
layer's expert dies are near its home die (on the same card when the card has room).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Spread:
    """Where everything goes: ``home[L]`` the home die of layer ``L``, ``expert_die[L][e]`` the
    die of its expert ``e``, ``need[d]`` the tiles of die ``d``."""

    dies: int
    home: tuple[int, ...]
    expert_die: tuple[tuple[int, ...], ...]
    need: tuple[int, ...]

    def layers_of(self, die: int) -> list[int]:
        """The layers whose home die is ``die`` (their KV cache is there)."""
        return [layer for layer, h in enumerate(self.home) if h == die]

    def served(self, die: int) -> list[tuple[int, list[int]]]:
        """``(layer, experts)`` this die holds for a layer whose home die it is not."""
        out = []
        for layer, dies in enumerate(self.expert_die):
            es = [e for e, d in enumerate(dies) if d == die and self.home[layer] != die]
            if es:
                out.append((layer, es))
        return out


def spread_experts(units, layers: int, num_experts: int, tpd: int) -> Spread | None:
    """The layout for ``units``: ``(layer or None, expert or None, tiles, is_embedding)`` of
    every matrix; ``None`` when a home die cannot hold its layer's attention, router and shared
    expert (with the embedding or lm_head) or an expert is larger than a die."""
    fixed = [0] * layers
    experts = [[0] * num_experts for _ in range(layers)]
    embed = head = 0
    for layer, e, tiles, is_embed in units:
        if layer is None:
            if is_embed:
                embed += tiles
            else:
                head += tiles
        elif e is None:
            fixed[layer] += tiles
        else:
            experts[layer][e] += tiles
    fixed[0] += embed
    fixed[-1] += head
    need: list[int] = []
    home, where = [], []
    spill = None  # the expert die being filled
    for layer in range(layers):
        if fixed[layer] > tpd:
            return None
        h = len(need)
        home.append(h)
        need.append(fixed[layer])
        dies, d = [], h
        for t in experts[layer]:
            if t > tpd:
                return None
            if need[d] + t > tpd:  # on to the expert die, or a new one when it is full
                if spill is None or spill == d or need[spill] + t > tpd:
                    spill = len(need)
                    need.append(0)
                d = spill
            need[d] += t
            dies.append(d)
        where.append(tuple(dies))
    return Spread(len(need), tuple(home), tuple(where), tuple(need))
