"""Findable metadata: a schema.org ``Dataset`` (JSON-LD, embedded in the landing page) and a DataCite record.

Both describe one event's record version (and, for the catalog, one published version) with
the same facts: identifiers (the local persistent identifier, its DOI/ARK when configured),
title, description, licence, creator and publisher, publication and modification dates, the
version, where to download it and in which formats, where on the sky and when it is, and what it
is based on (the notices, the pipeline version). The DataCite record uses the kernel-4 JSON
shape (``identifiers``, ``creators``, ``titles``, ``publisher``, ``publicationYear``, ``types``,
``subjects``, ``dates``, ``version``, ``rightsList``, ``descriptions``, ``geoLocations``,
``relatedIdentifiers``), which DataCite's REST API takes to mint DOIs; ``tests/web`` checks it
against the kernel-4.3 JSON schema and parses the JSON-LD with a JSON-LD processor.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import broker
from broker.multimessenger.catalog.exports import EVENT_COLUMNS, FORMATS
from broker.multimessenger.catalog.versions import CatalogSettings
from broker.multimessenger.notice import from_mjd, iso

SCHEMA_ORG = "https://schema.org"
DATACITE_SCHEMA = "http://datacite.org/schema/kernel-4"
LICENSE_NAMES = {"CC-BY-4.0": "Creative Commons Attribution 4.0 International",
                 "CC-BY-SA-4.0": "Creative Commons Attribution Share Alike 4.0 International",
                 "CC0-1.0": "Creative Commons Zero v1.0 Universal", "ODbL-1.0": "Open Data Commons Open Database License v1.0"}


def _what(rec: dict[str, Any]) -> str:
    return "gravitational-wave" if rec.get("messenger") == "gw" else "neutrino"


def urls(base: str, event_id: str) -> dict[str, str]:
    """Where an event's landing page, API record, metadata, sky map and exports are (absolute URLs)."""
    e = quote(event_id, safe="")
    api = f"{base}/api/catalog/v1/events/{e}"
    out = {"landing": f"{base}/events/{e}", "record": api, "datacite": f"{api}/datacite.json",
           "jsonld": f"{api}/jsonld", "skymap": f"{api}/skymap.multiorder.fits", "associations": f"{api}/associations"}
    for fmt, (_, ext) in FORMATS.items():
        out[f"events.{fmt}"] = f"{api}/events.{ext}"
        out[f"associations.{fmt}"] = f"{api}/associations.{ext}"
    return out


def resolver(base: str, pid: str) -> str:
    return f"{base}/api/catalog/v1/resolve/{quote(pid, safe=':/')}"


def describe(rec: dict[str, Any]) -> str:
    """One paragraph saying what the record holds (both metadata records use it)."""
    what = _what(rec)
    text = (f"Catalog record (version {rec['version']}) of the {rec.get('mission') or ''} {what} event "
            f"{rec['name']} ({rec['event_id']}) at {rec.get('event_time')}")
    if rec.get("status") == "retracted":
        return text + ": the event was retracted by its sender; its position and associations are withdrawn."
    if rec.get("ra") is not None:
        text += (f": best-fit direction RA {rec['ra']:.4f} deg, Dec {rec['dec']:+.4f} deg (ICRS)"
                 + (f", 90% credible area {rec['area90']:.3g} deg2" if rec.get("area90") is not None else ""))
    text += f"; {rec['n_associations']} optical locus association(s) found by the Albireo alert broker."
    return text


def _temporal(rec: dict[str, Any]) -> str | None:
    mjd, win = rec.get("event_mjd"), rec.get("window_days") or []
    if mjd is None:
        return rec.get("event_time")
    if len(win) == 2:
        return f"{iso(from_mjd(mjd - win[0]))}/{iso(from_mjd(mjd + win[1]))}"
    return rec.get("event_time")


def _published(rec: dict[str, Any], releases: list[dict[str, Any]]) -> str | None:
    """When this record version was first published: the first catalog version naming it."""
    for r in releases:
        if [rec["event_id"], rec["version"]] in r["members"]:
            return r["published"]
    return None


