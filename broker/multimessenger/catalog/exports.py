"""Exports of a catalog version (or of the live catalog): FITS, VOTable, CSV, ECSV, Parquet, JSON.

Two tables, built once as astropy Tables with a unit, a UCD (``meta['ucd']``, IVOA UCD1+) and a
description per column: ``events`` (one row per event record, IceCat-1's columns) and
``associations`` (one row per event ↔ locus association). Every format carries the licence, the
catalog version and its provenance: FITS header cards, VOTable ``INFO`` elements (and ``ucd`` on
every ``FIELD``), the ECSV/Parquet metadata (astropy's, which keeps units and UCDs, plus
per-field ``unit``/``ucd`` metadata any Arrow reader sees); plain CSV has no place for them, so
the HTTP response says them in headers (``Link: rel="license"``). The bytes depend only on the
records and the version's metadata, so a published version exports identically every time.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from astropy.table import Table

    from broker.multimessenger.catalog.versions import CatalogSettings

#: format (the file extension) → (media type, extension).
FORMATS = {
    "fits": ("application/fits", "fits"),
    "vot": ("application/x-votable+xml", "vot"),
    "csv": ("text/csv", "csv"),
    "ecsv": ("text/x-ecsv", "ecsv"),
    "parquet": ("application/vnd.apache.parquet", "parquet"),
    "json": ("application/json", "json"),
}
TABLES = ("events", "associations")

# name, kind (s: text, f: float, i: int, b: bool), unit, UCD, description
EVENT_COLUMNS: list[tuple[str, str, str | None, str, str]] = [
    ("pid", "s", None, "meta.id;meta.main", "persistent identifier of this record version"),
    ("event_id", "s", None, "meta.id", "event identifier (GraceDB superevent, IceCube-<run>_<event>, ...)"),
    ("name", "s", None, "meta.id", "display name (IceCube-YYMMDDA ...)"),
    ("version", "i", None, "meta.version", "record version"),
    ("messenger", "s", None, "meta.code.class", "gw or neutrino"),
    ("mission", "s", None, "instr.obsty", "observatory that issued the notices"),
    ("pipeline", "s", None, "meta.code", "sender's pipeline or alert stream (Gold/Bronze Track Alert ...)"),
    ("status", "s", None, "meta.code.status", "active or retracted"),
    ("test", "b", None, "meta.code", "a test or mock event"),
    ("event_time", "s", None, "time.epoch", "event (trigger) time, ISO 8601 UTC"),
    ("event_mjd", "f", "d", "time.epoch;obs", "event time, MJD (UTC)"),
    ("ra", "f", "deg", "pos.eq.ra;meta.main", "best-fit right ascension (ICRS)"),
    ("ra_err_plus", "f", "deg", "stat.error;pos.eq.ra", "90% upper error of RA"),
    ("ra_err_minus", "f", "deg", "stat.error;pos.eq.ra", "90% lower error of RA"),
    ("dec", "f", "deg", "pos.eq.dec;meta.main", "best-fit declination (ICRS)"),
    ("dec_err_plus", "f", "deg", "stat.error;pos.eq.dec", "90% upper error of Dec"),
    ("dec_err_minus", "f", "deg", "stat.error;pos.eq.dec", "90% lower error of Dec"),
    ("area50", "f", "deg2", "phys.angArea", "area of the 50% credible region"),
    ("area90", "f", "deg2", "phys.angArea", "area of the 90% credible region"),
    ("localization_shape", "s", None, "meta.code", "map, circle, ellipse or circles"),
    ("energy", "f", "TeV", "phys.energy", "most probable neutrino energy"),
    ("signalness", "f", None, "stat.probability", "probability of astrophysical origin (p_astro)"),
    ("far", "f", "yr-1", "arith.rate", "false alarm rate"),
    ("n_associations", "i", None, "meta.number", "loci associated with the event"),
    ("notice_id", "s", None, "meta.id", "provenance: the notice this version reflects"),
    ("notice_revision", "i", None, "meta.version", "provenance: the sender's revision counter of that notice"),
    ("localization_notice_id", "s", None, "meta.id", "provenance: the notice that gave the localization"),
    ("reconstruction", "s", None, "meta.code", "provenance: how the localization was obtained"),
    ("pipeline_version", "s", None, "meta.version", "provenance: Albireo version that built the record"),
    ("created", "s", None, "time.creation", "when this record version was made, ISO 8601 UTC"),
]
ASSOCIATION_COLUMNS: list[tuple[str, str, str | None, str, str]] = [
    ("pid", "s", None, "meta.id;meta.main", "persistent identifier of this association (record version)"),
    ("event_pid", "s", None, "meta.id.parent", "the event record version stating it"),
    ("event_id", "s", None, "meta.id.parent", "event identifier"),
    ("locus_id", "s", None, "meta.id.cross", "Albireo locus identifier"),
    ("ra", "f", "deg", "pos.eq.ra;meta.main", "locus right ascension (ICRS)"),
    ("dec", "f", "deg", "pos.eq.dec;meta.main", "locus declination (ICRS)"),
    ("credible_level", "f", None, "stat.probability",
     "smallest credible level (fraction, 0-1) of the event's localization containing one of its alerts"),
    ("contour_area", "f", "deg2", "phys.angArea", "area of that credible region"),
    ("distance_deg", "f", "deg", "pos.angDistance", "distance from the event's best-fit direction"),
    ("first_mjd", "f", "d", "time.epoch", "first alert of the locus, MJD"),
    ("n_detections", "i", None, "meta.number", "detections of the locus"),
]


def _reconstruction_text(rec: dict[str, Any]) -> str:
    r = (rec.get("provenance") or {}).get("reconstruction") or {}
    if not r:
        return ""
    if r.get("kind") == "scan":
        return f"scan:{r.get('name') or ''}:{r.get('scan_id') or ''}"
    return f"{r.get('kind')}:{r.get('shape')}"


def event_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in records:
        prov = r.get("provenance") or {}
        row = {k: r.get(k) for k, *_ in EVENT_COLUMNS}
        row.update(notice_id=prov.get("notice_id"), notice_revision=prov.get("notice_revision"),
                   localization_notice_id=prov.get("localization_notice_id"),
                   reconstruction=_reconstruction_text(r), pipeline_version=prov.get("pipeline_version"))
        rows.append(row)
    return rows


def association_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per association; the record's ``contour_level`` (percent, as ANTARES) as a fraction (VOUnit has no %)."""
    return [dict({k: a.get(k) for k, *_ in ASSOCIATION_COLUMNS}, event_pid=r["pid"], event_id=r["event_id"],
                 credible_level=None if a.get("contour_level") is None else round(a["contour_level"] / 100.0, 6))
            for r in records for a in r.get("associations") or []]


