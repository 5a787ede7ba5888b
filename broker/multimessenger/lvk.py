"""LVK ``igwn.gwalert`` notices, in their JSON and their Avro form.

JSON is checked against ``igwn.alerts.Alert.schema.json``; Avro is decoded with its writer schema
(LVK writes Avro object-container files whose schema is ``igwn.alerts.Alert``; bare payloads on a
topic we know to be LVK's are read with the packaged schema), then turned into the JSON form (the
sky map's bytes as base64) and checked against the same JSON Schema, so both forms obey the same
rules. The multi-order sky map (``event.skymap``) becomes the notice's FITS bytes.

Superevent ids starting with ``M`` (``MS181101ab``) are LVK's mock events: marked ``test``.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from broker.multimessenger.gcn import decode_fits_base64
from broker.multimessenger.notice import GW, LocalizationSpec, Notice, NoticeError, iso, parse_time
from broker.multimessenger.schemas import LVK_JSON_SCHEMA_ID, lvk_avro_schema, validate_json

AVRO_CONTAINER_MAGIC = b"Obj\x01"
_KINDS = {"EARLYWARNING": "EARLY_WARNING", "EARLY_WARNING": "EARLY_WARNING", "PRELIMINARY": "PRELIMINARY",
          "INITIAL": "INITIAL", "UPDATE": "UPDATE", "RETRACTION": "RETRACTION"}
#: topics whose bare (schemaless) Avro payloads are read as igwn.alerts.Alert.
LVK_TOPICS = ("igwn.gwalert",)


def is_lvk(doc: dict[str, Any]) -> bool:
    return "superevent_id" in doc and "alert_type" in doc


def parse_lvk_json(doc: dict[str, Any], notice_id: str, fmt: str = "lvk_json") -> Notice:
    validate_json(doc, LVK_JSON_SCHEMA_ID)
    event = doc.get("event") or {}
    skymap_b64 = event.get("skymap")
    skymap = decode_fits_base64(skymap_b64, "event.skymap") if skymap_b64 else None
    full = dict(doc)
    if event:
        full["event"] = {k: v for k, v in event.items() if k != "skymap"}
    ext = doc.get("external_coinc")
    if isinstance(ext, dict) and ext.get("combined_skymap"):
        full["external_coinc"] = {k: v for k, v in ext.items() if k != "combined_skymap"}
    gid = str(doc["superevent_id"])
    kind = _KINDS[str(doc["alert_type"])]
    meta = {"name": gid, "gracedb_id": gid, "alert_type": kind}
    for k in ("far", "significant", "instruments", "group", "pipeline", "search", "classification", "properties",
              "duration", "central_frequency"):
        if k in event:
            meta[k] = event[k]
    if ext:
        meta["external_coinc"] = full["external_coinc"]
    meta["urls"] = doc.get("urls") or {}
    loc = LocalizationSpec(shape="map") if skymap is not None else None
    return Notice(notice_id=notice_id, event_id=gid, messenger=GW, format=fmt, schema="igwn.alerts.Alert",
                  kind=kind, revision=0, created=iso(parse_time(doc["time_created"])),
                  event_time=iso(parse_time(event["time"])) if event.get("time") else None, mission="LVK",
                  test=gid.startswith("M"), localization=loc, metadata=meta, full_notice=full, skymap=skymap)


def parse_lvk_avro(raw: bytes, notice_id: str) -> Notice:
    """An Avro container (or, for LVK's topic, a bare payload) holding one ``igwn.alerts.Alert``."""
    import fastavro

    try:
        if raw.startswith(AVRO_CONTAINER_MAGIC):
            reader = fastavro.reader(io.BytesIO(raw))
            name = (reader.writer_schema or {}).get("name", "")
            if name not in ("igwn.alerts.Alert", "Alert"):
                raise NoticeError("unknown_schema", f"Avro container of schema {name!r}, not igwn.alerts.Alert")
            records = list(reader)
        else:
            records = [fastavro.schemaless_reader(io.BytesIO(raw), lvk_avro_schema())]
    except NoticeError:
        raise
    except Exception as exc:  # fastavro raises many types on corrupt bytes
        raise NoticeError("schema_invalid", f"igwn.alerts.Alert Avro: cannot decode ({type(exc).__name__}: {exc})") \
            from None
    if len(records) != 1:
        raise NoticeError("schema_invalid", f"igwn.alerts.Alert Avro: expected one alert, found {len(records)}")
    return parse_lvk_json(avro_to_json(records[0]), notice_id, fmt="lvk_avro")


def avro_to_json(rec: dict[str, Any]) -> dict[str, Any]:
    """The JSON form of an Avro alert: sky maps (bytes) as base64, as LVK's JSON alerts carry them."""
    out = dict(rec)
    ev = out.get("event")
    if isinstance(ev, dict):
        ev = dict(ev)
        if isinstance(ev.get("skymap"), bytes):
            ev["skymap"] = base64.b64encode(ev["skymap"]).decode()
        out["event"] = ev
    ext = out.get("external_coinc")
    if isinstance(ext, dict) and isinstance(ext.get("combined_skymap"), bytes):
        out["external_coinc"] = dict(ext, combined_skymap=base64.b64encode(ext["combined_skymap"]).decode())
    return out


def json_to_avro(doc: dict[str, Any]) -> bytes:
    """An LVK JSON alert as the Avro container LVK publishes (tests, replays of JSON samples)."""
    import fastavro

    rec = dict(doc)
    ev = rec.get("event")
    if isinstance(ev, dict):
        ev = dict(ev)
        if isinstance(ev.get("skymap"), str):
            ev["skymap"] = base64.b64decode(ev["skymap"])
        rec["event"] = ev
    buf = io.BytesIO()
    fastavro.writer(buf, lvk_avro_schema(), [rec])
    return buf.getvalue()
