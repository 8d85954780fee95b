"""Finite but extreme numbers (issue 19, class 5; docs/numerics.md, "What the chip can
represent"): the validation refuses what the chip cannot represent (exit 3, naming the tensor or
field), and whatever it accepts compiles without a floating-point warning to finite values.
The corpus (tests/bad_inputs/generate.py) holds the single refused cases."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from helpers import assert_bad
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from maskc.errors import InputError
from maskc.ingest.config import parse_config
from maskc.limits import WEIGHT_LIMIT, check_tensor
from maskc.netlist.constants import EPS_FRAC, gamma_fixed, rope_phase_steps
from maskc.quantize import quantize_matrix
from maskc.quantize.matrix import weight_metrics
from maskc.quantize.rules import QuantSetting
from maskc.reference import rope_inv_freq
from maskc.safetensors_io import SafetensorsFile, write_safetensors

#: the largest float32 below the weight limit: the edge every weight may reach
TOP = float(np.nextafter(np.float32(WEIGHT_LIMIT), np.float32(0)))

BASE = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 320,
}


def _numbers():
    """Anything a JSON number can be: every float (subnormal, huge, negative, 0), integers up
    to 400 digits."""
    return st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.floats(min_value=2.0**-45, max_value=2.0**70),
        st.integers(min_value=-(10**400), max_value=10**400),
        st.sampled_from([0.0, 1.0, 2.0**-40, 0.25, 2.0**64, 2.0**24, 2.0**-24, 1e-300, 1e308]),
    )


def _accepted(cfg: dict):
    """The ModelArch, or None when the validation refuses (InputError); warnings are errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return parse_config(cfg, "config.json")
        except InputError as e:
            assert "\n" not in str(e)
            return None


def _consumers_are_finite(arch) -> None:
    """Everything the compile computes from the config numbers, without a warning: RoPE's
    float32 inverse frequencies and int64 phase steps, and eps_d for D = 1 .. 2^24."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inv = rope_inv_freq(arch)
        assert inv.dtype == np.float32 and np.isfinite(inv).all() and (inv > 0).all()
        steps = rope_phase_steps(arch)
        assert steps.dtype == np.int64 and (steps >= 0).all()
        assert steps[0] > 0  # the fastest pair always rotates
    for d in (1, 64, 1 << 24):
        eps_d = round(d * arch.rms_norm_eps * 2.0**EPS_FRAC)
        assert 1 <= eps_d < 2**63


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from(["rms_norm_eps", "rope_theta"]),
    value=_numbers(),
    head_dim=st.sampled_from([2, 16, 64, 128, 256]),
)
def test_config_numbers_are_refused_or_compile_finitely(field, value, head_dim):
    arch = _accepted({**BASE, "head_dim": head_dim, field: value})
    if arch is not None:
        _consumers_are_finite(arch)


@settings(max_examples=300, deadline=None)
@given(
    factor=_numbers(),
    low=_numbers(),
    high=_numbers(),
    old=st.one_of(st.integers(1, 1 << 24), st.integers(-5, 10**30)),
    theta=st.one_of(st.just(500000.0), _numbers()),
    head_dim=st.sampled_from([2, 16, 128]),
)
def test_llama3_scaling_numbers_are_refused_or_compile_finitely(
    factor, low, high, old, theta, head_dim
):
    rs = {
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": low,
        "high_freq_factor": high,
        "original_max_position_embeddings": old,
    }
    arch = _accepted({**BASE, "head_dim": head_dim, "rope_theta": theta, "rope_scaling": rs})
    if arch is not None:
        _consumers_are_finite(arch)


def test_the_config_edges():
    """Each range's ends: in is accepted, one step out is refused naming field, value, range."""
    for field, ok, bad in [
        ("rms_norm_eps", [2.0**-40, 0.25], [2.0**-41, 0.26, 1e-300, 1e300, 0.0]),
        ("rope_theta", [1.0000001, 2.0**64], [1.0, 0.0, -1e4, 2.0**64 * 1.01, 1e308, 10**400]),
    ]:
        for v in ok:
            assert _accepted({**BASE, field: v}) is not None, (field, v)
        for v in bad:
            with pytest.raises(InputError, match=field) as e:
                parse_config({**BASE, field: v}, "config.json")
            assert "must be" in str(e.value), str(e.value)


