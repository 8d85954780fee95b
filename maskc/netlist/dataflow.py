"""The dataflow of a model as netlist ops: a Llama-family decoder lowered to the op list the
chip runs (docs/netlist.md, "Ops"). Slots are reused as a datapath's registers would be: ``x``
is the residual stream, ``h8`` a normed act8 vector, ``q``/``k``/``v``/``att`` attention, ...
"""

from __future__ import annotations

from maskc.ir import ModelArch
from maskc.netlist.ops import (
    Add,
    Attention,
    Embed,
    Logits,
    MatMul,
    Op,
    Quantize,
    RmsNorm,
    Rope,
    SwiGlu,
)


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
            Rope("q", "q", a.num_heads),
            Rope("k", "k", a.num_kv_heads),
            Attention(
                i, "q", "k", "v", "att", a.num_heads, a.num_kv_heads, a.head_dim, a.sliding_window
            ),
            Quantize("att", "att8"),
            mm("att8", "self_attn.o_proj.weight", "o"),
            Add("x", "o", "x"),
            norm(p + "post_attention_layernorm.weight", i),
            mm("h8", "mlp.gate_proj.weight", "gate"),
            mm("h8", "mlp.up_proj.weight", "up"),
            SwiGlu("gate", "up", "m8"),
            mm("m8", "mlp.down_proj.weight", "down"),
            Add("x", "down", "x"),
        ]
    head = "model.embed_tokens.weight" if a.tie_word_embeddings else "lm_head.weight"
    ops += [norm("model.norm.weight"), MatMul("h8", "logits", head, None), Logits("logits")]
    return ops
