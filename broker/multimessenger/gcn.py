"""GCN unified-schema JSON notices: IceCube track alerts and LVK track searches, KM3NeT, Super-K, BOOM.

The notice names its schema in ``$schema`` (or the Kafka topic implies it); it is validated
against that schema first (:func:`~broker.multimessenger.schemas.validate_json`), then read. The
IceCube/KM3NeT/Super-K alerts share ``neutrino/Alert`` (Localization, DateTime, Event,
Reporter); the LVK track search nests one localization per coincident neutrino; BOOM's
optical-candidate notice carries points, not a region (stored and listed, never matched).

Both shapes of ``event_name``/``id`` (a string or an array) are accepted, as are positions given
directly or nested under ``localization``.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

from broker.multimessenger.notice import (
    NEUTRINO,
    OPTICAL,
    LocalizationSpec,
    Notice,
    NoticeError,
    iso,
    parse_time,
)
from broker.multimessenger.schemas import GCN_BASE_URL, validate_json

#: Kafka topics (GCN's names) → the schema their notices follow when they do not say.
TOPIC_SCHEMAS = {
    "gcn.notices.icecube.gold_bronze_track_alerts": "icecube/single_neutrino_alerts.schema.json",
    "gcn.notices.icecube.lvk_nu_track_search": "icecube/lvk_nu_track_search.schema.json",
    "gcn.notices.km3net": "km3net/alert.schema.json",
    "gcn.notices.superk.sn_alert": "superk/sn_alert.schema.json",
    "gcn.notices.boom": "boom/alert.schema.json",
}

_KINDS = {"initial": "INITIAL", "subsequent": "SUBSEQUENT", "update": "UPDATE", "retraction": "RETRACTION"}
_TEST_TENSES = ("test", "injection", "planned")


def is_gcn(doc: dict[str, Any]) -> bool:
    return str(doc.get("$schema", "")).startswith(GCN_BASE_URL) or ("ref_ID" in doc and "coincident_events" in doc)


def schema_for(doc: dict[str, Any], topic: str = "") -> str:
    """The schema id a GCN notice is checked against: its ``$schema``, else its topic's, else its shape's."""
    named = doc.get("$schema")
    if isinstance(named, str) and named:
        return named
    for prefix, rel in TOPIC_SCHEMAS.items():
        if topic.startswith(prefix):
            return GCN_BASE_URL + rel
    if "ref_ID" in doc and "coincident_events" in doc:
        return GCN_BASE_URL + "icecube/lvk_nu_track_search.schema.json"
    raise NoticeError("unknown_schema", "JSON notice names no $schema and its topic implies none")


def parse_gcn(doc: dict[str, Any], notice_id: str, topic: str = "") -> Notice:
    """Validate and read one GCN unified JSON notice."""
    schema = schema_for(doc, topic)
    validate_json(doc, schema)
    rel = schema.removeprefix(GCN_BASE_URL)
    full = {k: v for k, v in doc.items() if k != "healpix_file"}
    created_raw = doc.get("alert_datetime") or doc.get("trigger_time")
    if not created_raw:
        raise NoticeError("missing_field", f"{rel}: needs alert_datetime (or trigger_time)")
    created = iso(parse_time(created_raw))
    event_time = iso(parse_time(doc["trigger_time"])) if doc.get("trigger_time") else None
    kind = _KINDS.get(str(doc.get("alert_type", "initial")).lower(), "INITIAL")
    revision = _int(doc.get("record_number"), 0)
    test = str(doc.get("alert_tense", "")).lower() in _TEST_TENSES
    mission = str(doc.get("mission") or _mission_of(rel))
    common = dict(notice_id=notice_id, format="gcn_json", schema=rel, kind=kind, revision=revision,
                  created=created, event_time=event_time, mission=mission, test=test, full_notice=full)

    if rel.startswith("boom/"):
        targets = (doc.get("data") or {}).get("targets") or []
        names = [_first(t.get("event_name")) for t in targets if _first(t.get("event_name"))]
        if not names:
            raise NoticeError("missing_field", f"{rel}: no target names an event_name")
        refs = sorted({c.get("ref_ID") for t in targets for c in t.get("gcn_crossmatch") or [] if c.get("ref_ID")})
        meta = {"name": names[0], "targets": [{k: t.get(k) for k in ("event_name", "ra", "dec",
                                                                       "classification_scores", "gcn_crossmatch")}
                                              for t in targets], "crossmatch_refs": refs}
        return Notice(event_id=names[0], messenger=OPTICAL, metadata=meta, **common)

    if rel.startswith("icecube/lvk_nu_track_search"):
        ref = str(doc.get("ref_ID") or "")
        if not ref:
            raise NoticeError("missing_field", f"{rel}: needs ref_ID (the GW superevent)")
        comps = []
        for ev in doc.get("coincident_events") or []:
            spec = localization_from(ev.get("localization") or ev)
            if spec is not None:
                comps.append(spec)
        loc = None
        if comps:
            loc = comps[0] if len(comps) == 1 else LocalizationSpec(shape="circles", components=comps,
                                                                     ra=comps[0].ra, dec=comps[0].dec)
        meta = {"name": f"IceCube track search for {ref}", "ref_ID": ref,
                "n_events_coincident": doc.get("n_events_coincident"),
                "pval_generic": doc.get("pval_generic"), "pval_bayesian": doc.get("pval_bayesian"),
                "coincident_ids": [_first(ev.get("id")) for ev in doc.get("coincident_events") or []],
                "most_probable_direction": doc.get("most_probable_direction")}
        common["event_time"] = common["event_time"] or created
        return Notice(event_id=f"IceCube-LVK-{ref}", messenger=NEUTRINO, localization=loc, metadata=meta, **common)

    # single-event neutrino alerts: IceCube, KM3NeT, Super-K (and any future neutrino/Alert mission)
    name = _first(doc.get("event_name"))
    trig = _first(doc.get("id"))
    if mission.lower() == "icecube" and trig:
        event_id = f"IceCube-{trig}"
    else:
        event_id = name or trig
    if not event_id:
        raise NoticeError("missing_field", f"{rel}: needs event_name or id")
    spec = localization_from(doc)
    skymap = None
    if doc.get("healpix_file"):
        skymap = decode_fits_base64(doc["healpix_file"], "healpix_file")
        spec = spec or LocalizationSpec(shape="map")
        spec.shape = "map"
    meta = {k: doc[k] for k in ("pipeline", "instrument", "far", "p_astro", "nu_energy", "alert_topology",
                                "number_of_events", "src_error_50", "messenger", "alert_tense", "n_events",
                                "luminosity_distance", "potential_counterpart") if k in doc}
    meta["name"] = name or event_id
    if trig:
        meta["trigger_id"] = trig
    return Notice(event_id=str(event_id), messenger=NEUTRINO, localization=spec, metadata=meta, skymap=skymap,
                  **common)


def localization_from(obj: dict[str, Any]) -> LocalizationSpec | None:
    """A circle, an ellipse or a map URL from GCN Localization fields (None when there is no position)."""
    ra, dec = obj.get("ra"), obj.get("dec")
    url = obj.get("healpix_url")
    if not _number(ra) or not _number(dec):
        return LocalizationSpec(shape="map", skymap_url=url) if url else None
    ra, dec = float(ra), float(dec)
    if not (0.0 <= ra <= 360.0 and -90.0 <= dec <= 90.0):
        raise NoticeError("implausible_localization", f"position ({ra}, {dec}) is off the sky")
    p = obj.get("containment_probability", 0.9)
    if not _number(p) or not 0.0 < float(p) < 1.0:
        raise NoticeError("implausible_localization", f"containment_probability {p!r} must be in (0, 1)")
    err = obj.get("ra_dec_error")
    axes = [err] if _number(err) else list(err) if isinstance(err, list) else []
    if not axes:
        spec = None
    else:
        if not all(_number(x) for x in axes) or not 0.0 < float(axes[0]) <= 180.0:
            raise NoticeError("implausible_localization", f"ra_dec_error {err!r}: radii must be in (0, 180] deg")
        a = float(axes[0])
        b = float(axes[1]) if len(axes) > 1 else a
        pa = float(axes[2]) if len(axes) > 2 else 0.0
        if not 0.0 < b <= 180.0:
            raise NoticeError("implausible_localization", f"ra_dec_error {err!r}: radii must be in (0, 180] deg")
        common = dict(ra=ra, dec=dec, containment=float(p), systematic_included=bool(obj.get("systematic_included")))
        if abs(a - b) <= 1e-12:
            spec = LocalizationSpec(shape="circle", radius=a, **common)
        else:
            spec = LocalizationSpec(shape="ellipse", a=max(a, b), b=min(a, b), pa=pa if a >= b else pa + 90.0,
                                    **common)
    if url:
        fallback = spec.to_dict() if spec else {}
        fallback.pop("shape", None)
        return LocalizationSpec(shape="map", skymap_url=url, **{k: v for k, v in fallback.items()
                                                                 if k in ("ra", "dec", "radius", "a", "b", "pa",
                                                                          "containment", "systematic_included")})
    return spec


def decode_fits_base64(text: str, what: str) -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NoticeError("bad_skymap", f"{what}: not base64 ({exc})") from None
    if data[:2] == b"\x1f\x8b":
        import gzip

        try:
            data = gzip.decompress(data)
        except OSError as exc:
            raise NoticeError("bad_skymap", f"{what}: bad gzip ({exc})") from None
    if not data.startswith(b"SIMPLE"):
        raise NoticeError("bad_skymap", f"{what}: not a FITS file (starts {data[:8]!r})")
    return data


def _first(v: Any) -> str | None:
    if isinstance(v, list):
        return str(v[0]) if v else None
    return None if v is None or v == "" else str(v)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any, default: int) -> int:
    return int(v) if _number(v) else default


def _mission_of(rel: str) -> str:
    return {"icecube": "IceCube", "km3net": "KM3NeT", "superk": "Super-Kamiokande", "boom": "BOOM"}.get(
        rel.split("/")[0], rel.split("/")[0])
