"""The emulator's compiled primitives against the independent reference's, on random and extreme
inputs (hypothesis): the edge cases a whole-model run may never reach (values at the int32
limits, huge shifts, all-zero vectors, single outliers) must agree bit for bit too."""

from __future__ import annotations

import intref
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from maskc.emulate import kernels as K

I32 = st.integers(-(2**31), 2**31 - 1)
I62 = st.integers(-(2**61), 2**61)


@settings(max_examples=300, deadline=None)
@given(v=I62, k=st.integers(-70, 62))
def test_term_and_rsr(v, k):
    assert K.term(np.int64(v), np.int64(k)) == intref.term(v, k)
    if k > 0 or (k > -20 and abs(v) < 2**40):  # rsr's left shifts are bounded by its callers
        assert K.rsr(np.int64(v), np.int64(k)) == intref.rsr(v, k)


@settings(max_examples=300, deadline=None)
@given(a=st.integers(-(2**58), 2**58), b=st.integers(1, 2**20))
def test_rdiv(a, b):
    assert K.rdiv(np.int64(a), np.int64(b)) == intref.rdiv(a, b)


@settings(max_examples=300, deadline=None)
@given(v=st.integers(0, 2**62))
def test_bitlen(v):
    assert K.bitlen(np.int64(v)) == intref.bitlen(v)


vectors = st.one_of(
    st.lists(I32, min_size=1, max_size=100),
    st.lists(st.integers(-(2**47), 2**47), min_size=1, max_size=100),  # rmsnorm's products
    st.lists(st.integers(-3, 3), min_size=1, max_size=100),
    st.lists(st.just(0), min_size=1, max_size=70),
    # one outlier among small values: the case the act8 group shifts are for
    st.tuples(
        st.lists(st.integers(-50, 50), min_size=40, max_size=96), I32, st.integers(0, 39)
    ).map(lambda t: [*t[0][: t[2]], t[1], *t[0][t[2] + 1 :]]),
)


@settings(max_examples=300, deadline=None)
@given(y=vectors, f=st.integers(0, 40), whole=st.booleans())
def test_q8_matches_the_reference(y, f, whole):
    group = len(y) if whole else 32
    ng = -(-len(y) // group)
    x = np.empty(len(y), np.int64)
    s = np.empty(ng, np.int64)
    m, e = K.q8_row(np.array(y, np.int64), f, 0 if whole else 32, x, s)
    rx, rm, re_, rs = intref.q8(y, f, group)
    assert (x.tolist(), int(m), int(e), s.tolist()) == (rx, rm, re_, rs)
    assert all(-127 <= v <= 127 for v in rx)
