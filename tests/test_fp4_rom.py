"""The FP4 ROM formats of maskc/romformat.py (issue 21, docs/fp4-design.md): a matrix quantized
with maskc.quantize.fp4.to_quant holds exactly the E2M1 codes and block scales of the reference
codec, and its dequantization equals a hand decoding from the specification (exact rationals)
and ml_dtypes' float4_e2m1fn / float8_e8m0fnu / float8_e4m3fn; the format's validation and
JSON reading refuse what is not one of the two formats."""

from __future__ import annotations

from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from maskc.errors import FitError, InputError
from maskc.quantize import fp4
from maskc.romformat import (
    E2M1_LEVELS,
    FP4_FORMATS,
    MX_SREF,
    QuantFormat,
    from_arrays,
    join_rows,
)

E2M1 = [Fraction(0), Fraction(1, 2), Fraction(1), Fraction(3, 2), 2, 3, 4, 6]


def hand_e2m1(code: int) -> Fraction:
    mag = Fraction(E2M1[code & 7])
    return -mag if code & 8 else mag


def hand_e4m3(b: int) -> Fraction:
    e, m = (b >> 3) & 15, b & 7
    return Fraction(m, 512) if e == 0 else Fraction(2) ** (e - 7) * (1 + Fraction(m, 8))


def exact_value(q, r: int, j: int) -> Fraction:
    """Weight (r, j) from the stored integers, as the module docstring defines it."""
    g = j // q.fmt.group_size
    step = Fraction(int(q.scale_m[r, g])) * Fraction(2) ** (
        int(q.scale_e[r]) - int(q.scale_s[r, g])
    )
    if q.tensor_m is not None:
        step *= int(q.tensor_m[0])
    return step * int(q.levels[q.codes[r, j]])


def matrices(max_rows=4, max_cols=70):
    shapes = st.tuples(st.integers(1, max_rows), st.integers(1, max_cols))
    return shapes.flatmap(
        lambda s: hnp.arrays(np.float32, s, elements=st.floats(-1e4, 1e4, width=32))
    )


@settings(max_examples=40, deadline=None)
@given(w=matrices(), kind=st.sampled_from(["mxfp4", "nvfp4"]))
@example(w=np.array([[1.02e-42]], np.float32), kind="nvfp4")  # found by CI: a subnormal tensor
def test_rom_matrix_is_the_codec_exactly(w, kind):
    try:
        q = fp4.to_quant("w", w, kind)
    except FitError:  # an mxfp4 row spanning more than 19 binades: refused, never wrong
        assert kind == "mxfp4"
        return
    except InputError as e:  # nvfp4 of a tensor so small its scale's exponent leaves int8
        assert kind == "nvfp4" and "w: nvfp4 tensor scale" in str(e)
        assert float(fp4.nv_tensor_scale(w)) < 2.0**-109
        return
    q.validate()
    r, c = w.shape
    if kind == "mxfp4":
        codes, e = fp4.mx_encode(w)
        ref = fp4.mx_decode(codes, e, c)
        # hand decoding from the stored E8M0 byte: E = scale_e + 128 - scale_s
        e_back = q.scale_e.astype(np.int64)[:, None] + 128 - q.scale_s.astype(np.int64)
        assert np.array_equal(e_back, e)
    else:
        codes, sb, ts = fp4.nv_encode(w)
        ref = fp4.nv_decode(codes, sb, ts, c)
    assert np.array_equal(q.codes, codes)
    assert np.array_equal(q.dequantize(), ref.astype(np.float32))
    for i in range(r):
        for j in range(c):
            g = j // q.fmt.group_size
            if kind == "mxfp4":
                want = hand_e2m1(int(codes[i, j])) * Fraction(2) ** (int(e[i, g]) - 127)
            else:
                want = hand_e2m1(int(codes[i, j])) * hand_e4m3(int(sb[i, g])) * Fraction(float(ts))
            assert exact_value(q, i, j) == want


def test_rom_matrix_against_ml_dtypes():
    rng = np.random.default_rng(7)
    w = (rng.standard_normal((6, 96)) * np.exp2(rng.integers(-6, 6, (6, 1)))).astype(np.float32)
    for kind in ("mxfp4", "nvfp4"):
        q = fp4.to_quant("w", w, kind)
        elem = q.codes.astype(np.uint8).view(ml_dtypes.float4_e2m1fn).astype(np.float64)
        if kind == "mxfp4":
            _, e = fp4.mx_encode(w)
            if not hasattr(ml_dtypes, "float8_e8m0fnu"):
                pytest.skip("ml_dtypes has no float8_e8m0fnu")
            scale = e.view(ml_dtypes.float8_e8m0fnu).astype(np.float64)
        else:
            _, sb, ts = fp4.nv_encode(w)
            scale = sb.view(ml_dtypes.float8_e4m3fn).astype(np.float64) * float(ts)
        want = elem * np.repeat(scale, q.fmt.group_size, axis=1)
        assert np.array_equal(q.dequantize(), want.astype(np.float32)), kind


