"""What a scan request may say, checked before anything is stored; the scan record.

A request (``POST /api/scans``) names an *event* — a GCN JSON neutrino notice, read by our notice
parser, or a plain description ``{ra, dec, time|mjd, run_id, event_id}`` — a registered
*reconstruction* with its parameters, an *nside progression* (default 8 → 64 → 512, as the
Skymap Scanner) and a *priority* lane (``realtime`` ahead of ``backfill``). Every field is checked:
malformed input is a :class:`ScanRequestError` with status 400, well-formed but refused input
(unknown reconstruction, an nside that is no power of two, too many pixels) 422, each with reasons.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

#: a scan's life: queued (stored, not started) → running → done | aborted | failed.
QUEUED, RUNNING, DONE, ABORTED, FAILED = "queued", "running", "done", "aborted", "failed"
STATUSES = (QUEUED, RUNNING, DONE, ABORTED, FAILED)
FINISHED = (DONE, ABORTED, FAILED)
REALTIME, BACKFILL = "realtime", "backfill"
PRIORITIES = (REALTIME, BACKFILL)
DEFAULT_NSIDES = (8, 64, 512)


@dataclass(frozen=True)
class ScanLimits:
    """Bounds on what one request may ask for (``[scans]`` in the configuration)."""

    max_nside: int = 1024
    #: the first step scans the whole sky: 12·nside² pixels, at most this many.
    max_first_pixels: int = 50_000
    #: no refinement step scans more than this many pixels (the best-ranked are kept).
    max_step_pixels: int = 20_000
    max_steps: int = 6


class ScanRequestError(ValueError):
    """A request that cannot become a scan: ``status`` 400 (malformed) or 422 (refused), with reasons."""

    def __init__(self, status: int, reasons: list[str]):
        if len(reasons) > 20:  # a body with thousands of bad keys gets a bounded answer
            reasons = [*reasons[:20], f"... and {len(reasons) - 20} more"]
        super().__init__("; ".join(reasons))
        self.status = status
        self.reasons = reasons


@dataclass(frozen=True)
class ScanEvent:
    """The event a scan reconstructs: a direction to start from, a time and IceCube-style ids."""

    ra: float
    dec: float
    mjd: float
    run_id: int
    event_id: int
    event_type: str = "neutrino"
    #: the multi-messenger event id (``IceCube-…``) when the scan came from a notice, else None.
    source_event: str | None = None
    #: skyreader's ``is_real_event``: only real IceCube run numbers (1e5 ≤ run < 1e6) from a non-test notice.
    is_real_event: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScanEvent:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class ScanSpec:
    """A checked request, ready to be stored as a scan record."""

    event: ScanEvent
    reconstruction: str
    params: dict[str, float]
    nsides: list[int]
    priority: str = REALTIME
    scan_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def record(self, now: float | None = None) -> dict[str, Any]:
        """The stored scan record (the manifest grows inside it as the scan runs)."""
        now = time.time() if now is None else now
        return {"scan_id": self.scan_id, "status": QUEUED, "priority": self.priority,
                "reconstruction": self.reconstruction, "params": self.params, "nsides": self.nsides,
                "event": self.event.to_dict(), "created": now, "updated": now, "started": None,
                "finished": None, "step": 0, "steps": [], "reason": "", "summary": None}


# ---- parsing ------------------------------------------------------------------------------------
def parse_request(body: Any, registry: dict[str, Any], limits: ScanLimits = ScanLimits()) -> ScanSpec:
    """The :class:`ScanSpec` a request body describes, or :class:`ScanRequestError` saying why not."""
    if not isinstance(body, dict):
        raise ScanRequestError(400, ["the body must be a JSON object"])
    unknown = set(body) - {"event", "reconstruction", "nside_progression", "priority", "params"}
    if unknown:
        raise ScanRequestError(400, [f"unknown field(s): {', '.join(sorted(map(str, unknown)))[:200]}"])
    if "event" not in body:
        raise ScanRequestError(400, ["'event' is required: a GCN neutrino notice or {ra, dec, time, run_id, event_id}"])
    event = parse_event(body["event"])
    reasons: list[str] = []
    name = body.get("reconstruction", "track_gaussian")
    if not isinstance(name, str) or not name:
        raise ScanRequestError(400, ["'reconstruction' must be a name (string)"])
    reco = registry.get(name)
    if reco is None:
        reasons.append(f"unknown reconstruction {name[:64]!r}; registered: {', '.join(sorted(registry)) or 'none'}")
    priority = body.get("priority", REALTIME)
    if priority not in PRIORITIES:
        raise ScanRequestError(400, [f"'priority' must be one of {', '.join(PRIORITIES)}"])
    nsides = parse_nsides(body.get("nside_progression", list(DEFAULT_NSIDES)), limits, reasons)
    params = body.get("params", {})
    if not isinstance(params, dict):
        raise ScanRequestError(400, ["'params' must be an object of numbers"])
    if reco is not None:
        params = check_params(reco, params, reasons)
    if reasons:
        raise ScanRequestError(422, reasons)
    return ScanSpec(event=event, reconstruction=name, params=params, nsides=nsides, priority=priority)


def parse_nsides(value: Any, limits: ScanLimits, reasons: list[str]) -> list[int]:
    """A strictly increasing list of powers of two within the limits (reasons appended, else the list)."""
    if not isinstance(value, list) or not value or not all(isinstance(n, int) and not isinstance(n, bool)
                                                            for n in value):
        raise ScanRequestError(400, ["'nside_progression' must be a non-empty list of integers"])
    if len(value) > limits.max_steps:
        reasons.append(f"at most {limits.max_steps} nside steps")
        return []
    bad = [n for n in value if n < 1 or n & (n - 1) or n > limits.max_nside]
    if bad:
        reasons.append(f"every nside must be a power of two from 1 to {limits.max_nside}: not {bad[:5]}")
    elif any(b <= a for a, b in zip(value, value[1:], strict=False)):
        reasons.append("the nside progression must increase strictly")
    elif 12 * value[0] ** 2 > limits.max_first_pixels:
        reasons.append(f"the first step scans the whole sky: nside {value[0]} is {12 * value[0] ** 2} pixels, "
                       f"more than the {limits.max_first_pixels} allowed")
    return list(value)


def check_params(reco: Any, params: dict[str, Any], reasons: list[str]) -> dict[str, float]:
    """The reconstruction's parameters: declared names, finite numbers within bounds, defaults filled in."""
    out: dict[str, float] = {}
    for k in params:
        if k not in reco.params:
            reasons.append(f"{reco.name} has no parameter {str(k)[:64]!r}; it takes: {', '.join(reco.params) or 'none'}")
    for k, p in reco.params.items():
        v = params.get(k, p.default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            reasons.append(f"parameter {k} must be a finite number")
            continue
        if not p.lo <= v <= p.hi:
            reasons.append(f"parameter {k} must lie in [{p.lo}, {p.hi}], not {v}")
            continue
        out[k] = float(v)
    return out


def parse_event(value: Any) -> ScanEvent:
    """A :class:`ScanEvent` from a GCN JSON neutrino notice (our notice parser) or an event description."""
    if not isinstance(value, dict):
        raise ScanRequestError(400, ["'event' must be a JSON object"])
    if {"$schema", "mission", "superevent_id"} & set(value):  # GCN unified JSON, or LVK's igwn.gwalert JSON
        return _event_from_notice(value)
    return _event_from_description(value)


def _number(d: dict[str, Any], key: str, lo: float, hi: float, reasons: list[str], *, integer: bool = False,
            required: bool = True) -> Any:
    v = d.get(key)
    if v is None:
        if required:
            reasons.append(f"event.{key} is required")
        return None
    if isinstance(v, bool) or not isinstance(v, int if integer else int | float) or not math.isfinite(v):
        reasons.append(f"event.{key} must be a finite {'integer' if integer else 'number'}")
        return None
    if not lo <= v <= hi:
        reasons.append(f"event.{key} must lie in [{lo}, {hi}], not {v}")
        return None
    return v


def _event_from_description(d: dict[str, Any]) -> ScanEvent:
    from broker.multimessenger.notice import NoticeError, parse_time, to_mjd

    unknown = set(d) - {"ra", "dec", "time", "mjd", "run_id", "event_id", "event_type"}
    if unknown:
        raise ScanRequestError(400, [f"unknown event field(s): {', '.join(sorted(map(str, unknown)))[:200]}"])
    reasons: list[str] = []
    ra = _number(d, "ra", 0.0, 360.0, reasons)
    dec = _number(d, "dec", -90.0, 90.0, reasons)
    run_id = _number(d, "run_id", 0, 2**31 - 1, reasons, integer=True)
    event_id = _number(d, "event_id", 0, 2**53, reasons, integer=True)
    mjd = _number(d, "mjd", 0.0, 1e6, reasons, required=False)
    if mjd is None and "mjd" not in d:
        t = d.get("time")
        if not isinstance(t, str) or len(t) > 64:
            reasons.append("event.time (ISO 8601) or event.mjd is required")
        else:
            try:
                mjd = to_mjd(parse_time(t))
            except NoticeError as exc:
                reasons.append(f"event.time: {exc}")
    etype = d.get("event_type", "neutrino")
    if not isinstance(etype, str) or not 0 < len(etype) <= 64 or not etype.replace("_", "").isalnum():
        reasons.append("event.event_type must be a short name (letters, digits, _)")
    if reasons:
        raise ScanRequestError(400, reasons)
    return ScanEvent(ra=float(ra) % 360.0, dec=float(dec), mjd=float(mjd), run_id=int(run_id),
                     event_id=int(event_id), event_type=etype)


def _event_from_notice(doc: dict[str, Any]) -> ScanEvent:
    from broker.multimessenger.notice import NEUTRINO, NoticeError
    from broker.multimessenger.parse import parse_notice

    try:
        notice = parse_notice(json.dumps(doc, allow_nan=False).encode())
    except NoticeError as exc:
        raise ScanRequestError(422, [f"the notice is not valid ({exc.reason}): {str(exc)[:300]}"]) from None
    except ValueError as exc:
        raise ScanRequestError(400, [f"the notice is not JSON-able: {exc}"]) from None
    loc = notice.localization
    if notice.messenger != NEUTRINO:
        raise ScanRequestError(422, [f"a scan reconstructs a neutrino event; this notice is {notice.messenger}"])
    if notice.retraction:
        raise ScanRequestError(422, ["the notice is a retraction: there is nothing to reconstruct"])
    if loc is None or loc.ra is None or loc.dec is None:
        raise ScanRequestError(422, ["the notice gives no direction (ra, dec) to start from"])
    if notice.event_mjd is None:
        raise ScanRequestError(422, ["the notice gives no event time"])
    run_id, event_id = _ids(str(notice.metadata.get("trigger_id") or ""), notice.event_id)
    pipeline = str(notice.metadata.get("pipeline") or "neutrino").lower()
    etype = "".join(c if c.isalnum() else "_" for c in pipeline)[:64] or "neutrino"
    real = notice.mission.lower() == "icecube" and not notice.test and 100_000 <= run_id < 1_000_000
    return ScanEvent(ra=float(loc.ra) % 360.0, dec=float(loc.dec), mjd=float(notice.event_mjd), run_id=run_id,
                     event_id=event_id, event_type=etype, source_event=notice.event_id, is_real_event=real)


def _ids(trigger: str, event_name: str) -> tuple[int, int]:
    """IceCube's ``<run>_<event>`` trigger id as two integers; else run 0 and a stable number from the name."""
    run, _, evt = trigger.partition("_")
    if run.isdigit() and evt.isdigit() and len(run) < 10 and len(evt) < 16:
        return int(run), int(evt)
    import hashlib

    return 0, int(hashlib.blake2b(event_name.encode(), digest_size=6).hexdigest(), 16)
