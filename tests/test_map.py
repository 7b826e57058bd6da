"""The map page in a real browser: Debian's Chromium driven by Playwright against a real
``statcube serve`` on loopback. Checks what a person would: choose cube, measure, areas,
period and a filter with the keyboard and the mouse; the number of drawn areas equals the
API's cell count; a tooltip shows the API's value; the confidentiality note is visible; the
CSV and GeoJSON links work; the page fits a phone. Screenshots go to tests/artefacts/.
"""

from __future__ import annotations

import json
import shutil
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from test_server_support import ROOT, Server, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARTEFACTS = ROOT / "tests" / "artefacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Chromium is required for the map test: apt-get install chromium (.ci/run does)"
    return path


@pytest.fixture(scope="module")
def live(warehouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("map")
    env = {"STATCUBE_MODEL": str(ROOT / "model.json"), "STATCUBE_WAREHOUSE": str(warehouse),
           "STATCUBE_RATE_LIMIT_GUEST": "100000/minute"}
    server = start_server(["serve", "--port", "0", "--workers", "1", "--threads", "4"], env,
                          directory / "server.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield b
        b.close()


def api(live: Server, path: str) -> Any:
    code, _, body = live.get(path)
    assert code == 200, (path, body[:300])
    return json.loads(body)


def wait_drawn(page: Page, *fragments: str) -> str:
    """Wait until the map has drawn a request whose URL holds every fragment."""
    cond = " && ".join(f"d.includes({json.dumps(f)})" for f in fragments)
    page.wait_for_function(
        f"() => {{ const d = document.getElementById('map').getAttribute('data-drawn') || ''; "
        f"return {cond or 'd.length > 0'}; }}", timeout=30_000)
    return str(page.get_attribute("#map", "data-drawn"))


def draws(page: Page) -> int:
    return int(page.get_attribute("#map", "data-draws") or 0)


def wait_redrawn(page: Page, before: int) -> None:
    """Wait for a drawing newer than ``before`` (a cube change reloads every selector)."""
    page.wait_for_function(
        "(n) => Number(document.getElementById('map').getAttribute('data-draws') || 0) > n",
        arg=before, timeout=30_000)


def test_map_draws_the_api_cells_and_shows_their_values(live: Server, browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(live.url + "/map")
    wait_drawn(page, "format=geojson")
    assert page.is_visible("#sdc-note")
    assert "protect confidentiality" in page.inner_text("#sdc-note")

    before = draws(page)
    page.select_option("#cube", "housing_benefit")
    wait_redrawn(page, before)
    wait_drawn(page, "housing_benefit")
    page.select_option("#aggregate", "weekly_award_mean")
    page.select_option("#level", "region")
    wait_drawn(page, "weekly_award_mean", "geography%3Aregion")
    page.select_option("#filter-dim", "tenure")
    page.select_option("#filter-member", "private")
    drawn = wait_drawn(page, "weekly_award_mean", "geography%3Aregion", "tenure%3Aprivate")
    assert not page.is_visible("#status.error")

    # The same query as JSON: one drawn area per cell.
    query = urllib.parse.urlsplit(drawn).query.replace("format=geojson", "format=json")
    result = api(live, "/cube/housing_benefit/aggregate?" + query)
    cells = {c["geography.region_code"]: c for c in result["cells"]}
    areas = page.locator("path.area")
    assert areas.count() == len(cells) == result["total_cell_count"] > 5

    # Hover an area: the tooltip names it and shows the API's published value.
    first = areas.nth(0)
    code = first.get_attribute("data-code")
    assert code is not None
    assert code in cells
    first.hover()
    tip = page.inner_text("#tooltip")
    cell = cells[code]
    assert cell["geography.region_name"] in tip and code in tip
    value = cell["weekly_award_mean"]
    expected = "withheld" if value is None else f"£{value:,.2f}"
    assert expected in tip

    # Links give the same data as CSV and GeoJSON.
    for link, kind in (("#csv-link", "text/csv"), ("#geojson-link", "application/geo+json")):
        href = page.get_attribute(link, "href")
        assert href
        status, headers, _ = live.get(href)
        assert status == 200 and headers["Content-Type"].startswith(kind)

    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTEFACTS / "map-desktop.png"), full_page=True)
    assert errors == []
    page.close()


def test_map_is_keyboard_and_phone_friendly(live: Server, browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 375, "height": 800}, is_mobile=True,
                            has_touch=True)
    page.goto(live.url + "/map")
    wait_drawn(page, "format=geojson")
    # Every selector has a visible label, and the page does not scroll sideways.
    for sel in ("cube", "aggregate", "level", "period", "filter-dim"):
        assert page.is_visible(f"label[for={sel}]")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375
    box = page.locator("#map").bounding_box()
    assert box is not None and box["width"] > 300

    # Keyboard only: tab to the period selector and pick the previous period.
    page.focus("#cube")
    for _ in range(3):
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "period"
    before = page.get_attribute("#map", "data-drawn")
    page.keyboard.press("ArrowDown")
    page.wait_for_function(
        "(b) => document.getElementById('map').getAttribute('data-drawn') !== b", arg=before)
    # Areas are focusable and announce their value; tapping shows the tooltip.
    area = page.locator("path.area").nth(0)
    assert area.get_attribute("tabindex") == "0"
    assert ":" in (area.get_attribute("aria-label") or "")
    area.tap()
    assert page.is_visible("#tooltip")
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTEFACTS / "map-phone.png"), full_page=True)
    page.close()