def event_jsonld(rec: dict[str, Any], settings: CatalogSettings, base: str, releases: list[dict[str, Any]],
                 notices: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The schema.org ``Dataset`` of an event's record version (what the landing page embeds)."""
    u = urls(base, rec["event_id"])
    ids = settings.ids
    identifiers: list[Any] = [rec["pid"], rec["concept_pid"]]
    doi = ids.event_doi(rec["event_id"], rec["version"])
    if doi:
        identifiers.append({"@type": "PropertyValue", "propertyID": "DOI", "value": doi, "url": f"https://doi.org/{doi}"})
    ark = ids.ark(rec["pid"])
    if ark:
        identifiers.append({"@type": "PropertyValue", "propertyID": "ARK", "value": ark})
    containing = [r for r in releases if [rec["event_id"], rec["version"]] in r["members"]]
    doc: dict[str, Any] = {
        "@context": SCHEMA_ORG, "@type": "Dataset", "@id": resolver(base, rec["pid"]),
        "name": f"{rec['name']}: {_what(rec)} event record v{rec['version']} ({settings.title})",
        "identifier": identifiers, "url": u["landing"], "description": describe(rec),
        "license": settings.license_url, "isAccessibleForFree": True,
        "creator": {"@type": "Organization", "name": settings.creator},
        "publisher": {"@type": "Organization", "name": settings.publisher},
        "dateCreated": rec["created"], "dateModified": rec["created"], "version": str(rec["version"]),
        "keywords": ["multi-messenger astronomy", f"{_what(rec)} astronomy", "optical counterparts",
                     "alert broker", str(rec.get("mission") or "")],
        "measurementTechnique": "localization from the sender's notice (credible regions) and HEALPix "
                                "containment of optical alert positions",
        "variableMeasured": [{"@type": "PropertyValue", "name": n, "propertyID": q, "description": d,
                              **({"unitText": un} if un else {})} for n, _, un, q, d in EVENT_COLUMNS],
        "distribution": [
            {"@type": "DataDownload", "name": f"event record ({fmt})", "contentUrl": u[f"events.{fmt}"],
             "encodingFormat": FORMATS[fmt][0]} for fmt in FORMATS] + [
            {"@type": "DataDownload", "name": f"associations ({fmt})", "contentUrl": u[f"associations.{fmt}"],
             "encodingFormat": FORMATS[fmt][0]} for fmt in ("vot", "csv")] + [
            {"@type": "DataDownload", "name": "sky map (multi-order HEALPix FITS, UNIQ/PROBDENSITY)",
             "contentUrl": u["skymap"], "encodingFormat": "application/fits"},
            {"@type": "DataDownload", "name": "DataCite metadata", "contentUrl": u["datacite"],
             "encodingFormat": "application/vnd.datacite.datacite+json"}],
        "isBasedOn": [{"@type": "CreativeWork", "name": f"{n.get('kind', 'notice')} notice ({n.get('format')})",
                       "identifier": n["notice_id"], "url": f"{base}/api/mm/notices/{n['notice_id']}",
                       "dateCreated": n.get("created")}
                      for n in (notices or [])] + [
            {"@type": "SoftwareApplication", "name": "Albireo", "softwareVersion":
             (rec.get("provenance") or {}).get("pipeline_version", broker.__version__)}],
    }
    published = _published(rec, releases)
    if published:
        doc["datePublished"] = published
    if rec.get("ra") is not None:
        doc["spatialCoverage"] = {
            "@type": "Place", "name": f"sky position (ICRS) RA {rec['ra']:.4f} deg, Dec {rec['dec']:+.4f} deg",
            "additionalProperty": [
                {"@type": "PropertyValue", "name": "ra", "propertyID": "pos.eq.ra", "value": rec["ra"], "unitText": "deg"},
                {"@type": "PropertyValue", "name": "dec", "propertyID": "pos.eq.dec", "value": rec["dec"],
                 "unitText": "deg"}] + ([{"@type": "PropertyValue", "name": "area90", "propertyID": "phys.angArea",
                                          "value": rec["area90"], "unitText": "deg2"}] if rec.get("area90") else [])}
    tc = _temporal(rec)
    if tc:
        doc["temporalCoverage"] = tc
    if containing:
        r = containing[-1]
        doc["isPartOf"] = {"@type": "Dataset", "name": f"{settings.title}, version {r['version']}",
                           "identifier": [x for x in (r["pid"], r.get("doi")) if x], "version": str(r["version"]),
                           "url": f"{base}/api/catalog/v1/versions/{r['version']}"}
    return doc


def event_datacite(rec: dict[str, Any], settings: CatalogSettings, base: str, releases: list[dict[str, Any]],
                   versions: list[int], notices: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The DataCite kernel-4 record (JSON) of an event's record version; ``versions``: every stored version number."""
    u = urls(base, rec["event_id"])
    ids = settings.ids
    doi = ids.event_doi(rec["event_id"], rec["version"])
    published = _published(rec, releases) or rec["created"]
    identifiers = ([{"identifier": doi, "identifierType": "DOI"}] if doi else []) + [
        {"identifier": rec["pid"], "identifierType": "URI"}, {"identifier": u["landing"], "identifierType": "URL"}]
    related = [{"relatedIdentifier": resolver(base, rec["concept_pid"]), "relatedIdentifierType": "URL",
                "relationType": "IsVersionOf"}]
    n = rec["version"]
    if n - 1 in versions:
        related.append({"relatedIdentifier": resolver(base, ids.event(rec["event_id"], n - 1)),
                        "relatedIdentifierType": "URL", "relationType": "IsNewVersionOf"})
    if n + 1 in versions:
        related.append({"relatedIdentifier": resolver(base, ids.event(rec["event_id"], n + 1)),
                        "relatedIdentifierType": "URL", "relationType": "IsPreviousVersionOf"})
    for r in releases:
        if [rec["event_id"], n] in r["members"]:
            related.append({"relatedIdentifier": r["doi"], "relatedIdentifierType": "DOI", "relationType": "IsPartOf"}
                           if r.get("doi") else
                           {"relatedIdentifier": f"{base}/api/catalog/v1/versions/{r['version']}",
                            "relatedIdentifierType": "URL", "relationType": "IsPartOf"})
    for nt in notices or []:
        related.append({"relatedIdentifier": f"{base}/api/mm/notices/{nt['notice_id']}", "relatedIdentifierType": "URL",
                        "relationType": "IsDerivedFrom"})
    related.append({"relatedIdentifier": u["skymap"], "relatedIdentifierType": "URL", "relationType": "HasPart"})
    prov = rec.get("provenance") or {}
    recon = prov.get("reconstruction") or {}
    methods = (f"Built by Albireo {prov.get('pipeline_version')} on {rec['created']} from notice "
               f"{prov.get('notice_id')} ({prov.get('notice_kind')}, sender's revision {prov.get('notice_revision')}); "
               f"localization from {recon.get('kind', 'none')} {recon.get('notice_id') or recon.get('scan_id') or ''} "
               f"({recon.get('shape') or recon.get('name') or ''}).")
    dates = [{"date": rec["created"], "dateType": "Created"}, {"date": published, "dateType": "Issued"}]
    tc = _temporal(rec)
    if tc:
        dates.append({"date": tc, "dateType": "Collected"})
    out: dict[str, Any] = {
        "identifiers": identifiers,
        "creators": [{"name": settings.creator, "nameType": "Organizational"}],
        "titles": [{"title": f"{rec['name']}: {_what(rec)} event record, version {n}"},
                   {"title": settings.title, "titleType": "Other"}],
        "publisher": settings.publisher,
        "publicationYear": published[:4],
        "types": {"resourceTypeGeneral": "Dataset", "resourceType": "Multi-messenger event record"},
        "subjects": [{"subject": "Multi-messenger astronomy"}, {"subject": f"{_what(rec).capitalize()} astronomy"},
                     {"subject": "Astrophysics"}],
        "dates": dates,
        "version": str(n),
        "formats": sorted({v[0] for v in FORMATS.values()}),
        "rightsList": [{"rights": LICENSE_NAMES.get(settings.license, settings.license), "rightsUri": settings.license_url,
                        "rightsIdentifier": settings.license.lower(), "rightsIdentifierScheme": "SPDX"}],
        "descriptions": [{"description": describe(rec), "descriptionType": "Abstract"},
                         {"description": methods, "descriptionType": "Methods"}],
        "relatedIdentifiers": related,
        "schemaVersion": DATACITE_SCHEMA,
    }
    if rec.get("ra") is not None:
        # DataCite's geoLocations are terrestrial; a sky position is named as a place, never as longitude/latitude
        out["geoLocations"] = [{"geoLocationPlace": f"Sky position (ICRS, not terrestrial): RA {rec['ra']:.4f} deg, "
                                                    f"Dec {rec['dec']:+.4f} deg"}]
    return out


def release_datacite(release: dict[str, Any], settings: CatalogSettings, base: str,
                     versions: list[int]) -> dict[str, Any]:
    """The DataCite kernel-4 record of a published catalog version (what a catalog DOI is minted from)."""
    n = release["version"]
    api = f"{base}/api/catalog/v1/versions"
    identifiers = ([{"identifier": release["doi"], "identifierType": "DOI"}] if release.get("doi") else []) + [
        {"identifier": release["pid"], "identifierType": "URI"}, {"identifier": f"{api}/{n}", "identifierType": "URL"}]
    related = []
    if n - 1 in versions:
        related.append({"relatedIdentifier": f"{api}/{n - 1}", "relatedIdentifierType": "URL",
                        "relationType": "IsNewVersionOf"})
    if n + 1 in versions:
        related.append({"relatedIdentifier": f"{api}/{n + 1}", "relatedIdentifierType": "URL",
                        "relationType": "IsPreviousVersionOf"})
    for eid, v in release["members"]:
        related.append({"relatedIdentifier": resolver(base, settings.ids.event(eid, v)), "relatedIdentifierType": "URL",
                        "relationType": "HasPart"})
    ch = release.get("changes") or {}
    text = (f"{settings.title}, version {n}: {release['n_events']} neutrino and gravitational-wave event(s) with "
            f"their localizations (best-fit directions, asymmetric 90% errors, 50%/90% areas, multi-order sky maps), "
            f"energies, signalness and false-alarm rates, and {release['n_associations']} association(s) with optical "
            f"loci found by the Albireo alert broker, modelled on IceCat-1.")
    methods = (f"Published {release['published']} by Albireo {release['pipeline_version']}; {len(ch.get('added', []))} "
               f"event(s) new, {len(ch.get('updated', []))} updated, {ch.get('unchanged', 0)} unchanged since version "
               f"{release.get('previous')}. {release.get('note') or ''}").strip()
    return {
        "identifiers": identifiers,
        "creators": [{"name": settings.creator, "nameType": "Organizational"}],
        "titles": [{"title": f"{settings.title}, version {n}"}],
        "publisher": settings.publisher, "publicationYear": release["published"][:4],
        "types": {"resourceTypeGeneral": "Dataset", "resourceType": "Catalog of multi-messenger events"},
        "subjects": [{"subject": "Multi-messenger astronomy"}, {"subject": "Neutrino astronomy"},
                     {"subject": "Gravitational wave astronomy"}, {"subject": "Astronomical catalogs"}],
        "dates": [{"date": release["published"], "dateType": "Issued"}],
        "version": str(n), "formats": sorted({v[0] for v in FORMATS.values()}),
        "rightsList": [{"rights": LICENSE_NAMES.get(settings.license, settings.license), "rightsUri": settings.license_url,
                        "rightsIdentifier": settings.license.lower(), "rightsIdentifierScheme": "SPDX"}],
        "descriptions": [{"description": text, "descriptionType": "Abstract"},
                         {"description": methods, "descriptionType": "Methods"}],
        "relatedIdentifiers": related,
        "schemaVersion": DATACITE_SCHEMA,
    }


def release_jsonld(release: dict[str, Any], settings: CatalogSettings, base: str) -> dict[str, Any]:
    """The schema.org ``Dataset`` of a published catalog version."""
    n = release["version"]
    api = f"{base}/api/catalog/v1/versions/{n}"
    return {
        "@context": SCHEMA_ORG, "@type": "Dataset", "@id": resolver(base, release["pid"]),
        "name": f"{settings.title}, version {n}", "version": str(n),
        "identifier": [release["pid"]] + ([{"@type": "PropertyValue", "propertyID": "DOI", "value": release["doi"],
                                            "url": f"https://doi.org/{release['doi']}"}] if release.get("doi") else []),
        "url": api, "description": release_datacite(release, settings, base, [])["descriptions"][0]["description"],
        "license": settings.license_url, "isAccessibleForFree": True,
        "creator": {"@type": "Organization", "name": settings.creator},
        "publisher": {"@type": "Organization", "name": settings.publisher},
        "datePublished": release["published"],
        "keywords": ["multi-messenger astronomy", "neutrino astronomy", "gravitational waves", "optical counterparts"],
        "distribution": [{"@type": "DataDownload", "name": f"{t} ({fmt})", "contentUrl": f"{api}/{t}.{fmt}",
                          "encodingFormat": FORMATS[fmt][0]} for t in ("events", "associations") for fmt in FORMATS],
        "hasPart": [{"@type": "Dataset", "identifier": settings.ids.event(e, v), "url": resolver(base, settings.ids.event(e, v))}
                    for e, v in release["members"]],
        "isBasedOn": {"@type": "SoftwareApplication", "name": "Albireo", "softwareVersion": release["pipeline_version"]},
    }
