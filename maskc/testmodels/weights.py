"""The seeded weights of a test model.

Each tensor is drawn in float32 from its own generator, seeded with ``seed`` and
:func:`stable_int` of the tensor name, then cast to the preset's dtype (round to nearest even).

Weight statistics (chosen so a forward pass neither explodes nor vanishes, and greedy decoding
from a random model is not stuck on one token):

* embeddings ``[vocab, hidden]``: normal(0, 0.2);
* linear weights ``[out, in]``: normal(0, 1) / sqrt(in) (unit gain: q, k, v, gate and up
  outputs, and a mixture's router logits, have RMS ~1 since their input is RMS-normalized),
  except the residual-branch outputs ``o_proj`` and the down matrices (``down_proj``, an
  expert's and the shared expert's), scaled by a further 2.5;
* untied ``lm_head`` ``[vocab, hidden]``: normal(0, 1) / sqrt(hidden) * 2 (logit std ~2);
* RMSNorm weights ``[hidden]`` (Qwen3's q/k norms ``[head_dim]``): 1 + normal(0, 0.05);
* q/k/v biases (Qwen2) ``[out]``: normal(0, 0.1);
* embedding rows beyond the tokenizer's vocabulary (padding, as in Qwen2) are zero, so with a
  tied head their logit is exactly 0 and greedy decoding never picks them.

Why the residual branches are strong relative to the embedding: with a tied head, the logit of
token j is ``rmsnorm(h) . E[j]``; if the residual stream ``h`` stays close to the input
embedding ``E[t]``, token t wins every step and greedy decoding repeats the last prompt token
forever. With the embedding-to-branch ratio above (0.2 vs ~2.5 per sub-layer; the residual RMS
grows to ~2-4 after two layers), a numpy reference forward pass over the presets and seeds 0-3
gave 10-12 distinct tokens in 24 greedy steps on average, about 1/3 of steps repeating the
previous token, median top-1/top-2 logit margin ~0.5 (tied logit std ~1.5).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from maskc.ir import expected_tensors
from maskc.testmodels.spec import DTYPES, TinySpec

#: Standard deviation of embedding entries.
EMBED_STD = 0.2
#: Extra gain of o_proj and down_proj over the unit-gain 1/sqrt(fan_in) initialization.
RESIDUAL_BRANCH_GAIN = 2.5
#: The matrices that write the residual stream (a mixture's experts' and shared expert's down)
BRANCH_OUTPUT_ROLES = ("o_proj", "down_proj", "expert_down_proj", "shared_down_proj")


def stable_int(name: str) -> int:
    """A 64-bit integer from SHA-256 of ``name``: identical in every process and platform."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")


def tensor_rng(seed: int, name: str) -> np.random.Generator:
    """The generator of tensor ``name``: seeded with ``seed`` and :func:`stable_int` of ``name``."""
    return np.random.default_rng(np.random.SeedSequence([seed, stable_int(name)]))


def make_weights(spec: TinySpec, seed: int) -> dict[str, np.ndarray]:
    """All tensors of ``spec`` in ``expected_tensors`` order, cast to the storage dtype.

    Each array has the shape :func:`maskc.ir.expected_tensors` gives and dtype float32, float16
    or ``ml_dtypes.bfloat16`` per ``spec.dtype``. See the module docstring for the statistics.
    """
    arch = spec.to_arch()
    np_dtype = DTYPES[spec.dtype][0]
    branch_gain = np.float32(RESIDUAL_BRANCH_GAIN)
    n_tok = spec.resolved_tokenizer_vocab_size
    out: dict[str, np.ndarray] = {}
    for t in expected_tensors(arch):
        z = tensor_rng(seed, t.name).standard_normal(t.shape, dtype=np.float32)
        if t.role == "embed":
            w = z * np.float32(EMBED_STD)
            w[n_tok:] = 0.0
        elif t.role == "lm_head":
            w = z * np.float32(2.0 / math.sqrt(t.shape[1]))
            w[n_tok:] = 0.0
        elif t.role.endswith("norm"):
            w = np.float32(1.0) + z * np.float32(0.05)
        elif t.role.endswith("bias"):
            w = z * np.float32(0.1)
        else:
            w = z * np.float32(1.0 / math.sqrt(t.shape[1]))
            if t.role in BRANCH_OUTPUT_ROLES:
                w *= branch_gain
        out[t.name] = np.ascontiguousarray(w.astype(np.float32).astype(np_dtype))
    return out
