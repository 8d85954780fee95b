"""Modeled performance of a placed model: the dies as a pipeline of stages joined by links;
tokens/s per user, the pipeline's throughput with several users in flight, bytes over each
link, energy per token, die area used. The model (docs/fabric.md, "Modeled performance"):

* one user's token runs through the dies in order. On a die, decode is a chain of sequential
  *matrix stages*: per decoder layer q/k/v (one stage: they share the input), o, gate/up, down
  (4 stages), plus the lm_head (1 stage) on the die holding it (the last die; die 0 for a head
  tied to the embedding). All tiles of a stage work in parallel, so a stage takes one tile
  operation: ``cycles_per_tile_op / clock``. A mixture of experts adds the router before the
  experts (5 stages per layer: q/k/v, o, router and shared-expert gate, the selected experts'
  and the shared expert's gate/up, their down);
* attention of a layer at context ``c``: ``2 * num_heads * head_dim * c`` multiply-accumulates
  on that layer's attention unit (``units.attention.ops_per_cycle`` per cycle);
* each link crossed hands over one hidden-state vector (``hidden_size`` int32 signals): its
  transfer over the link's bandwidth plus the link's latency. A tied head on a multi-die
  build adds the crossing back from the last die to die 0;
* experts spread over dies (:mod:`maskc.place.spread`): the hidden state goes from home die
  to home die; per layer and expert die ``x`` holding ``n`` of its experts, the home die sends
  the act8 input (:func:`act8_wire_bytes`) and ``x`` sends back the experts' int32 outputs,
  each ``n * top_k / num_experts`` times per token (the expected selections). ``x``'s stage
  time per token is 2 matrix stages (gate/up, down) times ``min(1, n * top_k / num_experts)``
  per layer it serves; they overlap the home die's own expert stages, so latency adds only,
  per layer, its slowest expert die's round trip (both transfers and latencies);
* a die works on one token at a time: with several users in flight the dies and the links are
  the pipeline's stages and the slowest one sets the throughput (a link's stage time is its
  transfer; its latency only delays). Every user in flight keeps its own KV cache, so the
  dies' SRAM bounds the users too;
* energy per token: every placed tile does one tile operation per token (``tile_op_pj``), the
  KV cache read at context ``c`` (``sram_pj_per_byte``), the link bits (each link's pJ/bit),
  and static power (every die's, and every card's ``[card] static_w``) over the time one token
  holds the system: the latency for one user, ``1 / throughput`` with the pipeline full. In a
  mixture of experts only the selected experts' tiles fire: of the routed experts' tiles, the
  expert-activation rate ``top_k / num_experts`` (the expectation when the router spreads
  tokens evenly); every other tile (attention, router, shared expert, embedding, head) fires
  on every token.

Norms, RoPE, SwiGLU and sampling are taken as overlapped with the matrix stages. Everything
is computed from the placement's dies and layers; nothing depends on the order of a dict or
the clock, so the report is deterministic.
"""

from __future__ import annotations

import itertools
import math

from maskc.sram import kv_bytes_per_token

#: Bytes per hidden-state value crossing an inter-die link (an int32 signal).
LINK_BYTES_PER_VALUE = 4

STAGES_PER_LAYER = 4  # q/k/v, o, gate/up, down
MOE_STAGES_PER_LAYER = 5  # q/k/v, o, router, experts' gate/up, experts' down
EXPERT_STAGES = 2  # on a die holding experts away from their layer's home die: gate/up, down


def active_tiles(placement, arch) -> float:
    """Tiles that fire per token: all of them, but of the routed experts' tiles only the
    expert-activation rate (their expected share under even routing)."""
    tiles = len(placement.blocks)
    if arch.moe is None:
        return tiles
    experts = placement.report["experts"]["expert_tiles"]
    return tiles - experts + experts * arch.moe.activation_rate


