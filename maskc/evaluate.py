"""Model-quality metrics with a fixed protocol: perplexity windows, KL divergence, top-1 agreement.

The perplexity protocol (used by the quantizer's reports and by ``maskc emulate --ppl``):

* the text is tokenized without adding BOS;
* windows of ``ctx`` tokens start at position 0 and advance by ``stride`` (default ``ctx``:
  non-overlapping); every window is evaluated from an empty KV cache;
* in the first window every position but the window's first is scored (token ``t`` predicted
  from tokens ``< t`` of the same window); in later windows only the targets not scored by an
  earlier window are scored (with ``stride == ctx``: again all but the window's first);
* a final partial window is evaluated if it adds at least one target;
* perplexity = ``exp(sum of negative log-likelihoods / targets scored)``, log-softmax in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """Tokens ``[start, end)`` are fed; targets at absolute positions ``[score_from, end)``."""

    start: int
    end: int
    score_from: int


def ppl_windows(n_tokens: int, ctx: int, stride: int | None = None) -> list[Window]:
    """The evaluation windows for ``n_tokens`` tokens (see the module docstring)."""
    if ctx < 2:
        raise ValueError("ctx must be at least 2")
    stride = ctx if stride is None else stride
    if not 1 <= stride <= ctx:
        raise ValueError("stride must be in [1, ctx]")
    out: list[Window] = []
    scored_until = 1  # position 0 has no context: never scored
    start = 0
    while start < n_tokens:
        end = min(start + ctx, n_tokens)
        first = max(scored_until, start + 1)
        if first < end:
            out.append(Window(start, end, first))
            scored_until = end
        if end == n_tokens:
            break
        start += stride
    return out


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64. ``logits``: ``[T, V]`` -> ``[T, V]`` float64."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@dataclass(frozen=True)
class PplResult:
    nll_sum: float  #: sum of negative log-likelihoods, nats
    tokens_scored: int

    @property
    def ppl(self) -> float:
        return math.exp(self.nll_sum / self.tokens_scored) if self.tokens_scored else math.nan


def perplexity(
    forward: Callable[[Sequence[int]], np.ndarray],
    tokens: Sequence[int],
    ctx: int,
    stride: int | None = None,
    on_window: Callable[[int, int], None] | None = None,
) -> PplResult:
    """Perplexity of ``tokens`` under ``forward(window_tokens) -> logits [len, vocab]``.

    ``forward`` must evaluate the window from an empty cache. ``on_window(done, total)`` is
    called after each window, for progress bars.
    """
    wins = ppl_windows(len(tokens), ctx, stride)
    nll, count = 0.0, 0
    for k, w in enumerate(wins):
        seg = list(tokens[w.start : w.end])
        lp = log_softmax(forward(seg))
        # logits at window index i predict the token at index i + 1
        rows = np.arange(w.score_from - 1 - w.start, w.end - 1 - w.start)
        targets = np.asarray(seg, dtype=np.int64)[rows + 1]
        nll -= float(lp[rows, targets].sum())
        count += len(rows)
        if on_window:
            on_window(k + 1, len(wins))
    return PplResult(nll, count)


def kl_top1(ref_logits: np.ndarray, test_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-position KL(ref || test) in nats and top-1 agreement (bool), both ``[T]``.

    Top-1 ties go to the lowest token id (``np.argmax``), as in greedy decoding.
    """
    lp_ref = log_softmax(ref_logits)
    lp_test = log_softmax(test_logits)
    kl = (np.exp(lp_ref) * (lp_ref - lp_test)).sum(axis=-1)
    agree = np.argmax(ref_logits, axis=-1) == np.argmax(test_logits, axis=-1)
    return kl, agree
