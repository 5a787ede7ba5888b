"""Revisions: how a new notice changes what we believe about its event.

An event's state is the stored *event record*; each notice is applied to it in turn:

* the first notice of an event creates it;
* a notice that is not later than the current one (by :attr:`Notice.order_key`: issue time, then
  kind — early warning < preliminary < initial < update < retraction — then the sender's
  revision counter) is *stale*: stored with the others, it changes nothing (notices may arrive out
  of order, or twice);
* a later notice *supersedes*: its metadata becomes the event's, and if it carries a localization
  that becomes the event's localization (an update without a map keeps the earlier map);
* a retraction withdraws the event: status ``retracted``, no localization; nothing revives it.

:func:`apply` is pure (record in, record out), so both stores keep the same states and replaying a
notice is a no-op.
"""

from __future__ import annotations

import time
from typing import Any

from broker.multimessenger.notice import Notice

NEW, SUPERSEDED, STALE, RETRACTED = "new", "superseded", "stale", "retracted"


def apply(event: dict[str, Any] | None, notice: Notice, *, window_days: tuple[float, float],
          now: float | None = None) -> tuple[dict[str, Any], str]:
    """(the event record after ``notice``, what happened: new / superseded / stale / retracted)."""
    now = time.time() if now is None else now
    key = list(notice.order_key)
    if event is not None and list(event.get("current_order_key") or []) >= key:
        out = dict(event, notices=int(event.get("notices", 0)) + 1, updated_at=now)
        return out, STALE
    prev = event or {}
    out: dict[str, Any] = {
        "event_id": notice.event_id,
        "messenger": notice.messenger,
        "mission": notice.mission,
        "name": str(notice.metadata.get("name") or prev.get("name") or notice.event_id),
        "test": bool(prev.get("test", notice.test)) and notice.test,
        "first_created": prev.get("first_created") or notice.created,
        "created": notice.created,
        "current_notice_id": notice.notice_id,
        "current_kind": notice.kind,
        "current_revision": notice.revision,
        "current_order_key": key,
        "event_time": notice.event_time or prev.get("event_time") or notice.created,
        "metadata": dict(prev.get("metadata") or {}) | {k: v for k, v in notice.metadata.items() if v is not None},
        "window_days": list(window_days),
        "notices": int(prev.get("notices", 0)) + 1,
        "updated_at": now,
        "status": prev.get("status", "active"),
        "localization_notice_id": prev.get("localization_notice_id"),
        "localization": prev.get("localization"),
        "summary": prev.get("summary"),
    }
    from broker.multimessenger.notice import parse_time, to_mjd

    out["event_mjd"] = to_mjd(parse_time(out["event_time"]))
    if out["status"] == "retracted":
        return out, STALE if event is not None else RETRACTED
    if notice.retraction:
        out.update(status="retracted", localization=None, localization_notice_id=None, summary=None)
        return out, RETRACTED
    if notice.localization is not None:
        out["localization"] = notice.localization.to_dict()
        out["localization_notice_id"] = notice.notice_id
        out["summary"] = None  # filled once the localization is built (areas, centre)
    return out, NEW if event is None else SUPERSEDED


def localization_changed(before: dict[str, Any] | None, after: dict[str, Any]) -> bool:
    return (before or {}).get("localization_notice_id") != after.get("localization_notice_id")
