"""The FP4 reference codec (maskc/quantize/fp4.py) against a hand decoder written from the
specification tables (OCP MX v1.0 §5.3.3 E2M1, §5.4.1 E8M0, OCP FP8 E4M3) in exact rational
arithmetic, and against ml_dtypes' float4_e2m1fn / float8_e8m0fnu / float8_e4m3fn."""

from __future__ import annotations

from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maskc.quantize import fp4

HAS = {n: hasattr(ml_dtypes, n) for n in ("float4_e2m1fn", "float8_e8m0fnu", "float8_e4m3fn")}


# -- hand decoders, from the bit layouts ---------------------------------------------------------
def hand_e2m1(code: int) -> Fraction:
    """S.EE.M, bias 1; exponent field 0 is subnormal: 2**(1 - 1) * (0 + M/2)."""
    s, e, m = code >> 3, (code >> 1) & 3, code & 1
    mag = Fraction(m, 2) if e == 0 else Fraction(2) ** (e - 1) * (1 + Fraction(m, 2))
    return -mag if s else mag


def hand_e8m0(b: int) -> Fraction | None:
    return None if b == 255 else Fraction(2) ** (b - 127)


def hand_e4m3(b: int) -> Fraction | None:
    """S.EEEE.MMM, bias 7, S.1111.111 NaN, no infinity; exponent field 0 is subnormal."""
    s, e, m = b >> 7, (b >> 3) & 15, b & 7
    if e == 15 and m == 7:
        return None
    mag = (
        Fraction(2) ** -6 * Fraction(m, 8)
        if e == 0
        else Fraction(2) ** (e - 7) * (1 + Fraction(m, 8))
    )
    return -mag if s else mag


E2M1_ALL = [hand_e2m1(c) for c in range(16)]


def hand_round_e2m1(v: Fraction) -> int:
    """Nearest E2M1 magnitude code (ties to the even code), saturating, sign kept separately."""
    a = abs(v)
    mags = E2M1_ALL[:8]
    best = min(range(8), key=lambda k: (abs(a - mags[k]), k & 1))
    return best | (8 if v < 0 else 0)


# -- decoders against the spec and ml_dtypes -----------------------------------------------------
def test_e2m1_table():
    assert [Fraction(float(v)) for v in fp4.E2M1_VALUES] == E2M1_ALL
    assert list(fp4.E2M1_LEVELS) == [int(2 * v) for v in E2M1_ALL]
    assert [Fraction(float(v)) for v in fp4.e2m1_decode(np.arange(16))] == E2M1_ALL


@pytest.mark.skipif(not HAS["float4_e2m1fn"], reason="ml_dtypes without float4_e2m1fn")
def test_e2m1_against_ml_dtypes():
    codes = np.arange(16, dtype=np.uint8)
    ref = codes.view(ml_dtypes.float4_e2m1fn).astype(np.float64)
    assert np.array_equal(fp4.e2m1_decode(codes), ref)
    assert np.array_equal(np.signbit(fp4.e2m1_decode(codes)), np.signbit(ref))
    rng = np.random.default_rng(0)
    ties = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.5, 100.0])
    x = np.concatenate([rng.uniform(-7, 7, 20000), ties, -ties]).astype(np.float32)
    assert np.array_equal(fp4.e2m1_encode(x), x.astype(ml_dtypes.float4_e2m1fn).view(np.uint8))


def test_e8m0_decode():
    b = np.arange(256)
    got = fp4.e8m0_decode(b)
    for i in range(256):
        h = hand_e8m0(i)
        assert np.isnan(got[i]) if h is None else Fraction(float(got[i])) == h
    if HAS["float8_e8m0fnu"]:
        ref = b.astype(np.uint8).view(ml_dtypes.float8_e8m0fnu).astype(np.float64)
        assert np.array_equal(got, ref, equal_nan=True)


def test_e4m3_decode_and_encode():
    b = np.arange(256)
    got = fp4.e4m3_decode(b)
    for i in range(256):
        h = hand_e4m3(i)
        assert np.isnan(got[i]) if h is None else Fraction(float(got[i])) == h
    pos = np.arange(127)  # every finite non-negative byte
    assert np.array_equal(fp4.e4m3_encode(fp4.e4m3_decode(pos)), pos)
    assert fp4.e4m3_encode(np.array([448.0, 460.0, 1e30]))[:].tolist() == [126, 126, 126]
    if HAS["float8_e4m3fn"]:
        ref = b.astype(np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float64)
        assert np.array_equal(got, ref, equal_nan=True)
        vals = fp4.e4m3_decode(pos)
        mids = (vals[:-1] + vals[1:]) / 2  # every tie
        rng = np.random.default_rng(1)
        v = np.concatenate([mids, rng.uniform(0, 448, 20000), 2.0 ** rng.uniform(-12, 8, 5000)])
        v = v.astype(np.float32).astype(np.float64)
        want = v.astype(np.float32).astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
        assert np.array_equal(fp4.e4m3_encode(v), want)


