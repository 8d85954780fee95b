"""The perplexity protocol: exact window boundaries, and values checked by hand-computable cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from maskc.evaluate import Window, kl_top1, perplexity, ppl_windows


def test_windows_non_overlapping():
    assert ppl_windows(10, 4) == [Window(0, 4, 1), Window(4, 8, 5), Window(8, 10, 9)]
    assert ppl_windows(8, 4) == [Window(0, 4, 1), Window(4, 8, 5)]


def test_windows_single_token_tail_is_not_scored():
    # a window of one token has no target inside it: it is dropped
    assert ppl_windows(9, 4) == [Window(0, 4, 1), Window(4, 8, 5)]
    assert ppl_windows(1, 4) == []


def test_windows_with_stride():
    assert ppl_windows(10, 4, stride=2) == [
        Window(0, 4, 1),
        Window(2, 6, 4),
        Window(4, 8, 6),
        Window(6, 10, 8),
    ]


@given(n=st.integers(0, 300), ctx=st.integers(2, 40), data=st.data())
def test_windows_score_each_target_once(n, ctx, data):
    stride = data.draw(st.integers(1, ctx))
    wins = ppl_windows(n, ctx, stride)
    scored = [p for w in wins for p in range(w.score_from, w.end)]
    if stride == ctx:
        # non-overlapping: every position but each window's first
        assert scored == [p for p in range(n) if p % ctx != 0]
    else:
        assert scored == sorted(set(scored))
    assert all(w.end - w.start <= ctx and w.start < w.score_from for w in wins)


def test_uniform_logits_give_vocab_size():
    v = 37
    r = perplexity(lambda seg: np.zeros((len(seg), v), np.float32), list(range(20)), ctx=8)
    assert r.tokens_scored == 20 - 3  # positions 0, 8, 16 are window starts
    assert math.isclose(r.ppl, v, rel_tol=1e-12)


def test_perfect_prediction_gives_one():
    toks = [3, 1, 4, 1, 5, 9, 2, 6]

    def fwd(seg):
        out = np.full((len(seg), 10), -1e4, np.float32)
        for i in range(len(seg) - 1):
            out[i, seg[i + 1]] = 0.0
        return out

    assert perplexity(fwd, toks, ctx=4).ppl == pytest.approx(1.0)


def test_kl_top1():
    a = np.array([[0.0, 1.0, 2.0], [5.0, 5.0, 0.0]])
    kl, agree = kl_top1(a, a)
    np.testing.assert_allclose(kl, 0.0, atol=1e-12)
    assert agree.tolist() == [True, True]
    b = np.array([[2.0, 1.0, 0.0], [5.0, 5.0, 0.0]])
    kl, agree = kl_top1(a, b)
    p = np.exp(a[0]) / np.exp(a[0]).sum()
    q = np.exp(b[0]) / np.exp(b[0]).sum()
    assert kl[0] == pytest.approx(float((p * np.log(p / q)).sum()))
    assert agree.tolist() == [False, True]  # tie in row 2 -> lowest id in both