# -- weights ----------------------------------------------------------------------------------

SETTINGS = [
    QuantSetting(4, 32, "lsq", False, False, 8),  # the block matrices' default
    QuantSetting(8, 32, "rtn", False, False, 8),  # embedding and lm_head
    QuantSetting(3, 64, "lsq", False, False, 8),
    QuantSetting(4, 32, "rtn", False, True, 4),  # symmetric, the narrowest scale
    QuantSetting(4, 32, "lsq", False, True, 8),  # symmetric, the step searched
    QuantSetting(2, 32, "lsq", True, False, 4),  # codebook
]


def _weights():
    elems = st.one_of(
        st.floats(width=32, allow_nan=False, allow_infinity=False),
        st.sampled_from([TOP, -TOP, WEIGHT_LIMIT, -WEIGHT_LIMIT, 0.0, 1e-45, -1e-40]),
    )
    return hnp.arrays(
        np.float32, st.tuples(st.integers(1, 4), st.sampled_from([32, 40, 64])), elements=elems
    )


_TINY = np.zeros((1, 32), np.float32)
_TINY[0, 0] = -1e-40  # a group of one subnormal: once overflowed lsq's step (found by hypothesis)
# multiples of the smallest subnormal: once overflowed the refits' 1/step (the codebook's, k = 4)
_DENORMAL = np.float32(
    [[1, 0, -1, -1, -1, 0, 1, 0, 0, -1, 2, 0, 2, -1, 0, 2, -1, 0, 0, -1, 2, -1, 1, 1, -1, -1, -1,
      -1, 0, 0, 0, 0]]
) * np.float32(1.4e-45)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(w=_weights(), k=st.integers(0, len(SETTINGS) - 1), scale=st.sampled_from([1.0, 1e-3]))
@example(w=_TINY, k=0, scale=1.0)
@example(w=_DENORMAL, k=len(SETTINGS) - 1, scale=1.0)
@example(w=-_DENORMAL, k=0, scale=1.0)
@example(w=_DENORMAL, k=4, scale=1.0)  # symmetric lsq: its candidate 1/step overflowed the cast
def test_weights_are_refused_or_quantize_finitely(w, k, scale):
    """Any finite float32 matrix: refused (a magnitude of 2^19 or more), or every setting
    quantizes it with no floating-point warning to a valid tensor of finite values, and the
    netlist's norm and bias conversions hold it exactly in their integer ranges."""
    w = (w * np.float32(scale)).astype(np.float32)
    try:
        check_tensor(w, "t", "model.safetensors")
    except InputError as e:
        assert np.abs(w).max() >= WEIGHT_LIMIT and "2^19" in str(e)
        return
    assert np.abs(w).max(initial=0) < WEIGHT_LIMIT
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q = quantize_matrix("t", w, SETTINGS[k])
        deq = q.dequantize()
        m = weight_metrics(w, deq.astype(np.float64))
        gq, frac = gamma_fixed(w.reshape(-1).astype(np.float64), 1 << 24)
    assert np.isfinite(deq).all()
    assert all(v is None or math.isfinite(v) for v in m.values())
    assert -63 <= frac <= 24 and np.abs(gq.astype(np.int64)).max() < 2**15
    bias = np.rint(w.astype(np.float64) * 2.0**12)
    assert (np.abs(bias) <= 2**31 - 1).all()  # a bias fits the signal unclipped


@pytest.mark.parametrize("v", [WEIGHT_LIMIT, -WEIGHT_LIMIT, 3e38])
def test_a_weight_at_the_limit_is_refused(v):
    w = np.zeros((2, 32), np.float32)
    w[1, 7] = v
    with pytest.raises(InputError, match=r"'t'.*\(1, 7\).*2\^19 = 524,288"):
        check_tensor(w, "t", "model.safetensors")


# -- a model at the limits compiles and runs ------------------------------------------------------