# -- the rounding rule, as a property ------------------------------------------------------------
finite32 = st.floats(-1e6, 1e6, allow_nan=False, width=32)
scale_exp = st.integers(-20, 20)


@settings(max_examples=300, deadline=None)
@given(st.lists(finite32, min_size=1, max_size=40), scale_exp, st.integers(1, 15))
def test_e2m1_encode_is_nearest_even(xs, k, mant):
    scale = Fraction(mant) * Fraction(2) ** k  # any positive scale with few significant bits
    x = np.array(xs, dtype=np.float32)
    got = fp4.e2m1_encode(x, float(scale))
    for xi, c in zip(x.tolist(), got.tolist(), strict=True):
        want = hand_round_e2m1(Fraction(xi) / scale)
        assert c & 7 == want & 7
        if c & 7:
            assert c == want


# -- block encoders ------------------------------------------------------------------------------
def test_mx_encode_follows_ocp_6_3():
    rng = np.random.default_rng(2)
    w = (rng.standard_normal((5, 70)) * 2.0 ** rng.integers(-30, 30, (5, 1))).astype(np.float32)
    w[1, :32] = 0  # an all-zero block
    codes, sc = fp4.mx_encode(w)
    assert codes.shape == (5, 96) and sc.shape == (5, 3)
    assert not codes[:, 70:].any()
    assert sc[1, 0] == 0
    for r in range(5):
        for g in range(3):
            blk = w[r, 32 * g : 32 * g + 32]
            amax = max(abs(Fraction(float(v))) for v in blk)
            if amax == 0:
                continue
            e = amax.numerator.bit_length() - amax.denominator.bit_length()
            e -= Fraction(2) ** e > amax  # floor(log2 amax), exactly
            assert int(sc[r, g]) == e - 2 + 127
            scale = Fraction(2) ** (e - 2)
            for j, v in enumerate(blk.tolist()):
                c = int(codes[r, 32 * g + j])
                assert c & 7 == hand_round_e2m1(Fraction(v) / scale) & 7
    dec = fp4.mx_decode(codes, sc, 70)
    assert np.array_equal(fp4.mx_decode(*fp4.mx_encode(dec), 70), dec)  # representable: fixed
    if HAS["float4_e2m1fn"]:
        x = np.repeat(fp4.e8m0_decode(sc), 32, axis=1)[:, :70]
        ref = (w / x).astype(ml_dtypes.float4_e2m1fn).astype(np.float64) * x
        assert np.array_equal(dec, ref)


def test_nv_encode_decode():
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((4, 40)) * 0.02).astype(np.float32)
    codes, sc, ts = fp4.nv_encode(w)
    assert codes.shape == (4, 48) and sc.shape == (4, 3) and ts.dtype == np.float32
    assert ts == np.float32(np.abs(w).max() / 2688.0)
    dec = fp4.nv_decode(codes, sc, ts, 40)
    step = fp4.e4m3_decode(sc) * float(ts)
    err = np.abs(dec - w) / np.repeat(step, 16, axis=1)[:, :40]
    assert err.max() <= 1.0  # at most half the widest E2M1 gap (2) in block-scale units
    assert np.array_equal(fp4.nv_decode(*fp4.nv_encode(dec, ts), 40), dec)
    z, zs, zt = fp4.nv_encode(np.zeros((2, 16), np.float32))
    assert not z.any() and not zs.any() and zt == 1.0


# -- the contract's step form gives exactly the decoded weights ---------------------------------
def test_step_fields_are_exact():
    e = np.arange(255)
    m, s = fp4.mx_step_fields(e)
    assert (m == 1).all() and s.min() == 0 and s.max() == 254
    for ei, si in zip(e.tolist(), s.tolist(), strict=True):
        for c in range(16):
            lvl = int(fp4.E2M1_LEVELS[c])
            assert Fraction(2) ** (fp4.MX_ROW_EXP - si) * lvl == hand_e8m0(ei) * E2M1_ALL[c]
    b = np.arange(127)
    for ts in (np.float32(1.0), np.float32(0.0123), np.float32(3e-41), np.float32(7e30)):
        m, s, re, tm = fp4.nv_step_fields(b, ts)
        assert m.max() <= 15 and s.min() >= 0 and s.max() <= 14 and tm < 2**24
        for bi in b.tolist():
            for c in range(16):
                got = tm * int(m[bi]) * Fraction(2) ** (re - int(s[bi])) * int(fp4.E2M1_LEVELS[c])
                assert got == Fraction(float(ts)) * hand_e4m3(bi) * E2M1_ALL[c]
