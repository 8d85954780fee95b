"""maskc report: the page's content checked against the build's files (tile positions read
here with the safetensors library), byte-identical reruns, hostile strings escaped, the change
map of a one-weight change, --json, and every bad input (one line, nothing written). The page
in a real browser: tests/test_report_browser.py."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import assert_bad, micro_fabric, reseal
from reportbuilds import CHANGED, compile_pair

pytestmark = pytest.mark.slow  # three tiny compiles (~30 s on a loaded 2-core machine)

HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


@pytest.fixture(scope="module")
def builds(model_cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    a, b = compile_pair(model_cache("tiny").path, root)
    return {"a": a, "b": b, "root": root}


class _Page(HTMLParser):
    """Sections, tile rects (with their titles) and scripts of a report page."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.section = None
        self.tiles: list[dict] = []
        self.scripts = 0
        self._title_of = None
        self.external = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.section = a["id"]
            self.sections.append(a["id"])
        if tag == "rect" and "tile" in a.get("class", "").split():
            self.tiles.append({"section": self.section, "x": a["x"], "y": a["y"], "title": ""})
        if tag == "title" and self.tiles and self._title_of is None:
            self._title_of = self.tiles[-1]
        if tag == "script":
            self.scripts += 1
        for k in ("src", "href"):
            if k in a and not a[k].startswith("#"):
                self.external.append((tag, k, a[k]))

    def handle_endtag(self, tag):
        if tag == "title":
            self._title_of = None

    def handle_data(self, data):
        if self._title_of is not None:
            self._title_of["title"] += data


def _parse(path: Path) -> _Page:
    p = _Page()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def _positions(build: Path) -> dict[tuple[int, int, int], str]:
    """Every placed tile -> its matrix, read from the netlist with safetensors and json only."""
    from safetensors.numpy import load_file

    doc = json.loads((build / "netlist" / "netlist.json").read_text())
    out = {}
    for name, m in doc["matrices"].items():
        arrays = load_file(str(build / "netlist" / m["file"]))
        for d, x, y in arrays[f"{name}/pos"].tolist():
            out[(d, x, y)] = name
    return out


