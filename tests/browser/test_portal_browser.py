"""The portal in headless Chromium: search, open a locus, the light curve really draws, submit a filter."""

from __future__ import annotations

import pytest

from tests.browser.conftest import ARTIFACTS, BROWSER_USER, VIEWPORTS, layout_problems

pytestmark = pytest.mark.browser


def _coloured_pixels(page) -> int:
    """Non-grey pixels on the chart canvas: the plotted points and error bars (axes and grid are grey)."""
    return page.evaluate("""() => {
        const c = document.querySelector('#lightcurve canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) {
            const r = d[i], g = d[i+1], b = d[i+2], a = d[i+3];
            if (a > 0 && (Math.max(r, g, b) - Math.min(r, g, b)) > 60) n++;
        }
        return n;
    }""")


def test_search_then_locus_light_curve(page, live_server, host_objects):
    ztf, ra, dec = host_objects[0]
    page.goto(f"{live_server}/search")
    page.fill("#q", f"{ra} {dec}")
    page.fill("input[name=radius]", "3")
    page.click("#search-button")
    page.wait_for_selector("#result-count")
    assert page.inner_text("#result-count").startswith("1 loci")
    page.screenshot(path=str(ARTIFACTS / "search.png"), full_page=True)
    page.click("a.locus-link")
    page.wait_for_selector("#lightcurve canvas")
    points = int(page.get_attribute("#lightcurve", "data-points"))
    assert points > 0
    n_series_points = page.evaluate(
        "() => window.albireoChart.data.slice(1).reduce((n, s) => n + s.filter(v => v != null).length, 0)")
    assert n_series_points == points
    assert _coloured_pixels(page) >= 100  # the points and error bars were really drawn
    page.wait_for_function("() => [...document.querySelectorAll('img.cutout')].every(i => i.complete)")
    assert page.evaluate("() => document.querySelectorAll('img.cutout').length") == 3
    assert page.evaluate("() => [...document.querySelectorAll('img.cutout')].every(i => i.naturalWidth > 0)")
    assert page.js_errors == []
    page.screenshot(path=str(ARTIFACTS / "locus.png"), full_page=True)


def test_big_locus_light_curve_phone_width(browser, live_server):
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2)
    page = ctx.new_page()
    page.goto(f"{live_server}/search?tags=&prop0=num_alerts&min0=25&sort=-num_alerts")
    page.click("a.locus-link")
    page.wait_for_selector("#lightcurve canvas")
    assert int(page.get_attribute("#lightcurve", "data-points")) >= 25
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390 + 1  # no horizontal page scroll
    page.screenshot(path=str(ARTIFACTS / "locus-phone.png"), full_page=False)
    ctx.close()


def test_search_by_name_resolves(page, live_server):
    page.goto(f"{live_server}/search")
    page.fill("#q", "M31")
    page.click("#search-button")
    page.wait_for_selector(".resolved")
    assert "NGC0224" in page.inner_text(".resolved")


def _log_in(page, live_server: str, key: str) -> None:
    """The portal's login: the filters page's link, the key pasted into the form, back to the filters."""
    page.goto(f"{live_server}/filters")
    page.click("#login-to-submit a")
    page.fill("input[name=api_key]", key)
    page.click("#login")
    page.wait_for_selector("#signed-in")


def test_submit_filter_form(page, live_server, api_key):
    _log_in(page, live_server, api_key)
    assert page.url.endswith("/filters") and page.inner_text("#signed-in") == BROWSER_USER
    page.fill("input[name=name]", "browser_test_filter")
    page.fill("textarea[name=code]", "from broker.filters import BaseFilter\n\nclass BrowserTest(BaseFilter):\n"
              "    OUTPUT_LOCUS_TAGS = [{'name': 'browser_test', 'description': 'test'}]\n\n"
              "    def _run(self, locus):\n        pass\n")
    page.click("#submit-filter")
    page.wait_for_selector("#message")
    msg = page.inner_text("#message")
    page.screenshot(path=str(ARTIFACTS / "filter-submit.png"), full_page=True)
    assert msg.startswith("Submitted browser_test_filter revision ")
    page.goto(f"{live_server}/filters/browser_test_filter")
    assert page.inner_text("#revisions").count(BROWSER_USER) == 1


def test_wrong_key_is_refused_at_login(page, live_server):
    page.goto(f"{live_server}/login")
    page.fill("input[name=api_key]", "alb_0123456789ab_" + "x" * 43)
    page.click("#login")
    page.wait_for_selector("#error-message")
    assert "Unknown, revoked or malformed API key" in page.inner_text("#error-message")
    page.goto(f"{live_server}/filters")
    assert page.query_selector("#signed-in") is None and page.query_selector("#filter-form") is None


def test_a_post_without_the_forms_csrf_token_is_refused(page, live_server, api_key):
    """Logged in, a request that carries the session cookie but not the form's token (what a forged
    cross-site form sends) is refused, and nothing is submitted."""
    _log_in(page, live_server, api_key)
    status = page.evaluate("""async () => {
        const body = new URLSearchParams({name: 'csrf_forged', code: 'x = 1'});
        const r = await fetch('/filters', {method: 'POST', body, credentials: 'include'});
        return r.status; }""")
    assert status == 403
    assert page.request.get(f"{live_server}/api/filters/csrf_forged").status == 404


@pytest.mark.parametrize("viewport", sorted(VIEWPORTS))
def test_every_page_lays_out_at_desktop_and_phone_width(browser, live_server, host_objects, viewport, api_key):
    """No page scrolls sideways, no control runs past its form or the screen, no two controls overlap."""
    ztf, ra, dec = host_objects[0]
    ctx = browser.new_context(viewport=VIEWPORTS[viewport])
    page = ctx.new_page()
    found = {}

    def check(pages) -> None:
        for name, path in pages:
            page.goto(f"{live_server}{path}")
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(ARTIFACTS / f"layout-{name}-{viewport}.png"), full_page=True)
            problems = layout_problems(page)
            if problems:
                found[name] = problems

    try:
        page.goto(f"{live_server}/search?q={ra}+{dec}&radius=3")
        locus_href = page.get_attribute("a.locus-link", "href")
        check((("home", "/"), ("search", "/search"), ("search-results", f"/search?q={ra}+{dec}&radius=3"),
               ("locus", locus_href), ("filters", "/filters"), ("streams", "/streams"), ("login", "/login")))
        _log_in(page, live_server, api_key)  # the signed-in header and the submission form
        check((("filters-signed-in", "/filters"), ("home-signed-in", "/")))
    finally:
        ctx.close()
    assert found == {}
