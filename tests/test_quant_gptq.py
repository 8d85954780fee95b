"""GPTQ with activation order and static groups (maskc/quantize/gptq.py): its own objective
(the output error ``tr(D H D^T)`` of the weight error ``D``) against rtn/lsq and the
mean-damped GPTQ on a seeded matrix whose inputs have outlier channels, determinism,
independence of row chunking, and what it refuses."""

from __future__ import annotations

import numpy as np
import pytest

from maskc.quantize.gptq import (
    HESSIAN_SHRINK,
    SMALL_GROUP_SHRINK,
    damped_hinv,
    hessian_shrink,
    output_error,
    quantize_gptq_act,
    quantize_gptq_best,
)
from maskc.quantize.methods import quantize_gptq, quantize_lsq, quantize_rtn
from maskc.romformat import QuantFormat


def _problem(c=128, rows=32, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((c, c)) / np.sqrt(c) * 0.5 + np.eye(c)
    x = rng.standard_normal((1024, c)) @ mix
    x[:, :3] *= 100.0  # a few input channels with huge activations, as in real LLMs
    x = x.astype(np.float32)
    h = x.T.astype(np.float64) @ x / len(x)
    w = (rng.standard_normal((rows, c)) * 0.05).astype(np.float32)
    return w, h


def _out_err(w, h, q) -> float:
    d = (w - q.dequantize()).astype(np.float64)
    return float(np.einsum("ij,jk,ik->", d, h, d))


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("g", [32, 64])
def test_never_worse_than_rtn_lsq_and_mean_damped_gptq(g, symmetric):
    """Also on the symmetric format, whose groups take symmetric lsq's step search."""
    w, h = _problem()
    if symmetric:
        fmt = QuantFormat(4, g, zero_bits=0, scale_shift_bits=3)
    else:
        fmt = QuantFormat(4, g, scale_shift_bits=3, zero_shift_bits=3)
    imp = np.diag(h)
    new = _out_err(w, h, quantize_gptq_act("w", w, fmt, h, imp))
    assert new < 0.5 * _out_err(w, h, quantize_rtn("w", w, fmt))
    assert new < 0.8 * _out_err(w, h, quantize_lsq("w", w, fmt, imp))
    assert new < _out_err(w, h, quantize_gptq("w", w, fmt, h, imp))


def test_valid_rom_content_and_deterministic():
    w, h = _problem(c=100)  # 100 columns: a padded last group
    fmt = QuantFormat(4, 32, scale_shift_bits=3, zero_shift_bits=3)
    a = quantize_gptq_act("w", w, fmt, h)
    b = quantize_gptq_act("w", w.copy(), fmt, h.copy())
    a.validate()
    assert a.method == "gptq"
    assert not a.codes[:, 100:].any()  # padding cells hold code 0
    for f in ("codes", "scale_m", "scale_s", "scale_e", "zero_m", "zero_s", "zero_e"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


def test_rows_are_independent():
    """The streamed quantizer cuts matrices into blocks of rows: same codes either way."""
    w, h = _problem(rows=30)
    fmt = QuantFormat(4, 64, scale_shift_bits=3, zero_shift_bits=3)
    whole = quantize_gptq_act("w", w, fmt, h)
    top = quantize_gptq_act("w", w[:11], fmt, h)
    np.testing.assert_array_equal(whole.codes[:11], top.codes)
    np.testing.assert_array_equal(whole.scale_m[:11], top.scale_m)


def test_dead_columns_and_missing_hessian():
    w, h = _problem(c=64)
    h[5, :] = h[:, 5] = 0.0  # an input no calibration token reached
    fmt = QuantFormat(4, 32, scale_shift_bits=3, zero_shift_bits=3)
    u, dead = damped_hinv(h, 64, 0.01, np.arange(64))
    assert dead[5] and dead.sum() == 1 and np.isfinite(u).all()
    quantize_gptq_act("w", w, fmt, h).validate()
    with pytest.raises(ValueError, match="w: gptq needs calibration"):
        quantize_gptq_act("w", w, fmt, None)


def test_method_gptq_takes_the_better_variant_row_by_row():
    """``gptq`` keeps, for every row, whichever variant has the lower output error: never worse
    than either on any row, and stacking/chunking rows cannot change it (rows independent)."""
    w, h = _problem(rows=24, seed=3)
    fmt = QuantFormat(4, 32, scale_shift_bits=3, zero_shift_bits=3)
    imp = np.diag(h)
    best = quantize_gptq_best("w", w, fmt, h, imp, shrink=0.0)
    best.validate()
    e = output_error(w, best, h)
    ea = output_error(w, quantize_gptq_act("w", w, fmt, h, imp), h)
    eb = output_error(w, quantize_gptq("w", w, fmt, h, imp), h)
    np.testing.assert_allclose(e, np.minimum(ea, eb), rtol=1e-12)
    half = quantize_gptq_best("w", w[:10], fmt, h, imp, shrink=0.0)
    np.testing.assert_array_equal(best.codes[:10], half.codes)


def test_method_gptq_shrinks_the_hessian_toward_its_diagonal():
    """The shipped ``gptq`` is GPTQ on ``H + 0.5 diag(H)``: its output error on that matrix is
    the better variant's, row by row; the rounding differs from the unshrunk one's, and on the
    true Hessian it stays well below lsq's (the error feedback is damped, not lost)."""
    w, h = _problem(rows=24, seed=4)
    fmt = QuantFormat(4, 64, scale_shift_bits=3, zero_shift_bits=3)
    imp = np.diag(h)
    hs = h + 0.5 * np.diag(np.diag(h))
    best = quantize_gptq_best("w", w, fmt, h, imp)
    e = output_error(w, best, hs)
    ea = output_error(w, quantize_gptq_act("w", w, fmt, hs, imp), hs)
    eb = output_error(w, quantize_gptq("w", w, fmt, hs, imp), hs)
    np.testing.assert_allclose(e, np.minimum(ea, eb), rtol=1e-12)
    plain = quantize_gptq_best("w", w, fmt, h, imp, shrink=0.0)
    assert not np.array_equal(best.codes, plain.codes)  # the shrinkage changes the rounding
    # still far better than lsq on the true Hessian (the feedback is kept, only damped)
    assert _out_err(w, h, best) < 0.8 * _out_err(w, h, quantize_lsq("w", w, fmt, imp))


def test_gptq_shrinks_further_for_groups_of_32():
    """Groups of 32 get SMALL_GROUP_SHRINK, larger groups HESSIAN_SHRINK (the default picks by
    the format's group size)."""
    assert hessian_shrink(32) == SMALL_GROUP_SHRINK > HESSIAN_SHRINK == hessian_shrink(64)
    assert hessian_shrink(128) == HESSIAN_SHRINK
    w, h = _problem(rows=24, seed=5)
    fmt = QuantFormat(4, 32, scale_shift_bits=3, zero_shift_bits=3)
    imp = np.diag(h)
    best = quantize_gptq_best("w", w, fmt, h, imp)
    same = quantize_gptq_best("w", w, fmt, h, imp, shrink=SMALL_GROUP_SHRINK)
    assert np.array_equal(best.codes, same.codes) and np.array_equal(best.scale_m, same.scale_m)
    half = quantize_gptq_best("w", w, fmt, h, imp, shrink=HESSIAN_SHRINK)
    assert not np.array_equal(best.codes, half.codes)
