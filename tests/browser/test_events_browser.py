"""The multi-messenger pages in headless Chromium: event list → event page → a candidate's locus page.

The store is the multi-messenger scenario (real ZTF packets placed in an LVK map and an IceCube
circle, every real sample notice) served by ``albireo serve --workdir``. The static sky map (drawn
with ligo.skymap) must really show its contours; Aladin Lite (npm ``aladin-lite``, installed by
``broker.ops.portal_assets`` as ``make portal-assets`` does) must draw the MOCs and the loci. No
HiPS survey is reachable here, so Aladin's background stays empty and it reports its failed survey
fetches as page errors: those, and only those, are allowed. Screenshots: ``tests/artifacts/event*.png``.
"""

from __future__ import annotations

import io
import re

import pytest

from tests import mm_scenario
from tests.browser.conftest import ARGS, ARTIFACTS, VIEWPORTS, layout_problems

pytestmark = pytest.mark.browser

#: what Aladin Lite says when its background survey (a HiPS on the internet) cannot be reached
SURVEY_UNREACHABLE = re.compile(r"Failed to fetch|HiPS location|does not refer to a found CDS ID")


@pytest.fixture(scope="module")
def mm_server(tmp_path_factory, shared_data):
    from broker.ops.portal_assets import install_aladin

    try:
        install_aladin()
    except Exception as exc:  # the interactive view is part of the test: say why it cannot run
        pytest.fail(f"Aladin Lite could not be installed from npm: {exc}")
    work = tmp_path_factory.mktemp("mm-browser")
    sc, _ = mm_scenario.embedded_workdir(shared_data, work / "demo")
    with mm_scenario.serving(work / "demo", work / "home") as base:
        yield base, sc


@pytest.fixture(scope="module")
def webgl_browser(browser, chromium_path):
    """A second Chromium of the session's Playwright, with software WebGL (SwiftShader): Aladin Lite needs WebGL2."""
    args = [a for a in ARGS if a != "--disable-gpu"] + ["--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
    b = browser.browser_type.launch(executable_path=chromium_path, args=args, headless=True)
    yield b
    b.close()


def _coloured(png: bytes, rgb: tuple[int, int, int], tol: int = 40) -> int:
    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int((np.abs(a - np.array(rgb)).max(axis=2) <= tol).sum())


def test_event_list_event_page_and_locus(webgl_browser, mm_server):
    base, sc = mm_server
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ctx = webgl_browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{base}/events")
    rows = page.eval_on_selector_all("tr.event-row", "rs => rs.map(r => r.dataset.event)")
    assert {"MS181101ab", "IceCube-137840_57034692", "KM3-240901A", "ZTF25acffkdr"} <= set(rows)
    page.screenshot(path=str(ARTIFACTS / "events.png"), full_page=True)
    page.click('tr[data-event="MS181101ab"] a.event-link')
    page.wait_for_selector("#event-name")
    assert page.inner_text("#event-name") == "MS181101ab"
    assert page.inner_text("#n-candidates") == str(len(sc.expected_gw))
    assert page.inner_text("#area90") == "30.98"

    # the static sky map: loaded, and its contours really drawn (red 90 %, orange 50 %)
    page.wait_for_function("() => { const i = document.getElementById('skymap'); return i.complete && i.naturalWidth > 0 }")
    assert page.evaluate("() => document.getElementById('skymap').naturalWidth") >= 800
    png = page.request.get(f"{base}/events/MS181101ab/skymap.png").body()
    assert _coloured(png, (0xE6, 0x39, 0x46)) > 200 and _coloured(png, (0xFC, 0xA3, 0x11)) > 100

    # the candidate table: exactly the loci inside the 90 % region
    n_rows = page.evaluate("() => document.querySelectorAll('#candidates tbody tr').length")
    assert n_rows == len(sc.expected_gw)
    objects = set(page.eval_on_selector_all("#candidates tbody tr td:nth-child(2)", "tds => tds.map(t => t.innerText)"))
    assert objects == sc.expected_gw

    # Aladin Lite: the MOCs and the loci drawn over an empty background
    page.wait_for_selector("#aladin-lite-div[data-state=ready]", timeout=90_000)
    assert int(page.get_attribute("#aladin-lite-div", "data-moc-cells")) > 100
    assert int(page.get_attribute("#aladin-lite-div", "data-sources")) == len(sc.expected_gw)
    page.wait_for_timeout(2000)  # let WebGL draw a few frames
    shot = page.locator("#aladin-lite-div").screenshot(path=str(ARTIFACTS / "event-aladin.png"))
    assert _coloured(shot, (0xF1, 0xAF, 0x7A), tol=45) > 2000  # the filled 50 % MOC (orange on the dark sky)
    assert _coloured(shot, (0x2E, 0xC4, 0xF1), tol=50) > 20  # the loci markers
    page.screenshot(path=str(ARTIFACTS / "event.png"), full_page=True)
    assert [e for e in errors if not SURVEY_UNREACHABLE.search(e)] == []

    # a candidate's locus page lists the event it lies in, and links back
    page.click("#candidates a.locus-link >> nth=0")
    page.wait_for_selector("#coincidences")
    assert page.evaluate("() => [...document.querySelectorAll('#coincidences a.event-link')].map(a => a.innerText)") \
        == ["MS181101ab"]
    page.screenshot(path=str(ARTIFACTS / "event-locus.png"), full_page=True)
    ctx.close()


@pytest.mark.parametrize("viewport", sorted(VIEWPORTS))
def test_event_pages_layout(webgl_browser, mm_server, viewport):
    base, _ = mm_server
    ctx = webgl_browser.new_context(viewport=VIEWPORTS[viewport])
    page = ctx.new_page()
    for path in ("/events", "/events/IceCube-137840_57034692"):
        page.goto(base + path)
        assert layout_problems(page) == [], (path, viewport)
    page.screenshot(path=str(ARTIFACTS / f"event-{viewport}.png"), full_page=True)
    ctx.close()
