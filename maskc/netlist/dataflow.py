"""The dataflow of a model as netlist ops: a Llama-family decoder lowered to the op list the
chip runs (docs/netlist.md, "Ops"). Slots are reused as a datapath's registers would be: ``x``
is the residual stream, ``h8`` a normed act8 vector, ``q``/``k``/``v``/``att`` attention, ...
"""

from __future__ import annotations

from maskc.ir import ModelArch, moe_tensors
from maskc.netlist.ops import (
    Add,
    Attention,
    Embed,
    Experts,
    GateScale,
    HeadNorm,
    Logits,
    MatMul,
    Op,
    Quantize,
    RmsNorm,
    Rope,
    Route,
    SwiGlu,
)


def norm_dim(arch: ModelArch, name: str) -> int:
    """``D`` of the norm weight ``name``: ``head_dim`` for a per-head norm (q/k), else the
    hidden size."""
    head = name.endswith(("self_attn.q_norm.weight", "self_attn.k_norm.weight"))
    return arch.head_dim if head else arch.hidden_size


def head_eps_d(arch: ModelArch) -> int:
    """``eps_d`` of a per-head norm (``D = head_dim``; docs/numerics.md)."""
    return round(arch.head_dim * arch.rms_norm_eps * 2.0**40)


def moe_ops(arch: ModelArch, i: int) -> list[Op]:
    """Layer ``i``'s mixture of experts, from the normed ``h8`` to the residual add: the
    router's scores and the selection, Qwen2-MoE's gated shared expert, the experts."""
    specs = moe_tensors(arch, i)
    router = specs[0].name
    ops: list[Op] = [
        MatMul("h8", "router", router, None),
        Route("router", "sel", arch.moe.top_k, int(arch.moe.norm_topk_prob)),
    ]
    if arch.moe.shared_expert_intermediate_size:
        sg, g, u, d = (s.name for s in specs[1:5])
        ops += [
            MatMul("h8", "sgate", sg, None),
            MatMul("h8", "gate", g, None),
            MatMul("h8", "up", u, None),
            SwiGlu("gate", "up", "m8"),
            MatMul("m8", "shared", d, None),
            GateScale("sgate", "shared", "shared"),
        ]
    e0 = [s.name for s in specs if s.expert == 0]
    pat = [n.replace(".experts.0.", ".experts.{e}.", 1) for n in e0]
    ops.append(Experts("h8", "sel", "moe", i, arch.moe.num_experts, *pat))
    if arch.moe.shared_expert_intermediate_size:
        ops.append(Add("moe", "shared", "moe"))
    return [*ops, Add("x", "moe", "x")]


def build_ops(arch: ModelArch, norm_fracs: dict[str, int], eps_d: int) -> list[Op]:
    """The ops of ``arch``: embedding, per layer attention and MLP blocks with their residual
    adds, final norm, lm_head (the embedding when tied), logits. ``norm_fracs``: each norm
    weight's ``gamma_frac``."""
    a = arch
    ops: list[Op] = [Embed(matrix="model.embed_tokens.weight", out="x")]

    def norm(name: str, layer: int | None = None) -> RmsNorm:
        return RmsNorm("x", "h8", name, norm_fracs[name], eps_d, layer)

    for i in range(a.num_layers):
        p = f"model.layers.{i}."

        def mm(src: str, name: str, out: str, bias: str | None = None, p: str = p) -> MatMul:
            b = (p + bias) if bias and a.attention_bias else None
            return MatMul(src, out, p + name, b)

        ops += [
            norm(p + "input_layernorm.weight", i),
            mm("h8", "self_attn.q_proj.weight", "q", "self_attn.q_proj.bias"),
            mm("h8", "self_attn.k_proj.weight", "k", "self_attn.k_proj.bias"),
            mm("h8", "self_attn.v_proj.weight", "v", "self_attn.v_proj.bias"),
        ]
        if a.qk_norm:  # Qwen3: each q and k head normed before RoPE
            gq, gk = p + "self_attn.q_norm.weight", p + "self_attn.k_norm.weight"
            ops += [
                HeadNorm("q", "q", a.num_heads, gq, norm_fracs[gq], head_eps_d(a), i),
                HeadNorm("k", "k", a.num_kv_heads, gk, norm_fracs[gk], head_eps_d(a), i),
            ]
        ops += [
            Rope("q", "q", a.num_heads),
            Rope("k", "k", a.num_kv_heads),
            Attention(
                i, "q", "k", "v", "att", a.num_heads, a.num_kv_heads, a.head_dim, a.sliding_window
            ),
            Quantize("att", "att8"),
            mm("att8", "self_attn.o_proj.weight", "o"),
            Add("x", "o", "x"),
            norm(p + "post_attention_layernorm.weight", i),
        ]
        if a.moe is not None:
            ops += moe_ops(a, i)
            continue
        ops += [
            mm("h8", "mlp.gate_proj.weight", "gate"),
            mm("h8", "mlp.up_proj.weight", "up"),
            SwiGlu("gate", "up", "m8"),
            mm("m8", "mlp.down_proj.weight", "down"),
            Add("x", "down", "x"),
        ]
    head = "model.embed_tokens.weight" if a.tie_word_embeddings else "lm_head.weight"
    ops += [norm("model.norm.weight"), MatMul("h8", "logits", head, None), Logits("logits")]
    return ops