def test_formats_and_bits_per_weight():
    mx, nv = FP4_FORMATS["mxfp4"], FP4_FORMATS["nvfp4"]
    for f in (mx, nv):
        f.validate()
        assert f.shift_ref == (MX_SREF if f is mx else 15)
    r, c = 64, 256
    # codes 4, block scale 8/32, row exponent 8/C, level table 16 x 5 bits
    assert mx.rom_bits(r, c) == r * c * 4 + r * (c // 32) * 8 + r * 8 + 16 * 5
    # codes 4, E4M3 as 4 + 4 bits per 16, row exponent, levels, the 24-bit tensor mantissa
    assert nv.rom_bits(r, c) == r * c * 4 + r * (c // 16) * 8 + r * 8 + 16 * 5 + 24
    assert QuantFormat(4, 32).to_json() == QuantFormat(4, 32).to_json() | {}
    assert "kind" not in QuantFormat(4, 32).to_json()  # integer formats read and hash as before


def test_validation_refuses_what_is_not_the_format():
    w = np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32)
    q = fp4.to_quant("w", w, "nvfp4")
    arrays = {k: v.copy() for k, v in q.arrays().items()}
    with pytest.raises(InputError, match="exactly"):
        QuantFormat(4, 32, zero_bits=0, kind="nvfp4").validate("w")
    with pytest.raises(InputError, match="kind"):
        QuantFormat(4, 32, kind="fp3").validate("w")
    bad = dict(arrays, levels=np.sort(E2M1_LEVELS))
    with pytest.raises(InputError, match="E2M1 table"):
        from_arrays("w", (2, 32), q.fmt, bad)
    s = arrays["scale_s"].copy()
    s[0, 0] = 15  # no E4M3 exponent field maps there
    with pytest.raises(InputError, match=r"row 0, block 0.*E4M3"):
        from_arrays("w", (2, 32), q.fmt, dict(arrays, scale_s=s))
    m, s = arrays["scale_m"].copy(), arrays["scale_s"].copy()
    m[1, 1], s[1, 1] = 15, 0  # S.1111.111: NaN
    with pytest.raises(InputError, match="row 1, block 1"):
        from_arrays("w", (2, 32), q.fmt, dict(arrays, scale_m=m, scale_s=s))
    with pytest.raises(InputError, match="missing"):
        from_arrays("w", (2, 32), q.fmt, {k: v for k, v in arrays.items() if k != "tensor_m"})
    mx = fp4.to_quant("w", w, "mxfp4")
    with pytest.raises(InputError, match="tensor_m"):
        from_arrays("w", (2, 32), mx.fmt, dict(mx.arrays(), tensor_m=arrays["tensor_m"]))


def test_mx_span_over_the_bound_is_a_fit_error():
    w = np.zeros((2, 96), np.float32)
    w[1, :32] = 1.0
    w[1, 32] = 2.0**-MX_SREF  # exactly 19 binades below: fits
    fp4.to_quant("w", w, "mxfp4")
    w[1, 64] = 2.0 ** -(MX_SREF + 1)  # 20: over
    with pytest.raises(FitError, match=r"w: mxfp4 row 1 block 2.*19 binades"):
        fp4.to_quant("w", w, "mxfp4")
    w[1, 64] = 0.0  # an all-zero block may have any scale
    q = fp4.to_quant("w", w, "mxfp4")
    assert int(q.scale_s[1, 2]) > MX_SREF and not q.dequantize()[1, 64:].any()


def test_nv_tensor_scale_below_the_row_exponent_is_refused():
    w = np.full((1, 16), 2.0**-120, np.float32)  # tensor scale ~ 2^-131.4
    with pytest.raises(InputError, match="w: nvfp4 tensor scale"):
        fp4.to_quant("w", w, "nvfp4")


def test_rows_and_join_keep_tensor_m():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((5, 40)).astype(np.float32)
    q = fp4.to_quant("w", w, "nvfp4")
    parts = [q.rows("a", slice(0, 2)), q.rows("b", slice(2, 5))]
    for p in parts:
        p.validate()
    j = join_rows("w", parts)
    j.validate()
    assert np.array_equal(j.dequantize(), q.dequantize())


def test_format_json_round_trip_and_refusal():
    for kind, f in FP4_FORMATS.items():
        d = f.to_json()
        assert d["kind"] == kind
        assert QuantFormat.from_json(d, "x", kinds=("int", kind)) == f
        with pytest.raises(InputError, match=f"x: format kind '{kind}' is not supported"):
            QuantFormat.from_json(d, "x")
    with pytest.raises(InputError, match="'kind' must be one of int, mxfp4, nvfp4"):
        QuantFormat.from_json(QuantFormat(4, 32).to_json() | {"kind": "fp3"}, "x")
    assert QuantFormat.from_json(QuantFormat(4, 32).to_json() | {"kind": "int"}, "x").kind == "int"


_KEYS = ["bits", "group_size", "scale_bits", "zero_bits", "level_bits", "scale_shift_bits"]
_VALUES = st.one_of(st.integers(-3, 300), st.text(max_size=6), st.none(), st.lists(st.none()))


@settings(max_examples=150, deadline=None)
@given(
    d=st.dictionaries(st.sampled_from([*_KEYS, "zero_shift_bits", "kind", "x"]), _VALUES),
    base=st.sampled_from(
        [QuantFormat(4, 32).to_json(), *(f.to_json() for f in FP4_FORMATS.values())]
    ),
    kinds=st.sampled_from([("int",), ("int", "mxfp4", "nvfp4")]),
)
def test_from_json_gives_a_valid_format_or_input_error(d, base, kinds):
    try:
        f = QuantFormat.from_json(base | d, "x", kinds=kinds)
    except InputError as e:
        assert "\n" not in str(e) and str(e).startswith("x: ")
        return
    f.validate()
    assert f.kind in kinds
