"""maskc report in a real browser: Debian's headless Chromium driven by Playwright loads the
page from a file:// URL; every section renders, hovering a tile shows its tensor (the netlist's,
read here with safetensors), the zoom buttons move the view, the change map marks the changed
tile; any console message of type error, page error or network request fails the test. A
screenshot goes to the test's tmp folder.

Needs ``playwright`` (the ``dev`` extra; Playwright's own browser download is not used) and the
Debian ``chromium`` package (.ci/run installs it): skipped, with the reason, only without
chromium."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from reportbuilds import CHANGED, compile_pair

pytestmark = pytest.mark.slow  # two tiny compiles and a browser start (~30 s loaded)

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SECTIONS = ("summary", "floorplan", "errors", "output", "budget", "diff")


@pytest.fixture(scope="module")
def browser():
    from playwright import sync_api

    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        pytest.skip("no chromium: apt-get install chromium (Debian)")
    exe = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def report(model_cache, tmp_path_factory):
    """The report of B (tiny on mini, one weight changed) with the change map from A."""
    from maskc.report import write_report

    root = tmp_path_factory.mktemp("report-browser")
    a, b = compile_pair(model_cache("tiny").path, root)
    out = root / "report.html"
    write_report(b, out, other=a)
    return {"html": out, "a": a, "b": b}


def _netlist_tiles(build: Path) -> dict[str, str]:
    """Tile name -> matrix, read with json and safetensors only."""
    from safetensors.numpy import load_file

    doc = json.loads((build / "netlist" / "netlist.json").read_text())
    out = {}
    for name, m in doc["matrices"].items():
        for d, x, y in load_file(str(build / "netlist" / m["file"]))[f"{name}/pos"].tolist():
            out[f"T{d}_{x}_{y}"] = name
    return out


@pytest.fixture
def page(browser):
    """A page that records every console error, page error and request; the test fails on
    any of them (the page needs nothing but its own file)."""
    pg = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    requests: list[str] = []
    pg.on(
        "console",
        lambda m: (
            problems.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning")
            else None
        ),
    )
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    pg.on("request", lambda r: requests.append(r.url))
    yield pg, problems, requests
    pg.close()


def test_every_section_renders_and_a_hovered_tile_names_its_tensor(report, page, tmp_path):
    pg, problems, requests = page
    url = report["html"].resolve().as_uri()
    pg.goto(url)
    pg.wait_for_load_state("load")
    for sid in SECTIONS:
        sec = pg.locator(f"section#{sid}")
        assert sec.is_visible(), sid
        box = sec.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 40, (sid, box)
        assert len(sec.inner_text().strip()) > 40, sid
    # the floorplan and the error chart drew something visible
    assert pg.locator("#floorplan svg.map rect.tile").first.is_visible()
    assert pg.locator("#errors svg.chart .series").count() == 7  # q k v o gate up down
    # hover a tile: the tooltip shows the tensor the netlist places there
    tiles = _netlist_tiles(report["b"])
    tip = pg.locator("#tip")
    assert tip.is_hidden()
    for k in (0, 5):
        tile = pg.locator("#floorplan rect.tile").nth(k)
        tile.hover()
        assert tip.is_visible()
        text = tip.inner_text()
        name = text.split(":", 1)[0]
        assert f"{name}: {tiles[name]} |" in text, text
    pg.mouse.move(2, 2)
    assert tip.is_hidden()
    # zoom: whole die, then back to the used area
    m = pg.locator("#floorplan svg.map").first
    used = m.get_attribute("data-used")
    assert m.get_attribute("viewBox") == used
    pg.locator("#floorplan button.zout").first.click()
    assert m.get_attribute("viewBox") == "0 0 80 64"  # mini: 80 x 64 tiles
    pg.locator("#floorplan button.zin").first.click()
    assert m.get_attribute("viewBox") == used
    m.hover()
    pg.mouse.wheel(0, 300)  # zoom out one step around the pointer
    w = [float(v) for v in m.get_attribute("viewBox").split()]
    assert w[2] > float(used.split()[2]) and w[0] >= 0 and w[0] + w[2] <= 80 + 1e-6
    # the change map: exactly one coloured (changed) via tile, holding the changed tensor
    changed = pg.locator("#diff .die").first.locator("rect.tile:not(.unch)")
    assert changed.count() == 1
    changed.hover()
    assert f": {CHANGED} |" in tip.inner_text() and "via shapes changed" in tip.inner_text()
    shot = tmp_path / "report.png"
    pg.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert problems == []
    assert requests == [url], requests  # the file itself, nothing else


def test_hostile_strings_run_no_script(report, page, tmp_path):
    """Markup in a build's recorded strings stays text in the browser: no script runs."""
    from helpers import reseal

    from maskc.report import write_report

    b = tmp_path / "b"
    shutil.copytree(report["b"], b)
    q = json.loads((b / "reports" / "quant.json").read_text())
    bad = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
    q["tensors"][2]["name"] = bad
    q["warnings"] = [bad]
    (b / "reports" / "quant.json").write_text(json.dumps(q))
    reseal(b, "reports/quant.json")
    out = tmp_path / "h.html"
    write_report(b, out)
    pg, problems, requests = page
    pg.goto(out.resolve().as_uri())
    assert pg.evaluate("window.__pwned === undefined")
    assert bad in pg.locator("#summary").inner_text()
    assert problems == [] and requests == [out.resolve().as_uri()]
