"""Telling filter authors that their filter fails: Slack-compatible webhook messages.

ANTARES authors learn about crashes late or never. Here the first error of a
filter revision (and then at most one message per ``min_interval_s``) and every
automatic disable are posted as ``{"text": ...}`` JSON, which Slack, Mattermost
and most chat webhooks accept. Posting happens on a background thread with a
short timeout: a slow or dead webhook never holds up ingestion.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.request
from typing import Any

log = logging.getLogger("albireo.notify")


def error_text(f: Any, err: Any) -> str:
    return (f":warning: filter *{f.name}* (revision `{f.revision}`) raised `{err.exception}: {err.message}` "
            f"on locus {err.locus_id} (alert {err.alert_id}); {f.stats.errors} error(s) so far.\n"
            f"```{err.traceback[-1500:]}```")


def disabled_text(f: Any, err: Any) -> str:
    return (f":no_entry: filter *{f.name}* (revision `{f.revision}`) was disabled automatically: "
            f"{f.disabled_reason}")


class WebhookNotifier:
    """Posts filter errors and disables to ``url``; usable as ``ErrorPolicy(on_error=..., on_disable=...)``."""

    def __init__(self, url: str, min_interval_s: float = 300.0, timeout_s: float = 5.0):
        self.url = url
        self.min_interval_s = min_interval_s
        self.timeout_s = timeout_s
        self._last: dict[tuple[str, str], float] = {}
        self._q: queue.Queue = queue.Queue(maxsize=1000)
        self.sent = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._loop, name="albireo-webhook", daemon=True)
        self._thread.start()

    def on_error(self, f: Any, err: Any) -> None:
        key = (f.name, f.revision)
        now = time.monotonic()
        if now - self._last.get(key, -float("inf")) < self.min_interval_s:
            return
        self._last[key] = now
        self.post({"text": error_text(f, err), "filter": f.name, "revision": f.revision, "event": "error"})

    def on_disable(self, f: Any, err: Any) -> None:
        self.post({"text": disabled_text(f, err), "filter": f.name, "revision": f.revision, "event": "disabled"})

    def post(self, payload: dict[str, Any]) -> None:
        try:
            self._q.put_nowait(payload)
        except queue.Full:
            log.warning("webhook queue full; dropping a notification for %s", payload.get("filter"))

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until queued messages were sent (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        while self._q.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)

    def _loop(self) -> None:
        while True:
            payload = self._q.get()
            try:
                req = urllib.request.Request(self.url, data=json.dumps(payload).encode(),
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    resp.read()
                self.sent += 1
            except Exception as exc:  # a broken webhook is logged, never raised into the pipeline
                self.failed += 1
                log.warning("webhook %s failed: %s: %s", self.url, type(exc).__name__, exc)
            finally:
                self._q.task_done()
