"""Headless Chromium (Debian's package) driven by Playwright, against ``albireo serve`` on loopback.

The fixture installs chromium with ``install_chromium.sh`` when missing and fails loudly if it
cannot: browser tests never skip silently. Screenshots go to ``tests/artifacts/`` (git-ignored).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.web.conftest import (  # noqa: F401,F811 - the pipeline-filled store, shared with tests/web
    ROOT,
    host_objects,
    pipeline_workdir,
    web_config,
)

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "tests" / "artifacts"
#: the portal user the browser logs in as.
BROWSER_USER = "browser-test"


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not os.path.exists(CHROMIUM):
        script = Path(__file__).with_name("install_chromium.sh")
        proc = subprocess.run(["sh", str(script)], capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.exists(CHROMIUM):
            pytest.fail(f"chromium is required for browser tests and {script} could not install it:\n"
                        f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return CHROMIUM


def _server_env(web_config, workdir: Path) -> dict[str, str]:  # noqa: F811
    return dict(os.environ, ALBIREO_CATALOGS__ROOT=web_config.catalogs.root,
                ALBIREO_WEB__DATA_DIR=str(workdir / "web-browser"), ALBIREO_HOME=str(workdir / "home"),
                ALBIREO_USERS__DB=str(workdir / "users-browser.sqlite"), ALBIREO_USERS__STREAM_ACCESS="none")


@pytest.fixture(scope="session")
def api_key(web_config, pipeline_workdir) -> str:  # noqa: F811
    """The browser user's API key, made as the operator makes one: ``albireo users add NAME --json``."""
    import json

    proc = subprocess.run([sys.executable, "-m", "broker.cli", "users", "add", BROWSER_USER, "--json"], cwd=ROOT,
                          env=_server_env(web_config, pipeline_workdir), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)["api_key"]


@pytest.fixture(scope="session")
def live_server(web_config, pipeline_workdir, api_key):  # noqa: F811
    env = _server_env(web_config, pipeline_workdir)
    proc = subprocess.Popen([sys.executable, "-m", "broker.cli", "serve", "--port", "0", "--store",
                             web_config.store.path, "--index", web_config.search.path],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"listening on (http://\S+)", line)
        assert m, f"serve did not start: {line!r}"
        yield m.group(1).rstrip("/")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture()
def page(browser):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ctx = browser.new_context(viewport={"width": 1200, "height": 900})
    p = ctx.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    p.js_errors = errors
    yield p
    ctx.close()


#: desktop and phone viewports every page's layout is checked at.
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}

_LAYOUT_JS = """() => {
    const vw = document.documentElement.clientWidth;
    const problems = [];
    if (document.documentElement.scrollWidth > vw + 1)
        problems.push(`page scrolls sideways: ${document.documentElement.scrollWidth}px wide in a ${vw}px viewport`);
    const visible = el => { const r = el.getBoundingClientRect(); const s = getComputedStyle(el);
        return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none'; };
    const name = el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + (el.name ? `[name=${el.name}]` : '')
        + (el.className && typeof el.className === 'string' ? '.' + el.className.split(' ')[0] : '');
    // wide content inside a horizontal scroll box (tables, code) is fine: the box is what must fit
    const inScroller = el => { for (let a = el.parentElement; a; a = a.parentElement) {
        const o = getComputedStyle(a).overflowX; if (o === 'auto' || o === 'scroll') return true; } return false; };
    const controls = [...document.querySelectorAll('main input:not([type=hidden]), main select, main button, main textarea')]
        .filter(visible);
    const boxes = [...controls, ...document.querySelectorAll('main fieldset, main form, main table, main .table-wrap, main pre')];
    for (const el of boxes.filter(visible).filter(el => !inScroller(el))) {
        const r = el.getBoundingClientRect();
        if (r.right > vw + 1) problems.push(`${name(el)} ends at ${Math.round(r.right)}px, past the ${vw}px viewport`);
        const box = el.parentElement && el.parentElement.closest('form, fieldset');
        if (box && el.tagName !== 'TABLE') {
            const b = box.getBoundingClientRect();
            if (r.right > b.right + 1 || r.left < b.left - 1)
                problems.push(`${name(el)} runs past its ${name(box)} (${Math.round(r.left)}-${Math.round(r.right)} vs ` +
                              `${Math.round(b.left)}-${Math.round(b.right)})`);
        }
    }
    for (let i = 0; i < controls.length; i++) for (let j = i + 1; j < controls.length; j++) {
        const a = controls[i].getBoundingClientRect(), b = controls[j].getBoundingClientRect();
        const w = Math.min(a.right, b.right) - Math.max(a.left, b.left), h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
        if (w > 1 && h > 1) problems.push(`${name(controls[i])} overlaps ${name(controls[j])}`);
    }
    return problems;
}"""


def layout_problems(page) -> list[str]:
    """What is wrong with the page's layout: sideways scrolling, controls past their form or the viewport, overlaps."""
    return page.evaluate(_LAYOUT_JS)
