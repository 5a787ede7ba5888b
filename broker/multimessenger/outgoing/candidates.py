"""Optical candidates of an event: what the outgoing notices say about each coincident locus.

Read from what the coincidence stage wrote on the locus (``alert_neutrino_events`` or
``alert_grav_wave_events``), so the notices report exactly the containment the tags were set from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from broker.alert import SURVEY_NAMES
from broker.locus import Locus
from broker.multimessenger.notice import GW, from_mjd, iso

if TYPE_CHECKING:
    from broker.ports import Index, Store


@dataclass
class Photometry:
    time: str
    instrument: str
    filter: str
    mag: float | None
    mag_error: float | None
    limiting_mag: float | None


@dataclass
class Candidate:
    """One locus inside an event's credible region."""

    name: str
    ra: float
    dec: float
    #: the smallest credible level (percent) containing one of its alerts, and that region's area (deg²).
    contour_level: float
    contour_area: float
    first_mjd: float
    tags: list[str] = field(default_factory=list)
    photometry: list[Photometry] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ra": self.ra, "dec": self.dec, "contour_level": self.contour_level,
                "contour_area": self.contour_area, "first_mjd": self.first_mjd, "tags": self.tags,
                "photometry": [vars(p) for p in self.photometry]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Candidate:
        return cls(**{k: v for k, v in d.items() if k != "photometry"},
                   photometry=[Photometry(**p) for p in d.get("photometry") or []])


def _num(x: Any) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def candidates_from_loci(loci: list[Locus], event_id: str, messenger: str) -> list[Candidate]:
    """The loci that list ``event_id``, best (smallest contour level) first, then by name."""
    key = "gracedb_id" if messenger == GW else "event_id"
    out: list[Candidate] = []
    for x in loci:
        entries = x.alert_grav_wave_events if messenger == GW else x.alert_neutrino_events
        mine = [e for row in entries.values() for e in row if e.get(key) == event_id]
        if not mine:
            continue
        best = min(mine, key=lambda e: float(e["contour_level"]))
        phot = [Photometry(iso(from_mjd(a.mjd)), SURVEY_NAMES.get(a.survey, str(a.survey)).split("_")[0].upper(),
                           str(a.passband), _num(a.mag), _num(a.magerr), _num(a.maglim))
                for a in sorted(x.alerts, key=lambda a: (a.mjd, a.alert_id))]
        out.append(Candidate(x.locus_id, round(float(x.ra), 6), round(float(x.dec), 6),
                             float(best["contour_level"]), float(best["contour_area"]),
                             min((a.mjd for a in x.alerts), default=math.nan),
                             sorted(t for t in x.user_tags), phot))
    return sorted(out, key=lambda c: (c.contour_level, c.name))


def event_candidates(index: Index, store: Store, event: dict[str, Any]) -> list[Candidate]:
    """The candidates of ``event``: every locus the index tags with it (paged by locus id), loaded whole.

    Shared by the outgoing alerts and the FAIR catalog so that both list the same loci. It does not
    refresh the index: a caller that has just written refreshes once itself.
    """
    from broker.ports import LocusQuery

    ids: list[str] = []
    q = LocusQuery(events=[event["event_id"]], limit=1000, sort="locus_id")
    while True:
        r = index.search(q)
        ids += [h["locus_id"] for h in r.hits]
        if r.next_cursor is None:
            break
        q.search_after = r.next_cursor
    loci = list(store.load_loci(ids).values()) if ids else []
    return candidates_from_loci(loci, event["event_id"], event["messenger"])
