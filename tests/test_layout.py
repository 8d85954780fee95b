"""The two customizable layers: deterministic files, read back equal to the netlist, and every
tampering of issue 7 caught by ``maskc verify`` (exit 5), in GDS and in OASIS."""

from __future__ import annotations

import shutil

import gdstk
import numpy as np
import pytest
from helpers import micro_fabric

from maskc.layout import cell_values, codes_from_cells


@pytest.fixture(scope="module")
def builds(model_cache, tmp_path_factory):
    from maskc.pipeline import CompileOptions, compile_model

    root = tmp_path_factory.mktemp("lay")
    fab = micro_fabric(root)
    out = {}
    for fmt in ("gds", "oas"):
        out[fmt] = root / fmt
        opts = CompileOptions(fabric=fab, layout_format=fmt)
        compile_model(model_cache("tiny").path, out[fmt], opts)
    return out


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_cell_values_round_trip(bits):
    from maskc.fabric import load_fabric

    fab = load_fabric("mini")
    rng = np.random.default_rng(bits)
    w = fab.weights_per_tile_row(bits)
    for rows, cols in ((192, w), (7, 33), (1, 1)):
        codes = np.zeros((192, w), np.uint8)
        codes[:rows, :cols] = rng.integers(0, 1 << bits, (rows, cols))
        cells = cell_values(codes, rows, cols, bits, fab)
        assert np.array_equal(codes_from_cells(cells, rows, cols, bits, fab), codes[:rows, :cols])


@pytest.mark.parametrize("fmt", ["gds", "oas"])
def test_layers_are_deterministic_and_verify(builds, model_cache, tmp_path, cli, fmt):
    b = builds[fmt]
    r = cli("verify", b)
    assert r.code == 0 and "match" in r.out, r
    again = tmp_path / "again"
    r = cli("compile", model_cache("tiny").path, "-o", again, "--fabric",
            micro_fabric(tmp_path), "--layout-format", fmt)  # fmt: skip
    assert r.code == 0, r.err
    for layer in ("via", "metal"):
        assert (b / "layers" / f"{layer}.{fmt}").read_bytes() == (
            again / "layers" / f"{layer}.{fmt}"
        ).read_bytes()


def _load(path):
    return (
        gdstk.read_oas(str(path), unit=1e-9)
        if path.suffix == ".oas"
        else gdstk.read_gds(str(path), unit=1e-9)
    )


def _save(lib, path):
    if path.suffix == ".oas":
        lib.write_oas(str(path))
    else:
        lib.write_gds(str(path))


def _cell(lib, name):
    return next(c for c in lib.cells if c.name == name)


def _tamper(lib, case, geo_ox):
    cells = sorted(c.name for c in lib.cells if c.name.startswith("T"))
    c = _cell(lib, cells[0])
    if case == "missing via":  # one via gone: a repetition loses an offset, or (GDS) a polygon
        p = next((q for q in c.polygons if q.repetition is not None and q.repetition.size > 2),
                 None)  # fmt: skip
        if p is None:
            c.remove(c.polygons[0])
        else:
            p.repetition = gdstk.Repetition(offsets=np.asarray(p.repetition.offsets)[1:].tolist())
    elif case == "extra via":
        c.add(gdstk.rectangle((2000, 2000 + 40), (2020, 2060), layer=60))
    elif case == "moved strap":
        p = next(q for q in c.polygons if q.points.min(axis=0)[0] < geo_ox)
        p.translate(0, 40)
    elif case == "swapped tile":
        a, b = _cell(lib, cells[0]), _cell(lib, cells[1])
        a.name, b.name = "TMP", cells[0]
        a.name = cells[1]


@pytest.mark.parametrize("fmt", ["gds", "oas"])
@pytest.mark.parametrize("case", ["missing via", "extra via", "moved strap", "swapped tile"])
def test_every_tampering_is_caught(builds, tmp_path, cli, fmt, case):
    from maskc.layout import Geometry, fabric_of
    from maskc.netlist import load_netlist

    b = tmp_path / "b"
    shutil.copytree(builds[fmt], b)
    layer = "metal" if case == "moved strap" else "via"
    path = b / "layers" / f"{layer}.{fmt}"
    lib = _load(path)
    _tamper(lib, case, Geometry(fabric_of(load_netlist(b))).ox)
    _save(lib, path)
    r = cli("verify", b)
    assert r.code == 5 and "tile T" in r.err and "Traceback" not in r.err, (case, r)


def test_a_fine_tune_has_the_same_metal_layer(model_cache, tmp_path, cli):
    a, b = model_cache("tiny", 0), model_cache("tiny", 1)  # same shape, other weights
    for gen, out in ((a, tmp_path / "a"), (b, tmp_path / "b")):
        assert cli("compile", gen.path, "-o", out).code == 0
    assert (tmp_path / "a/layers/metal.gds").read_bytes() == (
        tmp_path / "b/layers/metal.gds"
    ).read_bytes()
    assert (tmp_path / "a/layers/via.gds").read_bytes() != (
        tmp_path / "b/layers/via.gds"
    ).read_bytes()
