"""Raw bytes → :class:`~broker.multimessenger.notice.Notice`: recognise the format, validate, read.

Formats are recognised by their bytes, never by a file name: ``{`` is JSON (GCN unified, or LVK
``igwn.gwalert`` by its ``superevent_id``), ``<`` is a VOEvent, ``Obj\\x01`` an Avro container
(LVK); a bare Avro payload is accepted on LVK's topic only. Everything else — too large, not
UTF-8, not an object, unknown schema, failing its schema — raises
:class:`~broker.multimessenger.notice.NoticeError` whose reason and message become the dead
letter's.
"""

from __future__ import annotations

import json
from typing import Any

from broker.multimessenger import gcn, lvk, voevent
from broker.multimessenger.notice import DEFAULT_MAX_BYTES, Notice, NoticeError, notice_id_for


def parse_notice(raw: bytes, topic: str = "", max_bytes: int = DEFAULT_MAX_BYTES) -> Notice:
    """Parse and validate one notice; ``topic`` (Kafka topic or file path) only breaks format ties."""
    if not raw:
        raise NoticeError("empty", "empty message")
    if len(raw) > max_bytes:
        raise NoticeError("too_large", f"notice of {len(raw)} bytes exceeds the {max_bytes}-byte limit")
    nid = notice_id_for(raw)
    head = raw[:64].lstrip()
    if head.startswith(b"{"):
        doc = _json(raw)
        if lvk.is_lvk(doc):
            return lvk.parse_lvk_json(doc, nid)
        return gcn.parse_gcn(doc, nid, topic)
    if head.startswith(b"<"):
        return voevent.parse_voevent(raw, nid)
    if raw.startswith(lvk.AVRO_CONTAINER_MAGIC) or any(t in topic for t in lvk.LVK_TOPICS):
        return lvk.parse_lvk_avro(raw, nid)
    raise NoticeError("unknown_format", f"not a JSON, VOEvent or Avro notice (starts {raw[:8]!r})")


def _json(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except UnicodeDecodeError as exc:
        raise NoticeError("bad_json", f"not UTF-8 ({exc})") from None
    except json.JSONDecodeError as exc:
        raise NoticeError("bad_json", f"not JSON: {exc}") from None
    except ValueError as exc:  # NaN / Infinity literals
        raise NoticeError("bad_json", str(exc)) from None
    if not isinstance(doc, dict):
        raise NoticeError("bad_json", f"a notice is a JSON object, not {type(doc).__name__}")
    return doc


def _no_constants(name: str) -> float:
    raise ValueError(f"JSON literal {name} is not a number a notice may carry")


def notice_event_id(raw: bytes, topic: str = "") -> str | None:
    """The event a raw notice is about, or None when it is not a readable notice (replay keys)."""
    try:
        return parse_notice(raw, topic).event_id
    except NoticeError:
        return None


__all__ = ["Notice", "NoticeError", "notice_event_id", "parse_notice"]