def act8_wire_bytes(n: int) -> int:
    """Bytes of one act8 vector of ``n`` values on a link: the int8 codes, the mantissa and
    the exponent (2 bytes each), one byte per group shift (groups of 32)."""
    return n + 4 + -(-n // 32)


def head_die(arch, dies: int, home=None) -> int:
    """The die running the lm_head stage: the last layer's (the last die without experts
    spread over dies), or die 0 when the head is the embedding."""
    if arch.tie_word_embeddings:
        return 0
    return dies - 1 if home is None else home[-1]


def pipeline_links(arch, fabric, dies: int, home=None, expert_die=None) -> list[dict]:
    """The links one token crosses, in order: ``from_die``, ``to_die``, ``kind`` (``die`` on one
    card, ``card`` between cards), ``bytes_per_token``, ``link_gb_per_s``, ``latency_ns``,
    ``pj_per_bit``. With experts spread over dies (``home[L]``: layer L's home die,
    ``expert_die[L][e]``: its expert e's die) the hidden state goes from home die to home die,
    and per layer and expert die two more links (``expert_layer``: L): the act8 input out and
    the int32 partial outputs back, per selected expert in expectation (``top_k / num_experts``
    of the die's experts of that layer)."""
    hops: list[tuple[int, int, float, int | None]] = []
    hidden = arch.hidden_size * LINK_BYTES_PER_VALUE  # int32 signals
    if home is None:
        hops = [(d, d + 1, hidden, None) for d in range(dies - 1)]
        last = dies - 1
    else:
        for a, b in itertools.pairwise(home):
            if a != b:
                hops.append((a, b, hidden, None))
        last = home[-1]
    if dies > 1 and head_die(arch, dies, home) == 0 and last != 0:
        hops.append((last, 0, hidden, None))  # back to the tied head's tiles on die 0
    if expert_die is not None:
        rate = arch.moe.activation_rate
        out_b = act8_wire_bytes(arch.hidden_size) * rate
        for layer, dies_of in enumerate(expert_die):
            h = home[layer]
            for x in sorted(set(dies_of) - {h}):
                n = dies_of.count(x)
                hops += [(h, x, n * out_b, layer), (x, h, n * hidden * rate, layer)]
    out = []
    for a, b, nbytes, layer in hops:
        link = fabric.link(a, b)
        out.append(
            {
                "from_die": a,
                "to_die": b,
                "kind": link["kind"],
                "bytes_per_token": nbytes,
                "link_gb_per_s": link["gb_per_s"],
                "latency_ns": link["latency_ns"],
                "pj_per_bit": link["pj_per_bit"],
                **({} if layer is None else {"expert_layer": layer}),
            }
        )
    return out


def stages_per_layer(arch) -> int:
    """Sequential matrix stages of one decoder layer (dense or a mixture of experts)."""
    return STAGES_PER_LAYER if arch.moe is None else MOE_STAGES_PER_LAYER


def layer_cycles(arch, fabric, ctx: int) -> float:
    """Cycles one decoder layer keeps its die busy per token at context ``ctx``."""
    attn = 2 * arch.num_heads * arch.head_dim * ctx / fabric.units.attention.ops_per_cycle
    return stages_per_layer(arch) * fabric.system.cycles_per_tile_op + attn


def modeled_performance(placement, arch, fabric, context: int) -> dict:
    """Numbers at context 1 (no attention) and at ``context`` tokens."""
    report = placement.report
    dies = placement.dies
    clock = fabric.clock_hz
    stage_s = fabric.system.cycles_per_tile_op / clock
    runs = [
        (d["layers"][0], d["layers"][1] + 1) if d["layers"] else (0, 0) for d in report["per_die"]
    ]
    ep = report.get("experts", {})
    home, expert_die = ep.get("home_dies"), ep.get("expert_dies")
    # an expert die's share of a token: per layer it serves, the chance one of its experts
    # is selected, bounded by the expected count (its experts x top_k / num_experts) and 1
    served = [0.0] * dies
    for layer, dies_of in enumerate(expert_die or ()):
        for x in set(dies_of) - {home[layer]}:
            served[x] += min(1.0, dies_of.count(x) * arch.moe.activation_rate)
    hd = head_die(arch, dies, home)
    links = pipeline_links(arch, fabric, dies, home, expert_die)
    for link in links:
        if link["link_gb_per_s"] <= 0:  # only [die] link_gb_per_s may be 0 (a lone die)
            from maskc.errors import FitError

            raise FitError(
                f"{fabric.name}: [die] link_gb_per_s is 0, so its dies cannot hand the hidden "
                f"state on; use --dies 1 or a fabric with a link (a [card] table)"
            )
    tiles = active_tiles(placement, arch)
    placed = len(placement.blocks)
    per_layer = stages_per_layer(arch)
    kv_per_token = kv_bytes_per_token(arch, arch.num_layers)
    cards = fabric.card_of_die(dies - 1) + 1
    static_w = dies * fabric.power.static_w_per_die + (
        cards * fabric.card.static_w if fabric.card is not None else 0.0
    )
    sram_free = [
        fabric.die.sram_bytes - d["params_bytes"] - report.get("sram_reserved_for_adapters", 0)
        for d in report["per_die"]
    ]

    def at(ctx: int) -> dict:
        attn_cycles = (
            2 * arch.num_heads * arch.head_dim * ctx / fabric.units.attention.ops_per_cycle
        )
        stages = []
        for d, (a, b) in enumerate(runs):
            n = b - a
            m_stages = per_layer * n + (1 if d == hd else 0)
            if served[d]:  # an expert die (expected stages: a float)
                m_stages += EXPERT_STAGES * served[d]
            m_s, a_s = m_stages * stage_s, n * attn_cycles / clock
            stages.append(
                {
                    "die": d,
                    "card": fabric.card_of_die(d),
                    "layers": [a, b - 1] if n else [],
                    "matrix_stages": m_stages,
                    "matrix_us": m_s * 1e6,
                    "attention_us": a_s * 1e6,
                    "time_us": (m_s + a_s) * 1e6,
                }
            )
        hops = []
        for link in links:
            transfer = link["bytes_per_token"] / (link["link_gb_per_s"] * 1e9)
            hops.append(
                {
                    "from_die": link["from_die"],
                    "to_die": link["to_die"],
                    "kind": link["kind"],
                    "bytes_per_token": link["bytes_per_token"],
                    "transfer_us": transfer * 1e6,
                    "latency_us": link["latency_ns"] * 1e-3,
                    "energy_mj": link["bytes_per_token"] * 8 * link["pj_per_bit"] * 1e-9,
                    **({"expert_layer": link["expert_layer"]} if "expert_layer" in link else {}),
                }
            )
        # an expert die's stages overlap its home die's (the same two expert stages)
        matrix_s = sum(s["matrix_us"] for s in stages if s["layers"]) * 1e-6
        attn_s = sum(s["attention_us"] for s in stages) * 1e-6
        link_s = sum(h["transfer_us"] + h["latency_us"] for h in hops if "expert_layer" not in h)
        trips: dict[int, dict] = {}  # per layer and expert die: its round trip
        for h in hops:
            if "expert_layer" in h:
                pair = trips.setdefault(h["expert_layer"], {})
                key = tuple(sorted((h["from_die"], h["to_die"])))
                pair[key] = pair.get(key, 0.0) + h["transfer_us"] + h["latency_us"]
        # the expert dies of a layer work in parallel: its slowest round trip counts
        link_s = (link_s + sum(max(t.values()) for t in trips.values())) * 1e-6
        latency = matrix_s + attn_s + link_s
        # the pipeline: dies and links are its stages; the slowest sets the throughput
        slow_name, slow_us = max(
            [(f"die {s['die']}", s["time_us"]) for s in stages]
            + [(f"link {h['from_die']}->{h['to_die']}", h["transfer_us"]) for h in hops],
            key=lambda t: t[1],
        )  # max() keeps the first of equals: deterministic
        fill = max(1, math.ceil(latency / (slow_us * 1e-6) - 1e-9))
        kv_fits = min(
            free // max(kv_bytes_per_token(arch, b - a) * ctx, 1)
            for free, (a, b) in zip(sram_free, runs, strict=True)
        )
        users = max(1, min(fill, kv_fits))
        throughput = min(users / latency, 1e6 / slow_us)
        dynamic = {
            "tiles": tiles * fabric.power.tile_op_pj * 1e-12,
            "kv_cache": ctx * kv_per_token * fabric.power.sram_pj_per_byte * 1e-12,
            "links": sum(h["energy_mj"] for h in hops) * 1e-3,
        }
        # where the time and the energy go (the parts add up to the totals)
        parts_mj = {**dynamic, "static": static_w * latency}
        energy = sum(parts_mj.values())
        full_j = sum(dynamic.values()) + static_w / throughput
        by_kind: dict = {"die": 0, "card": 0}
        for h in hops:
            by_kind[h["kind"]] += h["bytes_per_token"]
        return {
            "context": ctx,
            "latency_us": latency * 1e6,
            "tokens_per_s_per_user": 1.0 / latency,
            "energy_mj_per_token": energy * 1e3,
            "time_us": {
                "matrix_stages": matrix_s * 1e6,
                "attention": attn_s * 1e6,
                "links": link_s * 1e6,
            },
            "energy_mj": {k: v * 1e3 for k, v in parts_mj.items()},
            "pipeline": {
                "slowest_stage": slow_name,
                "slowest_stage_us": slow_us,
                "users_to_fill": fill,
                "users_kv_cache_holds": kv_fits,
                "users_in_flight": users,
                "tokens_per_s": throughput,
                "tokens_per_s_per_user": throughput / users,
                "energy_mj_per_token": full_j * 1e3,
            },
            "link_bytes_per_token": {
                "die_to_die": round(by_kind["die"], 3),
                "card_to_card": round(by_kind["card"], 3),
            },
            "stages": stages,
            "links": hops,
        }

    moe = {}
    if arch.moe is not None:
        moe = {"expert_activation_rate": arch.moe.activation_rate, "tiles_placed": placed}
    return {
        "sequential_stages": arch.num_layers * per_layer + 1,
        "tile_op_ns": stage_s * 1e9,
        "tiles_per_token": tiles,
        **moe,
        "die_area_used_mm2": placed * fabric.tile.area_um2 * 1e-6,
        "dies": dies,
        "cards": cards,
        "dies_per_card": fabric.dies_per_card,
        "static_w": static_w,
        "at_context_1": at(1),
        "at_context": at(context),
    }
