"""Assertions shared by the test modules."""

from __future__ import annotations

from pathlib import Path


def assert_bad(result, *needles):
    """Exit 3, one line on stderr naming the problem, no traceback, nothing on stdout."""
    assert result.code == 3, (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("maskc: error: ")
    assert "Traceback" not in result.err
    for n in needles:
        assert n.lower() in result.err.lower(), (n, result.err)
    assert result.out == ""


def micro_fabric(dirpath) -> str:
    """A fabric of 16 x 64-cell tiles (the helper's name "micro"): small enough that every
    matrix of the tiny test models is cut into several tiles. Returns the TOML path."""
    import re

    from maskc.fabric import load_fabric

    text = load_fabric("mini").to_toml()
    for key, value in (
        ("name", '"micro"'),
        ("rows", "16"),
        ("columns", "64"),
        ("three_bit", '"cell"'),
        ("scale_rom_bits", "2048"),
        ("tile_columns", "20"),
        ("tile_rows", "20"),
    ):
        text = re.sub(rf"(?m)^{key} = .*$", f"{key} = {value}", text, count=1)
    p = Path(dirpath) / "micro.toml"
    p.write_text(text)
    return str(p)