def _column(name: str, kind: str, unit: str | None, ucd: str, desc: str, values: list[Any]):
    from astropy.table import Column, MaskedColumn

    if kind == "s":
        col = Column([("" if v is None else str(v)) for v in values], name=name, dtype=str)
        if not values:
            col = Column(np.array([], dtype="U1"), name=name)
    else:
        dtype = {"f": np.float64, "i": np.int64, "b": bool}[kind]
        mask = np.array([v is None for v in values], dtype=bool)
        fill = {"f": np.nan, "i": -1, "b": False}[kind]
        data = np.array([fill if v is None else v for v in values], dtype=dtype)
        col = MaskedColumn(data, name=name, mask=mask) if mask.any() else Column(data, name=name)
    if unit:
        col.unit = unit
    col.description = desc
    col.meta["ucd"] = ucd
    return col


def table(records: list[dict[str, Any]], which: str, meta: dict[str, Any]) -> Table:
    """The ``events`` or ``associations`` table of these records, with units, UCDs and ``meta``."""
    from astropy.table import Table

    if which not in TABLES:
        raise ValueError(f"table must be one of {', '.join(TABLES)}")
    cols, rows = (EVENT_COLUMNS, event_rows(records)) if which == "events" else \
        (ASSOCIATION_COLUMNS, association_rows(records))
    t = Table([_column(n, k, u, q, d, [r.get(n) for r in rows]) for n, k, u, q, d in cols])
    t.meta.update(meta)
    t.meta["table"] = which
    return t


