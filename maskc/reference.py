"""A plain numpy float32 forward pass of a Llama-family decoder: the "float32 reference".

Written to be read like llama2.c: one class, no tricks. It follows Hugging Face's
``LlamaForCausalLM`` / ``MistralForCausalLM`` / ``Qwen2ForCausalLM`` semantics exactly:

* RMSNorm in float32: ``x * 1/sqrt(mean(x**2) + eps) * w``;
* RoPE in the Hugging Face ``rotate_half`` layout (dims ``i`` and ``i + head_dim/2`` form a pair,
  not interleaved neighbours), ``inv_freq = 1 / theta**(arange(0, hd, 2) / hd)`` with optional
  Llama-3.1 frequency scaling (``_compute_llama3_parameters``);
* causal softmax attention with grouped-query KV heads (q head ``h`` reads kv head
  ``h // (num_heads // num_kv_heads)``), optional Mistral sliding window (a query at position
  ``p`` sees keys in ``(p - window, p]``), optional q/k/v biases (Qwen2);
* SiLU-gated MLP ``down(silu(gate(x)) * up(x))``;
* ``lm_head = embed_tokens`` when embeddings are tied;
* Qwen3-MoE's q/k norms: an RMSNorm over ``head_dim`` of every q and k head, before RoPE;
* a mixture of experts (``MixtralForCausalLM``, ``Qwen2MoeForCausalLM``,
  ``Qwen3MoeForCausalLM``) in place of the MLP: router probabilities ``softmax(router(x))`` in
  float32 over all experts, the ``top_k`` most probable (ties to the lowest expert index),
  their probabilities divided by their sum when ``norm_topk_prob`` (Mixtral always), the output
  ``sum_e p_e * expert_e(x)`` over the selected experts, each a SiLU-gated MLP; Qwen2-MoE adds
  ``sigmoid(shared_expert_gate(x)) * shared_expert(x)``. Only the selected experts' weights are
  read.

Weights are fetched by Hugging Face name through ``get_tensor(name) -> float32 ndarray``
(linear weights ``[out, in]``). All activations are float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

GetTensor = Callable[[str], np.ndarray]
#: ``get_rows(name, a, b)``: float32 rows ``a:b`` of a 2-d tensor
GetRows = Callable[[str, int, int], np.ndarray]
#: Rows of the embedding / lm_head read at once when the model is given ``get_rows``
VOCAB_BLOCK = 4096


def rope_inv_freq(arch: Any) -> np.ndarray:
    """RoPE inverse frequencies, float32 ``[head_dim // 2]``, computed as Hugging Face does."""
    hd = arch.head_dim
    inv_freq = 1.0 / (
        np.float32(arch.rope_theta) ** (np.arange(0, hd, 2, dtype=np.int64).astype(np.float32) / hd)
    )
    inv_freq = inv_freq.astype(np.float32)
    rs = arch.rope_scaling
    if rs is None:
        return inv_freq
    if rs.rope_type != "llama3":
        raise ValueError(f"rope_scaling type {rs.rope_type!r} is not supported (only 'llama3')")
    # transformers' _compute_llama3_parameters, step by step (float32 like the torch code).
    factor = rs.factor
    old_len = rs.original_max_position_embeddings
    low_freq_wavelen = old_len / rs.low_freq_factor
    high_freq_wavelen = old_len / rs.high_freq_factor
    wavelen = (2 * math.pi / inv_freq).astype(np.float32)
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq).astype(np.float32)
    smooth = (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return np.where(is_medium, smoothed, scaled).astype(np.float32)


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """``x``: float32 ``[T, D]``, ``w``: ``[D]`` -> float32 ``[T, D]``."""
    var = np.mean(x * x, axis=-1, keepdims=True, dtype=np.float32)
    return (x * (np.float32(1.0) / np.sqrt(var + np.float32(eps)))) * w


def silu(x: np.ndarray) -> np.ndarray:
    """``x * sigmoid(x)``, float32 (exp overflow for very negative x gives the right 0)."""
    with np.errstate(over="ignore"):
        return x / (np.float32(1.0) + np.exp(-x))


def rotate_half(x: np.ndarray) -> np.ndarray:
    """``[..., hd]``: ``(x1, x2) -> (-x2, x1)`` where x1, x2 are the two halves."""
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, float32; rows of all ``-inf`` are not expected."""
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


#: The names of a SiLU-gated MLP's gate, up and down projections
MLP_NAMES = ("gate_proj", "up_proj", "down_proj")


class FloatLlama:
    """A float32 Llama forward pass with a KV cache.

    ``arch`` needs ``vocab_size, hidden_size, intermediate_size, num_layers, num_heads,
    num_kv_heads, head_dim, rms_norm_eps, rope_theta, rope_scaling, tie_word_embeddings,
    attention_bias, sliding_window`` (see :class:`maskc.ir.ModelArch`). ``get_tensor(name)``
    returns a float32 ndarray by Hugging Face name. With ``cache_weights=False`` each layer's
    weights are fetched when used and dropped right after (peak memory: one layer, or the
    embedding matrix). With ``get_rows`` as well (:data:`GetRows`), the embedding and the
    lm_head are read :data:`VOCAB_BLOCK` rows at a time instead (peak memory: one layer).
    """

    def __init__(
        self,
        arch: Any,
        get_tensor: GetTensor,
        cache_weights: bool = True,
        get_rows: GetRows | None = None,
    ) -> None:
        if arch.num_heads % arch.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
        self.arch = arch
        self._get_tensor = get_tensor
        self._cache: dict[str, np.ndarray] | None = {} if cache_weights else None
        self._get_rows = None if cache_weights else get_rows
        self.inv_freq = rope_inv_freq(arch)
        #: optional ``observer(layer, site, activations)``, see :meth:`block`
        self.observer: Callable[[int, str, np.ndarray], None] | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the KV cache: the next forward must start at position 0."""
        # Per layer: keys and values, float32 [num_kv_heads, positions, head_dim].
        self.k_cache: list[np.ndarray | None] = [None] * self.arch.num_layers
        self.v_cache: list[np.ndarray | None] = [None] * self.arch.num_layers
        self.pos = 0

    def _get(self, name: str) -> np.ndarray:
        if self._cache is None:
            return np.asarray(self._get_tensor(name), dtype=np.float32)
        if name not in self._cache:
            self._cache[name] = np.asarray(self._get_tensor(name), dtype=np.float32)
        return self._cache[name]

    def _layer(self, i: int) -> dict[str, np.ndarray]:
        p = f"model.layers.{i}."
        names = [
            "input_layernorm.weight",
            "self_attn.q_proj.weight",
            "self_attn.k_proj.weight",
            "self_attn.v_proj.weight",
            "self_attn.o_proj.weight",
            "post_attention_layernorm.weight",
        ]
        if self.arch.moe is None:
            names += ["mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"]
        if self.arch.attention_bias:
            names += ["self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"]
        if self.arch.qk_norm:
            names += ["self_attn.q_norm.weight", "self_attn.k_norm.weight"]
        return {n: self._get(p + n) for n in names}

    def _rope(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """cos, sin: float32 ``[T, 1, head_dim]`` for the given positions."""
        freqs = positions.astype(np.float32)[:, None] * self.inv_freq[None, :]
        emb = np.concatenate([freqs, freqs], axis=-1)
        return np.cos(emb)[:, None, :], np.sin(emb)[:, None, :]

    def _attention(self, i: int, x: np.ndarray, w: dict[str, np.ndarray], start: int) -> np.ndarray:
        """One attention block. ``x``: normed float32 ``[T, hidden]`` -> ``[T, hidden]``."""
        a = self.arch
        t = x.shape[0]
        q = x @ w["self_attn.q_proj.weight"].T
        k = x @ w["self_attn.k_proj.weight"].T
        v = x @ w["self_attn.v_proj.weight"].T
        if a.attention_bias:
            q = q + w["self_attn.q_proj.bias"]
            k = k + w["self_attn.k_proj.bias"]
            v = v + w["self_attn.v_proj.bias"]
        q = q.reshape(t, a.num_heads, a.head_dim)
        k = k.reshape(t, a.num_kv_heads, a.head_dim)
        v = v.reshape(t, a.num_kv_heads, a.head_dim)
        if a.qk_norm:  # Qwen3: each head normalized over head_dim, before RoPE
            q = rms_norm(q, w["self_attn.q_norm.weight"], a.rms_norm_eps)
            k = rms_norm(k, w["self_attn.k_norm.weight"], a.rms_norm_eps)
        positions = np.arange(start, start + t)
        cos, sin = self._rope(positions)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        # Append to the cache ([kv_heads, positions, hd]); keep only positions < start first.
        k, v = k.transpose(1, 0, 2), v.transpose(1, 0, 2)
        if start > 0:
            k = np.concatenate([self.k_cache[i][:, :start], k], axis=1)
            v = np.concatenate([self.v_cache[i][:, :start], v], axis=1)
        self.k_cache[i], self.v_cache[i] = k, v
        # Mask: key j is visible to query p iff j <= p (and j > p - window with a window).
        kpos = np.arange(start + t)
        visible = kpos[None, :] <= positions[:, None]
        if a.sliding_window is not None:
            visible &= kpos[None, :] > positions[:, None] - a.sliding_window
        group = a.num_heads // a.num_kv_heads
        scale = np.float32(1.0 / math.sqrt(a.head_dim))
        out = np.empty((t, a.num_heads, a.head_dim), dtype=np.float32)
        for h in range(a.num_heads):
            kv = h // group
            scores = (q[:, h, :] @ k[kv].T) * scale  # [T, start + T]
            scores = np.where(visible, scores, np.float32(-np.inf))
            out[:, h, :] = softmax(scores) @ v[kv]
        out = out.reshape(t, a.num_heads * a.head_dim)
        if self.observer:
            self.observer(i, "o_in", out)
        return out @ w["self_attn.o_proj.weight"].T

    def block(self, i: int, x: np.ndarray, start_pos: int) -> np.ndarray:
        """Decoder layer ``i`` on the residual stream ``x`` float32 ``[T, hidden]`` at positions
        ``start_pos ..``; updates layer ``i``'s KV cache. If ``self.observer`` is set it is called
        as ``observer(i, site, activations)`` with the input of every linear layer: ``site`` is
        ``"attn_in"`` (q/k/v), ``"o_in"``, ``"mlp_in"`` (gate/up; a mixture's router and shared
        expert: every token) or ``"down_in"``; in a mixture of experts ``"experts.E.mlp_in"``
        (the rows of ``mlp_in`` of the tokens that selected expert E, in token order) and
        ``"experts.E.down_in"`` (expert E's SwiGLU output on those rows), for the selected
        experts only, in increasing E, and ``"shared_expert.down_in"``."""
        a = self.arch
        obs = self.observer
        w = self._layer(i)
        h = rms_norm(x, w["input_layernorm.weight"], a.rms_norm_eps)
        if obs:
            obs(i, "attn_in", h)
        x = x + self._attention(i, h, w, start_pos)
        h = rms_norm(x, w["post_attention_layernorm.weight"], a.rms_norm_eps)
        if obs:
            obs(i, "mlp_in", h)
        if a.moe is not None:
            return x + self._experts(i, h)
        act = silu(h @ w["mlp.gate_proj.weight"].T) * (h @ w["mlp.up_proj.weight"].T)
        if obs:
            obs(i, "down_in", act)
        return x + act @ w["mlp.down_proj.weight"].T

    def _expert(self, i: int, prefix: str, names: tuple[str, str, str], h: np.ndarray, site: str):
        """One SiLU-gated expert MLP of layer ``i`` (gate, up, down named ``prefix + names``)."""
        gate, up, down = (self._get(prefix + n + ".weight") for n in names)
        act = silu(h @ gate.T) * (h @ up.T)
        if self.observer:
            self.observer(i, site, act)
        return act @ down.T

    def _experts(self, i: int, h: np.ndarray) -> np.ndarray:
        """The mixture of experts of layer ``i`` on the normed ``h`` float32 ``[T, hidden]``."""
        moe = self.arch.moe
        mixtral = self.arch.architecture == "MixtralForCausalLM"
        p = f"model.layers.{i}." + ("block_sparse_moe." if mixtral else "mlp.")
        names = ("w1", "w3", "w2") if mixtral else ("gate_proj", "up_proj", "down_proj")
        probs = softmax(h @ self._get(p + "gate.weight").T)  # [T, num_experts]
        # the top_k experts of each token, most probable first, ties to the lowest index
        chosen = np.argsort(-probs, axis=-1, kind="stable")[:, : moe.top_k]  # [T, top_k]
        weight = np.take_along_axis(probs, chosen, axis=-1)
        if moe.norm_topk_prob:
            weight = weight / np.sum(weight, axis=-1, keepdims=True)
        out = np.zeros_like(h)
        for e in np.unique(chosen).tolist():  # only the experts some token selected
            tok, slot = np.nonzero(chosen == e)
            if self.observer:
                self.observer(i, f"experts.{e}.mlp_in", h[tok])
            y = self._expert(i, f"{p}experts.{e}.", names, h[tok], f"experts.{e}.down_in")
            out[tok] += y * weight[tok, slot][:, None]
        if moe.shared_expert_intermediate_size:  # Qwen2-MoE: on every token, gated
            y = self._expert(i, p + "shared_expert.", MLP_NAMES, h, "shared_expert.down_in")
            g = h @ self._get(p + "shared_expert_gate.weight").T  # [T, 1]
            out += y / (np.float32(1.0) + np.exp(-g))
        return out

    def forward(self, tokens: list[int], start_pos: int = 0) -> np.ndarray:
        """Run ``tokens`` at positions ``start_pos, start_pos + 1, ...``.

        The KV cache must hold at least ``start_pos`` positions (entries past ``start_pos`` are
        discarded, so ``forward(prompt)`` restarts from scratch). Returns float32 logits
        ``[len(tokens), vocab_size]``.
        """
        a = self.arch
        if not tokens:
            raise ValueError("forward needs at least one token")
        if not 0 <= start_pos <= self.pos:
            raise ValueError(f"start_pos {start_pos} is past the cached {self.pos} positions")
        ids = np.asarray(tokens, dtype=np.int64)
        if ids.min() < 0 or ids.max() >= a.vocab_size:
            raise ValueError("token id outside the vocabulary")
        x = self._embed(ids)  # [T, hidden]
        for i in range(a.num_layers):
            x = self.block(i, x, start_pos)
        x = rms_norm(x, self._get("model.norm.weight"), a.rms_norm_eps)
        head = "model.embed_tokens.weight" if a.tie_word_embeddings else "lm_head.weight"
        self.pos = start_pos + len(tokens)
        if self._get_rows is None:
            return (x @ self._get(head).T).astype(np.float32, copy=False)
        out = np.empty((len(x), a.vocab_size), dtype=np.float32)
        for r in range(0, a.vocab_size, VOCAB_BLOCK):
            w = self._get_rows(head, r, min(r + VOCAB_BLOCK, a.vocab_size))
            out[:, r : r + len(w)] = x @ w.T
        return out

    def _embed(self, ids: np.ndarray) -> np.ndarray:
        """The embedding rows of ``ids``, float32 ``[T, hidden]``."""
        name = "model.embed_tokens.weight"
        if self._get_rows is None:
            return self._get(name)[ids].astype(np.float32)
        x = np.empty((len(ids), self.arch.hidden_size), dtype=np.float32)
        for r in np.unique(ids // VOCAB_BLOCK).tolist():  # only the blocks the tokens are in
            a = r * VOCAB_BLOCK
            w = self._get_rows(name, a, min(a + VOCAB_BLOCK, self.arch.vocab_size))
            sel = (ids >= a) & (ids < a + len(w))
            x[sel] = w[ids[sel] - a]
        return x


def greedy_generate(model: FloatLlama, prompt_tokens: list[int], max_new_tokens: int) -> list[int]:
    """Greedy decoding: the ``max_new_tokens`` generated ids (prompt excluded).

    Restarts the model's KV cache. Ties go to the lowest id. Does not stop at EOS.
    """
    if max_new_tokens <= 0:
        return []
    model.reset()
    logits = model.forward(list(prompt_tokens), 0)
    out: list[int] = []
    pos = len(prompt_tokens)
    while True:
        nxt = int(np.argmax(logits[-1]))  # argmax returns the first (lowest) index on ties
        out.append(nxt)
        if len(out) == max_new_tokens:
            return out
        logits = model.forward([nxt], pos)
        pos += 1
