"""The load generator: real alert packets replayed into Kafka (or any sink), optionally jittered.

Why jitter instead of inventing packets: load tests need many distinct objects, and the only
honest way to get them is to copy real packets and change what must be unique (ids), plus where
and when they are (a consistent shift of the whole packet), leaving every measured value real.
``albireo replay`` is the command; ``bench/`` and the integration tests call :func:`replay`.
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from broker.adapters.streams.files import FileSource
from broker.ingest.framing import (
    CONFLUENT_MAGIC,
    CONTAINER_MAGIC,
    SINGLE_OBJECT_MAGIC,
    DecodeError,
    container_from_bodies,
    decode_confluent,
    decode_single_object,
    encode_schemaless,
    iter_container,
    read_container_header,
)
from broker.ports import Sink

#: a.k.a. 2**62: rewritten numeric ids stay positive Avro longs.
_ID_MOD = 1 << 62


#: odd, so ``id + k * _ID_STEP (mod 2**62)`` is a different id for every k < 2**62.
_ID_STEP = 0x2F6A_3C4D_9B1E_5A77


#: ZTF object ids are ``ZTF`` + 2-digit year + 7 lower-case letters; the step is coprime to 26.
_ZTF_OID = re.compile(r"^(ZTF\d\d)([a-z]{7})$")


_OID_MOD = 26**7


_OID_STEP = 3_093_215_027  # odd and not a multiple of 13


#: (ra, dec) field pairs moved together: ZTF, ZTF nearest-reference-source, Rubin (old/new spelling).
_POSITION_PAIRS = (("ra", "dec"), ("ra", "decl"), ("ranr", "decnr"), ("psRa", "psDecl"),
                   ("trailRa", "trailDec"), ("trailRa", "trailDecl"), ("dipRa", "dipDecl"))


#: time fields (JD or MJD, days): ZTF ``jd*``; Rubin ``midPointTai``, ``radecTai``, ``*MjdTai``.
_TIME_KEY = re.compile(r"^(jd\w*|midPointTai|radecTai|\w*MjdTai|mjd\w*)$")


#: numeric ids that must be unique per copy (``parentDiaSourceId`` keeps pointing at its parent's copy).
_ID_KEYS = frozenset({"candid", "alertId", "diaSourceId", "diaObjectId", "diaForcedSourceId",
                      "parentDiaSourceId", "ssObjectId", "ssSourceId"})


_OBJECT_ID_KEYS = ("objectId",)


def _new_id(value: int, index: int) -> int:
    return (value + (index + 1) * _ID_STEP) % _ID_MOD


def _new_object_id(oid: str, index: int) -> str:
    m = _ZTF_OID.match(oid)
    if not m:
        return f"{oid}-j{index}"
    v = 0
    for ch in m.group(2):
        v = v * 26 + (ord(ch) - 97)
    v = (v + (index + 1) * _OID_STEP) % _OID_MOD
    letters = []
    for _ in range(7):
        v, r = divmod(v, 26)
        letters.append(chr(97 + r))
    return m.group(1) + "".join(reversed(letters))


def shift_position(ra: float, dec: float, dra: float, ddec: float) -> tuple[float, float]:
    """Move (ra, dec) by (dra, ddec) degrees; dec past a pole reflects back and RA turns 180°."""
    d = dec + ddec
    r = ra + dra
    if d > 90.0:
        d, r = 180.0 - d, r + 180.0
    elif d < -90.0:
        d, r = -180.0 - d, r + 180.0
    r %= 360.0
    if r >= 360.0:  # -1e-17 % 360 == 360.0 in floating point
        r = 0.0
    return r, d


def _jitter_record(obj: Any, dra: float, ddec: float, dt: float, index: int) -> None:
    """Shift positions/times and rewrite ids in place, at every nesting level."""
    if isinstance(obj, list):
        for item in obj:
            if isinstance(item, (dict, list)):
                _jitter_record(item, dra, ddec, dt, index)
        return
    if not isinstance(obj, dict):
        return
    for rk, dk in _POSITION_PAIRS:
        ra, dec = obj.get(rk), obj.get(dk)
        if isinstance(ra, float) and isinstance(dec, float) and math.isfinite(ra) and math.isfinite(dec):
            obj[rk], obj[dk] = shift_position(ra, dec, dra, ddec)
    for k, v in obj.items():
        if v is None:
            continue
        if isinstance(v, (dict, list)):
            _jitter_record(v, dra, ddec, dt, index)
        elif k in _ID_KEYS and isinstance(v, int):
            obj[k] = _new_id(v, index)
        elif k in _OBJECT_ID_KEYS and isinstance(v, str):
            obj[k] = _new_object_id(v, index)
        elif isinstance(v, float) and _TIME_KEY.match(k) and math.isfinite(v):
            obj[k] = v + dt


def _decode_any(raw: bytes) -> tuple[str, Any, list[dict]]:
    """(framing, what re-encoding needs, records) for container, Confluent or single-object bytes."""
    if raw[:4] == CONTAINER_MAGIC:
        header = read_container_header(raw)
        return "container", header, list(iter_container(raw))
    if raw[:1] == bytes([CONFLUENT_MAGIC]):
        from broker.ingest.decode import default_registry

        _, parsed, record = decode_confluent(raw, default_registry())
        return "confluent", parsed, [record]
    if raw[:2] == SINGLE_OBJECT_MAGIC:
        from broker.ingest.decode import SINGLE_OBJECT_SCHEMAS

        parsed, record = decode_single_object(raw, SINGLE_OBJECT_SCHEMAS)
        return "single_object", parsed, [record]
    raise DecodeError("bad_magic", f"jitter needs a container, Confluent or single-object frame (starts {raw[:4]!r})")


def _object_key(record: dict) -> str | None:
    for holder in (record, record.get("diaObject") or {}, record.get("diaSource") or {}):
        for k in ("objectId", "diaObjectId", "alertId", "ssObjectId"):
            v = holder.get(k)
            if v is not None:
                return str(v)
    return None


def _jitter(raw: bytes, rng: np.random.Generator | None, index: int, max_shift_deg: float,
            time_shift_days: float, shift_deg: tuple[float, float] | None = None,
            visit: tuple[int, float] | None = None) -> tuple[bytes, str | None]:
    if shift_deg is not None:
        dra, ddec = shift_deg
    else:
        dra, ddec = rng.uniform(-max_shift_deg, max_shift_deg, size=2) if max_shift_deg > 0 else (0.0, 0.0)
    return _move(raw, float(dra), float(ddec), float(time_shift_days), index, visit)


#: (record key of the trigger, its id field, its time field) per survey packet shape.
_TRIGGERS = (("candidate", "candid", "jd"), ("diaSource", "diaSourceId", "midpointMjdTai"),
             ("diaSource", "diaSourceId", "midPointTai"))


def _revisit(rec: dict, index: int, message: int, days_later: float) -> None:
    """Make ``rec`` (already the copy ``index`` of its packet) a later visit of that same object.

    The trigger gets the id message number ``message`` would have had as its own object, and its
    time moves ``days_later``; the object id, the position and every history row stay those of
    copy ``index``, as a survey's next alert of one object repeats the history it already sent.
    """
    if message == index:
        return
    step = (message - index) * _ID_STEP
    for holder_key, id_key, time_key in _TRIGGERS:
        holder = rec.get(holder_key)
        if not isinstance(holder, dict) or not isinstance(holder.get(id_key), int):
            continue
        holder[id_key] = (holder[id_key] + step) % _ID_MOD
        if isinstance(holder.get(time_key), float):
            holder[time_key] += days_later
        break
    for top in ("candid", "alertId"):  # the packet's own copy of the trigger id
        if isinstance(rec.get(top), int):
            rec[top] = (rec[top] + step) % _ID_MOD


def move_packet(raw: bytes, *, dra: float, ddec: float, dt_days: float, index: int) -> bytes:
    """A copy of a real packet moved by exactly (``dra``, ``ddec``) degrees and ``dt_days``, ids rewritten per ``index``.

    What :func:`jitter_packet` does with a chosen rather than a random shift: for tests and demos
    that must put real packets at given places and times (inside a credible region, in an event's
    time window).
    """
    return _move(raw, dra, ddec, dt_days, index)[0]


def _move(raw: bytes, dra: float, ddec: float, dt: float, index: int,
          visit: tuple[int, float] | None = None) -> tuple[bytes, str | None]:
    framing, ctx, records = _decode_any(raw)
    for rec in records:
        _jitter_record(rec, dra, ddec, dt, index)
        if visit is not None:
            _revisit(rec, index, *visit)
    if framing == "container":
        parsed = ctx.schema.parsed
        out = container_from_bodies(raw[: ctx.data_start], ctx.sync, [encode_schemaless(r, parsed) for r in records], ctx.codec)
    else:
        prefix = raw[:5] if framing == "confluent" else raw[:10]
        out = prefix + encode_schemaless(records[0], ctx)
    return out, (_object_key(records[0]) if records else None)


def jitter_packet(raw: bytes, *, rng: np.random.Generator | None = None, index: int, max_shift_deg: float = 0.0,
                  time_shift_days: float = 0.0, shift_deg: tuple[float, float] | None = None) -> bytes:
    """A copy of a real packet that is a different object: ids unique per ``index``, moved, re-timed.

    One (dRA, dDec) — ``shift_deg`` when given (the same for every packet of one copied source, so a
    long-lived source is copied whole), else drawn from ``rng`` uniform in ±``max_shift_deg`` —
    moves the trigger and every history row alike, so the copy stays one locus; RA wraps into
    [0, 360) and dec reflects at the poles. Every JD/MJD field moves by ``time_shift_days``. Ids (``candid``,
    ``diaSourceId``, ``objectId``/``diaObjectId`` ...) go through a per-``index`` bijection, so a
    history row keeps pointing at the copy of its own detection. The bytes are re-encoded with the
    input's own framing and writer schema; every other value is the real one.
    """
    return _jitter(raw, rng, index, max_shift_deg, time_shift_days, shift_deg)[0]


@dataclass
class ReplayStats:
    messages: int = 0
    bytes: int = 0
    seconds: float = 0.0
    jittered: int = 0
    #: messages whose bytes do not decode: sent unchanged (unkeyed), as a real stream would carry them.
    undecodable: int = 0
    inputs: int = 0

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"messages": self.messages, "bytes": self.bytes, "seconds": round(self.seconds, 3),
                "msgs_per_s": round(self.msgs_per_s, 1), "jittered": self.jittered,
                "undecodable": self.undecodable, "inputs": self.inputs}


class TokenBucket:
    """Rate limiter whose average rate is exact and that sleeps at most ~50 times a second at any rate."""

    def __init__(self, rate: float, clock=time.monotonic, sleep=time.sleep) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0 messages/s, got {rate}")
        self.rate = float(rate)
        self.capacity = max(1.0, self.rate / 50.0)
        self.tokens = self.capacity
        self._clock, self._sleep = clock, sleep
        self._last = clock()

    def take(self, n: float = 1.0) -> None:
        """Spend ``n`` tokens; run up a debt of one bucket, then sleep it off in one go."""
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate) - n
        self._last = now
        if self.tokens <= -self.capacity:
            self._sleep(-self.tokens / self.rate)
            now = self._clock()
            self.tokens += (now - self._last) * self.rate
            self._last = now


def read_packets(paths: Iterable[str | Path], notices: bool = False) -> list[bytes]:
    """Every message under ``paths``: one per ``.avro`` file, all of each ``.avro-stream`` file.

    With ``notices``, folders are searched for notice files instead (``.json``, ``.xml``, ``.avro``;
    JSON Schemas, ``*.schema.json``, left out). Files named directly are always read, whatever their name.
    """
    if not notices:
        return [m.value for m in FileSource(paths)]
    from broker.adapters.streams.files import NOTICE_SUFFIXES

    paths = list(paths)
    named = [p for p in paths if not Path(p).is_dir()]
    found = [p for p in FileSource([p for p in paths if Path(p).is_dir()], suffixes=NOTICE_SUFFIXES).files
             if not p.name.endswith(".schema.json")]
    return [m.value for m in FileSource([*named, *found])]


def _plain_key(raw: bytes) -> str | None:
    from broker.ingest.decode import decode_message

    try:
        packets = decode_message(raw)
    except DecodeError:
        return None
    return packets[0].trigger.object_id if packets else None


def _notice_key(raw: bytes) -> str | None:
    """A notice's event id (keys its messages, so one event's revisions stay in one partition, in order)."""
    from broker.multimessenger.parse import notice_event_id

    return notice_event_id(raw)


def replay(
    paths: Iterable[str | Path],
    *,
    topic: str,
    bootstrap: str | None = None,
    rate: float | None = None,
    count: int | None = None,
    jitter: bool = False,
    seed: int = 0,
    sink: Sink | None = None,
    progress: bool = True,
    max_shift_deg: float = 1.0,
    days_per_pass: float = 1.0,
    notices: bool = False,
    visits: int = 1,
    days_per_visit: float = 2.0,
) -> ReplayStats:
    """Produce the packets under ``paths`` to ``topic``; cycle until ``count`` (default: each once).

    With ``jitter`` every message is :func:`jitter_packet` of its input with ``index`` = message
    number (so each message is a new object), a position shift drawn from ``seed``, and times
    moved by ``days_per_pass`` per completed pass over the inputs. Messages are keyed by object
    id. With ``visits`` > 1 (and ``jitter``) the ``count`` messages are ``visits`` passes over
    ``ceil(count / visits)`` objects: each object's later messages keep its position, object id
    and history, and carry a new trigger ``days_per_visit`` later per visit, as a survey's
    stream revisits the objects it found (a broker stores each history row once, on the first). Without ``sink`` a :class:`~broker.adapters.streams.kafka.KafkaSink` to ``bootstrap`` is used and
    the topic created if missing.
    """
    packets = read_packets(paths, notices=notices)
    stats = ReplayStats(inputs=len(packets))
    if not packets:
        raise ValueError(f"no {'notices' if notices else 'alert packets'} found under the given paths")
    if jitter and notices:
        from broker.errors import UserError

        raise UserError("notices are replayed as they are: --jitter applies to alert packets only")
    total = len(packets) if count is None else int(count)
    owned = sink is None
    if owned:
        if not bootstrap:
            raise ValueError("replay needs a Kafka bootstrap address or a sink")
        from broker.adapters.streams.kafka import KafkaSink, ensure_topics

        ensure_topics(bootstrap, [topic])
        sink = KafkaSink(bootstrap)
    rng = np.random.default_rng(seed)
    bucket = TokenBucket(rate) if rate else None
    keys: dict[int, str | None] = {}
    from tqdm import tqdm

    bar = tqdm(total=total, unit="msg", file=sys.stderr, disable=not progress or not sys.stderr.isatty())
    t0 = time.perf_counter()
    if visits < 1:
        raise ValueError(f"visits must be at least 1, got {visits}")
    objects = -(-total // visits) if jitter else total
    shifts = (rng.uniform(-max_shift_deg, max_shift_deg, size=(objects, 2)) if jitter and max_shift_deg > 0
              else np.zeros((max(objects, 0), 2)))  # one draw per object, in the order single visits drew them
    try:
        for n in range(total):
            obj, visit = n % objects, n // objects
            src = obj % len(packets)
            raw = packets[src]
            key: str | None
            if jitter:
                try:
                    value, key = _jitter(raw, None, obj, max_shift_deg, (obj // len(packets)) * days_per_pass,
                                         shift_deg=(float(shifts[obj, 0]), float(shifts[obj, 1])),
                                         visit=(n, visit * days_per_visit) if visit else None)
                    stats.jittered += 1
                except DecodeError:
                    value, key = raw, None
                    stats.undecodable += 1
            else:
                if src not in keys:
                    keys[src] = _plain_key(raw) or (_notice_key(raw) if notices or raw[:1] in (b"{", b"<") else None)
                value, key = raw, keys[src]
                if key is None:
                    stats.undecodable += 1
            if bucket is not None:
                bucket.take()
            sink.publish(topic, key.encode() if key else None, value)
            stats.messages += 1
            stats.bytes += len(value)
            bar.update(1)
        sink.flush()
    finally:
        stats.seconds = time.perf_counter() - t0
        bar.close()
        if owned:
            sink.close()
    return stats
