"""layers/maskc.lyp: KLayout's layer-properties XML names and colours exactly the layers the
layer files hold (read back here with KLayout), is listed and hashed in the manifest, the same
bytes for every build on one fabric, and loads in KLayout's own LayoutView."""

from __future__ import annotations

import hashlib
import json
import re
import xml.etree.ElementTree as ET

import pytest
from helpers import micro_fabric

pytestmark = pytest.mark.slow  # two tiny compiles (~15 s on a loaded 2-core machine)


@pytest.fixture(scope="module")
def builds(model_cache, tmp_path_factory):
    from maskc.pipeline import CompileOptions, compile_model

    root = tmp_path_factory.mktemp("lyp")
    fab = micro_fabric(root)
    out = {}
    for fmt in ("gds", "oas"):
        out[fmt] = root / fmt
        opts = CompileOptions(fabric=fab, method="rtn", layout_format=fmt)
        compile_model(model_cache("tiny").path, out[fmt], opts)
    return out


def _entries(path) -> list[dict]:
    root = ET.parse(path).getroot()
    assert root.tag == "layer-properties"
    out = []
    for p in root.findall("properties"):
        src = p.findtext("source")
        m = re.fullmatch(r"(\d+)/(\d+)@1", src)
        assert m, src
        out.append(
            {
                "layer": (int(m[1]), int(m[2])),
                "name": p.findtext("name"),
                "fill": p.findtext("fill-color"),
                "frame": p.findtext("frame-color"),
                "visible": p.findtext("visible"),
            }
        )
    return out


def _layers_in(path) -> set[tuple[int, int]]:
    """(layer, datatype) of every layer holding shapes, read with KLayout."""
    db = pytest.importorskip("klayout.db", reason="klayout (the dev extra) is not installed")
    ly = db.Layout()
    ly.read(str(path))
    top = ly.top_cell()
    out = set()
    for li in ly.layer_indexes():
        if not top.begin_shapes_rec(li).at_end():
            info = ly.get_info(li)
            out.add((info.layer, info.datatype))
    return out


@pytest.mark.parametrize("fmt", ["gds", "oas"])
def test_lyp_names_the_layers_the_files_hold(builds, fmt):
    b = builds[fmt]
    lyp = b / "layers" / "maskc.lyp"
    entries = _entries(lyp)
    via = _layers_in(b / "layers" / f"via.{fmt}")
    metal = _layers_in(b / "layers" / f"metal.{fmt}")
    assert len(via) == 1 and len(metal) == 1
    by_layer = {e["layer"]: e for e in entries}
    assert set(by_layer) == via | metal and len(entries) == 2
    assert by_layer[next(iter(via))]["name"].startswith("via ")
    assert "scale-ROM band" in by_layer[next(iter(via))]["name"]
    assert by_layer[next(iter(metal))]["name"].startswith("metal ")
    for e in entries:
        assert re.fullmatch(r"#[0-9a-f]{6}", e["fill"]) and e["frame"] == e["fill"]
        assert e["visible"] == "true"
    assert entries[0]["fill"] != entries[1]["fill"]
    # listed and hashed in the manifest like the layer files; the same bytes in both formats
    m = json.loads((b / "manifest.json").read_text())["files"]["layers/maskc.lyp"]
    data = lyp.read_bytes()
    assert m == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert data == (builds["gds"] / "layers" / "maskc.lyp").read_bytes()


def test_klayout_loads_the_lyp(builds):
    lay = pytest.importorskip("klayout.lay", reason="klayout (the dev extra) is not installed")
    b = builds["oas"]
    view = lay.LayoutView()
    view.load_layout(str(b / "layers" / "via.oas"), True)
    view.load_layer_props(str(b / "layers" / "maskc.lyp"))
    seen = {}
    it = view.begin_layers()
    while not it.at_end():
        node = it.current()
        seen[(node.source_layer, node.source_datatype)] = (node.name, node.fill_color & 0xFFFFFF)
        it.next()
    want = {
        e["layer"]: (e["name"], int(e["fill"][1:], 16))
        for e in _entries(b / "layers" / "maskc.lyp")
    }
    assert seen == want


def test_verify_passes_with_the_lyp(builds, cli):
    r = cli("verify", builds["oas"])
    assert r.code == 0, r.err
