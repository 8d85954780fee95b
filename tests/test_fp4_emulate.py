"""FP4 matrices in the emulator's integer datapath (docs/numerics.md "FP4 matrices"; issue 21):
the prepared matrix product of QuantTensors made by ``fp4.to_quant`` against tests/intref.py
(written from the document, Python integers) bit for bit, on the numba kernels and on the C
kernel: random and extreme matrices (all 16 codes, an MX row spanning 19 binades with all-zero
blocks, nvfp4 subnormal E4M3 block scales, ``tensor_m = 2^24 - 1``, the largest accumulators
with extreme act8 vectors), and ``kernels.term_tm`` (the tensor mantissa's two-limb rounding)
against ``intref.term`` of the exact product."""

from __future__ import annotations

import json

import intref
import numpy as np
import pytest

from maskc import romformat
from maskc.emulate import backend
from maskc.emulate import kernels as K
from maskc.emulate.chip import Act8, Chip
from maskc.emulate.prepared import prepare, stack
from maskc.errors import FitError, InputError
from maskc.quantize import fp4

F = 12
BACKENDS = ["numba", *(["c"] if backend._kern is not None else [])]


class _Netlist:
    """What :func:`prepare` reads of a netlist: the matrices' entries and their rows."""

    path = "fake"

    def __init__(self, qs: dict[str, romformat.QuantTensor]):
        self.qs = qs
        self.matrices = {
            n: {"shape": list(q.shape), "format": q.fmt.to_json()} for n, q in qs.items()
        }

    def matrix_rows(self, name, lo, hi):
        return self.qs[name].rows(name, slice(lo, hi))

    def release(self, name):
        pass


class _Host:
    """The parts of a Chip its ``matmul`` uses."""

    F = F
    _nobias = np.zeros(1, np.int64)
    _handle = Chip._handle
    matmul = Chip.matmul

    def __init__(self):
        self._handles = {}


def _ref(q: romformat.QuantTensor) -> intref.Matrix:
    """``q`` as one tile of a netlist, read by intref (codes two per byte, cell 2j low)."""
    n = q.name
    codes = q.codes.astype(np.int64)
    arrays = {
        f"{n}/block": [[0, q.shape[0], 0, q.shape[1]]],
        f"{n}/levels": q.levels.tolist(),
        f"{n}/codes": [(codes[:, 0::2] | (codes[:, 1::2] << 4)).tolist()],
        f"{n}/scale_m": [q.scale_m.tolist()],
        f"{n}/scale_s": [q.scale_s.tolist()],
        f"{n}/scale_e": [q.scale_e.tolist()],
    }
    if q.tensor_m is not None:
        arrays[f"{n}/tensor_m"] = q.tensor_m.tolist()
    return intref.Matrix(n, {"shape": list(q.shape), "format": q.fmt.to_json()}, arrays)


