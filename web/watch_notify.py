"""Watch-list notifications: a locus found inside a watch list's cones is recorded once and its owner told.

Why a recorded event per (watch list, locus) and not a message per alert: the owner wants to hear
that something *entered* a watched region, once, not about every later detection. The record is
the idempotency key — ``INSERT OR IGNORE`` claims it, so two runs never both notify — and it keeps
what happened (when found, by which channel, sent or why not), which the API and portal show.

Delivery: a Slack-compatible webhook (``POST`` of ``{"text": ...}`` JSON, what Slack, Mattermost
and Discord's ``/slack`` endpoints accept) and/or an email through ``[watch] smtp_host``. A send
that fails stays ``failed`` and is retried on the next run, up to ``watch.max_attempts``; a sent
event is never sent again. A process killed between the server's acceptance and the ``sent``
update re-sends that one event on the next run (at-least-once at that boundary only).
"""

from __future__ import annotations

import json
import smtplib
import sqlite3
import threading
import time
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from broker.config import WatchConfig
from broker.ports import Index, LocusQuery
from web import watchlists

_SCHEMA = """
CREATE TABLE IF NOT EXISTS watch_events (
    watchlist_id TEXT NOT NULL, locus_id TEXT NOT NULL, label TEXT, ra REAL, dec REAL,
    found_at REAL NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    channels TEXT NOT NULL DEFAULT '', error TEXT NOT NULL DEFAULT '', sent_at REAL,
    PRIMARY KEY (watchlist_id, locus_id)
) WITHOUT ROWID;
"""
#: loci looked at per watched cone per run (a cone holding more is a mis-sized watch list).
MAX_PER_CONE = 1000


@dataclass
class RunReport:
    found: int = 0
    sent: int = 0
    failed: int = 0


class WatchEvents:
    """The recorded events, in ``<web.data_dir>/watch_events.sqlite``."""

    def __init__(self, data_dir: str | Path):
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._sql = sqlite3.connect(str(Path(data_dir) / "watch_events.sqlite"), timeout=30,
                                   check_same_thread=False, isolation_level=None)
        self._sql.execute("PRAGMA journal_mode=WAL")
        self._sql.executescript(_SCHEMA)

    def claim(self, wl_id: str, hit: dict[str, Any], label: str, now: float) -> bool:
        """Record a newly found locus; False if it was already recorded (so it is never notified twice)."""
        with self._lock:
            cur = self._sql.execute("INSERT OR IGNORE INTO watch_events (watchlist_id, locus_id, label, ra, dec, "
                                   "found_at, status) VALUES (?,?,?,?,?,?, 'pending')",
                                   (wl_id, hit["locus_id"], label, hit.get("ra"), hit.get("dec"), now))
            return cur.rowcount == 1

    def due(self, max_attempts: int) -> list[dict[str, Any]]:
        """Events not yet sent that may still be tried."""
        with self._lock:
            rows = self._sql.execute("SELECT watchlist_id, locus_id, label, ra, dec, attempts, channels "
                                    "FROM watch_events "
                                    "WHERE status != 'sent' AND attempts < ? ORDER BY found_at, locus_id",
                                    (max_attempts,)).fetchall()
        keys = ("watchlist_id", "locus_id", "label", "ra", "dec", "attempts", "channels")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def mark(self, wl_id: str, locus_id: str, ok: bool, channels: list[str], error: str, now: float) -> None:
        with self._lock:
            self._sql.execute("UPDATE watch_events SET status=?, attempts=attempts+1, channels=?, error=?, sent_at=? "
                             "WHERE watchlist_id=? AND locus_id=?",
                             ("sent" if ok else "failed", ",".join(channels), error[:500], now if ok else None,
                              wl_id, locus_id))

    def list(self, wl_id: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._sql.execute("SELECT locus_id, label, ra, dec, found_at, status, attempts, channels, error, "
                                    "sent_at FROM watch_events WHERE watchlist_id=? ORDER BY found_at DESC, locus_id",
                                    (wl_id,)).fetchall()
        keys = ("locus_id", "label", "ra", "dec", "found_at", "status", "attempts", "channels", "error", "sent_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def close(self) -> None:
        self._sql.close()


def message_text(wl: dict[str, Any], ev: dict[str, Any], portal_url: str) -> str:
    where = f" ({ev['label']})" if ev.get("label") else ""
    link = f"{portal_url.rstrip('/')}/loci/{ev['locus_id']}" if portal_url else ev["locus_id"]
    return (f"Albireo watch list '{wl['name']}': locus {ev['locus_id']} at RA {ev['ra']:.6f}, Dec {ev['dec']:.6f} "
            f"entered a watched region{where}. {link}")


def send_webhook(url: str, text: str, timeout_s: float) -> None:
    """POST ``{"text": ...}`` (Slack's incoming-webhook shape); any non-2xx answer is a failure."""
    req = urllib.request.Request(url, data=json.dumps({"text": text}).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - http(s) only (validated)
        if not 200 <= resp.status < 300:
            raise OSError(f"webhook answered HTTP {resp.status}")


def send_email(cfg: WatchConfig, to: str, subject: str, text: str) -> None:
    if not cfg.smtp_host:
        raise OSError("email notifications need [watch] smtp_host")
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = cfg.smtp_from, to, subject
    msg.set_content(text)
    with smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=cfg.timeout_s) as smtp:
        smtp.send_message(msg)


def run_once(index: Index, data_dir: str, cfg: WatchConfig, portal_url: str = "",
             now: float | None = None) -> RunReport:
    """Find loci inside every notifying watch list's cones, record new ones, send what is due."""
    now = time.time() if now is None else now
    lists = watchlists.load(data_dir)
    events = WatchEvents(data_dir)
    report = RunReport()
    try:
        for wl_id, wl in lists.items():
            if not wl.get("notify"):
                continue
            for obj in wl["objects"]:
                res = index.search(LocusQuery(cone=(obj["ra"], obj["dec"], obj["radius_arcsec"] / 3600),
                                              limit=MAX_PER_CONE))
                report.found += sum(events.claim(wl_id, h, obj.get("label", ""), now) for h in res.hits)
        for ev in events.due(cfg.max_attempts):
            wl = lists.get(ev["watchlist_id"])
            if wl is None or not wl.get("notify"):
                continue  # list deleted or muted: kept as recorded, not sent
            text = message_text(wl, ev, portal_url)
            channels = [c for c in ev["channels"].split(",") if c]  # delivered on an earlier try: not again
            errors = []
            for channel, target in sorted(wl["notify"].items()):
                if channel in channels:
                    continue
                try:
                    if channel == "webhook":
                        send_webhook(target, text, cfg.timeout_s)
                    else:
                        send_email(cfg, target, f"Albireo: {ev['locus_id']} entered '{wl['name']}'", text)
                    channels.append(channel)
                except (OSError, smtplib.SMTPException) as exc:  # recorded and retried next run
                    errors.append(f"{channel}: {type(exc).__name__}: {exc}")
            ok = not errors
            events.mark(ev["watchlist_id"], ev["locus_id"], ok, channels, "; ".join(errors), now)
            report.sent += ok
            report.failed += not ok
    finally:
        events.close()
    return report
