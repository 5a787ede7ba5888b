"""GCN Classic VOEvent 2.0 notices: LVK alerts and IceCube (AMON) tracks and cascades.

The XML is checked against the VOEvent 2.0 XSD (voevent-parse ships it), then read with
voevent-parse. Documents with a DOCTYPE are refused before parsing: VOEvents never carry one, and
refusing it closes the door on entity-expansion and external-entity tricks.

* LVK (``ivo://gwnet/LVC#…``): ``GraceID``, ``AlertType``, ``Pkt_Ser_Num``; the sky map is a URL
  (``GW_SKYMAP/skymap_fits``, downloaded when reachable).
* IceCube (``ivo://nasa.gsfc.gcn/AMON#ICECUBE_…``, GCN packet types 173/174 gold/bronze tracks,
  176 cascades): ``run_id`` + ``event_id`` name the event (as the JSON notices' ``id`` does), the
  position and its 90 % error radius (``Error2Radius``) a circle, ``Rev`` the revision.

A ``<Citations><EventIVORN cite="retraction">`` (the VOEvent standard's retraction) or LVK's
``AlertType=Retraction`` make a retraction.
"""

from __future__ import annotations

from typing import Any

from broker.multimessenger.notice import GW, NEUTRINO, LocalizationSpec, Notice, NoticeError, iso, parse_time
from broker.multimessenger.schemas import validate_voevent

ICECUBE_PACKET_TYPES = {"173": "Gold Track Alert", "174": "Bronze Track Alert", "176": "Cascade Alert"}
_LVK_KINDS = {"earlywarning": "EARLY_WARNING", "early_warning": "EARLY_WARNING", "preliminary": "PRELIMINARY",
              "initial": "INITIAL", "update": "UPDATE", "retraction": "RETRACTION"}
MAX_XML_IN_RECORD = 64 * 1024


def is_voevent(raw: bytes) -> bool:
    head = raw[:512].lstrip()
    return head.startswith(b"<") and b"VOEvent" in raw[:2048]


