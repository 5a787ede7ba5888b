"""The VOEvent 2.0 packet of one revision, built with voevent-parse and checked against the 2.0 XSD.

Stream ``albireo.broker/alerts#<event>``, sequence number the ``record_number``; a later revision
cites the earlier one as ``supersedes``, a retraction cites it as ``retraction`` (VOEvent 2.0 §2.7),
so a VOEvent client follows our revisions as it follows GCN Classic's.
"""

from __future__ import annotations

import math
import re
from typing import Any

from broker.multimessenger.notice import GW, parse_time
from broker.multimessenger.outgoing.candidates import Candidate

STREAM = "albireo.broker/alerts"


def ivorn(event_id: str, record_number: int) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", event_id)
    return f"ivo://{STREAM}#{safe}-{record_number}"


def build_voevent(event: dict[str, Any], candidates: list[Candidate], record_number: int,
                  alert_datetime: str) -> str:
    """The packet as UTF-8 XML text (validated; NoticeError if it is not VOEvent 2.0)."""
    import voeventparse as vp

    from broker.multimessenger.outgoing.build import alert_type, localization90
    from broker.multimessenger.schemas import validate_voevent

    eid = str(event["event_id"])
    kind = alert_type(event, record_number)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", eid)
    v = vp.Voevent(stream=STREAM, stream_id=f"{safe}-{record_number}",
                   role=vp.definitions.roles.test if event.get("test") else vp.definitions.roles.observation)
    vp.set_who(v, date=parse_time(alert_datetime).replace(tzinfo=None), author_ivorn="albireo.broker")
    vp.set_author(v, title="Albireo alert broker", shortName="Albireo")
    v.Description = f"Albireo {kind} alert for {event.get('messenger')} event {eid}"
    params = [vp.Param("event_id", value=eid, ucd="meta.id"),
              vp.Param("messenger", value=str(event.get("messenger"))),
              vp.Param("record_number", value=str(record_number), dataType="int"),
              vp.Param("alert_type", value=kind),
              vp.Param("n_candidates", value=str(len(candidates)), dataType="int")]
    meta = event.get("metadata") or {}
    for name, unit, ucd in (("far", "Hz", "stat.probability"), ("p_astro", None, "stat.probability"),
                            ("nu_energy", "TeV", "phys.energy")):
        val = meta.get(name)
        if isinstance(val, int | float) and math.isfinite(val):
            params.append(vp.Param(name, value=repr(float(val)), unit=unit, ucd=ucd, dataType="float"))
    loc = localization90(event)
    if loc is not None and loc.area90 is not None:
        params.append(vp.Param("area90", value=f"{loc.area90:.4f}", unit="deg2", dataType="float"))
    v.What.append(vp.Group(params, name="event"))
    for i, c in enumerate(candidates):
        v.What.append(vp.Group([vp.Param("name", value=c.name, ucd="meta.id"),
                                vp.Param("ra", value=f"{c.ra:.6f}", unit="deg", ucd="pos.eq.ra", dataType="float"),
                                vp.Param("dec", value=f"{c.dec:.6f}", unit="deg", ucd="pos.eq.dec", dataType="float"),
                                vp.Param("contour_level", value=f"{c.contour_level:.3f}", unit="%", dataType="float")],
                               name=f"candidate_{i + 1}", type="optical_candidate"))
    if loc is not None and loc.ra is not None and event.get("event_time"):
        err = loc.error if isinstance(loc.error, float) else (max(loc.error) if loc.error else 0.0)
        vp.add_where_when(v, coords=vp.Position2D(ra=loc.ra, dec=loc.dec, err=err, units="deg",
                                                  system=vp.definitions.sky_coord_system.utc_icrs_geo),
                          obs_time=parse_time(event["event_time"]),
                          observatory_location=vp.definitions.observatory_location.geosurface)
    if record_number > 1:
        cite = vp.definitions.cite_types.retraction if kind == "retraction" else vp.definitions.cite_types.supersedes
        # voevent-parse 1.0.3's add_citations trips on Python ≥ 3.10 (collections.Iterable): build it here
        from lxml import objectify

        if not v.find("Citations"):
            v.Citations = objectify.Element("Citations")
        v.Citations.append(vp.EventIvorn(ivorn(eid, record_number - 1), cite))
    vp.add_why(v, importance=1.0 if event.get("messenger") == GW else 0.5)
    v.Why.Description = (f"{len(candidates)} optical candidate(s) inside the 90% region of {eid}"
                         if kind != "retraction" else f"{eid} was retracted")
    validate_voevent(v)
    return vp.dumps(v, pretty_print=True).decode()
