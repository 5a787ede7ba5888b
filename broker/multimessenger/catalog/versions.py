"""Immutable versions: an event's record versions, and numbered published catalog versions.

* The **live** record of an event is built from what the store holds now (never stored).
* A **record version** is frozen when a catalog version is published and the live record says
  something the event's latest version does not (:func:`~.records.content_hash`): version
  ``n + 1`` is inserted beside version ``n``, which is never rewritten (``Store.put_catalog_record``
  refuses to replace a row with other content, on SQLite and on Cassandra with a lightweight
  transaction). A new notice revision, a new association, a retraction: each makes a new version
  at the next publication; an unchanged event keeps its version.
* A **catalog version** (``albireo release publish``) names, for every event, the record version
  it holds, with when, by which pipeline version, under which licence, and what changed since the
  previous one. It is inserted once (``Store.put_catalog_release``), so an export of version ``k``
  is the same bytes however many versions follow it.

Events are listed once they have a notice; test events (mock superevents, VOEvent role=test) only
with ``[event_catalog] include_test``. Retracted events stay, as records with status
``retracted`` and no position: an identifier once published keeps resolving.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import broker
from broker.multimessenger.catalog.identifiers import Identifiers, license_url
from broker.multimessenger.catalog.records import build_record
from broker.multimessenger.notice import iso
from broker.multimessenger.outgoing.candidates import Candidate, event_candidates
from broker.ports import CatalogConflict, Index, Store

if TYPE_CHECKING:
    from broker.config import Config
    from broker.multimessenger.localization import Localization

RELEASE_SCHEMA = "albireo.catalog.release/1"


@dataclass
class CatalogSettings:
    """What the catalog states about itself (``[event_catalog]``)."""

    ids: Identifiers
    license: str = "CC-BY-4.0"
    license_url: str = ""
    title: str = "Albireo catalog of multi-messenger events and optical associations"
    creator: str = "Albireo alert broker"
    publisher: str = "Albireo"
    base_url: str = ""
    include_test: bool = False

    @classmethod
    def from_config(cls, cfg: Config) -> CatalogSettings:
        ec = cfg.event_catalog
        return cls(Identifiers.from_config(cfg), ec.license, ec.license_url or license_url(ec.license), ec.title,
                   ec.creator, ec.publisher, ec.base_url.rstrip("/"), ec.include_test)


def _now() -> str:
    return iso(datetime.datetime.now(datetime.UTC).replace(microsecond=0))


def checksums(records: list[dict[str, Any]], release: dict[str, Any], settings: CatalogSettings) -> dict[str, str]:
    """SHA-256 of every export of a version as published (``<table>.<fmt>`` → hex): any later copy can be checked."""
    from broker.multimessenger.catalog.exports import FORMATS, TABLES, export, release_meta

    meta = release_meta(release, settings)
    return {f"{t}.{f}": hashlib.sha256(export(records, t, f, meta)).hexdigest() for t in TABLES for f in FORMATS}


class EventCatalog:
    """The catalog over the store (records, versions) and the index (which loci list an event)."""

    def __init__(self, store: Store, index: Index, settings: CatalogSettings):
        from broker.multimessenger.coincidence import LocalizationCache

        self.store, self.index, self.settings = store, index, settings
        self._locs = LocalizationCache(store, size=16)

    # -- live records ------------------------------------------------------------------------
    def events(self) -> list[dict[str, Any]]:
        """The events the catalog lists, oldest first."""
        evs = self.store.events()
        return [e for e in evs if self.settings.include_test or not e.get("test")]

    def localization(self, event: dict[str, Any]) -> Localization | None:
        return None if event.get("status") == "retracted" else self._locs.get(event)

    def candidates(self, event: dict[str, Any]) -> list[Candidate]:
        """The loci listing the event (the index's ``events`` filter, then the store), as the outgoing alerts find them.

        No index refresh here (a page view must not force one on Elasticsearch); :meth:`publish` refreshes once.
        """
        return event_candidates(self.index, self.store, event)

    def live(self, event: dict[str, Any], version: int, created: str) -> dict[str, Any]:
        """The event's record as the store holds it now, numbered ``version``."""
        cands = [] if event.get("status") == "retracted" else self.candidates(event)
        out = self.store.outgoing(event["event_id"])
        return build_record(event, self.store.notices(event["event_id"]), self.localization(event), cands,
                            self.settings.ids, license=self.settings.license, version=version, created=created,
                            outgoing_record_number=out[-1]["record_number"] if out else None)

    def live_record(self, event_id: str) -> tuple[dict[str, Any], bool]:
        """(the live record, whether it differs from the latest frozen version); KeyError for an unknown event.

        Unchanged: the latest frozen version itself. Changed (or never frozen): numbered as the
        version it would become, dated now.
        """
        ev = self.store.event(event_id)
        if ev is None:
            raise KeyError(event_id)
        versions = self.store.catalog_records(event_id)
        latest = versions[-1] if versions else None
        rec = self.live(ev, (latest["version"] + 1) if latest else 1, _now())
        if latest is not None and latest["content_hash"] == rec["content_hash"]:
            return latest, False
        return rec, True

    # -- frozen versions -----------------------------------------------------------------------
    def record_versions(self, event_id: str) -> list[dict[str, Any]]:
        return self.store.catalog_records(event_id)

    def record(self, event_id: str, version: int) -> dict[str, Any] | None:
        return next((r for r in self.store.catalog_records(event_id) if r["version"] == version), None)

    def freeze(self, event: dict[str, Any], created: str) -> tuple[dict[str, Any], bool]:
        """(the event's latest record version, whether it was made now)."""
        versions = self.store.catalog_records(event["event_id"])
        latest = versions[-1] if versions else None
        rec = self.live(event, (latest["version"] + 1) if latest else 1, created)
        if latest is not None and latest["content_hash"] == rec["content_hash"]:
            return latest, False
        self.store.put_catalog_record(rec)
        return rec, True

    def releases(self) -> list[dict[str, Any]]:
        return self.store.catalog_releases()

    def release(self, version: int) -> dict[str, Any] | None:
        return next((r for r in self.store.catalog_releases() if r["version"] == version), None)

    def latest_release(self) -> dict[str, Any] | None:
        rels = self.store.catalog_releases()
        return rels[-1] if rels else None

    def release_records(self, release: dict[str, Any]) -> list[dict[str, Any]]:
        """The frozen records a catalog version names, in its order (by event time, then id)."""
        out = []
        for eid, version in release["members"]:
            rec = self.record(eid, version)
            if rec is None:  # a version is stored before any release names it: this is a damaged store
                raise LookupError(f"catalog v{release['version']} names {eid} v{version}, which is not stored")
            out.append(rec)
        return out

    def live_records(self) -> list[dict[str, Any]]:
        """Every listed event's live record (the draft of the next version)."""
        out = []
        for ev in self.events():
            versions = self.store.catalog_records(ev["event_id"])
            latest = versions[-1] if versions else None
            rec = self.live(ev, (latest["version"] + 1) if latest else 1, _now())
            out.append(latest if latest is not None and latest["content_hash"] == rec["content_hash"] else rec)
        return out

    def publish(self, note: str = "", now: datetime.datetime | None = None) -> dict[str, Any]:
        """Freeze every changed record and publish the next catalog version; returns it.

        :class:`~broker.ports.CatalogConflict` if another publisher took the number first (run again).
        """
        published = iso((now or datetime.datetime.now(datetime.UTC)).replace(microsecond=0))
        self.index.refresh()  # every document written before this call is searched
        prev = self.latest_release()
        prev_members = dict((e, v) for e, v in prev["members"]) if prev else {}
        members, added, updated, records = [], [], [], []
        n_assoc = 0
        for ev in self.events():
            rec, _ = self.freeze(ev, published)
            records.append(rec)
            members.append([rec["event_id"], rec["version"]])
            n_assoc += rec["n_associations"]
            old = prev_members.get(rec["event_id"])
            if old is None:
                added.append(rec["event_id"])
            elif old != rec["version"]:
                updated.append(rec["event_id"])
        version = (prev["version"] + 1) if prev else 1
        s = self.settings
        release = {
            "schema": RELEASE_SCHEMA, "version": version, "pid": s.ids.release(version), "doi": s.ids.doi(version),
            "title": s.title, "creator": s.creator, "publisher": s.publisher, "license": s.license,
            "license_url": s.license_url, "published": published, "note": str(note)[:2000],
            "pipeline": "albireo", "pipeline_version": broker.__version__,
            "previous": prev["version"] if prev else None, "n_events": len(members), "n_associations": n_assoc,
            "members": members,
            "changes": {"added": added, "updated": updated,
                        "removed": sorted(set(prev_members) - {m[0] for m in members}),
                        "unchanged": len(members) - len(added) - len(updated)},
        }
        release["content_hash"] = hashlib.sha256(json.dumps(members).encode()).hexdigest()[:32]
        release["checksums"] = checksums(records, release, s)
        if not self.store.put_catalog_release(release):
            raise CatalogConflict(f"catalog v{version} was published by another run at the same time")
        return release
