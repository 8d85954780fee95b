"""The weight format and the quantizers: ranges, error bounds, exact dequantization (checked with
Python's exact rationals), bits-per-weight arithmetic, and storage round trips."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from maskc.errors import InputError
from maskc.quantize import methods
from maskc.quantize.encode import encode_mantissa
from maskc.quantize.methods import quantize_gptq, quantize_lsq, quantize_rtn
from maskc.quantize.store import arrays_of, index_entry, load_quant
from maskc.romformat import QuantFormat, group_values
from maskc.safetensors_io import SafetensorsFile, write_safetensors

FORMATS = [
    QuantFormat(4, 32, scale_shift_bits=3, zero_shift_bits=3),
    QuantFormat(3, 32, scale_shift_bits=3, zero_shift_bits=3),
    QuantFormat(3, 64),
    QuantFormat(4, 128, zero_bits=0),
    QuantFormat(3, 32, zero_bits=0, scale_shift_bits=2),
    QuantFormat(8, 32, level_bits=9),
]


def matrices(max_rows=6, max_cols=70):
    shapes = st.tuples(st.integers(1, max_rows), st.integers(1, max_cols))
    return shapes.flatmap(
        lambda s: hnp.arrays(
            np.float32, s, elements=st.floats(-4, 4, width=32, allow_subnormal=False)
        )
    )


def exact_value(q, r, j) -> Fraction:
    """Weight (r, j) from the stored integers, in exact rational arithmetic."""
    g = j // q.fmt.group_size
    step = Fraction(int(q.scale_m[r, g])) * Fraction(2) ** (
        int(q.scale_e[r]) - int(q.scale_s[r, g])
    )
    v = step * int(q.levels[q.codes[r, j]])
    if q.zero_m is not None:
        v += Fraction(int(q.zero_m[r, g])) * Fraction(2) ** (int(q.zero_e[r]) - int(q.zero_s[r, g]))
    return v


@settings(max_examples=60, deadline=None)
@given(w=matrices(), k=st.integers(0, len(FORMATS) - 1))
def test_rtn_codes_in_range_and_error_bounded_by_step(w, k):
    fmt = FORMATS[k]
    q = quantize_rtn("w", w, fmt)
    q.validate()  # dtypes, shapes, code/mantissa ranges, zero padding
    deq = q.dequantize()
    assert deq.shape == w.shape and deq.dtype == np.float32
    g = fmt.group_size
    step = np.repeat(group_values(q.scale_m, q.scale_s, q.scale_e), g, axis=1)[:, : w.shape[1]]
    lv = q.levels.astype(np.float64)
    off = 0.0
    if q.zero_m is not None:
        off = np.repeat(group_values(q.zero_m, q.zero_s, q.zero_e), g, axis=1)[:, : w.shape[1]]
    lo = off + step * lv[0]
    hi = off + step * lv[-1]
    # inside the representable range: within half a step; outside: at the nearest end
    outside = np.maximum(lo - w, 0) + np.maximum(w - hi, 0)
    err = np.abs(w.astype(np.float64) - deq)
    assert np.all(err <= step / 2 + outside + 1e-6 * (np.abs(w) + step)), err.max()
    # and the representable range itself is close to the group's range (few mantissa ulps)
    rng = np.abs(w).max() + 1e-30
    assert outside.max() <= 0.05 * rng


@settings(max_examples=30, deadline=None)
@given(w=matrices(4, 40), k=st.integers(0, len(FORMATS) - 1))
def test_dequantize_is_exact(w, k):
    q = quantize_lsq("w", w, FORMATS[k])
    deq = q.dequantize()
    for r in range(w.shape[0]):
        for j in range(w.shape[1]):
            assert deq[r, j] == np.float32(float(exact_value(q, r, j)))


@settings(max_examples=200, deadline=None)
@given(
    v=hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 4), st.integers(1, 9)),
        elements=st.floats(-1e6, 1e6, allow_subnormal=False),
    ),
    bits=st.integers(4, 16),
    shift=st.integers(0, 4),
    signed=st.booleans(),
)
def test_mantissa_round_trip(v, bits, shift, signed):
    if not signed:
        v = np.abs(v)
    m, sh, e = encode_mantissa(v, bits, signed, shift)
    top = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    lo = -(top + 1) if signed else 0
    assert m.min() >= lo and m.max() <= top
    assert sh.max(initial=0) < (1 << shift)
    back = group_values(m, sh, e)
    ulp = np.exp2(e.astype(np.float64)[:, None] - sh)
    assert np.all(np.abs(back - v) <= ulp / 2 + 1e-9 * np.abs(v))
    # encoding what it decodes gives the same numbers again (idempotent)
    m2, sh2, e2 = encode_mantissa(back, bits, signed, shift)
    np.testing.assert_array_equal(group_values(m2, sh2, e2), back)


def test_bits_per_weight_by_hand():
    f = QuantFormat(
        4, 32, scale_bits=8, zero_bits=8, level_bits=8, scale_shift_bits=3, zero_shift_bits=3
    )
    rows, cols = 64, 576  # 18 groups per row, no padding
    want = rows * cols * 4 + rows * 18 * (8 + 3 + 8 + 3) + rows * 16 + 16 * 8
    assert f.rom_bits(rows, cols) == want
    assert f.bits_per_weight(rows, cols) == pytest.approx(want / (rows * cols))
    # padding: 576 columns with groups of 128 occupy 640 cells per row
    g = QuantFormat(3, 128, zero_bits=0)
    assert g.rom_bits(10, 576) == 10 * 640 * 3 + 10 * 5 * 8 + 10 * 8 + 8 * 8


def test_lsq_beats_rtn_on_weighted_error():
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((256, 576)) * 0.02).astype(np.float32)
    imp = np.exp(rng.standard_normal(576))
    for fmt in FORMATS[:3]:
        e_rtn = ((w - quantize_rtn("w", w, fmt).dequantize()) ** 2 * imp).sum()
        e_lsq = ((w - quantize_lsq("w", w, fmt, imp).dequantize()) ** 2 * imp).sum()
        assert e_lsq < 0.9 * e_rtn


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f.symmetric and f.bits < 8])
def test_symmetric_lsq_searches_the_step(fmt):
    """Symmetric lsq (k-quants' make_qx_quants for an unsigned step) against an independent
    brute force in float64 over a fine grid of steps within a level of the end level (the
    ladder's reach, chosen by perplexity: docs/benchmarks.md): never more than 1% above its
    best weighted error, never above the range's step (before the hardware's mantissa rounding),
    below rtn's on heavy-tailed weights, with and without calibration importance."""
    rng = np.random.default_rng(5)
    w = (rng.standard_t(4, (48, 128)) * 0.02).astype(np.float32)
    imp = np.exp(rng.standard_normal(128))
    g, h = fmt.group_size, 1 << (fmt.bits - 1)
    for importance in (imp, None):
        x = methods.grouped32(w, g)
        wt = np.broadcast_to(methods._weights(w.shape, g, importance), x.shape)
        if importance is None:
            wt = methods.magnitude_weights(x, wt)
        s, m = methods.symmetric_search(x, wt, fmt.bits)
        assert (m == 0).all() and (s >= 0).all()
        xd, wd = x.astype(np.float64), wt.astype(np.float64)

        def err(step, xd=xd, wd=wd):
            q = np.clip(np.rint(xd / np.where(step > 0, step, 1.0)), -h, h - 1)
            return (wd * (xd - step * q) ** 2).sum(-1, keepdims=True)

        # the largest magnitude on the end level: -h * step if negative, (h - 1) * step if not
        big = np.take_along_axis(xd, np.abs(xd).argmax(-1)[..., None], -1)
        k = np.where(big < 0, h, h - 1)
        best = np.min([err(np.abs(big) / (k + d)) for d in np.linspace(-0.9, 0.9, 361)], axis=0)
        assert (err(s) <= best * 1.01 + 1e-18).all()
        assert (err(s) <= err(np.abs(big) / k) * (1 + 1e-9) + 1e-18).all()
        e_rtn = ((w - quantize_rtn("w", w, fmt).dequantize()) ** 2 * imp).sum()
        e_lsq = ((w - quantize_lsq("w", w, fmt, imp).dequantize()) ** 2 * imp).sum()
        assert e_lsq < 0.9 * e_rtn  # the wide ladder reached 0.8 by clipping: worse perplexity
        quantize_lsq("w", w, fmt, importance).validate()


def test_gptq_reduces_output_error_on_correlated_inputs():
    rng = np.random.default_rng(2)
    c = 128
    mix = rng.standard_normal((c, c)) / np.sqrt(c) + np.eye(c)
    x = (rng.standard_normal((4096, c)) @ mix).astype(np.float32)
    h = x.T.astype(np.float64) @ x / len(x)
    w = (rng.standard_normal((64, c)) * 0.05).astype(np.float32)
    fmt = FORMATS[1]
    qs = (quantize_rtn("w", w, fmt), quantize_gptq("w", w, fmt, h, np.diag(h)))
    out = [((x @ (w - q.dequantize()).T) ** 2).sum() for q in qs]
    assert out[1] < 0.8 * out[0]
    quantize_gptq("w", w, fmt, h).validate()


def test_zero_and_constant_groups():
    w = np.zeros((3, 40), np.float32)
    w[1] = 0.25
    for fmt in FORMATS:
        q = quantize_lsq("w", w, fmt)
        q.validate()
        # asymmetric: a constant group is exactly its offset; symmetric: within the step's
        # mantissa rounding (the step is 0.25 / 3 or / 7, not a short binary fraction)
        tol = 1e-7 if not fmt.symmetric else 0.25 * 2.0**-fmt.scale_bits * 2
        np.testing.assert_allclose(q.dequantize(), w, atol=tol)


def test_store_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((5, 70)).astype(np.float32)
    for k, fmt in enumerate(FORMATS):
        q = quantize_rtn(f"t{k}", w, fmt)
        path = tmp_path / f"{k}.safetensors"
        write_safetensors(path, arrays_of(q))
        st_ = SafetensorsFile(path)
        back = load_quant(path, st_, q.name, index_entry(q, path.name))
        np.testing.assert_array_equal(back.dequantize(), q.dequantize())
        for f in ("codes", "levels", "scale_m", "scale_s", "scale_e"):
            np.testing.assert_array_equal(getattr(back, f), getattr(q, f))


def test_validate_rejects_out_of_range():
    w = np.ones((2, 32), np.float32)
    q = quantize_rtn("w", w, FORMATS[1])
    q.codes[0, 0] = 8  # 3-bit code out of range
    with pytest.raises(InputError, match="codes"):
        q.validate()
    q = quantize_rtn("w", w, FORMATS[1])
    q.levels[1] = q.levels[0]
    with pytest.raises(InputError, match="increasing"):
        q.validate()
    with pytest.raises(InputError, match="bits"):
        QuantFormat(5, 32).validate()


@pytest.mark.parametrize("method", ["rtn", "lsq", "gptq"])
def test_row_stacking_equals_separate_quantization(method):
    """q/k/v (and gate/up) are quantized as one row-stack: the codes and scales must be those
    of quantizing each matrix on its own."""
    from maskc.quantize import quantize_matrix, quantize_stack
    from maskc.quantize.rules import QuantSetting

    rng = np.random.default_rng(4)
    x = rng.standard_normal((512, 96)).astype(np.float32)
    h = x.T.astype(np.float64) @ x / len(x)
    ws = [(rng.standard_normal((r, 96)) * 0.05).astype(np.float32) for r in (32, 16, 16)]
    s = QuantSetting(
        bits=3, group_size=32, method=method, codebook=False, symmetric=False, scale_bits=8
    )
    stacked = quantize_stack(["a", "b", "c"], ws, s, np.diag(h), h)
    for w, q in zip(ws, stacked, strict=True):
        alone = quantize_matrix(q.name, w, s, np.diag(h), h)
        np.testing.assert_array_equal(q.codes, alone.codes)
        np.testing.assert_array_equal(q.dequantize(), alone.dequantize())


def test_codebook_levels_fit_heavy_tails():
    """A per-tensor codebook on heavy-tailed weights: valid integer levels, non-uniform, and a
    lower error than the uniform grid with the same method."""
    from maskc.quantize.methods import quantize_codebook

    w = (np.random.default_rng(5).standard_t(4, (256, 256)) * 0.02).astype(np.float32)
    fmt = QuantFormat(3, 64, scale_shift_bits=3, zero_shift_bits=3)
    cb = quantize_codebook("w", w, fmt, "lsq")
    cb.validate()
    assert len(set(np.diff(cb.levels.astype(int)))) > 1  # not a uniform grid
    err_cb = ((w - cb.dequantize()) ** 2).sum()
    err_u = ((w - quantize_lsq("w", w, fmt).dequantize()) ** 2).sum()
    assert err_cb < err_u


def test_codebook_with_gptq_is_refused():
    from maskc.quantize import quantize_matrix
    from maskc.quantize.rules import QuantSetting

    s = QuantSetting(
        bits=3, group_size=32, method="gptq", codebook=True, symmetric=False, scale_bits=8
    )
    with pytest.raises(InputError, match="codebook"):
        quantize_matrix("w", np.ones((2, 32), np.float32), s)


@pytest.mark.parametrize("method", ["rtn", "lsq", "gptq"])
def test_row_chunking_gives_identical_results(method, monkeypatch):
    """Large matrices are quantized in blocks of rows to bound memory; the result must not
    depend on the block size."""
    import maskc.quantize.matrix as mq
    from maskc.quantize.rules import QuantSetting

    rng = np.random.default_rng(6)
    x = rng.standard_normal((256, 64)).astype(np.float32)
    h = x.T.astype(np.float64) @ x / len(x)
    w = (rng.standard_normal((100, 64)) * 0.05).astype(np.float32)
    s = QuantSetting(
        bits=3, group_size=32, method=method, codebook=False, symmetric=False, scale_bits=8
    )
    whole = mq.quantize_matrix("w", w, s, np.diag(h), h)
    monkeypatch.setattr(mq, "CHUNK_ROWS", 7)
    chunked = mq.quantize_matrix("w", w, s, np.diag(h), h)
    for f in ("codes", "scale_m", "scale_s", "scale_e", "zero_m", "zero_s", "zero_e"):
        np.testing.assert_array_equal(getattr(chunked, f), getattr(whole, f))
