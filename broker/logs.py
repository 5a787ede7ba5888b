"""Logging set-up: plain text for people, or one JSON object per line for log shippers.

Log calls pass their context as ``extra`` (``alert_id``, ``locus_id``, ``filter``, ``revision``,
``origin``, ``reason``, ``batch``...): the text format appends it as ``key=value``, the JSON format
puts each key at the top level, so a search for one alert or one filter finds every line about it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from typing import Any

#: the context keys log calls may pass in ``extra`` (anything else in ``extra`` is ignored).
CONTEXT_KEYS = ("alert_id", "locus_id", "filter", "revision", "origin", "reason", "batch", "partition",
                "offset", "stream", "topic", "worker", "event_id")


def _context(record: logging.LogRecord) -> dict[str, Any]:
    return {k: getattr(record, k) for k in CONTEXT_KEYS if getattr(record, k, None) is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, context, exception."""

    def __init__(self) -> None:
        super().__init__()
        self.host = socket.gethostname()
        self.pid = os.getpid()

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            "host": self.host, "pid": self.pid, **_context(record),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ctx = _context(record)
        return text + ("  [" + " ".join(f"{k}={v}" for k, v in ctx.items()) + "]" if ctx else "")


def setup(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger once: ``fmt`` is ``text`` or ``json``; output on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
