"""IVOA Simple Cone Search 1.03 over the catalog's events (``GET /api/catalog/scs?RA=&DEC=&SR=``).

The response is a VOTable whose one table holds the events with a best-fit direction within
``SR`` degrees of (``RA``, ``DEC``), nearest first, with exactly one field of each UCD the standard
requires: ``ID_MAIN`` (the record's persistent identifier), ``POS_EQ_RA_MAIN`` and
``POS_EQ_DEC_MAIN`` (the best-fit direction, deg, ICRS); the other columns keep their UCD1+ words.
``VERB=1`` gives only those (and the distance), 2 (default) and 3 every column. A bad request is
answered, as SCS 1.03 (erratum 3) prescribes, with a VOTable holding
``<INFO name="Error" value="…"/>`` as a direct child of ``VOTABLE`` — which pyvo turns into a
``DALQueryError`` carrying the reason. ``SR=0`` returns the metadata (no rows).
"""

from __future__ import annotations

import io
import math
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from broker.multimessenger.catalog.exports import table
from broker.multimessenger.localization import angular_distance_deg

#: the largest cone accepted (deg): the whole sky.
MAX_SR = 180.0
VOTABLE_NS = "http://www.ivoa.net/xml/VOTable/v1.3"


class ConeError(ValueError):
    """A cone search parameter that cannot be used (its message goes into the error VOTable)."""


def _float(args: Any, name: str) -> float:
    raw = args.get(name)
    if raw is None or str(raw).strip() == "":
        raise ConeError(f"parameter {name} is required")
    try:
        v = float(str(raw).strip())
    except ValueError:
        raise ConeError(f"parameter {name}: {str(raw)[:40]!r} is not a number") from None
    if not math.isfinite(v):
        raise ConeError(f"parameter {name}: {str(raw)[:40]!r} is not a finite number")
    return v


def parse(args: Any) -> tuple[float, float, float, int]:
    """(ra, dec, sr, verb) from the query parameters (names upper-case as in the standard, any case accepted)."""
    upper = {str(k).upper(): v for k, v in args.items()}
    ra, dec, sr = _float(upper, "RA"), _float(upper, "DEC"), _float(upper, "SR")
    if not -90.0 <= dec <= 90.0:
        raise ConeError(f"parameter DEC: {dec} is outside [-90, 90]")
    if not 0.0 <= sr <= MAX_SR:
        raise ConeError(f"parameter SR: {sr} is outside [0, {MAX_SR:g}] degrees")
    verb = upper.get("VERB") or "2"
    if str(verb) not in ("1", "2", "3"):
        raise ConeError(f"parameter VERB: {str(verb)[:10]!r} is not 1, 2 or 3")
    return ra % 360.0, dec, sr, int(verb)


def error_votable(message: str) -> bytes:
    """The SCS 1.03 error response (erratum 3's form)."""
    text = "".join(ch if ch.isprintable() else " " for ch in message)[:500]
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<VOTABLE version="1.3" xmlns="{VOTABLE_NS}">\n'
            f'  <INFO ID="Error" name="Error" value={quoteattr(text)}/>\n  <RESOURCE/>\n</VOTABLE>\n').encode()


def search(records: list[dict[str, Any]], args: Any, meta: dict[str, Any]) -> bytes:
    """The cone search response over ``records`` (raises :class:`ConeError` for bad parameters)."""
    from astropy.io.votable import from_table
    from astropy.io.votable.tree import Info

    ra, dec, sr, verb = parse(args)
    placed = [r for r in records if r.get("ra") is not None and r.get("dec") is not None]
    if placed and sr > 0:
        d = angular_distance_deg(np.array([r["ra"] for r in placed]), np.array([r["dec"] for r in placed]), ra, dec)
        hits = sorted((float(x), i) for i, x in enumerate(d) if x <= sr)
        chosen = [placed[i] for _, i in hits]
        dist = [x for x, _ in hits]
    else:
        chosen, dist = [], []
    t = table(chosen, "events", meta)
    t["pid"].meta["ucd"], t["ra"].meta["ucd"], t["dec"].meta["ucd"] = "ID_MAIN", "POS_EQ_RA_MAIN", "POS_EQ_DEC_MAIN"
    from astropy.table import Column

    t.add_column(Column(np.array(dist, dtype=float), name="distance", unit="deg",
                        description="distance from the cone's centre"), index=1)
    t["distance"].meta["ucd"] = "pos.angDistance"
    if verb == 1:
        t = t["pid", "distance", "ra", "dec"]
    t.meta = {}
    vot = from_table(t, table_id="events")
    res = vot.resources[0]
    res.type = "results"
    res.tables[0].name = "events"
    res.tables[0].description = f"{meta.get('title')}: events within {sr:g} deg of ({ra:g}, {dec:+g})"
    for key in ("license", "license_url", "catalog_version", "catalog_pid", "doi", "published"):
        if meta.get(key) is not None:
            res.infos.append(Info(name=key, value=str(meta[key])))
    res.infos.append(Info(name="QUERY_STATUS", value="OK"))
    buf = io.BytesIO()
    vot.to_xml(buf)
    return buf.getvalue()
