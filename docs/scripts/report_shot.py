"""The screenshot of docs/report.md: a report page in Debian's headless Chromium (Playwright),
a tile of the floorplan hovered so its tooltip shows.

    python docs/scripts/report_shot.py report.html [-o docs/img/report.png] [--tile N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("html", type=Path)
    ap.add_argument("-o", "--output", type=Path, default=Path("docs/img/report.png"))
    ap.add_argument("--tile", type=int, default=40, help="which drawn tile to hover")
    ap.add_argument("--height", type=int, default=1150, help="pixels of the page to keep")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        pg = b.new_page(viewport={"width": 1280, "height": args.height})
        pg.goto(args.html.resolve().as_uri())
        pg.locator("#floorplan rect.tile").nth(args.tile).hover()
        args.output.parent.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(args.output))
        b.close()
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
