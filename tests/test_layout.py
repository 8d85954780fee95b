"""The two customizable layers: deterministic files, read back equal to the netlist, and every
tampering of issue 7 caught by ``maskc verify`` (exit 5), in GDS and in OASIS."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

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
    out["fabric"] = fab
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
    r = cli(
        "compile",
        model_cache("tiny").path,
        "-o",
        again,
        "--fabric",
        builds["fabric"],
        "--layout-format",
        fmt,
    )
    assert r.code == 0, r.err
    # verify's record (BUILD/verify.json) is the one file a compile does not write
    assert (b / "verify.json").is_file() and not (again / "verify.json").exists()
    files = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p != b / "verify.json")
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert len(files) > 10 and any(p.parts[0] == "layers" for p in files)
    for f in files:  # every file of the build, byte for byte (the manifest too)
        assert (b / f).read_bytes() == (again / f).read_bytes(), f


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


def _flat_vias(c):
    """The tile cell ``c`` rewritten flat (word cells and repetitions expanded) with gdstk;
    returns its via polygons."""
    f = c.copy(c.name + "_flat")
    f.flatten()
    polys = []
    for q in f.polygons:
        polys.append(q)
        if q.repetition is not None and q.repetition.size > 1:
            polys += q.apply_repetition()
    c.remove(*c.polygons, *c.references)
    c.add(*polys)
    return polys


def _tamper(lib, case, geo):
    cells = sorted(c.name for c in lib.cells if re.fullmatch(r"T\d+_\d+_\d+", c.name))
    c = _cell(lib, cells[0])
    if case == "missing via":  # a mask edit: one via deleted from the first tile
        vias = _flat_vias(c)
        c.remove(vias[len(vias) // 2])
    elif case == "extra via":  # one via added on an empty site of the first row
        taken = {tuple(np.rint(q.points.min(axis=0)).astype(int)) for q in _flat_vias(c)}
        sites = (
            (geo.ox + k * geo.cpx + p * geo.spx, geo.oy) for k in range(geo.cols) for p in range(4)
        )
        free = next(s for s in sites if s not in taken)
        c.add(gdstk.rectangle(free, (free[0] + geo.size, free[1] + geo.size), layer=geo.via[0]))
    elif case == "moved strap":
        p = next(q for q in c.polygons if q.points.min(axis=0)[0] < geo.ox)
        p.translate(0, 40)
    elif case == "swapped tile":
        a, b = _cell(lib, cells[0]), _cell(lib, cells[1])
        a.name, b.name = "TMP", cells[0]
        a.name = cells[1]


@pytest.mark.parametrize("fmt", ["gds", "oas"])
@pytest.mark.parametrize("case", ["missing via", "extra via", "moved strap", "swapped tile"])
def test_every_tampering_is_caught(builds, tmp_path, cli, fmt, case):
    from maskc.layout import Geometry
    from maskc.netlist import load_netlist

    b = tmp_path / "b"
    shutil.copytree(builds[fmt], b)
    layer = "metal" if case == "moved strap" else "via"
    path = b / "layers" / f"{layer}.{fmt}"
    lib = _load(path)
    _tamper(lib, case, Geometry(load_netlist(b).fabric))
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


def _flat_set_gdstk(path):
    """Every via of the file, flattened by gdstk: {(x, y)} in nm."""
    lib = _load(path)
    out = set()
    for top in lib.top_level():
        f = top.copy(top.name + "_flat")
        f.flatten()
        for q in f.polygons:
            if (q.layer, q.datatype) != (60, 0):
                continue
            pts = [q.points.min(axis=0)]
            if q.repetition is not None and q.repetition.size > 1:
                pts = q.points.min(axis=0) + np.asarray(q.repetition.get_offsets())
            out |= {tuple(np.rint(p).astype(int).tolist()) for p in pts}
    return out


def test_gds_and_oasis_hold_the_same_vias_read_by_gdstk(builds):
    """Two writers (maskc's streaming GDSII with word cells, its flat OASIS records) and one
    independent reader (gdstk flattening): the same vias, site for site."""
    g = _flat_set_gdstk(builds["gds"] / "layers" / "via.gds")
    o = _flat_set_gdstk(builds["oas"] / "layers" / "via.oas")
    assert len(g) > 1000 and g == o


def test_klayout_opens_both_formats(builds):
    db = pytest.importorskip("klayout.db")
    seen = {}
    for fmt in ("gds", "oas"):
        for layer, num in (("via", 60), ("metal", 61)):
            ly = db.Layout()
            ly.read(str(builds[fmt] / "layers" / f"{layer}.{fmt}"))
            (top,) = ly.top_cells()
            li = ly.layer(num, 0)
            boxes = set()
            it = top.begin_shapes_rec(li)
            while not it.at_end():
                b = it.shape().bbox().transformed(it.trans())
                boxes.add(
                    (
                        round(b.left * ly.dbu * 1000),
                        round(b.bottom * ly.dbu * 1000),
                        round(b.width() * ly.dbu * 1000),
                    )
                )
                it.next()
            seen[fmt, layer] = boxes
    assert seen["gds", "via"] == seen["oas", "via"] and len(seen["gds", "via"]) > 1000
    assert seen["gds", "metal"] == seen["oas", "metal"]
    assert {w for _, _, w in seen["gds", "via"]} == {20}


def test_gds_reader_flags_what_a_mask_layer_must_not_hold(builds, tmp_path, cli):
    b = tmp_path / "b"
    shutil.copytree(builds["gds"], b)
    path = b / "layers" / "via.gds"
    lib = _load(path)
    names = sorted(c.name for c in lib.cells if re.fullmatch(r"T\d+_\d+_\d+", c.name))
    c = _cell(lib, names[0])
    ref = c.references[0]
    ref.rotation = np.pi / 2
    _save(lib, path)
    r = cli("verify", b)
    assert r.code == 5 and "rotated" in r.err, r


def test_a_truncated_layer_file_is_exit_5_not_a_traceback(builds, tmp_path, cli):
    for fmt in ("gds", "oas"):
        b = tmp_path / fmt
        shutil.copytree(builds[fmt], b)
        p = b / "layers" / f"via.{fmt}"
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
        r = cli("verify", b)
        assert r.code == 5 and "unreadable" in r.err and "Traceback" not in r.err, r


def test_verify_json_and_a_build_without_layers(builds, tmp_path, cli):
    import json

    r = cli("verify", builds["oas"], "--json")
    doc = json.loads(r.out)
    assert r.code == 0 and doc["ok"] and doc["problems"] == [] and doc["tiles"] > 4
    b = tmp_path / "b"
    shutil.copytree(builds["oas"], b)
    man = json.loads((b / "manifest.json").read_text())
    del man["files"]["layers/index.json"]
    (b / "manifest.json").write_text(json.dumps(man))
    r = cli("verify", b)  # the manifest's stages promise layers/index.json
    assert r.code == 3 and "layers/index.json is not listed" in r.err


def test_render_draws_a_tile_read_back_from_the_files(builds, tmp_path, cli):
    import json

    from maskc.layout import TileRom
    from maskc.netlist import load_netlist

    out = tmp_path / "t.png"
    r = cli("render", builds["gds"], "--tile", "T0_0_0", "-o", out, "--zoom", "4", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert out.read_bytes()[:4] == b"\x89PNG" and doc["vias"] > 0
    nl = load_netlist(builds["gds"])
    name = next(n for n in nl.matrices if [0, 0, 0] in nl.tile_arrays(n)["pos"].tolist())
    t = nl.tile_arrays(name)
    i = next(i for i, p in enumerate(t["pos"].tolist()) if p == [0, 0, 0])
    rom = TileRom(t, i, nl.matrices[name], nl.fabric)
    assert doc["zoom_values"] == rom.array[:4, :4].tolist()
    r = cli("render", builds["gds"], "--tile", "T9_9_9", "-o", out)
    assert r.code == 2 and "no such tile" in r.err


def test_compile_reports_layer_sizes_and_advises_oasis(model_cache, tmp_path, cli, monkeypatch):
    import json

    import maskc.pipeline.steps

    monkeypatch.setattr(maskc.pipeline.steps, "OASIS_ADVICE_BYTES", 1000)
    r = cli("compile", model_cache("tiny").path, "-o", tmp_path / "b", "--json")
    assert r.code == 0, r.err
    lay = json.loads(r.out)["layers"]
    assert lay["format"] == "gds" and lay["verified"] is True
    assert lay["bytes"]["total"] == sum(lay["files"].values())
    assert lay["bytes_per_weight"] > 0 and "oas" in lay["advice"]
    r = cli(
        "compile",
        model_cache("tiny").path,
        "-o",
        tmp_path / "c",
        "--no-verify",
        "--layout-format",
        "oas",
    )
    assert r.code == 0 and "not verified yet" in r.out and "advice" not in r.out, r.out
    r = cli("compile", model_cache("tiny").path, "-o", tmp_path / "d", "--layout-format", "svg")
    assert r.code == 2 and "gds or oas" in r.err


def test_parts_and_banks_do_not_change_the_layers(builds, tmp_path, monkeypatch):
    """GDSII written in parts of 2 tiles is byte-identical to one part; OASIS split into banks
    of 3 tiles (matrices cut across banks) verifies and covers every tile exactly once."""
    import json

    import maskc.layout as lay
    import maskc.layout.banks
    import maskc.layout.gds
    from maskc.netlist import load_netlist

    nl = load_netlist(builds["gds"])
    fab = nl.fabric
    monkeypatch.setattr(maskc.layout.gds, "PART_TILES", 2)
    banks = lay.write_layers(nl, fab, tmp_path / "g", "gds")
    for layer in ("via", "metal"):
        assert (tmp_path / "g" / f"{layer}.gds").read_bytes() == (
            builds["gds"] / "layers" / f"{layer}.gds"
        ).read_bytes()
    monkeypatch.setattr(maskc.layout.banks, "BANK_CELLS", 3 * fab.cells_per_tile)
    banks = lay.write_layers(nl, fab, tmp_path / "o", "oas")
    assert len(banks) > 2 and lay.verify_layers(nl, fab, tmp_path / "o", banks) == []
    index = json.loads((tmp_path / "o" / "index.json").read_text())["banks"]
    seen = [(n, i) for b in index for n, a, e in b["tiles"] for i in range(a, e)]
    assert sorted(seen) == sorted((n, i) for n, m in nl.matrices.items() for i in range(m["tiles"]))
    assert all((tmp_path / "o" / f).is_file() for b in index for f in b["files"].values())


def test_two_dies_give_a_file_per_die_and_verify(model_cache, tmp_path, cli):
    import json

    b = tmp_path / "b"
    r = cli(
        "compile",
        model_cache("tiny").path,
        "-o",
        b,
        "--fabric",
        micro_fabric(tmp_path),
        "--dies",
        "2",
        "--json",
    )
    assert r.code == 0, r.err
    lay = json.loads(r.out)["layers"]
    assert lay["verified"] and sorted(lay["files"]) == [
        "metal.d0.b000.gds",
        "metal.d1.b001.gds",
        "via.d0.b000.gds",
        "via.d1.b001.gds",
    ]
    assert cli("verify", b).code == 0


_MUST_NOT = [
    ("big via", "not a via"),
    ("off-site via", "off-site"),
    ("doubled via", "two vias"),
    ("missing cell", "not in the file"),
    ("path", "path, text or node"),
]


# references to missing cells and path elements: checked on GDSII, read by maskc's own reader
@pytest.mark.parametrize(
    ("fmt", "case", "says"),
    [("gds", c, s) for c, s in _MUST_NOT] + [("oas", c, s) for c, s in _MUST_NOT[:3]],
)
def test_what_a_via_layer_must_not_hold_is_exit_5(builds, tmp_path, cli, fmt, case, says):
    """Shapes a mask edit could leave behind, each named by maskc verify."""
    from maskc.layout import Geometry
    from maskc.netlist import load_netlist

    b = tmp_path / "b"
    shutil.copytree(builds[fmt], b)
    geo = Geometry(load_netlist(b).fabric)
    path = b / "layers" / f"via.{fmt}"
    lib = _load(path)
    names = sorted(c.name for c in lib.cells if re.fullmatch(r"T\d+_\d+_\d+", c.name))
    c = _cell(lib, names[0])
    x, y = geo.ox, geo.oy
    if case == "big via":
        c.add(gdstk.rectangle((x, y), (x + 2 * geo.size, y + geo.size), layer=geo.via[0]))
    elif case == "off-site via":
        dx = geo.spx // 2  # between two sites, on the OASIS grid
        c.add(gdstk.rectangle((x + dx, y), (x + dx + geo.size, y + geo.size), layer=geo.via[0]))
    elif case == "doubled via":
        vias = _flat_vias(c)
        c.add(vias[0].copy())
    elif case == "missing cell":
        c.add(gdstk.Reference("NO_SUCH_CELL", (x, y)))
    else:
        c.add(gdstk.FlexPath([(x, y), (x + 100, y)], 20, simple_path=True, layer=geo.via[0]))
    _save(lib, path)
    r = cli("verify", b)
    assert r.code == 5 and says in r.err and "Traceback" not in r.err, (case, r.err)


@pytest.mark.parametrize("three_bit", ["packed", "cell"])
@pytest.mark.parametrize("bits", [3, 4, 8])
def test_the_decoders_data_bits_are_the_bits_the_encoder_fills(bits, three_bit):
    """``cell_data_bits`` (verify: which cell bits are weight bits, the rest padding) is
    written from the cell formats; all-ones codes through the encoder set exactly those bits."""
    import dataclasses

    from maskc.fabric import load_fabric
    from maskc.layout.rom import cell_data_bits

    mini = load_fabric("mini")
    fab = dataclasses.replace(mini, tile=dataclasses.replace(mini.tile, three_bit=three_bit))
    w = fab.weights_per_tile_row(bits)
    for rows, cols in ((fab.tile.rows, w), (7, 33), (3, 2), (1, 1)):
        ones = np.full((fab.tile.rows, w), (1 << bits) - 1, np.uint8)
        enc = np.maximum(cell_values(ones, rows, cols, bits, fab), 0)
        assert np.array_equal(cell_data_bits(rows, cols, bits, fab), enc), (rows, cols)


@pytest.mark.parametrize(
    ("scale", "shift", "zero", "zshift"), [(8, 3, 8, 3), (8, 0, 8, 0), (10, 2, 0, 0), (6, 0, 0, 4)]
)
def test_the_scale_rom_decoder_inverts_the_encoder(scale, shift, zero, zshift):
    """``parse_scale_bits`` (verify's decoder, walking a layout read from the format) reads back
    every field ``scale_bits`` (the writer's encoder) wrote, over the full range of each width;
    the configuration word likewise."""
    from maskc.layout.rom import (
        config_bits,
        parse_config_bits,
        parse_scale_bits,
        scale_bits,
        scale_rom_layout,
    )

    fmt = {"bits": 4, "group_size": 32, "level_bits": 9, "scale_bits": scale}
    fmt.update(scale_shift_bits=shift, zero_bits=zero, zero_shift_bits=zshift)
    rng = np.random.default_rng(scale * 100 + shift * 10 + zero + zshift)
    n, tr, groups = 2, 5, 3
    t = {
        "scale_m": rng.integers(0, 1 << scale, (n, tr, groups)).astype(np.uint16),
        "scale_s": rng.integers(0, 1 << shift, (n, tr, groups)).astype(np.uint8),
        "scale_e": rng.integers(-128, 128, (n, tr)).astype(np.int8),
        "levels": np.sort(rng.choice(np.arange(-255, 256), 16, replace=False)).astype(np.int16),
    }
    if zero:
        t["zero_m"] = rng.integers(-(1 << zero - 1), 1 << zero - 1, (n, tr, groups))
        t["zero_m"] = t["zero_m"].astype(np.int16)
        t["zero_s"] = rng.integers(0, 1 << zshift, (n, tr, groups)).astype(np.uint8)
        t["zero_e"] = rng.integers(-128, 128, (n, tr)).astype(np.int8)
    bits = scale_bits(t, 1, fmt, tr, groups)
    assert len(bits) == scale_rom_layout(fmt, tr, groups)["bits"]
    dec = parse_scale_bits(np.concatenate([bits, np.zeros(7, np.uint8)]), fmt, tr, groups)
    stored = {"scale_m", "scale_e", "levels"} | ({"scale_s"} if shift else set())
    stored |= {"zero_m", "zero_e", *(["zero_s"] if zshift else [])} if zero else set()
    assert set(dec) == stored
    for k in stored - {"levels"}:
        assert np.array_equal(dec[k], t[k][1]), k
    assert np.array_equal(dec["levels"], t["levels"])
    cfg = {
        "enabled": 1,
        "mode": 2,
        "layer": 255,
        "role": 8,
        "row_block": 4095,
        "col_block": 17,
        "rows": 4095,
        "cols": 8191,
    }
    assert parse_config_bits(config_bits(cfg)) == cfg


def _plant(monkeypatch, bug: str) -> str:
    """Plant an encoder bug in ``maskc.layout.rom`` (what the writers call through ``TileRom``);
    returns a part of the problem verify must report."""
    import maskc.layout.rom as rom

    if bug == "scale_m and scale_s swapped":
        orig_scale = rom.scale_bits

        def scale_bits(t, i, fmt, tile_rows, groups):
            swapped = {**t, "scale_m": t["scale_s"], "scale_s": t["scale_m"]}
            return orig_scale(swapped, i, fmt, tile_rows, groups)

        monkeypatch.setattr(rom, "scale_bits", scale_bits)
        return "scale ROM row 0 group 0 scale_m: expected"
    if bug == "a code flipped":
        orig_cells = rom.cell_values

        def cell_values(codes, rows, cols, bits, fabric):
            out = orig_cells(codes, rows, cols, bits, fabric).copy()
            out[0, 0] ^= 1  # bit 0 of the first cell of every tile
            return out

        monkeypatch.setattr(rom, "cell_values", cell_values)
        return "cell (0, 0): "
    orig_config = rom.config_word

    def config_word(meta, block, fabric):  # rows and cols exchanged
        cfg = orig_config(meta, block, fabric)
        return {**cfg, "rows": cfg["cols"], "cols": cfg["rows"]}

    monkeypatch.setattr(rom, "config_word", config_word)
    return "configuration straps: rows expected"


@pytest.fixture(scope="module")
def packed3(model_cache, tmp_path_factory):
    """A build with 3-bit packed, 4-bit and 8-bit matrices (the built-in mini fabric)."""
    from maskc.pipeline import CompileOptions, compile_model

    out = tmp_path_factory.mktemp("packed3") / "b"
    opts = CompileOptions(bits=3, fabric="mini", calibrate=False, verify=False)
    compile_model(model_cache("tiny").path, out, opts)
    return out


@pytest.mark.parametrize(
    "bug", ["scale_m and scale_s swapped", "a code flipped", "rows and cols swapped"]
)
@pytest.mark.parametrize("build", ["gds", "oas", "packed3"])
def test_verify_catches_an_encoder_bug_planted_in_the_writer(
    builds, packed3, tmp_path, monkeypatch, build, bug
):
    """Verify decodes what it reads and compares values with the netlist, so a bug in the
    writers' encoders is caught: the layers are written with the bug planted, then verified
    with every encoder of maskc.layout replaced by one that fails if called."""
    import sys

    import maskc.layout.rom as rom
    from maskc.layout import verify_layers, write_layers
    from maskc.netlist import load_netlist

    nl = load_netlist(packed3 if build == "packed3" else builds[build])
    fmt = "gds" if build == "packed3" else build
    with monkeypatch.context() as m:
        says = _plant(m, bug)
        banks = write_layers(nl, nl.fabric, tmp_path, fmt)

    def never(*args, **kwargs):
        raise AssertionError("verify called the writer's encoder")

    names = ("TileRom", "cell_values", "scale_bits", "config_word", "config_bits", "group_fields")
    encoders = [getattr(rom, n) for n in (*names, "bits_to_nibbles", "record_bits")]
    for mod in [v for k, v in sys.modules.items() if k.startswith("maskc.layout")]:
        for name, value in list(vars(mod).items()):
            if any(value is e for e in encoders):
                monkeypatch.setattr(mod, name, never)
    problems = verify_layers(nl, nl.fabric, tmp_path, banks, limit=200)
    assert problems and not any("encoder" in p for p in problems), problems
    assert all(re.match(r"tile T\d+_\d+_\d+ \(model\.\S+\) ", p) for p in problems), problems
    assert any(says in p and "found" in p for p in problems), (says, problems)
    assert verify_layers(nl, nl.fabric, nl.path.parent / "layers", banks) == []  # the true layers


def test_a_bank_worker_reads_only_its_own_tiles(builds, tmp_path, monkeypatch):
    """The OASIS writer's and verify's bank workers index the netlist's tile arrays (memory
    maps) tile by tile, and only at their bank's tiles: no worker reads a whole matrix's codes
    or scale fields (the positions and the level table are small and may be read whole)."""
    import maskc.layout.banks
    import maskc.netlist.loader as loader
    from maskc.layout.banks import plan_banks
    from maskc.layout.oasis import _write_oas_bank
    from maskc.layout.verify import _verify_bank_worker
    from maskc.netlist import load_netlist

    reads: list[tuple[str, object]] = []
    real = loader._memmap

    class Spy:
        def __init__(self, a, key):
            self.a, self.key, self.shape, self.dtype = a, key, a.shape, a.dtype

        def __len__(self):
            return len(self.a)

        def __getitem__(self, idx):
            reads.append((self.key, idx))
            return self.a[idx]

        def __array__(self, dtype=None, copy=None):
            reads.append((self.key, "all"))
            return np.asarray(self.a, dtype)

        def __getattr__(self, attr):
            reads.append((self.key, "all"))
            return getattr(self.a, attr)

    monkeypatch.setattr(loader, "_memmap", lambda f, key: Spy(real(f, key), key))
    nl = load_netlist(builds["oas"])
    monkeypatch.setattr(maskc.layout.banks, "BANK_CELLS", 3 * nl.fabric.cells_per_tile)
    banks = plan_banks(nl, nl.fabric, "oas")
    assert len(banks) > 2
    for k, bank in enumerate(banks):
        bank["files"] = {layer: f"{layer}.{k}.oas" for layer in ("via", "metal")}
        mine = {(n, i) for n, a, e in bank["tiles"] for i in range(a, e)}
        for work in ("write", "verify"):
            reads.clear()
            if work == "write":
                _write_oas_bank(str(nl.path), bank, str(tmp_path))
            else:
                paths = {x: str(tmp_path / f) for x, f in bank["files"].items()}
                assert _verify_bank_worker(str(nl.path), bank, paths, 10) == []
            touched = set()
            for key, idx in reads:
                name, field = key.rsplit("/", 1)
                if field in ("pos", "levels"):
                    continue
                i = idx[0] if isinstance(idx, tuple) else idx
                assert isinstance(i, int), (work, key, idx)
                touched.add((name, i))
            assert touched == mine, (work, k)


def test_the_fast_oasis_rows_are_the_general_paths_vias():
    """The OASIS writer's fast path (a flat scan of the bits) gives exactly the via corners of
    the general path, in the same order, empty lines and grids included."""
    from maskc.fabric import load_fabric
    from maskc.layout.geometry import Geometry
    from maskc.layout.oasis import _FastVias, _via_rows

    geo = Geometry(load_fabric("mini"))
    g = geo.grid
    fast = _FastVias(geo, g)
    assert fast.ok
    rng = np.random.default_rng(5)
    for lines, density in ((geo.rows, 0.5), (7, 0.02), (3, 0.0), (0, 0.5)):
        for area in ("array", "scale"):
            keep = rng.random((lines, geo.cols)) < density
            grid = (rng.integers(0, 16, (lines, geo.cols)) * keep).astype(np.uint8)
            if lines > 2:
                grid[1] = 0  # an empty line
            want = _via_rows(geo.via_positions(area, grid), g)
            got = fast.rows(area, grid)
            assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))


def _varint(x: int) -> bytes:
    """An OASIS unsigned integer, written from the specification (SEMI P39, 7.2.3)."""
    out = bytearray()
    while True:
        out.append((x & 0x7F) | (0x80 if x >= 0x80 else 0))
        x >>= 7
        if not x:
            return bytes(out)


def test_oasis_writer_integers_follow_the_specification():
    from maskc.layout.oasfile import uvarints, zig

    v = [0, 1, 127, 128, 255, 300, 16383, 16384, 2**21 - 1, 2**21, 2**35 + 5, 2**62]
    assert uvarints(np.array(v, np.int64)) == b"".join(_varint(x) for x in v)
    assert uvarints(np.array([5, 127], np.int64)) == bytes([5, 127])
    assert [int(zig(x)) for x in (0, 3, -3)] == [0, 6, 7]  # sign in the low bit
    assert zig(np.array([-1, 1])).tolist() == [3, 2]


def test_oasis_writer_file_reads_back_in_gdstk_and_klayout(tmp_path):
    """Records of every kind the layer writer uses (lines of one via, of many, negative and
    multi-byte coordinates, several CBLOCKs, columns, placements) read back by two
    independent readers to the shapes written; the CRC32 validation checks."""
    import maskc.layout.oasfile as of

    rng = np.random.default_rng(3)
    cells = []
    for _ in range(3):
        y = np.repeat(rng.choice(np.arange(-50, 400), 40, replace=False), rng.integers(1, 30, 40))
        x = rng.integers(-300, 9000, len(y))
        key = np.unique(np.stack([y, x], 1), axis=0)  # sorted by (y, x), no duplicates
        cells.append((key[:, 1], key[:, 0]))
    path = tmp_path / "t.oas"
    old = of.CBLOCK_BYTES
    of.CBLOCK_BYTES = 64  # a CBLOCK per cell or two
    try:
        with open(path, "wb") as f:
            w = of.OasisWriter(f, 50, ["A", "B", "C", "TOP"])
            for ref, (x, y) in enumerate(cells):
                w.cell(ref)
                w.rect_rows((60, 0), 1, x[:5], y[:5])
                w.rect_rows((60, 0), 1, x[5:], y[5:])
                w.rect_column((61, 2), 7, 2, np.array([[-4, 0], [-4, 3], [-4, 10], [-4, 400]]))
            w.cell(3)
            for ref in range(3):
                w.placement(ref, 1000 * ref - 50, 20000 * ref)
            w.close()
    finally:
        of.CBLOCK_BYTES = old
    data = path.read_bytes()
    assert data.startswith(b"%SEMI-OASIS\r\n") and data.count(b"\x22\x00") >= 1
    assert gdstk.oas_validate(str(path))[0] is True
    lib = gdstk.read_oas(str(path), unit=2e-8)  # one file unit (20 nm) per coordinate
    top = _cell(lib, "TOP")
    got_v, got_m = set(), set()
    for ref in top.references:
        ox, oy = (round(v) for v in ref.origin)
        for p in ref.cell.polygons:
            lo = np.rint(np.asarray(p.points).min(axis=0)).astype(int)
            hi = np.rint(np.asarray(p.points).max(axis=0)).astype(int)
            offs = [(0, 0)] if p.repetition.size == 0 else p.repetition.get_offsets()
            for dx, dy in np.rint(offs).astype(int).tolist():
                s = (ref.cell.name, lo[0] + dx + ox, lo[1] + dy + oy, *(hi - lo))
                (got_v if p.layer == 60 else got_m).add(s)
    want_v = {
        (n, int(a) + 1000 * r - 50, int(b) + 20000 * r, 1, 1)
        for r, (n, (x, y)) in enumerate(zip("ABC", cells, strict=True))
        for a, b in zip(x, y, strict=True)
    }
    want_m = {(n, -4 + 1000 * r - 50, yy + 20000 * r, 7, 2) for r, n in enumerate("ABC")
              for yy in (0, 3, 10, 400)}  # fmt: skip
    assert got_v == want_v and got_m == want_m
    db = pytest.importorskip("klayout.db")
    ly = db.Layout()
    ly.read(str(path))
    (t,) = ly.top_cells()
    boxes = set()
    it = t.begin_shapes_rec(ly.layer(60, 0))
    while not it.at_end():
        b = it.shape().bbox().transformed(it.trans())
        boxes.add((round(b.left * ly.dbu / 0.02), round(b.bottom * ly.dbu / 0.02)))
        it.next()
    assert boxes == {(x, y) for _, x, y, _, _ in want_v}


def test_oasis_general_path_fabric_verifies(model_cache, tmp_path, cli):
    """A fabric whose 4 via sites form a 2 x 2 square (not one site row) takes the writer's
    general path: its OASIS build reads back equal to the netlist (maskc verify)."""
    import re

    from maskc.fabric import load_fabric
    from maskc.layout.geometry import Geometry
    from maskc.layout.oasis import _FastVias

    text = Path(micro_fabric(tmp_path)).read_text()
    text = re.sub(r"(?m)^sites_x = .*$", "sites_x = 2", text, count=1)
    text = re.sub(r"(?m)^sites_y = .*$", "sites_y = 2", text, count=1)
    text = re.sub(r"(?m)^name = .*$", 'name = "square"', text, count=1)
    fab = tmp_path / "square.toml"
    fab.write_text(text)
    geo = Geometry(load_fabric(str(fab)))
    assert not _FastVias(geo, geo.grid).ok
    b = tmp_path / "b"
    r = cli("compile", model_cache("tiny").path, "-o", b, "--fabric", fab, "--layout-format", "oas",
            "--no-calib")  # fmt: skip
    assert r.code == 0, r.err
    r = cli("verify", b)
    assert r.code == 0, r.err
    assert gdstk.oas_validate(str(next((b / "layers").glob("via*.oas"))))[0] is True