def test_page_shows_every_tile_and_the_builds_numbers(builds, tmp_path, cli):
    out = tmp_path / "r.html"
    r = cli("report", builds["a"], "-o", out, "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    data = out.read_bytes()
    assert doc["bytes"] == len(data) and doc["output"] == str(out)
    assert doc["sections"] == ["summary", "floorplan", "errors", "output", "budget"]
    page = _parse(out)
    assert page.sections == doc["sections"] and page.scripts == 1
    assert page.external == []  # nothing to fetch: no src/href but in-page anchors
    # every placed tile is drawn once, where the netlist puts it, named by its tensor
    pos = _positions(builds["a"])
    drawn = {}
    for t in page.tiles:
        assert t["section"] == "floorplan"
        name, rest = t["title"].split(": ", 1)
        d, x, y = (int(v) for v in name[1:].split("_"))
        assert (int(t["x"]), int(t["y"])) == (x, y)
        drawn[(d, x, y)] = rest.split(" | ")[0]
    assert drawn == pos and doc["tiles"] == len(pos)
    # the summary's numbers are the build's own
    place = json.loads((builds["a"] / "reports" / "placement.json").read_text())
    quant = json.loads((builds["a"] / "reports" / "quant.json").read_text())
    text = data.decode()
    assert f"{place['tiles_used']:,} of {place['tiles_available']:,}" in text
    assert f"{quant['totals']['bpw_blocks']:.4g} in the decoder blocks" in text
    tps = place["performance"]["at_context_1"]["tokens_per_s_per_user"]
    assert f"{round(tps):,} tokens/s per user" in text
    for t in quant["tensors"]:
        if t.get("quantized"):
            assert t["name"] in text and f"{100 * t['rel_error']:.3f}" in text
    assert f"{quant['output']['top1_agreement'] * 100:.2f}%" in text
    # the budget table: the build's context with the rank its netlist records
    sram = json.loads((builds["a"] / "netlist" / "netlist.json").read_text())["sram"]
    rank = sram["dies"][0]["adapters"]["max_rank"]
    assert f"{sram['context']:,} (build)" in text
    assert f"{rank['all']} all 7 / {rank['attention']} q,k,v,o" in text
    # no clock in the page: the same bytes again, and from a copy of the build
    r = cli("report", builds["a"], "-o", out, "--force")
    assert r.code == 0 and out.read_bytes() == data
    copy = tmp_path / "a"
    shutil.copytree(builds["a"], copy)
    out2 = tmp_path / "r2.html"
    assert cli("report", copy, "-o", out2).code == 0 and out2.read_bytes() == data


def test_change_map_names_the_one_changed_tile(builds, tmp_path, cli):
    out = tmp_path / "d.html"
    r = cli("report", builds["b"], "--diff", builds["a"], "-o", out, "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["sections"][-1] == "diff" and doc["diff"]["masks_to_remake"] == ["via"]
    page = _parse(out)
    diff_tiles = [t for t in page.tiles if t["section"] == "diff"]
    changed = [
        t
        for t in diff_tiles
        if not t["title"].endswith((" 0 via shapes changed", " 0 metal shapes changed"))
    ]
    # via and metal maps each draw every site; one via tile changed, holding CHANGED
    assert len(diff_tiles) == 2 * len(_positions(builds["b"]))
    assert len(changed) == 1 and f": {CHANGED} |" in changed[0]["title"]
    text = out.read_text()
    assert "via mask only" in text and "No tensor changed on the metal mask" in text


def test_verify_status_follows_verify_json(builds, tmp_path, cli):
    """Not verified (a build over the compile's check limit would say so too), verified after
    ``maskc verify``, stale when the record no longer matches the manifest."""
    b = tmp_path / "b"
    shutil.copytree(builds["a"], b)
    out = tmp_path / "v.html"

    def status() -> str:
        assert cli("report", b, "-o", out, "--force").code == 0
        text = out.read_text()
        return text[text.index("verify status") :][:400]

    assert "read back and checked against the netlist by the compile" in status()
    assert cli("verify", b).code == 0
    assert "verified by maskc verify" in status()
    rec = json.loads((b / "verify.json").read_text())
    rec["manifest_sha256"] = "0" * 64
    (b / "verify.json").write_text(json.dumps(rec))
    assert "verification record is stale" in status()


def test_hostile_strings_are_escaped(builds, tmp_path, cli):
    """A build whose recorded strings are markup (a tensor name and a warning edited into
    reports/quant.json, the manifest resealed) and a folder named with markup: the page holds
    them as text, never as tags."""
    b = tmp_path / "x<b onclick=alert(1)>bold'\"&"
    shutil.copytree(builds["a"], b)
    q = json.loads((b / "reports" / "quant.json").read_text())
    q["tensors"][2]["name"] = HOSTILE
    q["warnings"] = [HOSTILE]
    (b / "reports" / "quant.json").write_text(json.dumps(q))
    reseal(b, "reports/quant.json")
    out = tmp_path / "h.html"
    r = cli("report", b, "-o", out)
    assert r.code == 0, r.err
    text = out.read_text()
    assert "<script>window" not in text and "<img" not in text and "<b " not in text
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in text
    assert "x&lt;b onclick=alert(1)&gt;bold&#x27;&quot;&amp;" in text
    assert _parse(out).scripts == 1


def test_bad_inputs_are_one_line_and_write_nothing(builds, model_cache, tmp_path, cli):
    from maskc.pipeline import CompileOptions, compile_model

    out = tmp_path / "r.html"
    # missing build, a file as build, a plan-only build
    assert_bad(cli("report", tmp_path / "nope", "-o", out), "nope", "not a build folder")
    plan = tmp_path / "plan"
    r = cli("compile", model_cache("tiny").path, "-o", plan, "--plan-only", "--fabric", "mini")
    assert r.code == 0, r.err
    assert_bad(cli("report", plan, "-o", out), "reports/quant.json", "--plan-only")
    assert_bad(cli("report", builds["a"], "--diff", plan, "-o", out), "--diff", "--plan-only")
    # a corrupt build: exit 5, one line
    bad = tmp_path / "corrupt"
    shutil.copytree(builds["a"], bad)
    (bad / "reports" / "quant.json").write_text("{}")
    r = cli("report", bad, "-o", out)
    assert r.code == 5 and len(r.err.strip().splitlines()) == 1 and "quant.json" in r.err
    # --diff of a missing build and of a build for another base die
    assert_bad(cli("report", builds["a"], "--diff", tmp_path / "gone", "-o", out), "--diff", "gone")
    other = tmp_path / "micro"
    fab = micro_fabric(tmp_path)
    compile_model(model_cache("tiny").path, other, CompileOptions(fabric=fab, method="rtn"))
    assert_bad(cli("report", builds["a"], "--diff", other, "-o", out), "--diff", "micro", "mini")
    assert not out.exists() and list(tmp_path.glob(".r.html*")) == []
    # -o a folder, or into a folder that does not exist: usage error, exit 2
    r = cli("report", builds["a"], "-o", tmp_path)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "folder" in r.err
    r = cli("report", builds["a"], "-o", tmp_path / "no" / "r.html")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "does not exist" in r.err
    assert not (tmp_path / "no").exists()
    # an existing -o without --force is kept as it was
    out.write_text("keep")
    assert_bad(cli("report", builds["a"], "-o", out), str(out), "--force")
    assert out.read_text() == "keep"
    assert cli("report", builds["a"], "-o", out, "--force").code == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
