"""SYNTHETIC weights for shape tests (``maskc testmodel --shape``), generated in row blocks.

These are **not a real model's weights**. They are random numbers with a few statistics chosen
to load maskc's quantizer roughly the way a trained model does (the error and the cost of
per-group 3/4-bit quantization depend on the spread of rows, heavy tails inside a group and
input channels much larger than the rest); nothing here is fitted to a real checkpoint, and a
model made of them does not produce meaningful text.

Statistics. ``z`` is standard normal (float32); ``h(z) = (z + 0.1 z^3) / sqrt(1.75)`` has unit
variance and excess kurtosis 3.6 (tails like a Student-t with ~7 degrees of freedom);
``s_a(n) = (1 + a n)^2 / sqrt(1 + 6a^2 + 3a^4)`` with ``n`` standard normal is a positive
scale with mean square 1, skewed like a log-normal, spread ~2a (a = 0.15: ~30%).

* linear weights ``[out, in]`` (q, k, v, o, gate, up, down, an untied lm_head):
  ``w[i, j] = h(z) / sqrt(in) * r_i * c_j`` with a per-row scale ``r_i = s_0.15`` (rows' RMS
  spread ~30%) and a per-input-column scale ``c_j = s_0.1`` (~20%);
* outlier input channels: ``max(2, hidden // 1024)`` channels of the hidden state (4 for
  hidden 4096), drawn once per model and the same in every layer, as trained LLMs' large
  activation channels are; in q, k, v, gate and up (the matrices that read the normalized
  hidden state) their columns are further multiplied by a factor uniform in [4, 16], drawn per
  matrix and channel;
* embedding ``[vocab, hidden]``: ``0.02 h(z) r_i c_j`` (same row and column spreads, no
  outliers); rows beyond the tokenizer's vocabulary (padding, as in Qwen2.5) are zero, in an
  untied lm_head too;
* RMSNorm weights: ``m s_0.15(n)`` per channel with mean level ``m`` rising with depth, from
  0.2 to 0.6 (input norm) and 0.3 to 0.6 (post-attention norm) from the first to the last
  layer, and 1.5 for the final norm;
* q/k/v biases (Qwen2): ``0.1 h(z)``.

Determinism and block independence: a tensor is cut into *seed blocks* of
``max(1, SEED_BLOCK_ELEMENTS // columns)`` rows, a function of the shape only; seed block ``b``
of tensor ``name`` is drawn from ``default_rng(SeedSequence([seed, stable_int(name), 0, b]))``
and its row and column scales from streams ``1`` and ``2`` of the same tensor. The values are
then the same whatever number of seed blocks is generated and written at a time (``chunk``),
and only IEEE-exact float32 operations (+, *, /, sqrt) are used after the normal draws, so no
transcendental function of a particular SIMD library decides a bit. Casts to BF16/F16 round to
nearest even (ml_dtypes / numpy).

Speed: the normal draws dominate (numpy's ziggurat, ~75 M float32 values/s per core on the
2-core benchmark machine); the transform and the cast add ~30%. docs/benchmarks.md has the
measured rate.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from maskc.ir import ModelArch, TensorSpec
from maskc.testmodels.weights import stable_int

#: Elements per seed block (1 MiB of float32): a block is drawn from its own generator.
SEED_BLOCK_ELEMENTS = 1 << 18
#: Seed blocks generated and written at a time by default (16 MiB of float32).
DEFAULT_CHUNK_BLOCKS = 16
#: Coefficient of the cubic tail ``z + TAIL z^3``.
TAIL = 0.1
#: Spreads ``a`` of the row and column scales ``s_a``.
ROW_SPREAD = 0.15
COL_SPREAD = 0.1
NORM_SPREAD = 0.15
#: Outlier input channels per 1024 hidden channels (at least :data:`MIN_OUTLIERS`).
OUTLIERS_PER_1024 = 1
MIN_OUTLIERS = 2
#: Range of the factor an outlier channel's column gets in q/k/v/gate/up.
OUTLIER_GAIN = (4.0, 16.0)
#: Matrices whose input is the normalized hidden state (and so carry the outlier channels).
OUTLIER_ROLES = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
EMBED_STD = 0.02
BIAS_STD = 0.1
#: RMSNorm mean levels: (first layer, last layer) of each layer norm; the final norm.
INPUT_NORM_LEVEL = (0.2, 0.6)
POST_NORM_LEVEL = (0.3, 0.6)
FINAL_NORM_LEVEL = 1.5

_F32 = np.float32


def _tail_norm() -> float:
    """``1 / sqrt(E[(z + TAIL z^3)^2])`` = ``1 / sqrt(1 + 6 TAIL + 15 TAIL^2)``."""
    return 1.0 / math.sqrt(1.0 + 6.0 * TAIL + 15.0 * TAIL * TAIL)


def _spread(n: np.ndarray, a: float) -> np.ndarray:
    """``s_a(n)``: a positive float32 scale with mean square 1 (module docstring)."""
    inv = _F32(1.0 / math.sqrt(1.0 + 6.0 * a * a + 3.0 * a**4))
    s = n * _F32(a)
    s += _F32(1.0)
    s *= s
    s *= inv
    return s


def _rng(seed: int, name: str, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stable_int(name), *stream]))


def outlier_channels(seed: int, hidden: int) -> np.ndarray:
    """The model's outlier hidden channels (sorted), the same for every layer."""
    k = min(hidden, max(MIN_OUTLIERS, hidden * OUTLIERS_PER_1024 // 1024))
    rng = _rng(seed, "outlier-channels")
    return np.sort(rng.choice(hidden, size=k, replace=False))


class TensorGenerator:
    """The synthetic values of one tensor, produced as row chunks in its storage dtype.

    ``spec`` is the tensor (:func:`maskc.ir.expected_tensors`), ``arch`` the model,
    ``n_tok`` the tokenizer's vocabulary (embedding rows from it on are zero), ``outliers``
    :func:`outlier_channels`, ``dtype`` the numpy storage dtype.
    """

    def __init__(
        self,
        spec: TensorSpec,
        arch: ModelArch,
        seed: int,
        n_tok: int,
        outliers: np.ndarray,
        dtype: np.dtype,
    ) -> None:
        self.spec = spec
        self.seed = seed
        self.dtype = np.dtype(dtype)
        shape = spec.shape
        self.rows, self.cols = (shape[0], shape[1]) if len(shape) == 2 else (1, shape[0])
        self.block_rows = max(1, SEED_BLOCK_ELEMENTS // self.cols)
        self.blocks = -(-self.rows // self.block_rows)
        self.zero_from = self.rows
        role = spec.role
        tail = _tail_norm()
        if len(shape) == 1:
            self.row = None
            self.col = self._vector_scale(role, arch)
        else:
            rng_r = _rng(seed, spec.name, 1)
            self.row = _spread(rng_r.standard_normal(self.rows, dtype=_F32), ROW_SPREAD)
            rng_c = _rng(seed, spec.name, 2)
            col = _spread(rng_c.standard_normal(self.cols, dtype=_F32), COL_SPREAD)
            gain = EMBED_STD if role == "embed" else 1.0 / math.sqrt(self.cols)
            col *= _F32(gain * tail)
            if role in OUTLIER_ROLES:
                f = rng_c.uniform(*OUTLIER_GAIN, size=len(outliers)).astype(_F32)
                col[outliers] *= f
            if role in ("embed", "lm_head"):
                self.zero_from = n_tok
            self.col = col

    def _vector_scale(self, role: str, arch: ModelArch) -> np.ndarray:
        """The per-element factor of a 1-D tensor (a norm's level and spread, a bias's std)."""
        rng = _rng(self.seed, self.spec.name, 1)
        if role.endswith("bias"):
            return np.full(self.cols, _F32(BIAS_STD * _tail_norm()))
        layers = arch.num_layers
        depth = (self.spec.layer or 0) / (layers - 1) if layers > 1 else 0.0
        if role == "input_norm":
            level = INPUT_NORM_LEVEL[0] + depth * (INPUT_NORM_LEVEL[1] - INPUT_NORM_LEVEL[0])
        elif role == "post_attention_norm":
            level = POST_NORM_LEVEL[0] + depth * (POST_NORM_LEVEL[1] - POST_NORM_LEVEL[0])
        else:
            level = FINAL_NORM_LEVEL
        s = _spread(rng.standard_normal(self.cols, dtype=_F32), NORM_SPREAD)
        s *= _F32(level)
        return s

    def chunks(self, chunk_blocks: int = DEFAULT_CHUNK_BLOCKS) -> Iterator[np.ndarray]:
        """The tensor as consecutive row chunks of ``chunk_blocks`` seed blocks each (the last
        may be shorter), 2-D ``[rows, cols]`` in the storage dtype (a 1-D tensor is one row).
        The concatenation does not depend on ``chunk_blocks``."""
        if chunk_blocks < 1:
            raise ValueError("chunk_blocks must be at least 1")
        if self.row is None:  # 1-D: norms and biases are one small block
            yield self._vector().reshape(1, -1)
            return
        br, cols = self.block_rows, self.cols
        z_buf = np.empty(br * cols, dtype=_F32)
        t_buf = np.empty(br * cols, dtype=_F32)
        for b0 in range(0, self.blocks, chunk_blocks):
            b1 = min(self.blocks, b0 + chunk_blocks)
            r0, r1 = b0 * br, min(self.rows, b1 * br)
            out = np.empty((r1 - r0, cols), dtype=self.dtype)
            for b in range(b0, b1):
                a, e = b * br, min(self.rows, (b + 1) * br)
                z = z_buf[: (e - a) * cols].reshape(e - a, cols)
                t = t_buf[: (e - a) * cols].reshape(e - a, cols)
                _rng(self.seed, self.spec.name, 0, b).standard_normal(dtype=_F32, out=z)
                np.multiply(z, z, out=t)  # z + TAIL z^3 = z (1 + TAIL z^2)
                t *= _F32(TAIL)
                t += _F32(1.0)
                z *= t
                z *= self.row[a:e, None]
                z *= self.col[None, :]
                if e > self.zero_from:
                    z[max(0, self.zero_from - a) :] = 0.0
                out[a - r0 : e - r0] = z
            yield out

    def _vector(self) -> np.ndarray:
        z = _rng(self.seed, self.spec.name, 0, 0).standard_normal(self.cols, dtype=_F32)
        if self.spec.role.endswith("bias"):
            t = z * z
            t *= _F32(TAIL)
            t += _F32(1.0)
            z *= t
            z *= self.col
            return z.astype(self.dtype)
        return self.col.astype(self.dtype)  # a norm: its level times the channel spread