def release_meta(release: dict[str, Any] | None, settings: CatalogSettings) -> dict[str, Any]:
    """The metadata every export of a version states (``release`` None: the live, unpublished catalog)."""
    return {
        "title": settings.title, "creator": settings.creator, "publisher": settings.publisher,
        "license": settings.license, "license_url": settings.license_url,
        "catalog_version": release["version"] if release else "live",
        "catalog_pid": release["pid"] if release else None, "doi": (release or {}).get("doi"),
        "published": release["published"] if release else None,
        "pipeline_version": release["pipeline_version"] if release else None,
    }


def _fits(t) -> bytes:
    from astropy.io import fits

    plain = t.copy(copy_data=False)
    plain.meta = {}
    hdu = fits.BinTableHDU(plain, name=t.meta["table"].upper())
    h = hdu.header
    for key, value in (("TITLE", t.meta["title"]), ("CREATOR", t.meta["creator"]), ("ORIGIN", t.meta["publisher"]),
                       ("LICENSE", t.meta["license"]), ("LICURL", t.meta["license_url"]),
                       ("CATVERS", str(t.meta["catalog_version"])), ("CATPID", t.meta["catalog_pid"] or ""),
                       ("DOI", t.meta["doi"] or ""), ("DATE-PUB", t.meta["published"] or "unpublished"),
                       ("PIPEVERS", t.meta["pipeline_version"] or "")):
        h[key] = value
    for i, col in enumerate(t.columns.values(), start=1):  # UCDs as TUCDn, the convention of HEASARC/VizieR FITS
        h[f"TUCD{i}"] = col.meta["ucd"]
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buf)
    return buf.getvalue()


def _votable(t) -> bytes:
    from astropy.io.votable import from_table
    from astropy.io.votable.tree import Info

    plain = t.copy(copy_data=False)
    plain.meta = {}
    vot = from_table(plain, table_id=t.meta["table"])
    res = vot.resources[0]
    vtab = res.tables[0]
    vtab.name = t.meta["table"]
    vtab.description = f"{t.meta['title']}: {t.meta['table']}, catalog version {t.meta['catalog_version']}"
    for key in ("license", "license_url", "catalog_version", "catalog_pid", "doi", "published", "pipeline_version",
                "creator", "publisher"):
        value = t.meta.get(key)
        if value is not None:
            res.infos.append(Info(name=key, value=str(value)))
    for field, col in zip(vtab.fields, t.columns.values(), strict=True):
        field.ucd = col.meta["ucd"]
        field.description = col.description
    buf = io.BytesIO()
    vot.to_xml(buf)
    return buf.getvalue()


def _parquet(t) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.parquet"
        t.write(path, format="parquet")
        at = pq.read_table(path)
    fields = []
    for f in at.schema:
        if f.name not in t.colnames:  # astropy's own ``<name>.mask`` columns
            fields.append(f)
            continue
        col = t[f.name]
        md = {"ucd": col.meta["ucd"], "description": col.description or ""}
        if col.unit is not None:
            md["unit"] = col.unit.to_string()
        fields.append(f.with_metadata(md))
    meta = dict(at.schema.metadata or {})
    meta.update({k.encode(): str(v).encode() for k, v in t.meta.items() if v is not None})
    at = at.cast(pa.schema(fields, metadata=meta))
    buf = io.BytesIO()
    pq.write_table(at, buf)
    return buf.getvalue()


def export(records: list[dict[str, Any]], which: str, fmt: str, meta: dict[str, Any]) -> bytes:
    """The ``which`` table of ``records`` in format ``fmt`` (a key of :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    if fmt == "json":
        rows = event_rows(records) if which == "events" else association_rows(records)
        if which not in TABLES:
            raise ValueError(f"table must be one of {', '.join(TABLES)}")
        cols = EVENT_COLUMNS if which == "events" else ASSOCIATION_COLUMNS
        return json.dumps({"meta": dict(meta, table=which,
                                        columns=[{"name": n, "unit": u, "ucd": q, "description": d}
                                                 for n, _, u, q, d in cols]),
                           "data": rows}, indent=1, sort_keys=True).encode()
    t = table(records, which, meta)
    if fmt == "fits":
        return _fits(t)
    if fmt == "vot":
        return _votable(t)
    if fmt == "parquet":
        return _parquet(t)
    buf = io.StringIO()
    if fmt == "csv":
        plain = t.copy(copy_data=False)
        plain.meta = {}
        plain.write(buf, format="ascii.csv")
    else:
        t.write(buf, format="ascii.ecsv")
    return buf.getvalue().encode()
