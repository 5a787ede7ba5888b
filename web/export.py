"""Search results as CSV and VOTable (the format TOPCAT, Aladin and astroquery read)."""

from __future__ import annotations

import csv
import io
from typing import Any

COLUMNS = ("locus_id", "ra", "dec", "num_alerts", "first_alert_mjd", "last_alert_mjd", "ztf_object_id",
           "lsst_dia_object_id", "tags", "catalogs", "newest_alert_magnitude", "brightest_alert_magnitude")


def rows(hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for h in hits:
        p = h.get("properties") or {}
        out.append({
            "locus_id": h["locus_id"], "ra": h["ra"], "dec": h["dec"], "num_alerts": h.get("num_alerts"),
            "first_alert_mjd": h.get("first_alert_mjd"), "last_alert_mjd": h.get("last_alert_mjd"),
            "ztf_object_id": h.get("ztf_object_id") or "", "lsst_dia_object_id": h.get("lsst_dia_object_id") or "",
            "tags": " ".join(h.get("tags") or []), "catalogs": " ".join(h.get("catalogs") or []),
            "newest_alert_magnitude": p.get("newest_alert_magnitude"),
            "brightest_alert_magnitude": p.get("brightest_alert_magnitude"),
        })
    return out


def to_csv(hits: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows(hits):
        w.writerow({k: "" if v is None else v for k, v in r.items()})
    return buf.getvalue()


def to_votable(hits: list[dict[str, Any]]) -> bytes:
    """A VOTable 1.4 with UCDs on the position columns (astropy writes it)."""
    import numpy as np
    from astropy.io.votable import from_table
    from astropy.table import Table

    rs = rows(hits)
    floats = ("ra", "dec", "first_alert_mjd", "last_alert_mjd", "newest_alert_magnitude", "brightest_alert_magnitude")
    cols = {}
    for c in COLUMNS:
        vals = [r[c] for r in rs]
        if c in floats:
            cols[c] = np.array([np.nan if v is None else float(v) for v in vals], dtype=float)
        elif c == "num_alerts":
            cols[c] = np.array([0 if v is None else int(v) for v in vals], dtype=np.int64)
        else:
            cols[c] = np.array([str(v) for v in vals], dtype=str) if vals else np.array([], dtype="U1")
    t = Table(cols)
    t["ra"].unit = "deg"
    t["dec"].unit = "deg"
    vot = from_table(t)
    res = vot.get_first_table()
    res.name = "albireo_loci"
    for f in res.fields:
        if f.name == "ra":
            f.ucd = "pos.eq.ra;meta.main"
        elif f.name == "dec":
            f.ucd = "pos.eq.dec;meta.main"
        elif f.name == "locus_id":
            f.ucd = "meta.id;meta.main"
    buf = io.BytesIO()
    vot.to_xml(buf)
    return buf.getvalue()
