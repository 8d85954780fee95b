"""Modeled performance of a placed model: tokens/s per user, latency and energy per token, die
area used. The model (docs/fabric.md, "Modeled performance"):

* decode is a pipeline of *stages* that must run one after the other for one user's token:
  per decoder layer q/k/v (one stage: they share the input), o, gate/up, down (4 stages), then
  the lm_head (1 stage). All tiles of a stage work in parallel, so a stage takes one tile
  operation: ``cycles_per_tile_op / clock``. A mixture of experts adds the router before the
  experts (5 stages per layer: q/k/v, o, router and shared-expert gate, the selected experts'
  and the shared expert's gate/up, their down);
* attention of a layer at context ``c``: ``2 * num_heads * head_dim * c`` multiply-accumulates
  on that layer's attention unit (``units.attention.ops_per_cycle`` per cycle);
* each die boundary adds the transfer of one hidden-state vector over the link;
* energy per token: every placed tile does one tile operation per token
  (``tile_op_pj``), the KV cache read at context ``c`` (``sram_pj_per_byte``), link bits, and
  static power over the token's latency for every die. In a mixture of experts only the
  selected experts' tiles fire: of the routed experts' tiles, the expert-activation rate
  ``top_k / num_experts`` (the expectation when the router spreads tokens evenly); every other
  tile (attention, router, shared expert, embedding, head) fires on every token.
Norms, RoPE, SwiGLU and sampling are taken as overlapped with the matrix stages.
"""

from __future__ import annotations

from maskc.sram import kv_bytes_per_token

#: Bytes per hidden-state value crossing an inter-die link (an int32 signal).
LINK_BYTES_PER_VALUE = 4

STAGES_PER_LAYER = 4  # q/k/v, o, gate/up, down
MOE_STAGES_PER_LAYER = 5  # q/k/v, o, router, experts' gate/up, experts' down


def active_tiles(placement, arch) -> float:
    """Tiles that fire per token: all of them, but of the routed experts' tiles only the
    expert-activation rate (their expected share under even routing)."""
    tiles = len(placement.blocks)
    if arch.moe is None:
        return tiles
    experts = placement.report["experts"]["expert_tiles"]
    return tiles - experts + experts * arch.moe.activation_rate


def modeled_performance(placement, arch, fabric, context: int) -> dict:
    """Numbers at context 1 (no attention) and at ``context`` tokens."""
    clock = fabric.clock_hz
    stage_s = fabric.system.cycles_per_tile_op / clock
    per_layer = STAGES_PER_LAYER if arch.moe is None else MOE_STAGES_PER_LAYER
    stages = arch.num_layers * per_layer + 1
    link_bytes = arch.hidden_size * LINK_BYTES_PER_VALUE  # one int32 signal per token
    link_s = (placement.dies - 1) * link_bytes / (fabric.die.link_gb_per_s * 1e9)
    tiles = active_tiles(placement, arch)
    placed = len(placement.blocks)
    kv_per_token = kv_bytes_per_token(arch, arch.num_layers)

    def at(ctx: int) -> dict:
        attn_cycles = (
            2 * arch.num_heads * arch.head_dim * ctx / fabric.units.attention.ops_per_cycle
        )
        matrix_s, attn_s = stages * stage_s, arch.num_layers * attn_cycles / clock
        latency = matrix_s + attn_s + link_s
        # where the time and the energy go (the parts add up to the totals)
        parts_mj = {
            "tiles": tiles * fabric.power.tile_op_pj * 1e-12,
            "kv_cache": ctx * kv_per_token * fabric.power.sram_pj_per_byte * 1e-12,
            "links": (placement.dies - 1) * link_bytes * 8 * fabric.power.link_pj_per_bit * 1e-12,
            "static": placement.dies * fabric.power.static_w_per_die * latency,
        }
        energy = parts_mj["tiles"] + parts_mj["kv_cache"] + parts_mj["links"] + parts_mj["static"]
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
        }

    moe = {}
    if arch.moe is not None:
        moe = {"expert_activation_rate": arch.moe.activation_rate, "tiles_placed": placed}
    return {
        "sequential_stages": stages,
        "tile_op_ns": stage_s * 1e9,
        "tiles_per_token": tiles,
        **moe,
        "die_area_used_mm2": placed * fabric.tile.area_um2 * 1e-6,
        "at_context_1": at(1),
        "at_context": at(context),
    }
