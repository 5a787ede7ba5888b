"""``/metrics`` on ``albireo serve``: request counts and latencies, plus what the store and index hold.

Prometheus text format, like every worker's ``/metrics``. Requests are counted per endpoint (the
Flask rule, not the raw path, so locus ids do not explode the label set) and status code.
"""

from __future__ import annotations

import time

from flask import Blueprint, Flask, Response, g, request

from broker.metrics import Metrics
from web.backend import backend

bp = Blueprint("metrics", __name__)


def install(app: Flask) -> Metrics:
    """Count and time every request of ``app``; returns the app's :class:`Metrics`."""
    metrics = Metrics()
    app.extensions["albireo_metrics"] = metrics

    @app.before_request
    def _start() -> None:
        g._albireo_t0 = time.perf_counter()

    @app.after_request
    def _count(resp: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule is not None else "(unmatched)"
        metrics.inc("http_requests", endpoint=endpoint, method=request.method, status=str(resp.status_code))
        t0 = g.get("_albireo_t0")
        if t0 is not None:
            metrics.observe("http_request_seconds", time.perf_counter() - t0, endpoint=endpoint)
        return resp

    return metrics


@bp.get("/metrics")
def metrics_text() -> Response:
    from flask import current_app

    metrics: Metrics = current_app.extensions["albireo_metrics"]
    b = backend()
    for name, value in b.store.counts().items():
        metrics.set("store_rows", value, table=name)
    metrics.set("index_documents", b.index.count())
    metrics.set("uptime_seconds", time.time() - b.started_at)
    return Response(metrics.render(), mimetype="text/plain; version=0.0.4")


@bp.get("/healthz")
def healthz() -> Response:
    """200 while the store and index answer, 503 (with the error) otherwise."""
    import json

    b = backend()
    try:
        state = {"healthy": True, "loci": b.store.counts().get("loci", 0), "documents": b.index.count()}
        code = 200
    except Exception as exc:  # a health check reports; it does not raise
        state, code = {"healthy": False, "error": f"{type(exc).__name__}: {exc}"}, 503
    return Response(json.dumps(state), status=code, mimetype="application/json")
