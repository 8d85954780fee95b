"""The compiled matrix product (maskc/emulate/_kern.c) against the contract's formula written out
with Python integers (docs/numerics.md, "Matrix-vector product"; intref's term and sat32), and
against numba's product, on random and extreme matrices: 4-bit (two weights per byte) and
8-bit level tables, symmetric and asymmetric, int16 and int32 factors, weight groups of 1-4
activation groups, row counts that are not a multiple of the tile, negative and huge output
shifts, the AVX-512 VNNI loop (where the CPU has it) and the portable one, 1-4 threads."""

from __future__ import annotations

import intref
import numpy as np
import pytest

from maskc.emulate import backend
from maskc.emulate import kernels as K
from maskc.emulate.prepared import TILE, row_tiles, tiles
from maskc.errors import UsageError

kern = backend._kern
pytestmark = pytest.mark.skipif(kern is None, reason="maskc.emulate._kern is not built")


def _has_vnni() -> bool:
    if kern is None:
        return False
    try:
        kern.set_isa("avx512-vnni")
    except ValueError:
        return False
    finally:
        kern.set_isa("best")
    return True


ISAS = ["portable", *(["avx512-vnni"] if _has_vnni() else [])]


def _case(rng, *, rows, cols, t, levels, rep, zero, wide, bias, ka_lo=1, ka_hi=30):
    """Random act8 inputs and a matrix in the contract's terms (per-weight level ``L``, per
    (row, weight group) ``msh``/``zsh``, per row ``ka``/``kb``)."""
    g = 32 * rep
    cp = -(-cols // g) * g
    ngc = -(-cols // 32)
    codes = rng.integers(0, len(levels), (rows, cp))
    codes[:, cols:] = 0
    lv = np.asarray(levels, np.int64)
    ngw = cp // g
    mbits = 23 if wide else 15  # msh below 2^15 (int16) or 2^23 (int32)
    msh = rng.integers(0, 1 << mbits, (rows, ngw))
    msh[rng.random((rows, ngw)) < 0.1] = (1 << mbits) - 1  # extremes
    zsh = rng.integers(-(1 << 14), 1 << 14, (rows, ngw)) if zero else np.zeros((rows, 1))
    x = rng.integers(-127, 128, (t, cols))
    x[rng.random((t, cols)) < 0.05] = 127
    s = rng.integers(0, 8, (t, ngc))
    m = rng.integers(1, 1 << 12, t)
    e = rng.integers(-40, -20, t)  # with ka < 30: output shifts up to 53 (numba's term: <= 62)
    ka = rng.integers(ka_lo, ka_hi, rows)
    kb = rng.integers(ka_lo, ka_hi, rows)
    b = rng.integers(-(1 << 31), 1 << 31, rows) if bias else None
    return dict(codes=codes, lv=lv, msh=msh, zsh=zsh, x=x, s=s, m=m, e=e, ka=ka, kb=kb,
                bias=b, rep=rep, cols=cols, cp=cp, zero=zero, wide=wide)  # fmt: skip


def _formula(c, f=16):
    """y[t, r] with Python integers, straight from docs/numerics.md."""
    rows, cp = c["codes"].shape
    t_n = c["x"].shape[0]
    out = np.zeros((t_n, rows), np.int64)
    for t in range(t_n):
        xs = [int(v) for v in c["x"][t]] + [0] * (cp - c["cols"])
        sh = [int(c["s"][t, a]) if a < c["s"].shape[1] else 0 for a in range(cp // 32)]
        g0 = [sum(xs[a * 32 : a * 32 + 32]) for a in range(cp // 32)]
        m, e = int(c["m"][t]), int(c["e"][t])
        for r in range(rows):
            lev = [int(c["lv"][k]) for k in c["codes"][r]]
            a_sum = 0
            b_sum = 0
            for a in range(cp // 32):
                grp = sum(lev[j] * xs[j] for j in range(a * 32, a * 32 + 32))
                a_sum += int(c["msh"][r, a // c["rep"]]) * grp * 2 ** sh[a]
                if c["zero"]:
                    b_sum += int(c["zsh"][r, a // c["rep"]]) * g0[a] * 2 ** sh[a]
            v = intref.term(a_sum * m, int(c["ka"][r]) - e - f)
            if c["zero"]:
                v += intref.term(b_sum * m, int(c["kb"][r]) - e - f)
            if c["bias"] is not None:
                v += int(c["bias"][r])
            out[t, r] = intref.sat32(v)
    return out


def _kern_product(c, f=16, hint=None):
    rows, cp = c["codes"].shape
    lmin = int(c["lv"].min())
    u = (c["lv"] - lmin)[c["codes"]].astype(np.uint8)
    packed = int(u.max()) < 16 and int(c["lv"].max()) - lmin < 16
    pr = -(-rows // TILE) * TILE
    up = np.zeros((pr, cp), np.uint8)
    up[:rows] = u
    fdt = np.int32 if c["wide"] else np.int16

    def pad(a, dt):
        o = np.zeros((pr, *a.shape[1:]), dt)
        o[:rows] = a
        return o

    msh = row_tiles(pad(c["msh"], fdt))
    zsh = row_tiles(pad(c["zsh"], np.int16))
    bias = pad(c["bias"], np.int64) if c["bias"] is not None else np.zeros(1, np.int64)
    y = np.empty((c["x"].shape[0], rows), np.int64)
    handle = kern.matrix(
        tiles(up, packed), packed, pr // TILE, cp // (32 * c["rep"]), c["rep"], lmin,
        not c["wide"], msh, True, zsh, c["zero"], pad(c["ka"], np.int32),
        pad(c["kb"], np.int32), bias, c["bias"] is not None, rows, cp,
    )  # fmt: skip
    kern.matmul(
        c["x"].astype(np.int64), c["s"].astype(np.int64), c["m"].astype(np.int64),
        c["e"].astype(np.int64), c["cols"], f, handle, y,
        *(() if hint is None else (kern.ranges(hint),)),
    )  # fmt: skip
    return y


def _numba_product(c, f=16):
    """kernels.matmul on numba's layout (kernels.prepare_levels, blocked factors)."""
    rows, cp = c["codes"].shape
    pr = -(-rows // K.BLOCK_ROWS) * K.BLOCK_ROWS
    codes = np.zeros((pr, cp), np.int64)
    codes[:rows] = c["codes"]
    lev, packed, d, off = K.prepare_levels(codes, c["lv"])
    fdt = np.int32 if c["wide"] else np.int16
    mp = np.zeros((pr, c["msh"].shape[1]), fdt)
    mp[:rows] = c["msh"]
    bias = c["bias"] if c["bias"] is not None else np.zeros(1, np.int64)
    return K.matmul(
        c["x"].astype(np.int64), c["s"].astype(np.int64), c["m"].astype(np.int64),
        c["e"].astype(np.int64), lev, packed, not c["wide"], d, off, K.blocked(mp), c["rep"],
        c["ka"].astype(np.int64), c["zsh"].astype(np.int16), c["kb"].astype(np.int64),
        bias.astype(np.int64), c["zero"], c["bias"] is not None, f, rows, False, False, None,
    )  # fmt: skip


CASES = [
    dict(rows=37, cols=64, t=2, levels=range(-8, 8), rep=1, zero=True, wide=False, bias=True),
    dict(rows=16, cols=96, t=1, levels=range(0, 16), rep=1, zero=False, wide=True, bias=False),
    dict(rows=5, cols=50, t=3, levels=[-7, -3, 0, 2, 5, 9, 20, 30], rep=1, zero=True,
         wide=False, bias=False),  # a non-affine 3-bit codebook, padded columns
    dict(rows=40, cols=128, t=2, levels=range(-128, 128), rep=2, zero=True, wide=False,
         bias=True),  # 8-bit levels: one byte per weight
    dict(rows=33, cols=128, t=1, levels=range(-100, 156), rep=4, zero=True, wide=True,
         bias=False),
    dict(rows=18, cols=64, t=2, levels=[-30000, -20000, -100, 10, 11, 12, 13, 40, 100, 200,
         210, 220, 221, 222, 223, 225], rep=1, zero=False, wide=False, bias=False),
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("i", range(len(CASES)))
def test_product_is_the_formula(isa, i):
    c = _case(np.random.default_rng(i), **CASES[i])
    if int(c["lv"].max()) - int(c["lv"].min()) > 255:  # prepare() gives these to numba
        assert np.array_equal(_numba_product(c), _formula(c))
        return
    kern.set_isa(isa)
    try:
        got = _kern_product(c)
    finally:
        kern.set_isa("best")
    assert np.array_equal(got, _formula(c))
    assert np.array_equal(got, _numba_product(c))


@pytest.mark.parametrize("isa", ISAS)
def test_output_shifts_at_the_edges(isa):
    """Row shifts at or below 0 (term's left-shift branch and its clamp) and beyond 62 (a zero
    quotient): the vector loop hands such rows to the scalar one."""
    c = _case(np.random.default_rng(7), rows=20, cols=64, t=2, levels=range(-8, 8), rep=1,
              zero=True, wide=False, bias=True, ka_lo=-30, ka_hi=130)  # fmt: skip
    kern.set_isa(isa)
    try:
        got = _kern_product(c)
    finally:
        kern.set_isa("best")
    assert np.array_equal(got, _formula(c))


def test_threads_and_prefetch_do_not_change_the_product():
    c = _case(np.random.default_rng(3), rows=700, cols=256, t=3, levels=range(-8, 8), rep=1,
              zero=True, wide=False, bias=True)  # fmt: skip
    want = _numba_product(c)
    hint = (np.ones(1 << 20, np.uint8), np.ones(100, np.int16))
    try:
        for n in (1, 2, 4, 3, 1):
            backend.set_threads(n)
            assert np.array_equal(_kern_product(c, hint=hint), want)
            assert np.array_equal(_kern_product(c), want)
        del hint  # the module holds the prefetch's arrays until the next product ends it
        assert np.array_equal(_kern_product(c), want)
    finally:
        from maskc.parallel import usable_cpus

        backend.set_threads(usable_cpus())


def test_bad_calls_are_errors_not_crashes():
    c = _case(np.random.default_rng(1), rows=16, cols=32, t=1, levels=range(16), rep=1,
              zero=False, wide=False, bias=False)  # fmt: skip
    c["x"][0, 0] = 128  # not an act8 code
    with pytest.raises(ValueError, match="act8 code"):
        _kern_product(c)
    c["x"][0, 0] = 0
    c["s"][0, 0] = 8
    with pytest.raises(ValueError, match="group shift"):
        _kern_product(c)
    with pytest.raises(ValueError, match="codes has 3 bytes"):
        kern.matrix(np.zeros(3, np.uint8), True, 1, 1, 1, 0, True, np.zeros(16, np.int16), True,
                    np.zeros(1), False, np.zeros(16, np.int32), np.zeros(16, np.int32),
                    np.zeros(1, np.int64), False, 16, 32)  # fmt: skip
    good = kern.matrix(np.zeros(256, np.uint8), True, 1, 1, 1, 0, True, np.zeros(16, np.int16),
                       True, np.zeros(1), False, np.zeros(16, np.int32), np.zeros(16, np.int32),
                       np.zeros(1, np.int64), False, 16, 32)  # fmt: skip
    one = np.zeros(1, np.int64)
    with pytest.raises(ValueError, match="out has"):
        kern.matmul(np.zeros((1, 32), np.int64), one, one, one, 32, 16, good, np.zeros(3))
    with pytest.raises(ValueError):  # not a matrix handle
        kern.matmul(np.zeros((1, 32), np.int64), one, one, one, 32, 16, one, np.zeros(16))
    with pytest.raises(ValueError):
        kern.set_threads(0)
    with pytest.raises(ValueError):
        kern.set_isa("sse9")


def test_rdiv_by_is_floor_division_on_its_whole_range():
    """Q8's division by a multiply and a shift (kernels.rdiv_by) equals rdiv for every divisor
    Q8 can produce and numerators across and at the ends of its range."""
    from numba import njit

    @njit
    def mismatches():
        bad = 0
        for b in range(1, 4097):
            mg = K.rdiv_magic(b)
            for a in range(-(1 << 18), (1 << 18) + 1, 97):
                bad += K.rdiv_by(a, b, mg) != K.rdiv(a, b)
            for a in (-(1 << 18), -(1 << 18) + 1, -1, 0, 1, (1 << 18) - 1, 1 << 18):
                bad += K.rdiv_by(a, b, mg) != K.rdiv(a, b)
        return bad

    assert mismatches() == 0


def test_kernel_choice_is_checked(monkeypatch):
    monkeypatch.setenv(backend.ENV, "fortran")
    with pytest.raises(UsageError, match="MASKC_KERNEL"):
        backend.use_c()
    monkeypatch.setenv(backend.ENV, "numba")
    assert not backend.use_c() and backend.describe() == "numba"
    monkeypatch.setenv(backend.ENV, "c")
    monkeypatch.setenv(backend.ENV_ISA, "sse9")
    with pytest.raises(UsageError, match="MASKC_KERNEL_ISA"):
        backend.use_c()
