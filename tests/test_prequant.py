"""Pre-quantized checkpoints (maskc/ingest/prequant.py): tiny GPTQ, AWQ and compressed-tensors
layers packed by the packers below, written from each format's published description
(docs/import-design.md cites them), never from maskc's unpacker; the unpacked codes, scales and
zeros, the exact dequantization, the exact ROM mapping, and the refusals."""

from __future__ import annotations

from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prequant_pack import pack_awq, pack_ct, pack_gptq

from maskc.errors import InputError, UnsupportedError
from maskc.ingest import prequant as pq
from maskc.safetensors_io import SafetensorsFile, write_safetensors

# -- helpers ------------------------------------------------------------------------------------


def _write(tmp_path, prefix, tensors):
    p = tmp_path / "model.safetensors"
    write_safetensors(p, {f"{prefix}.{k}": v for k, v in tensors.items()})
    return SafetensorsFile(p)


def _fp16_scales(rng, shape, span=3):
    return (rng.uniform(0.5, 1.0, shape) * 2.0 ** rng.integers(-8 - span, -8, shape)).astype(
        np.float16
    )


def _exact(scale, q, zero, g):
    """The definition with Fractions: scale * (q - zero), element by element."""
    r, c = q.shape
    return [
        [
            Fraction(float(scale[i, j // g])) * (int(q[i, j]) - int(zero[i, j // g]))
            for j in range(c)
        ]
        for i in range(r)
    ]


P = "model.layers.0.mlp.up_proj"


# -- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bits,v1,sym", [(4, True, 0), (4, False, 0), (3, True, 0), (8, False, 1), (2, True, 0)]
)
def test_gptq_round_trip(tmp_path, bits, v1, sym):
    rng = np.random.default_rng(bits)
    r, c, g = 64, 128, 32
    q = rng.integers(0, 1 << bits, (r, c))
    zero = rng.integers(1 if v1 else 0, (1 << bits) + (1 if v1 else 0), (r, c // g))
    if sym:  # 8 bits: the offset scale * (128 - zero) needs up to 19 bits unless it is 0
        zero[:] = 1 << (bits - 1)
    scale = _fp16_scales(rng, (r, c // g))
    f = _write(tmp_path, P, pack_gptq(q, zero, scale, bits, v1))
    scheme = pq.Scheme("gptq", bits, g, False, zero_plus_one=v1)
    assert pq.modules(f.tensors, scheme) == [P]
    t = pq.read_module(f, P, scheme, "m")
    assert t.name == P + ".weight" and t.shape == (r, c)
    assert np.array_equal(t.codes, q) and np.array_equal(t.zero, zero)
    assert np.array_equal(t.scale, scale.astype(np.float64))
    w = pq.dequantize(t)
    ex = _exact(scale, q, zero, g)
    assert all(Fraction(float(w[i, j])) == ex[i][j] for i in range(0, r, 7) for j in range(c))
    if bits == 2:
        with pytest.raises(UnsupportedError, match=r"up_proj\.weight.*2-bit"):
            pq.to_rom(t)
        return
    rom = pq.to_rom(t)
    assert rom.method == "imported" and rom.fmt.bits == bits and rom.fmt.group_size == g
    assert np.array_equal(rom.dequantize(), w)  # zero weight error, bit for bit


def test_gptq_sym_is_a_symmetric_rom_format_and_g_idx_trivial(tmp_path):
    rng = np.random.default_rng(1)
    r, c, g = 32, 256, 128
    q = rng.integers(0, 16, (r, c))
    zero = np.full((r, c // g), 8)
    scale = _fp16_scales(rng, (r, c // g))
    gi = np.arange(c) // g
    f = _write(tmp_path, P, pack_gptq(q, zero, scale, 4, g_idx=gi))
    t = pq.read_module(f, P, pq.Scheme("gptq", 4, g, True, zero_plus_one=True), "m")
    assert t.trivial_groups()
    rom = pq.to_rom(t)
    assert rom.fmt.symmetric and rom.fmt.group_size == 128
    # scales spanning 3 binades: an F16 mantissa and 2 shift bits (or 2 more mantissa bits)
    assert rom.fmt.scale_bits + rom.fmt.scale_shift_bits <= 11 + 2
    assert np.array_equal(rom.dequantize(), pq.dequantize(t))


def test_gptq_desc_act_unpacks_but_is_refused_by_to_rom(tmp_path):
    rng = np.random.default_rng(2)
    r, c, g = 32, 128, 32
    q = rng.integers(0, 16, (r, c))
    zero = rng.integers(1, 17, (r, c // g))
    scale = _fp16_scales(rng, (r, c // g))
    gi = rng.permutation(np.arange(c) // g)
    f = _write(tmp_path, P, pack_gptq(q, zero, scale, 4, g_idx=gi))
    t = pq.read_module(f, P, pq.Scheme("gptq", 4, g, False, True, True), "m")
    w = pq.dequantize(t)
    j = 5
    assert w[3, j] == np.float32(float(scale[3, gi[j]]) * (q[3, j] - zero[3, gi[j]]))
    with pytest.raises(UnsupportedError, match=r"up_proj\.weight: g_idx .*desc_act"):
        pq.to_rom(t)


def test_awq_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    r, c, g = 64, 128, 64
    q = rng.integers(0, 16, (r, c))
    zero = rng.integers(0, 16, (r, c // g))
    scale = _fp16_scales(rng, (r, c // g))
    f = _write(tmp_path, P, pack_awq(q, zero, scale))
    scheme = pq.parse_config(
        {"quant_method": "awq", "bits": 4, "group_size": g, "zero_point": True, "version": "GEMM"},
        "config.json",
    )
    t = pq.read_module(f, P, scheme, "m")
    assert np.array_equal(t.codes, q) and np.array_equal(t.zero, zero)
    assert np.array_equal(pq.to_rom(t).dequantize(), pq.dequantize(t))
    # a word's nibbles are not in column order: column 1 is nibble 4
    word = int(np.array(f.read_raw(P + ".qweight")[0, 0]).view(np.uint32))
    assert (word >> 16) & 15 == q[1, 0]


@pytest.mark.parametrize("sym", [True, False])
def test_compressed_tensors_round_trip(tmp_path, sym):
    rng = np.random.default_rng(4)
    r, c, g = 40, 100, 32  # in not a multiple of 8 or of the group: padding in the last word
    qs = rng.integers(-8, 8, (r, c))
    ng = -(-c // g)
    zp = None if sym else rng.integers(-8, 8, (r, ng))
    scale = (rng.uniform(0.5, 1, (r, ng)) * 2.0**-7).astype(ml_dtypes.bfloat16)
    f = _write(tmp_path, P, pack_ct(qs, zp, scale, 4))
    cfg = {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": {"num_bits": 4, "type": "int", "symmetric": sym, "strategy": "group",
                            "group_size": g, "actorder": None},
            }
        },
        "ignore": ["lm_head"],
    }  # fmt: skip
    scheme = pq.parse_config(cfg, "config.json")
    assert scheme.ignore == ("lm_head",) and scheme.sym == sym
    t = pq.read_module(f, P, scheme, "m")
    assert np.array_equal(t.codes.astype(int) - 8, qs)
    gi = np.arange(c) // g
    want = scale.astype(np.float64)[:, gi] * (qs - (0 if sym else zp[:, gi]))
    assert np.array_equal(pq.dequantize(t), want.astype(np.float32))
    rom = pq.to_rom(t)
    assert rom.fmt.symmetric == sym and rom.fmt.group_size == 32
    assert np.array_equal(rom.dequantize(), pq.dequantize(t))


def test_per_channel_maps_to_rom_groups_inside_the_row(tmp_path):
    rng = np.random.default_rng(5)
    r, c = 16, 8192
    q = rng.integers(0, 16, (r, c))
    zero = rng.integers(1, 17, (r, 1))
    scale = _fp16_scales(rng, (r, 1))
    f = _write(tmp_path, P, pack_gptq(q, zero, scale, 4))
    t = pq.read_module(f, P, pq.Scheme("gptq", 4, -1, False, zero_plus_one=True), "m")
    rom = pq.to_rom(t)
    assert rom.fmt.group_size == 4096
    assert np.array_equal(rom.dequantize(), pq.dequantize(t))


# -- the scale encoding, by property ------------------------------------------------------------

_F16 = st.integers(1, 0x7BFF).map(lambda b: np.array(b, dtype=np.uint16).view(np.float16))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(_F16, min_size=4, max_size=4), min_size=1, max_size=4),
       st.lists(st.integers(0, 15), min_size=16, max_size=16))  # fmt: skip
def test_to_rom_is_exact_or_refuses(scales, zs):
    """Any positive F16 scales: the ROM holds every weight exactly, or the tensor is refused
    naming its row; a row spanning at most 15 binades is always held (the offset's mantissa,
    an F16 mantissa times |8 - zero| <= 8, takes up to 15 bits and a sign of the 16)."""
    s = np.array(scales, dtype=np.float16).astype(np.float64)
    r, ng = s.shape
    g = 32
    rng = np.random.default_rng(0)
    t = pq.Imported(
        "x.weight", (r, ng * g), 4, g, rng.integers(0, 16, (r, ng * g)).astype(np.uint8), s,
        np.array(zs[: r * ng], dtype=np.int16).reshape(r, ng) if r * ng <= 16 else
        np.zeros((r, ng), np.int16), None, "gptq",
    )  # fmt: skip
    exps = np.frexp(s)[1]
    try:
        rom = pq.to_rom(t)
    except UnsupportedError as e:
        assert str(e).startswith("x.weight: row ")
        assert (exps.max(axis=1) - exps.min(axis=1)).max() > 15
        return
    assert np.array_equal(rom.dequantize(), pq.dequantize(t))


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(
                        st.sampled_from(["quant_method", "bits", "group_size", "format",
                                         "config_groups", "weights", "num_bits", "strategy",
                                         "version", "checkpoint_format", "sym", "ignore"]), c,
                        max_size=5), max_leaves=12))  # fmt: skip
def test_parse_config_gives_a_scheme_or_an_input_error(qc):
    try:
        s = pq.parse_config(qc, "config.json")
    except InputError as e:
        assert str(e).startswith("config.json: ") and "\n" not in str(e)
        return
    assert s.method in pq.METHODS


# -- refusals -----------------------------------------------------------------------------------


def _gptq_file(tmp_path, **edit):
    rng = np.random.default_rng(6)
    q = rng.integers(0, 16, (32, 64))
    zero = rng.integers(1, 17, (32, 2))
    tensors = pack_gptq(q, zero, _fp16_scales(rng, (32, 2)), 4)
    for k, v in edit.items():
        if v is None:
            del tensors[k]
        else:
            tensors[k] = v
    return _write(tmp_path, P, tensors)


S4 = pq.Scheme("gptq", 4, 32, False, zero_plus_one=True)


@pytest.mark.parametrize(
    "edit,needle",
    [
        ({"qzeros": None}, r"up_proj\.qzeros' is missing"),
        ({"scales": np.ones((3, 32), np.float16)}, r"up_proj\.scales' has shape \[3, 32\]"),
        ({"scales": np.ones((2, 32), np.int32)}, r"up_proj\.scales' must be F16/BF16/F32"),
        ({"qweight": np.ones((8, 32), np.float32)}, r"up_proj\.qweight' must be I32"),
        ({"scales": -np.ones((2, 32), np.float16)}, r"up_proj\.scales' holds -1\.0 at \[0, 0\]"),
        ({"scales": np.full((2, 32), np.inf, np.float16)}, r"scales must be finite"),
        ({"g_idx": np.full(64, 2, np.int32)}, r"up_proj\.g_idx' has group indices outside"),
        ({"qzeros": np.ones((2, 5), np.int32)}, r"up_proj\.qzeros' has shape \[2, 5\]"),
    ],
)
def test_gptq_bad_tensors_name_the_tensor(tmp_path, edit, needle):
    f = _gptq_file(tmp_path, **edit)
    with pytest.raises(InputError, match=needle):
        pq.read_module(f, P, S4, "m")


def test_refusals_of_config_and_rom(tmp_path):
    for qc, needle in [
        ({"quant_method": "bitsandbytes"}, "quant_method 'bitsandbytes' is not supported"),
        ({"quant_method": "awq", "bits": 4, "version": "gemv"}, "AWQ version 'gemv'"),
        ({"quant_method": "gptq", "bits": True}, "bits must be an integer"),
        ({"quant_method": "gptq", "bits": 4, "group_size": 0}, "group_size must be -1"),
        ({"quant_method": "compressed-tensors", "format": "float-quantized"}, "float-quantized"),
    ]:
        with pytest.raises(InputError, match=needle):
            pq.parse_config(qc, "config.json")
    f = _gptq_file(tmp_path)
    with pytest.raises(UnsupportedError, match="awq with 3 bits"):
        pq.read_module(f, P, pq.Scheme("awq", 3, 32, False), "m")
    with pytest.raises(
        InputError, match=r"up_proj\.scales' has shape \[2, 32\], expected \[4, 32\]"
    ):
        pq.read_module(f, P, pq.Scheme("gptq", 4, 16, False, zero_plus_one=True), "m")
    t16 = pq.read_module(_gptq_file(tmp_path), P, S4, "m")
    t16.group_size = 16
    t16.scale = np.repeat(t16.scale, 2, axis=1)
    t16.zero = np.repeat(t16.zero, 2, axis=1)
    with pytest.raises(UnsupportedError, match="group size 16 is not a multiple of 32"):
        pq.to_rom(t16)
