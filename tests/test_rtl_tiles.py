"""The mask-ROM tiles and matrices as Verilog (maskc/rtl/tiles.py, matrix.py): cosimulated with
cocotb on Verilator and Icarus against the emulator's kernels (maskc/rtl/kernelref.py calls
the code ``maskc emulate`` runs), on random and extreme activation vectors, bit for bit.

Builds: tiny-qwen2 on the micro fabric (16 x 64-cell tiles: every matrix cut into several
row and column blocks; q/k/v biases; the 8-bit embedding in 40 tiles), tiny at 3 bits on
``mini`` (packed 3-bit codes, groups of 64; 4-bit k/v/o/down; the 8-bit tied lm_head in two
row blocks) and tiny at 3 bits on micro (3-bit codes one per cell)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
from helpers import micro_fabric

from maskc.errors import InputError
from maskc.netlist import load_netlist
from maskc.rtl import emit_embed, emit_matrix, tile_kind
from maskc.rtl import kernelref as KR

sys.path.insert(0, str(Path(__file__).parent / "rtl"))
import tiles_sim


@pytest.fixture(scope="module")
def builds(model_cache, tmp_path_factory):
    from maskc.pipeline import CompileOptions, compile_model

    root = tmp_path_factory.mktemp("rtl")
    fab = micro_fabric(root)
    out = {}
    for key, preset, fabric, bits in (
        ("q4micro", "tiny-qwen2", fab, None),
        ("t3mini", "tiny", "mini", 3),
        ("t3micro", "tiny", fab, 3),
    ):
        opts = CompileOptions(fabric=fabric, bits=bits, verify=False)
        compile_model(model_cache(preset).path, root / key, opts)
        out[key] = load_netlist(root / key)
    return out


def _name(nl, role: str, layer: int = 0) -> str:
    return next(n for n, m in nl.matrices.items() if m["role"] == role and m["layer"] == layer)


def _bias(nl, name: str) -> str | None:
    from maskc.netlist.ops import MatMul

    return next((op.bias for op in nl.ops if isinstance(op, MatMul) and op.matrix == name), None)


def _cases(builds, out_dir: Path, full: bool = True):
    """(module, kind, reference rows per vector) for every design under test, all written into
    ``out_dir`` (one simulator build for all). ``full=False``: one design per tile kind and the
    embedding (Verilator's C++ build grows with the design; Icarus runs them all)."""
    cases = []

    def matrix(key, role, layer=0, tiles=None, seed=0):
        nl = builds[key]
        name = _name(nl, role, layer)  # role "embed": the tied lm_head's matrix
        bias = _bias(nl, name)
        mod = emit_matrix(nl, name, out_dir, bias=bias, tiles=tiles, prefix=key + "_")
        r, c = nl.matrices[name]["shape"]
        v = tiles_sim.vectors(c, seed)
        x = v["x"].copy()
        rows = np.arange(r)
        if tiles is not None:  # only the given tiles' columns and row blocks
            blk = np.asarray(nl.tile_arrays(name)["block"])[tiles]
            keep = np.zeros(c, bool)
            for _, _, c0, nc in blk:
                keep[c0 : c0 + nc] = True
            x[:, ~keep] = 0
            rows = np.concatenate([np.arange(r0, r0 + nr) for r0, nr, _, _ in blk])
            rows = np.unique(rows)
        b = None if bias is None else nl.params()[bias].astype(np.int64)
        ref = KR.matmul(nl, name, x, v["s"], v["m"], v["e"], b)[:, rows]
        vecs = [
            {"kind": "matrix", "x": x[i].tolist(), "s": v["s"][i].tolist(),
             "m": int(v["m"][i]), "e": int(v["e"][i])}
            for i in range(len(x))
        ]  # fmt: skip
        pairs = [list(zip(rows.tolist(), rr.tolist(), strict=True)) for rr in ref]
        cases.append((mod, vecs, pairs))

    def embed(key, tokens):
        nl = builds[key]
        name = _name(nl, "embed", None)
        mod = emit_embed(nl, name, out_dir, prefix=key + "_")
        ref = KR.embed(nl, name, tokens)
        c = ref.shape[1]
        vecs = [{"kind": "embed", "token": int(t)} for t in tokens]
        cases.append((mod, vecs, [list(zip(range(c), rr.tolist(), strict=True)) for rr in ref]))

    matrix("q4micro", "q_proj")  # bias, 4 x 1 tiles
    if full:
        matrix("q4micro", "down_proj", layer=1, seed=1)  # 4 row blocks x 3 column blocks
    matrix("q4micro", "down_proj", tiles=[4], seed=2)  # one tile alone
    embed("q4micro", [0, 1, 15, 16, 200, 319])
    matrix("t3mini", "gate_proj", seed=3)  # packed 3-bit, G = 64
    if full:
        matrix("t3mini", "k_proj", seed=4)  # 4-bit on mini
    matrix("t3mini", "embed", layer=None, seed=5)  # the tied lm_head: 8-bit, two row blocks
    if full:
        embed("t3mini", [0, 191, 192, 319])
    matrix("t3micro", "up_proj", seed=6)  # 3-bit, one code per cell
    return cases


@pytest.mark.slow
@pytest.mark.parametrize("sim", tiles_sim.SIMULATORS)
def test_tiles_equal_the_emulator_kernel(builds, tmp_path, sim):
    why = tiles_sim.missing(sim)
    if why:
        pytest.skip(why)
    rtl = tmp_path / "rtl"
    cases = _cases(builds, rtl, full=sim == "icarus")
    mods = [c[0] for c in cases]
    (rtl / "tiles_top.v").write_text(tiles_sim.wrapper(mods))
    sources = [*sorted({f for m in mods for f in m.files if f.endswith(".v")}), "tiles_top.v"]
    spec_vecs, want = [], []
    for k, (_, vecs, ref) in enumerate(cases):
        for v, r in zip(vecs, ref, strict=True):
            spec_vecs.append({**v, "sel": k})
            want.append((k, r))
    spec = {"kind": "mixed", "max_cycles": 4000, "vectors": spec_vecs}
    res = tiles_sim.run(sim, rtl, "tiles_top", sources, spec, tmp_path / "work")
    assert len(res["results"]) == len(want)
    for i, ((k, ref), got) in enumerate(zip(want, res["results"], strict=True)):
        got = [tuple(p) for p in got]
        ref = [tuple(p) for p in ref]
        if got != ref:
            bad = [j for j, (a, b) in enumerate(zip(got, ref, strict=False)) if a != b]
            where = f" first at {ref[bad[0]]} (rtl {got[bad[0]]})" if bad else " (row count)"
            pytest.fail(f"{sim}: {mods[k].name} vector {i}: rtl != emulator{where}")
    # one row per cycle: a matrix of R rows in one row block takes R + 3 cycles
    q = want.index(next(w for w in want if w[0] == 0))
    assert res["cycles"][q] <= len(want[q][1]) + 3 * 4 + 1


def test_generator_is_deterministic_and_lint_clean(builds, tmp_path):
    nl = builds["t3mini"]
    a, b = tmp_path / "a", tmp_path / "b"
    names = [_name(nl, "gate_proj"), _name(nl, "k_proj")]
    mods = [emit_matrix(nl, n, a) for n in names] + [emit_matrix(nl, n, b) for n in names]
    emit_embed(nl, _name(nl, "embed", None), a)
    emit_embed(nl, _name(nl, "embed", None), b)
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert fa == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in fa:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert set(mods[0].files) <= {str(f) for f in fa}
    if tiles_sim.missing("verilator"):
        pytest.skip("verilator is not available for the lint")
    import subprocess

    for top in [m.name for m in mods[:2]] + [f"emb_{n}" for n in ["model_embed_tokens_weight"]]:
        src = sorted(str(f) for f in fa if str(f).endswith(".v"))
        p = subprocess.run(
            ["verilator", "--lint-only", "-Wall", "--top-module", top, *src],
            cwd=a, capture_output=True, text=True,
        )  # fmt: skip
        assert p.returncode == 0, p.stderr[-2000:]


def test_rom_images_hold_the_layers_bits(builds, tmp_path):
    """The hex images decoded by hand (code j = bits b*j.. of the row's stream, cell 0 first;
    the scale line's fields at their widths) give the netlist's arrays."""
    nl = builds["t3mini"]
    name = _name(nl, "gate_proj")
    emit_matrix(nl, name, tmp_path)
    t = nl.tile_arrays(name)
    kind = tile_kind(nl, name)
    base = name.replace(".", "_")
    lines = (tmp_path / "rom" / f"{base}.t0.cells.hex").read_text().split()
    _, nr, _, nc = (int(v) for v in t["block"][0])
    codes = np.asarray(t["codes"][0])
    for r in (0, nr - 1):
        stream = bin(int(lines[r], 16))[2:].zfill(4 * kind.columns)
        got = [int(stream[3 * j : 3 * j + 3], 2) for j in range(nc)]
        assert got == codes[r, :nc].tolist()
    sl = (tmp_path / "rom" / f"{base}.t0.scale.hex").read_text().split()
    bits = bin(int(sl[1], 16))[2:].zfill(kind.scale_width)
    # group 2 of row 1: scale_m 8, scale_s 3, zero_m 8 (signed), zero_s 3 bits
    g = bits[2 * 22 : 3 * 22]
    assert int(g[0:8], 2) == int(t["scale_m"][0][1, 2])
    assert int(g[8:11], 2) == int(t["scale_s"][0][1, 2])
    zm = int(g[11:19], 2)
    assert zm - (256 if zm >= 128 else 0) == int(t["zero_m"][0][1, 2])
    se = int(bits[4 * 22 : 4 * 22 + 8], 2)
    assert se - (256 if se >= 128 else 0) == int(t["scale_e"][0][1])
    lev = bin(int(sl[kind.tr], 16))[2:].zfill(kind.scale_width)
    got = [int(lev[8 * c : 8 * c + 8], 2) for c in range(8)]
    assert [v - 256 if v >= 128 else v for v in got] == t["levels"].tolist()


def test_fp4_matrix_is_refused_with_one_line(builds):
    nl = builds["t3mini"]
    name = _name(nl, "q_proj")
    m = dict(nl.matrices[name], format={**nl.matrices[name]["format"], "kind": "mxfp4"})
    fake = types.SimpleNamespace(matrices={name: m}, path=nl.path, fabric=nl.fabric)
    with pytest.raises(InputError) as e:
        tile_kind(fake, name)
    msg = str(e.value)
    assert name in msg and "mxfp4" in msg and "\n" not in msg


def test_verify_rtl_reads_the_images_back(builds, tmp_path, cli):
    """``maskc verify BUILD --rtl DIR``: exit 0 on the generator's images; one changed hex
    digit (a code, a scale field, a padding cell) is exit 5 naming the tile, row and field."""
    nl = builds["t3mini"]
    build = nl.path.parent
    rtl = tmp_path / "rtl"
    for name in sorted(nl.matrices):
        emit_matrix(nl, name, rtl)
    r = cli("verify", build, "--rtl", rtl, "--json")
    assert r.code == 0, r.err
    assert '"rtl"' in r.out
    name = _name(nl, "gate_proj")
    f = rtl / "rom" / (name.replace(".", "_") + ".t0.cells.hex")
    good = f.read_text()
    lines = good.split("\n")
    lines[3] = ("0" if lines[3][0] != "0" else "1") + lines[3][1:]
    f.write_text("\n".join(lines))
    r = cli("verify", build, "--rtl", rtl)
    assert r.code == 5
    assert "rtl: tile T0_" in r.err and name in r.err and "row 3 weight 0: code" in r.err
    assert len(r.err.strip().splitlines()) == 1
    f.write_text(good)
    s = rtl / "rom" / (name.replace(".", "_") + ".t0.scale.hex")
    lines = s.read_text().split("\n")
    lines[5] = ("8" if lines[5][0] != "8" else "0") + lines[5][1:]  # scale_m's top bit, row 5
    s.write_text("\n".join(lines))
    r = cli("verify", build, "--rtl", rtl)
    assert r.code == 5 and "scale_m at row, group (5, 0)" in r.err, r.err
    r = cli("verify", build, "--rtl", tmp_path / "nothing")
    assert r.code == 3 and "no rom/ folder" in r.err


def test_reference_agrees_with_intref(builds):
    """The cosim's reference (the emulator's kernel, through kernelref) on the same vectors as
    the RTL equals docs/numerics.md written out with tests/intref.py's primitives on the
    netlist's matrix (a bias included)."""
    import intref as I

    nl = builds["q4micro"]
    name = _name(nl, "q_proj")
    bias = nl.params()[_bias(nl, name)].astype(np.int64)
    q = nl.matrix(name)
    r, c = q.shape
    v = tiles_sim.vectors(c, 0)
    got = KR.matmul(nl, name, v["x"], v["s"], v["m"], v["e"], bias)
    f, g = q.fmt, q.fmt.group_size
    sm, zm = (1 << f.scale_shift_bits) - 1, (1 << f.zero_shift_bits) - 1
    lev = q.levels.tolist()
    for t in (0, 1, 4, 8):
        x, s, m, e = v["x"][t].tolist(), v["s"][t].tolist(), int(v["m"][t]), int(v["e"][t])
        for row in range(r):
            a = b = 0
            for grp in range(-(-c // 32)):
                cols = range(grp * 32, min(c, grp * 32 + 32))
                wg = grp * 32 // g
                sg = sum(x[j] * lev[q.codes[row, j]] for j in cols)
                a += int(q.scale_m[row, wg]) * sg << (sm - int(q.scale_s[row, wg]) + s[grp])
                b += int(q.zero_m[row, wg]) * sum(x[j] for j in cols) << (
                    zm - int(q.zero_s[row, wg]) + s[grp]
                )
            y = I.term(a * m, sm - int(q.scale_e[row]) - e - 12)
            y += I.term(b * m, zm - int(q.zero_e[row]) - e - 12) + int(bias[row])
            assert I.sat32(y) == got[t, row], (t, row)