def _act(rng, t, c, *, extreme=False, e_lo=-40, e_hi=0):
    """Random act8 rows (or the extreme one: every code +-127, shifts 7, m = 2065)."""
    ng = -(-c // 32)
    if extreme:
        x = np.where(rng.random((t, c)) < 0.5, -127, 127)
        s = np.full((t, ng), 7)
        m = np.full(t, 2065)
    else:
        x = rng.integers(-127, 128, (t, c))
        x[rng.random((t, c)) < 0.05] = 127
        s = rng.integers(0, 8, (t, ng))
        m = rng.integers(1, 2066, t)
    e = rng.integers(e_lo, e_hi, t)
    return Act8(*(np.ascontiguousarray(a, np.int64) for a in (x, m, e, s)))


def _check(qs, act, monkeypatch, bias=None):
    """Every matrix's product on every backend == intref's, and stacked == one by one."""
    refs = {n: _ref(q) for n, q in qs.items()}
    want = {}
    for n, ref in refs.items():
        rows = []
        for t in range(act.x.shape[0]):
            a = (act.x[t].tolist(), int(act.m[t]), int(act.e[t]), act.s[t].tolist())
            rows.append(ref.matvec(a, None if bias is None else bias[n].tolist(), F))
        want[n] = np.array(rows, np.int64)
    for be in BACKENDS:
        monkeypatch.setenv(backend.ENV, be)
        nl = _Netlist(qs)
        host = _Host()
        mats = {n: prepare(nl, n) for n in qs}
        for n, mat in mats.items():
            assert mat.c == (be == "c")
            got = host.matmul(act, mat, None if bias is None else bias[n])
            assert np.array_equal(got, want[n]), (be, n)
        if len(mats) > 1 and all(m.same_storage(mats[next(iter(mats))]) for m in mats.values()):
            st, sb = stack(list(mats.values()), [None if bias is None else bias[n] for n in mats])
            y = host.matmul(act, st, sb)
            r = 0
            for n, mat in mats.items():
                assert np.array_equal(y[:, r : r + mat.rows], want[n]), (be, "stacked", n)
                r += mat.padded_rows


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mxfp4", "nvfp4"])
def test_random_matrices(kind, monkeypatch):
    rng = np.random.default_rng(1 if kind == "mxfp4" else 2)
    qs = {
        "a": fp4.to_quant("a", rng.standard_normal((37, 80)) * 0.05, kind),  # padded columns
        "b": fp4.to_quant("b", rng.standard_normal((20, 80)) * 3.0, kind),
    }
    bias = {"a": rng.integers(-(1 << 20), 1 << 20, 37), "b": rng.integers(-9, 9, 20)}
    _check(qs, _act(rng, 3, 80, e_lo=-60, e_hi=10), monkeypatch, bias)


@pytest.mark.parametrize("kind", ["mxfp4", "nvfp4"])
def test_every_code(kind, monkeypatch):
    """Each block holds all 16 codes (-0 included): E2M1 values times a power of two."""
    rng = np.random.default_rng(3)
    vals = np.concatenate([fp4.E2M1_MAGNITUDES, -fp4.E2M1_MAGNITUDES])  # code order
    w = np.tile(vals, (16, 8)) * np.exp2(rng.integers(-6, 6, (16, 1)))
    q = fp4.to_quant("m", w, kind)
    assert sorted(set(q.codes.ravel().tolist())) == list(range(16))
    _check({"m": q}, _act(rng, 2, 128), monkeypatch)


def test_mx_span_19_binades_and_zero_blocks(monkeypatch):
    """Rows whose block scales span exactly 19 binades (the datapath's limit; 20 is refused),
    all-zero blocks (their scale_s far beyond SREF: they add nothing) and an all-zero row."""
    rng = np.random.default_rng(4)
    w = rng.standard_normal((16, 192))
    w[:, 32:64] *= 2.0**-19  # 19 binades below the row's largest block (about)
    w[:, 0] = 6.0  # block 0's max: E = 127
    w[:, 32] = 6.0 * 2.0**-19  # block 1's max: E = 108, span 19
    w[:, 64:96] = 0.0  # an all-zero block: E = 0
    w[5] = 0.0
    q = fp4.to_quant("m", w, "mxfp4")
    assert int(q.scale_s[0, 1]) == 19 and int(q.scale_s[0, 2]) > 19
    _check({"m": q}, _act(rng, 2, 192, e_lo=-60, e_hi=-10), monkeypatch)
    w[:, 32] = 6.0 * 2.0**-20
    with pytest.raises(FitError, match="19 binades"):
        fp4.to_quant("m", w, "mxfp4")


def test_nv_subnormal_block_scales_and_largest_tensor_m(monkeypatch):
    rng = np.random.default_rng(5)
    w = rng.standard_normal((24, 96))
    w[:, 0] = 1000.0  # sets the tensor scale: the other blocks' scales are subnormal E4M3
    w[:, 16:] *= rng.uniform(0.001, 0.02, (24, 1))
    q = fp4.to_quant("m", w, "nvfp4")
    assert np.any((q.scale_s == 14) & (q.scale_m < 8) & (q.scale_m > 0))
    arrays = q.arrays()
    arrays["tensor_m"] = np.array([(1 << 24) - 1], np.uint32)
    q2 = romformat.from_arrays("n", q.shape, q.fmt, arrays, "nv")
    _check({"m": q, "n": q2}, _act(rng, 3, 96, e_lo=-60, e_hi=20), monkeypatch)


@pytest.mark.parametrize("kind", ["mxfp4", "nvfp4"])
def test_largest_accumulators(kind, monkeypatch):
    """C = 16,384 with every weight +-6 at the largest block scale, the extreme act8 vector,
    and (nvfp4) tensor_m = 2^24 - 1: |A * m_a| near 2^61.5, times tensor_m near 2^85.5."""
    rng = np.random.default_rng(6)
    w = np.where(rng.random((16, 16384)) < 0.5, -6.0, 6.0)
    q = fp4.to_quant("m", w, kind)
    assert np.all(np.abs(q.levels[q.codes]) == 12) and not np.any(q.scale_s)
    if kind == "nvfp4":
        assert np.all(q.scale_m == 14)  # E4M3 448
        arrays = q.arrays()
        arrays["tensor_m"] = np.array([(1 << 24) - 1], np.uint32)
        q = romformat.from_arrays("m", q.shape, q.fmt, arrays, "nv")
    x = _act(rng, 2, 16384, extreme=True, e_lo=-90, e_hi=-20)
    x.x[1] = 127  # every product positive: the bound itself
    _check({"m": q}, x, monkeypatch)


def test_term_tm_is_the_exact_rounding():
    """kernels.term_tm(p, tm, k) == term(p * tm, k) on unbounded integers: every branch (the
    product within int64, saturation, shifts below, across and above the 31-bit limb)."""
    rng = np.random.default_rng(7)
    ps = [0, 1, -1, (1 << 62) - 1, -(1 << 62) + 1, (1 << 31), -(1 << 31), (1 << 31) - 1]
    ps += [int(v) for v in rng.integers(-(1 << 62), 1 << 62, 300)]
    ps += [int(v) >> int(s) for v, s in zip(rng.integers(-(1 << 62), 1 << 62, 300),
                                              rng.integers(0, 62, 300), strict=True)]  # fmt: skip
    tms = [1, 2, 3, (1 << 23), (1 << 24) - 1, *(int(v) for v in rng.integers(1, 1 << 24, 8))]
    ks = [-50, -10, -1, 0, 1, 2, 15, 30, 31, 32, 33, 40, 55, 62, 63, 80, 86, 87, 88, 89, 120]
    p_arr = np.array(ps, np.int64)
    for tm in tms:
        for k in ks:
            got = _term_tm_all(p_arr, tm, k)
            want = [intref.term(p * tm, k) for p in ps]
            assert got.tolist() == want, (tm, k)


@K.njit(cache=True)
def _term_tm_all(p, tm, k):  # pragma: no cover - compiled
    out = np.empty(p.shape[0], np.int64)
    for i in range(p.shape[0]):
        out[i] = K.term_tm(p[i], np.int64(tm), np.int64(k))
    return out


def test_mx_block_beyond_sref_with_codes_is_refused(monkeypatch):
    """A tile whose mxfp4 block lies beyond SREF yet holds nonzero codes (a hand-made netlist:
    romformat's span check refuses it everywhere else) is refused, never computed."""
    rng = np.random.default_rng(8)
    q = fp4.to_quant("m", rng.standard_normal((16, 64)), "mxfp4")
    q.scale_s[3, 1] = 40  # behind validate's back
    for be in BACKENDS:
        monkeypatch.setenv(backend.ENV, be)
        with pytest.raises(InputError, match="row 3 group 1 has scale_s 40"):
            prepare(_Netlist({"m": q}), "m")


@pytest.mark.skipif(backend._kern is None, reason="maskc.emulate._kern is not built")
def test_c_handle_checks_the_fp4_fields(monkeypatch):
    """_kern.matrix refuses a tensor mantissa outside 1..2^24 - 1 and a level table that is
    not 16 bytes (prepared.py never makes them; the C code trusts only what it checked)."""
    monkeypatch.setenv(backend.ENV, "c")
    rng = np.random.default_rng(9)
    mat = prepare(_Netlist({"m": fp4.to_quant("m", rng.standard_normal((16, 64)), "nvfp4")}), "m")
    host = _Host()
    host.matmul(_act(rng, 1, 64), mat, None)  # the real one is accepted
    for kt, lut in ((np.zeros_like(mat.kt), mat.lut), (np.full_like(mat.kt, 1 << 24), mat.lut),
                    (mat.kt, mat.lut[:8])):  # fmt: skip
        mat2 = prepare(
            _Netlist({"m": fp4.to_quant("m", rng.standard_normal((16, 64)), "nvfp4")}), "m"
        )
        mat2.kt, mat2.lut = np.ascontiguousarray(kt), np.ascontiguousarray(lut)
        with pytest.raises(ValueError, match=r"_kern\.matrix"):
            host.matmul(_act(rng, 1, 64), mat2, None)


# -- whole models compiled with FP4 formats -----------------------------------------------------

#: a mix of formats in one model: gate and up (stacked by the emulator) in different FP4
#: formats, v in 3-bit integers, the rest mxfp4 (the --format default of the compile)
MIXED_TOML = """
[[rule]]
match = 'model\\.layers\\.\\d+\\.mlp\\.up_proj'
format = "nvfp4"
[[rule]]
match = 'model\\.layers\\.\\d+\\.self_attn\\.v_proj'
format = "int"
bits = 3
method = "lsq"
"""
WHOLE = [
    ("tiny", "mxfp4"),
    ("tiny", "nvfp4"),
    ("mixtral", "nvfp4"),
    ("tiny", "mixed"),
    ("tiny", "mxfp4-gptq"),  # --method gptq, calibrated on the built-in text
    ("tiny", "nvfp4-gptq"),
]


@pytest.fixture(scope="module")
def fp4_builds(model_cache, tmp_path_factory):
    """Presets compiled with each FP4 format as the block matrices' format (the compile reads
    its layers back and verifies them)."""
    from maskc.pipeline import CompileOptions, compile_model

    root = tmp_path_factory.mktemp("fp4-whole")
    out = {}
    for preset, kind in WHOLE:
        opts = {"weight_format": kind}
        if kind == "mixed":
            (root / "mixed.toml").write_text(MIXED_TOML)
            opts = {"weight_format": "mxfp4", "quant_config": root / "mixed.toml"}
        elif kind.endswith("-gptq"):
            opts = {"weight_format": kind.removesuffix("-gptq"), "method": "gptq"}
        b = root / f"{preset}-{kind}"
        compile_model(model_cache(preset).path, b, CompileOptions(**opts))
        out[(preset, kind)] = b
    return out


@pytest.mark.slow
@pytest.mark.parametrize("preset,kind", WHOLE)
@pytest.mark.parametrize("be", BACKENDS)
def test_emulated_fp4_model_equals_the_integer_reference(fp4_builds, preset, kind, be, monkeypatch):
    """Prompt + 5 decode steps, greedy and sampled, on each backend: the emulator's tokens and
    every position's int32 logits equal tests/intref.py's (written from docs/numerics.md)."""
    from maskc.emulate.run import generate, open_session
    from maskc.emulate.sampling import SamplingParams
    from maskc.netlist import load_netlist

    b = fp4_builds[(preset, kind)]
    kinds = {m["format"].get("kind", "int") for m in load_netlist(b).matrices.values()}
    assert kinds >= ({"mxfp4", "nvfp4"} if kind == "mixed" else {kind.removesuffix("-gptq")})
    if kind.endswith("-gptq"):  # every FP4 matrix by gptq, calibrated
        report = json.loads((b / "reports" / "quant.json").read_text())
        fp4_rows = [t for t in report["tensors"] if t.get("format")]
        assert fp4_rows and all(t["method"] == "gptq" for t in fp4_rows)
        assert report["calibration"]
    monkeypatch.setenv(backend.ENV, be)
    session = open_session(b)
    ref = intref.IntRef(b)
    prompt = [1, 2, 3, 4, 5]
    for sp in (SamplingParams(), SamplingParams(temperature=1.5, top_k=0, top_p=1.0, seed=3)):
        rows: list = []
        g = generate(session, prompt, 6, sp, stop_at_eos=False, keep_logits=rows)
        toks, ref_rows = intref.generate(
            ref, prompt, 6, sp.temperature, sp.top_k, sp.top_p, sp.seed
        )
        assert g.tokens == toks, (preset, kind, be, sp)
        for a, r in zip(rows, ref_rows, strict=True):
            assert a.tolist() == r
