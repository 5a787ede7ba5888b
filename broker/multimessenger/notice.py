"""A notice: one message about one multi-messenger event, whatever format it came in.

Every parser (:mod:`~broker.multimessenger.gcn`, :mod:`~broker.multimessenger.lvk`,
:mod:`~broker.multimessenger.voevent`) turns its format into :class:`Notice`, so revisions,
localizations, coincidences and storage deal with one shape. What a notice says about *where* is
a :class:`LocalizationSpec`: a circle, an ellipse, a HEALPix map (embedded, in a file, or at a
URL), or several circles (one per coincident neutrino of an LVK track search).
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass, field
from typing import Any

#: the messengers we tag loci with (``in_<messenger>_<level>``).
GW, NEUTRINO, OPTICAL = "gw", "neutrino", "optical"

#: notice kinds, normalised; the order is the order of a GW event's life (ties of time broken by it).
KINDS = ("EARLY_WARNING", "PRELIMINARY", "INITIAL", "SUBSEQUENT", "UPDATE", "RETRACTION")
KIND_RANK = {k: i for i, k in enumerate(KINDS)}

#: largest notice accepted (an LVK alert carries a ~1 MB base64 map; O4 maps reach a few MB).
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class NoticeError(ValueError):
    """A notice that cannot be used; ``reason`` is the dead-letter reason (``schema_invalid`` …)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class LocalizationSpec:
    """Where a notice says its event is, before any map is read.

    ``shape`` is ``circle`` (``radius`` deg at ``containment``), ``ellipse`` (``a``, ``b`` semi-axes
    deg, ``pa`` deg east of north, at ``containment``), ``map`` (``skymap`` FITS bytes, or
    ``skymap_url`` to download), or ``circles`` (``components``: several circles; a position's
    level is the smallest any of them gives).
    """

    shape: str
    ra: float | None = None
    dec: float | None = None
    radius: float | None = None
    a: float | None = None
    b: float | None = None
    pa: float = 0.0
    containment: float = 0.9
    systematic_included: bool = False
    skymap_url: str | None = None
    components: list[LocalizationSpec] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if v is not None and k != "components"}
        if self.components:
            out["components"] = [c.to_dict() for c in self.components]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LocalizationSpec:
        d = dict(d)
        comps = [cls.from_dict(c) for c in d.pop("components", [])]
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known, components=comps)


@dataclass
class Notice:
    """One notice, parsed and validated."""

    #: stable id: a hash of the raw bytes (a replayed notice is the same notice).
    notice_id: str
    #: the event the notice is about: GraceDB id, ``IceCube-230416A``, ``KM3-240901A``, ...
    event_id: str
    messenger: str
    #: ``gcn_json``, ``lvk_json``, ``lvk_avro`` or ``voevent``.
    format: str
    #: the schema it was validated against.
    schema: str
    #: one of :data:`KINDS`.
    kind: str
    #: the sender's revision counter (``record_number``, ``Pkt_Ser_Num``), 0 when it has none.
    revision: int
    #: when the notice was issued (ISO 8601, UTC).
    created: str
    #: when the event happened (ISO 8601, UTC), if the notice says.
    event_time: str | None
    mission: str
    test: bool = False
    localization: LocalizationSpec | None = None
    #: what filters and pages show: FAR, signalness, energy, classification, names, ...
    metadata: dict[str, Any] = field(default_factory=dict)
    #: the whole notice as JSON, without its sky map (ANTARES's ``full_notice``).
    full_notice: dict[str, Any] = field(default_factory=dict)
    #: the sky map as FITS bytes, when the notice carried one.
    skymap: bytes | None = None
    #: ids (IVORNs, notice names) this notice says it supersedes.
    supersedes: list[str] = field(default_factory=list)

    @property
    def retraction(self) -> bool:
        return self.kind == "RETRACTION"

    @property
    def created_dt(self) -> datetime.datetime:
        return parse_time(self.created)

    @property
    def event_mjd(self) -> float | None:
        return None if self.event_time is None else to_mjd(parse_time(self.event_time))

    @property
    def order_key(self) -> tuple:
        """Later notices sort after earlier ones: by issue time, then kind, then the sender's revision.

        Issue time first, because one event's notices may come in several formats (LVK's JSON has
        no revision counter, its VOEvents do); LVK issues an INITIAL and an UPDATE in the same
        second, which the kind's rank orders.
        """
        return (self.created_dt.timestamp(), KIND_RANK.get(self.kind, 0), self.revision, self.notice_id)

    def record(self) -> dict[str, Any]:
        """The stored form (JSON-able; the sky map is stored apart)."""
        return {
            "notice_id": self.notice_id, "event_id": self.event_id, "messenger": self.messenger,
            "format": self.format, "schema": self.schema, "kind": self.kind, "revision": self.revision,
            "created": self.created, "event_time": self.event_time, "event_mjd": self.event_mjd,
            "mission": self.mission, "test": self.test,
            "localization": self.localization.to_dict() if self.localization else None,
            "metadata": self.metadata, "full_notice": self.full_notice, "has_skymap": self.skymap is not None,
            "supersedes": self.supersedes, "order_key": list(self.order_key),
        }


def notice_id_for(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:24]


def int_id(notice_id: str) -> int:
    """A positive 52-bit integer for a notice (``antares-client`` wants an integer ``id``)."""
    return int(hashlib.blake2b(str(notice_id).encode(), digest_size=8).hexdigest()[:13], 16)


def parse_time(text: str) -> datetime.datetime:
    """ISO 8601 (``Z`` or offset, any precision) → aware UTC datetime; raises NoticeError."""
    if isinstance(text, datetime.datetime):
        dt = text
    else:
        s = str(text).strip().replace(" ", "T")
        if s.endswith("Z"):
            s = s[:-1] + "+00:00"
        try:
            dt = datetime.datetime.fromisoformat(s)
        except ValueError:
            raise NoticeError("bad_time", f"time {text!r} is not ISO 8601") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    return dt.astimezone(datetime.UTC)


def iso(dt: datetime.datetime) -> str:
    return dt.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


_MJD0 = datetime.datetime(1858, 11, 17, tzinfo=datetime.UTC)


def to_mjd(dt: datetime.datetime) -> float:
    return (dt - _MJD0).total_seconds() / 86400.0


def from_mjd(mjd: float) -> datetime.datetime:
    return _MJD0 + datetime.timedelta(days=float(mjd))