def _edit(folder, cfg=None, tensors=None):
    if cfg:
        p = folder / "config.json"
        p.write_text(json.dumps({**json.loads(p.read_text()), **cfg}))
    if tensors:
        p = folder / "model.safetensors"
        f = SafetensorsFile(p)
        t = {k: f.read(k).copy() for k in f.tensors}
        for name, index, v in tensors:
            t[name][index] = v
        write_safetensors(p, t, {"format": "pt"})


EDGE_WEIGHTS = [
    ("model.layers.0.mlp.up_proj.weight", (0, 3), TOP),
    ("model.layers.0.mlp.up_proj.weight", (1, 5), -TOP),
    ("model.layers.1.self_attn.q_proj.weight", (2, 2), -TOP),
    ("model.layers.0.input_layernorm.weight", (0,), TOP),
    ("model.norm.weight", (1,), -TOP),
    ("model.embed_tokens.weight", (5, 2), TOP),
    ("model.embed_tokens.weight", (6, 1), -TOP),
]


@pytest.mark.parametrize(
    "cfg",
    [
        {"rope_theta": 2.0**64, "rms_norm_eps": 2.0**-40},
        {
            "rms_norm_eps": 0.25,
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 2.0**24,
                "low_freq_factor": 2.0**-24,
                "high_freq_factor": 2.0**24,
                "original_max_position_embeddings": 1 << 24,
            },
        },
    ],
    ids=["theta-eps", "llama3"],
)
def test_a_model_at_the_limits_compiles_and_emulates(tiny_copy, cli, cfg, recwarn):
    """Weights of the largest float32 below 2^19 in matrices, norms and the embedding, and
    config numbers at their ranges' ends: the compile succeeds with no floating-point warning
    and no NaN/Infinity in its JSON (the float32 reference overflows: its output error is
    null, with a warning), and the emulator runs the build."""
    d = tiny_copy()
    _edit(d, cfg, EDGE_WEIGHTS if "rope_theta" in cfg else None)
    out = d.parent / f"{d.name}-build"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        r = cli("compile", d, "-o", out, "--no-verify", "--jobs", "1")
        assert r.code == 0, r.err
        for p in out.rglob("*.json"):
            text = p.read_text()
            assert "NaN" not in text and "Infinity" not in text, p
        if "rope_theta" in cfg:
            assert "output-level error not measured" in r.err
            assert json.loads((out / "reports" / "quant.json").read_text())["output"] is None
        r = cli("emulate", out, "--tokens", "5,6,1,2", "-n", "3", "--json")
        assert r.code == 0, r.err
    assert len(json.loads(r.out)["tokens"]) >= 1


def test_calibration_that_overflows_is_refused(tiny_copy, cli):
    """Weights in range whose float activations explode (every matrix and norm near 2^19): a
    calibrated compile is exit 3 naming the layer, before anything is written."""
    d = tiny_copy()
    p = d / "model.safetensors"
    f = SafetensorsFile(p)
    t = {k: (f.read(k) * (0 if "embed" in k else 1) + (TOP / 2 if "embed" not in k else 0.5))
         .astype(np.float32) for k in f.tensors}  # fmt: skip
    write_safetensors(p, t, {"format": "pt"})
    out = d.parent / "b"
    assert_bad(cli("compile", d, "-o", out, "--bits", "3", "--no-verify"), "calibration", "layer")
    assert not out.exists()


@pytest.mark.parametrize("v", [1, -1, 2**61, -(2**61), 2**62 - 1, -(2**62) + 1])
def test_a_matrix_of_tiny_weights_rounds_to_zero_in_both_kernels(v):
    """A row of weights near 1e-40 gets the row exponent -128, and the matmul's rounding shift
    reaches ~180: the numba kernel's term() gives the contract's 0, as the C kernel does
    (an int64 shift of 64 or more is undefined)."""
    from maskc.emulate.kernels import term

    for k in (62, 63, 64, 100, 183):
        want = max(-(2**40), min(2**40, (v + (1 << (k - 1))) >> k))  # rsr, in Python integers
        assert term(np.int64(v), np.int64(k)) == want, (v, k)