def parse_voevent(raw: bytes, notice_id: str) -> Notice:
    import voeventparse as vp

    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise NoticeError("schema_invalid", "VOEvent with a DOCTYPE/ENTITY declaration is not accepted")
    try:
        root = vp.loads(raw)
    except Exception as exc:  # lxml.etree.XMLSyntaxError, ValueError (version), ...
        raise NoticeError("schema_invalid", f"VOEvent: not well-formed XML 2.0 ({type(exc).__name__}: {exc})") \
            from None
    validate_voevent(root)
    ivorn = root.attrib.get("ivorn", "")
    role = root.attrib.get("role", "")
    params = {k: v.get("value") for k, v in vp.get_toplevel_params(root).items() if k}
    groups = {g: {k: v.get("value") for k, v in ps.items()} for g, ps in vp.get_grouped_params(root).items() if g}
    try:
        created = iso(parse_time(str(root.Who.Date)))
    except (AttributeError, NoticeError):
        raise NoticeError("missing_field", "VOEvent: Who/Date is missing or not ISO 8601") from None
    try:
        event_time = iso(vp.get_event_time_as_utc(root))
    except Exception:  # no WhereWhen time: the notice still counts, without an event time
        event_time = None
    citations = []
    retracts = False
    if hasattr(root, "Citations"):
        for c in root.Citations.iterchildren():
            if c.tag.endswith("EventIVORN"):
                citations.append(str(c.text))
                retracts |= c.attrib.get("cite") == "retraction"
    full = {"ivorn": ivorn, "role": role, "params": params, "groups": groups, "citations": citations,
            "who_date": created}
    if len(raw) <= MAX_XML_IN_RECORD:
        full["xml"] = raw.decode("utf-8", "replace")
    common = dict(notice_id=notice_id, format="voevent", schema="VOEvent-v2.0", created=created,
                  event_time=event_time, test=role == "test", full_notice=full, supersedes=citations)

    if "GraceID" in params or "gwnet/LVC" in ivorn:
        gid = params.get("GraceID")
        if not gid:
            raise NoticeError("missing_field", "LVK VOEvent: no GraceID")
        kind = _LVK_KINDS.get(str(params.get("AlertType", "")).lower())
        if kind is None:
            raise NoticeError("schema_invalid", f"LVK VOEvent: unknown AlertType {params.get('AlertType')!r}")
        if retracts:
            kind = "RETRACTION"
        url = (groups.get("GW_SKYMAP") or {}).get("skymap_fits")
        meta = {"name": gid, "gracedb_id": gid, "alert_type": kind, "far": _float(params.get("FAR")),
                "significant": params.get("Significant") == "1", "instruments": _split(params.get("Instruments")),
                "group": params.get("Group"), "pipeline": params.get("Pipeline"), "search": params.get("Search"),
                "classification": _floats(groups.get("Classification")),
                "properties": _floats(groups.get("Properties")), "packet_type": params.get("Packet_Type")}
        loc = LocalizationSpec(shape="map", skymap_url=_strip_hdu(url)) if url and kind != "RETRACTION" else None
        common["test"] = common["test"] or str(gid).startswith("M")
        return Notice(event_id=str(gid), messenger=GW, kind=kind, revision=_int(params.get("Pkt_Ser_Num")),
                      mission="LVK", localization=loc, metadata=meta, **common)

    ptype = str(params.get("Packet_Type", ""))
    if "ICECUBE" in ivorn.upper() or ptype in ICECUBE_PACKET_TYPES:
        run, evt = params.get("run_id"), params.get("event_id")
        if not run or not evt:
            raise NoticeError("missing_field", "IceCube VOEvent: needs run_id and event_id")
        rev = _int(params.get("Rev", params.get("Pkt_Ser_Num")))
        retracts |= str(params.get("Retraction", "")).lower() in ("true", "1")
        kind = "RETRACTION" if retracts else ("INITIAL" if rev == 0 else "UPDATE")
        loc = None
        try:
            pos = vp.get_event_position(root)
        except Exception:  # a retraction may carry no position
            pos = None
        if pos is not None and kind != "RETRACTION":
            if not (0.0 <= pos.ra <= 360.0 and -90.0 <= pos.dec <= 90.0) or not 0.0 < pos.err <= 180.0:
                raise NoticeError("implausible_localization",
                                  f"IceCube VOEvent: position ({pos.ra}, {pos.dec}) ± {pos.err} deg is implausible")
            loc = LocalizationSpec(shape="circle", ra=float(pos.ra), dec=float(pos.dec), radius=float(pos.err),
                                   containment=0.9)
        pipeline = ICECUBE_PACKET_TYPES.get(ptype) or ("Cascade Alert" if "CASCADE" in ivorn.upper() else "")
        meta = {"name": f"IceCube-{run}_{evt}", "trigger_id": f"{run}_{evt}", "pipeline": pipeline,
                "signalness": _float(params.get("signalness", params.get("Signalness"))),
                "energy": _float(params.get("energy", params.get("Energy"))),
                "far": _float(params.get("FAR", params.get("far"))), "packet_type": ptype}
        return Notice(event_id=f"IceCube-{run}_{evt}", messenger=NEUTRINO, kind=kind, revision=rev,
                      mission="IceCube", localization=loc, metadata=meta, **common)

    raise NoticeError("unknown_notice", f"VOEvent {ivorn!r}: neither an LVK nor an IceCube notice")


def _strip_hdu(url: str) -> str:
    """LVK appends ``,0`` (the HDU) to the map's URL."""
    base, _, hdu = url.rpartition(",")
    return base if base and hdu.isdigit() else url


def _int(v: Any) -> int:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return 0


def _float(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _floats(d: dict[str, Any] | None) -> dict[str, float]:
    return {k: f for k, v in (d or {}).items() if (f := _float(v)) is not None}


def _split(v: Any) -> list[str]:
    return [s for s in str(v or "").split(",") if s]
