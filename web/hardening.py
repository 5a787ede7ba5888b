"""Response headers every answer carries: no MIME sniffing, a content policy, no framing.

Why each:
* ``X-Content-Type-Options: nosniff`` — a JSON answer echoing user input (a filter's name, a
  query) must never be sniffed into HTML and run as a page.
* ``Content-Security-Policy`` — scripts only from this origin (the portal serves its own,
  vendored JavaScript; it has no inline scripts), no plugins, no base-URL rewriting, forms post
  only here. Images and ``connect-src`` may come from ``http:``/``https:``/``data:``/``blob:``
  because the event page's Aladin Lite fetches HiPS sky surveys from public servers and builds
  tiles as blobs (tests/browser/test_events_browser.py fails without it); inline styles are allowed for its widgets and
  a few ``style`` attributes. ``'wasm-unsafe-eval'`` lets Aladin Lite's WebAssembly core compile.
* ``X-Frame-Options: DENY`` and ``frame-ancestors 'none'`` — no clickjacking of the
  approve/grant forms from another site's frame.
"""

from __future__ import annotations

from flask import Flask, Response

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'",
    "script-src 'self' 'wasm-unsafe-eval'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob: http: https:",
    "connect-src 'self' data: blob: http: https:",
    "worker-src 'self' blob:",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))

HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def install(app: Flask) -> None:
    """Add :data:`HEADERS` to every response, errors and static files included (a view may override)."""

    @app.after_request
    def _harden(resp: Response) -> Response:
        for name, value in HEADERS.items():
            resp.headers.setdefault(name, value)
        return resp
