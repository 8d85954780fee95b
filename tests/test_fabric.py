"""The fabric schema, the built-in fabrics and ``maskc fabric list/show``."""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import replace
from importlib import resources
from pathlib import Path

import pytest
from helpers import assert_bad

from maskc.errors import InputError
from maskc.fabric import MAX_FABRIC_BYTES, Fabric, builtin_fabrics, load_fabric, parse_fabric
from maskc.fabric.schema import field_units

DOCS = Path(__file__).resolve().parents[1] / "docs" / "fabric.md"


def _builtin_text(name: str) -> str:
    return resources.files("maskc.fabric.builtin").joinpath(f"{name}.toml").read_text("utf-8")


def _write(tmp_path: Path, text: str, name: str = "fab.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _set(text: str, table: str, key: str, value: str) -> str:
    """``text`` with ``key = ...`` of ``[table]`` replaced by ``key = value`` (TOML source)."""
    start = text.index(f"[{table}]\n")
    end = text.find("\n[", start + 1)
    end = len(text) if end < 0 else end
    section = text[start:end]
    new, n = re.subn(rf"(?m)^{key} = [^\n#]*", f"{key} = {value}", section)
    assert n == 1, (table, key)
    return text[:start] + new + text[end:]


# ------------------------------------------------------------------ built-ins


def test_builtins_load_and_validate():
    assert builtin_fabrics() == ["hc1", "mini"]
    for name in builtin_fabrics():
        fab = load_fabric(name)
        assert isinstance(fab, Fabric) and fab.name == name
        fab.validate()
        # the scale ROM holds exactly the group fields at the finest group size
        assert fab.tile.scale_rom_bits >= fab.scale_rom_bits_required


def test_hc1_derived_numbers_by_hand():
    f = load_fabric("hc1")
    assert f.tiles_per_die == 256 * 224 == 57_344
    assert f.total_tiles == 57_344
    assert f.cells_per_tile == 512 * 384
    assert f.code_bits_per_tile == 512 * 384 * 4 == 786_432
    # 3-bit packed: 384 cells x 4 / 3 = 512 weights per row; 512 / 32 = 16 groups
    assert f.weights_per_tile(3) == 512 * 512
    assert f.weights_per_tile(8) == 512 * 192
    assert f.scale_rom_bits_required == 512 * (16 * 22 + 16) == 188_416
    assert f.rom_bits_per_tile == 786_432 + 188_416
    assert f.rom_bits_total == 57_344 * (786_432 + 188_416)
    assert f.sram_bytes_total == 288 * 2**20
    # one tile op: 512 cycles at 1 GHz; all tiles: 57,344 x 196,608 MACs per 512 ns
    assert f.tile_op_ns == pytest.approx(512.0)
    assert f.peak_macs_per_s(4) == pytest.approx(57_344 * 196_608 / 512e-9)
    assert f.peak_dynamic_w_per_die == pytest.approx(57_344 / 512e-9 * 4000e-12)
    assert f.tile_area_mm2_per_die == pytest.approx(57_344 * 0.01)


def test_mini_derived_numbers_by_hand():
    f = load_fabric("mini")
    assert f.tiles_per_die == 80 * 64 == 5_120
    assert f.weights_per_tile(4) == 192 * 192
    assert f.weights_per_tile(3) == 192 * 256
    assert f.scale_rom_bits_required == 192 * (8 * 22 + 16) == 36_864
    assert f.rom_bits_total == 5_120 * (192 * 192 * 4 + 36_864)


def _tiles(rows: int, cols: int, tile_rows: int, tile_weights_per_row: int) -> int:
    return math.ceil(rows / tile_rows) * math.ceil(cols / tile_weights_per_row)


def _model_tiles(fab: Fabric, *, layers, hidden, ffn, kv_dim, vocab, tied, bits) -> int:
    """Coarse tile count from matrix shapes (each matrix cut into whole tiles, padding
    counted); the real placer is the next stage. 3-bit builds use maskc's default mix:
    q, gate, up at 3 bits, k, v, o, down at 4."""
    r = fab.tile.rows
    w3, w4 = fab.weights_per_tile_row(3), fab.weights_per_tile_row(4)
    low = w3 if bits == 3 else w4
    per_layer = (
        _tiles(hidden, hidden, r, low)  # q
        + 2 * _tiles(kv_dim, hidden, r, w4)  # k, v
        + _tiles(hidden, hidden, r, w4)  # o
        + 2 * _tiles(ffn, hidden, r, low)  # gate, up
        + _tiles(hidden, ffn, r, w4)  # down
    )
    # embedding and lm_head: 8 bits = two 4-bit cells per weight
    embed = _tiles(vocab, hidden, r, fab.weights_per_tile_row(8))
    return layers * per_layer + embed * (1 if tied else 2)


def test_capacity_smollm2_fits_mini_and_llama8b_fits_hc1():
    """A coarse check from cell counts (not a placement)."""
    mini, hc1 = load_fabric("mini"), load_fabric("hc1")
    smol = {"layers": 30, "hidden": 576, "ffn": 1536, "kv_dim": 3 * 64, "vocab": 49152}
    need = _model_tiles(mini, **smol, tied=True, bits=4)
    # 30 x (9 + 3 + 3 + 9 + 24 + 24 + 24) block tiles + 256 x 6 embedding tiles
    assert need == 30 * 96 + 1536 == 4416
    assert need <= mini.total_tiles
    # cells: 106M block weights + 28M embedding weights x 2 cells, no padding on this shape
    assert need * mini.cells_per_tile == 30 * 96 * 36_864 + 49152 * 576 * 2
    llama = {"layers": 32, "hidden": 4096, "ffn": 14336, "kv_dim": 1024, "vocab": 128256}
    need4 = _model_tiles(hc1, **llama, tied=False, bits=4)
    need3 = _model_tiles(hc1, **llama, tied=False, bits=3)
    assert need4 == 32 * (88 + 22 + 22 + 88 + 308 + 308 + 304) + 2 * 251 * 22 == 47_524
    assert need3 < need4 <= hc1.total_tiles
    assert hc1.total_tiles / need4 > 1.15  # margin for a real placement
    # the KV cache of 4,096 tokens at 8 bits fits in SRAM: 32 layers x 2 x 1024 bytes per token
    assert hc1.sram_bytes_total >= 4096 * 32 * 2 * 1024
    assert mini.sram_bytes_total >= 2048 * 30 * 2 * 192


# ------------------------------------------------------------------ round trip, JSON


@pytest.mark.parametrize("name", ["hc1", "mini"])
def test_round_trip_toml(tmp_path, name):
    fab = load_fabric(name)
    again = load_fabric(_write(tmp_path, fab.to_toml()))
    assert again == fab
    assert again.to_json() == fab.to_json()
    # the shipped file and the written one hold the same document
    assert tomllib.loads(fab.to_toml()) == tomllib.loads(_builtin_text(name))


def test_to_json_deterministic_and_complete():
    fab = load_fabric("hc1")
    doc = fab.to_json()
    assert json.dumps(doc) == json.dumps(load_fabric("hc1").to_json())
    assert list(doc) == [
        "schema",
        "fabric",
        "tile",
        "die",
        "units",
        "system",
        "power",
        "geometry",
        "layers",
        "derived",
    ]
    assert doc["tile"]["group_sizes"] == [32, 64, 128]
    assert doc["derived"]["total_tiles"] == 57_344


def test_every_field_documented():
    text = DOCS.read_text(encoding="utf-8")
    for key in field_units():
        assert f"`{key.rsplit('.', 1)[-1]}`" in text, key


def test_validate_catches_built_objects():
    fab = load_fabric("mini")
    bad = replace(fab, tile=replace(fab.tile, rows=0))
    with pytest.raises(InputError, match=r"\[tile\] rows"):
        bad.validate("x")


def test_parse_fabric_dict_direct():
    doc = tomllib.loads(_builtin_text("mini"))
    assert parse_fabric(doc, "mem") == load_fabric("mini")


# ------------------------------------------------------------------ CLI


def test_cli_list(cli):
    r = cli("fabric", "list")
    assert r.code == 0, r.err
    assert "hc1" in r.out and "mini" in r.out and "57,344" in r.out
    r = cli("fabric", "list", "--json")
    assert r.code == 0
    doc = json.loads(r.out)
    assert [d["name"] for d in doc] == ["hc1", "mini"]
    assert doc[1]["total_tiles"] == 5120 and doc[1]["sram_bytes_total"] == 32 * 2**20


def test_cli_show(cli, tmp_path):
    r = cli("fabric", "show", "hc1")
    assert r.code == 0, r.err
    for needle in ("[tile]", "[layers]", "derived", "scale_rom_bits", "via.gds_layer", "TSMC N6"):
        assert needle in r.out, needle
    r = cli("fabric", "show", "mini", "--json")
    assert json.loads(r.out) == load_fabric("mini").to_json()
    p = _write(tmp_path, _builtin_text("mini"))
    r = cli("fabric", "show", p, "--json")
    assert r.code == 0 and json.loads(r.out)["fabric"]["name"] == "mini"


def test_cli_unknown_builtin(cli):
    assert_bad(cli("fabric", "show", "hc2"), "hc2", "hc1, mini")


# ------------------------------------------------------------------ bad inputs


def test_missing_file(cli, tmp_path):
    assert_bad(cli("fabric", "show", tmp_path / "nope.toml"), "nope.toml", "no such file")


def test_not_a_file(cli, tmp_path):
    d = tmp_path / "dir.toml"
    d.mkdir()
    assert_bad(cli("fabric", "show", d), "dir.toml", "not a file")


def test_not_utf8(cli, tmp_path):
    p = tmp_path / "f.toml"
    p.write_bytes(b'[fabric]\nname = "\xff"\n')
    assert_bad(cli("fabric", "show", p), "f.toml", "not UTF-8")


def test_bad_toml(cli, tmp_path):
    assert_bad(cli("fabric", "show", _write(tmp_path, "[tile\nrows = 1\n")), "not valid TOML")


def test_too_large(cli, tmp_path):
    p = _write(tmp_path, "# " + "x" * MAX_FABRIC_BYTES + "\n")
    assert_bad(cli("fabric", "show", p), "fab.toml", "too large")


def test_empty_file(cli, tmp_path):
    assert_bad(cli("fabric", "show", _write(tmp_path, "")), "missing table [fabric]")


MINI = "mini"


@pytest.mark.parametrize(
    ("edit", "needles"),
    [
        # unknown table / key
        (lambda t: t + "\n[extra]\nx = 1\n", ("top level", "unknown table 'extra'")),
        (lambda t: t + "\n[units.gelu]\ncount = 1\n", ("[units]", "unknown table 'gelu'")),
        (lambda t: _set(t, "tile", "rows", "192\nrowz = 3"), ("[tile]", "unknown key 'rowz'")),
        # missing key
        (lambda t: t.replace("sram_bytes = 33_554_432", ""), ("[die]", "missing key 'sram_bytes'")),
        # wrong types
        (lambda t: _set(t, "tile", "rows", '"512"'), ("[tile] rows", "must be an integer")),
        (lambda t: _set(t, "tile", "columns", "true"), ("[tile] columns", "boolean")),
        (lambda t: _set(t, "tile", "rows", "192.0"), ("[tile] rows", "a float")),
        (lambda t: _set(t, "fabric", "die_area_mm2", '"big"'), ("die_area_mm2", "number")),
        (lambda t: _set(t, "system", "clock_mhz", "false"), ("clock_mhz", "boolean")),
        (lambda t: _set(t, "fabric", "name", "3"), ("[fabric] name", "must be a string")),
        (lambda t: _set(t, "tile", "group_sizes", "32"), ("group_sizes", "array")),
        (lambda t: _set(t, "tile", "group_sizes", '[32, "64"]'), ("group_sizes", "integer")),
        (lambda t: _set(t, "tile", "bits_per_cell", "3"), ("bits_per_cell", "one of 4")),
        (lambda t: _set(t, "tile", "bits_per_cell", "4.0"), ("bits_per_cell", "one of 4")),
        (lambda t: _set(t, "tile", "three_bit", '"dense"'), ("three_bit", '"packed"')),
        (lambda t: t.replace("[units.rope]\n", "[units.rope]\nx=1\n"), ("[units.rope]", "'x'")),
        # zero / negative / out of range
        (lambda t: _set(t, "tile", "rows", "0"), ("[tile] rows", "got 0")),
        (lambda t: _set(t, "die", "tile_columns", "-4"), ("[die] tile_columns", "got -4")),
        (lambda t: _set(t, "die", "sram_bytes", "0"), ("[die] sram_bytes", ">= 1")),
        (lambda t: _set(t, "system", "dies", "0"), ("[system] dies", "got 0")),
        (lambda t: _set(t, "system", "clock_mhz", "-1.0"), ("clock_mhz", "-1.0")),
        (lambda t: _set(t, "system", "clock_mhz", "nan"), ("clock_mhz", "nan")),
        (lambda t: _set(t, "power", "tile_op_pj", "-740.0"), ("[power] tile_op_pj", "-740")),
        (lambda t: _set(t, "tile", "group_sizes", "[]"), ("group_sizes", "non-empty")),
        (lambda t: _set(t, "tile", "group_sizes", "[0]"), ("group_sizes", "got 0")),
        (
            lambda t: t.replace("[units.sampling]\ncount = 1", "[units.sampling]\ncount = 0"),
            ("[units.sampling] count", "got 0"),
        ),
        (lambda t: _set(t, "layers.via", "gds_layer", "65536"), ("[layers.via] gds_layer",)),
        (lambda t: _set(t, "layers.metal", "gds_datatype", "-1"), ("[layers.metal] gds_datatype",)),
        (lambda t: _set(t, "geometry", "cell_pitch_x", "0"), ("[geometry] cell_pitch_x",)),
        # inconsistent values
        (lambda t: _set(t, "layers.via", "size", "40"), ("[layers.via] size", "site_pitch_x")),
        (lambda t: _set(t, "layers.via", "site_pitch_y", "20"), ("[layers.via] size", "pitch_y")),
        (
            lambda t: _set(_set(t, "layers.via", "sites_x", "1"), "layers.via", "sites_y", "3"),
            ("[layers.via] sites_x", "4 bits of a cell"),
        ),
        (lambda t: _set(t, "layers.via", "site_pitch_x", "50"), ("[layers.via] site_pitch_x",)),
        (lambda t: _set(t, "layers.metal", "strap_width", "40"), ("[layers.metal] strap_width",)),
        (lambda t: _set(t, "layers.metal", "strap_width", "10"), ("strap_width", "narrower")),
        (lambda t: _set(t, "layers.metal", "strap_pitch", "60"), ("[layers.metal] strap_pitch",)),
        (
            lambda t: _set(t, "layers.metal", "gds_layer", "60"),
            ("[layers.metal] gds_layer", "same"),
        ),
        (lambda t: _set(t, "tile", "scale_rom_bits", "36_863"), ("scale_rom_bits", "36864")),
        (lambda t: _set(t, "tile", "columns", "190"), ("[tile] columns", "multiple of 3")),
        (lambda t: _set(t, "tile", "group_sizes", "[32, 128]"), ("group_sizes", "128")),
        (lambda t: _set(t, "tile", "group_sizes", "[64, 32]"), ("group_sizes", "increasing")),
        (lambda t: _set(t, "tile", "area_um2", "3000.0"), ("[tile] area_um2", "tile_pitch_x")),
        (lambda t: _set(t, "geometry", "tile_pitch_x", "30_000"), ("area_um2",)),
        (
            lambda t: _set(
                _set(t, "geometry", "array_origin_x", "15_000"),
                "geometry",
                "tile_pitch_x",
                "45_000",
            ),
            ("[geometry] tile_pitch_x",),
        ),
        (lambda t: _set(t, "fabric", "die_area_mm2", "5.0"), ("[die] tile_columns", "die_area")),
        (
            lambda t: _set(t, "fabric", "transistors_per_die", "2_600_000_000_000"),
            ("transistors_per_die", "MTr/mm2"),
        ),
    ],
)
def test_bad_fields(cli, tmp_path, edit, needles):
    p = _write(tmp_path, edit(_builtin_text(MINI)))
    assert_bad(cli("fabric", "show", p), "fab.toml", *needles)


def test_bad_field_via_load_fabric(tmp_path):
    p = _write(tmp_path, _set(_builtin_text(MINI), "tile", "rows", '"512"'))
    with pytest.raises(InputError, match=r"fab\.toml: \[tile\] rows must be an integer"):
        load_fabric(p)
    with pytest.raises(InputError, match="no built-in fabric"):
        load_fabric("hc9")
