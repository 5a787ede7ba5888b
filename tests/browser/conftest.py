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
TOKEN = "browser-test-token"


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not os.path.exists(CHROMIUM):
        script = Path(__file__).with_name("install_chromium.sh")
        proc = subprocess.run(["sh", str(script)], capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.exists(CHROMIUM):
            pytest.fail(f"chromium is required for browser tests and {script} could not install it:\n"
                        f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return CHROMIUM


@pytest.fixture(scope="session")
def live_server(web_config, pipeline_workdir):  # noqa: F811
    env = dict(os.environ, ALBIREO_CATALOGS__ROOT=web_config.catalogs.root, ALBIREO_WEB__TOKEN=TOKEN,
               ALBIREO_WEB__DATA_DIR=str(pipeline_workdir / "web-browser"),
               ALBIREO_HOME=str(pipeline_workdir / "home"))
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
