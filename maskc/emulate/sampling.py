"""Token selection of docs/numerics.md ("Sampling"): greedy, and seeded integer sampling with
temperature, top-k and top-p (SplitMix64). Integer arithmetic throughout."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from maskc.emulate.kernels import exp_weights

I64 = np.int64
MASK64 = (1 << 64) - 1


class SplitMix64:
    """The PRNG of the contract: one 64-bit draw per sampled token."""

    def __init__(self, seed: int) -> None:
        self.s = seed & MASK64

    def next_u64(self) -> int:
        self.s = (self.s + 0x9E3779B97F4A7C15) & MASK64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)


@dataclass(frozen=True)
class SamplingParams:
    """``temperature`` 0 means greedy. The integer forms: ``tq = round(256 T)`` (at least 1),
    ``pq = round(65536 top_p)``."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def tq(self) -> int:
        return max(1, round(256 * self.temperature))

    @property
    def pq(self) -> int:
        return round(65536 * self.top_p)


class Sampler:
    def __init__(
        self, params: SamplingParams, signal_frac: int, log2e_q16: int, exp2: np.ndarray
    ) -> None:
        self.p = params
        self.F = signal_frac
        self.log2e = log2e_q16
        self.exp2 = np.asarray(exp2, I64)
        self.rng = SplitMix64(params.seed)

    def __call__(self, logits: np.ndarray) -> int:
        """The next token from int32 logits ``[vocab]``."""
        lg = np.asarray(logits, I64)
        if self.p.greedy:
            return int(np.argmax(lg))  # the first (lowest id) of equal maxima
        tq = np.int64(self.p.tq)
        z = (2 * (lg * 256) + tq) // (2 * tq)  # rdiv(logit * 256, tq)
        order = np.lexsort((np.arange(len(z)), -z))  # z descending, then lower id
        if self.p.top_k > 0:
            order = order[: self.p.top_k]
        zo = z[order]
        pr = exp_weights(zo[0] - zo, self.log2e, self.F, self.exp2)  # attention's softmax weight
        total = int(pr.sum())
        if self.p.pq < 65536:
            cum = np.cumsum(pr)
            ok = np.nonzero(65536 * cum >= self.p.pq * total)[0]
            keep = int(ok[0]) + 1 if len(ok) else len(pr)
            pr = pr[:keep]
            order = order[:keep]
        s = int(pr.sum())
        r = (self.rng.next_u64() * s) >> 64
        idx = int(np.searchsorted(np.cumsum(pr), r, side="right"))
        return int(order[idx])
