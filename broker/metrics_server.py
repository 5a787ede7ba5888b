"""A worker's ``/metrics`` (Prometheus text) and ``/healthz`` on ``http://<host>:<port>/``.

A worker has no web framework; the standard library's threading HTTP server is enough for a scrape
every few seconds. ``/healthz`` answers 200 while the worker's ``health()`` callable says it is
healthy (polling, not stuck in a retry loop), 503 otherwise, with the reason as JSON.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from broker.metrics import Metrics


def serve_metrics(metrics: Metrics, port: int, host: str = "127.0.0.1",
                  health: Callable[[], dict[str, Any]] | None = None) -> ThreadingHTTPServer:
    """Start a daemon thread answering ``GET /metrics`` and ``GET /healthz``; ``.shutdown()`` stops it."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?")[0]
            if path == "/metrics":
                self._send(200, metrics.render().encode(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                state = health() if health is not None else {"healthy": True}
                self._send(200 if state.get("healthy") else 503, json.dumps(state).encode(), "application/json")
            else:
                self.send_error(404, "only /metrics and /healthz are served here")

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # scrapes are not worth a log line each
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
