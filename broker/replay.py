"""Replay real alert packets into Kafka (or any sink): the demo stream and the load generator.

Why re-encode instead of shipping packet files: the only large real ZTF light curve that
installs with ``pip`` is antares-devkit's locus ``ANT202037lq`` (3,552 detections and 407 upper
limits of ZTF18aauseln/aauselm/adjrdnb, 2018-2024). :func:`devkit_ztf_packets` turns it back into
genuine ZTF 3.2 alert packets, written with the schema extracted from a real ZTF packet
(``schemas/ztf/3.2/alert.avsc``; ``schemas/ztf/README.md`` says why not 3.5), so the demo works on
a machine without ``/work/shared``.

Why jitter instead of inventing packets: load tests need many distinct objects, and the only
honest way to get them is to copy real packets and change what must be unique (ids), plus where
and when they are (a consistent shift of the whole packet), leaving every measured value real.

How the devkit fields are filled (``devkit_ztf_packets``):

* ``candidate``: the alert's ``ztf_*`` properties, un-prefixed. Schema fields the devkit alert
  lacks are null when nullable; otherwise ``ndethist`` = locus detections so far (inclusive),
  ``ncovhist`` = locus alerts so far (inclusive), other ints/longs 0, floats/doubles NaN
  (``jdstartref``, ``ranr`` ...), strings ``""`` (``rbversion``/``drbversion``).
* ``prv_candidates``: the locus's earlier detections within 30 days (ZTF's window) and the upper
  limits of the same ZTF object in that window (an upper limit's id embeds its object, so an
  upper limit of another object would come back under a wrong id).
* ``objectId``: the alert's own ``ztf_object_id`` when ANTARES stored one (1,343 of 3,552);
  otherwise the object of the nearest alert in time whose object is known (own property or
  the object embedded in an upper-limit id), ties going to the object with the most detections
  that name it. ``schemavsn`` is ``3.2``, ``publisher`` ZTF's own string, cutouts null.
* Dropped: ``drb``/``drbversion`` (379 alerts; not in schema 3.2) and ANTARES's own ``ant_*``.
"""

from __future__ import annotations

import bisect
import io
import json
import math
import os
import re
import struct
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro
import numpy as np

from broker.avro import (
    CONFLUENT_MAGIC,
    CONTAINER_MAGIC,
    SINGLE_OBJECT_MAGIC,
    DecodeError,
    decode_confluent,
    decode_single_object,
    encode_schemaless,
    iter_container,
    read_container_header,
)
from broker.streams.base import Sink
from broker.streams.files import STREAM_SUFFIX, expand_paths, iter_stream_file

REPO_ROOT = Path(__file__).resolve().parent.parent
ZTF_SCHEMA_VERSION = "3.2"
ZTF_PUBLISHER = "ZTF (www.ztf.caltech.edu)"
#: ZTF puts a detection's previous 30 days of history in each packet.
HISTORY_DAYS = 30.0
#: bump when the demo stream's content changes, so a cached file is rebuilt.
DEMO_STREAM_VERSION = 1
#: a.k.a. 2**62: rewritten numeric ids stay positive Avro longs.
_ID_MOD = 1 << 62
#: odd, so ``id + k * _ID_STEP (mod 2**62)`` is a different id for every k < 2**62.
_ID_STEP = 0x2F6A_3C4D_9B1E_5A77
#: ZTF object ids are ``ZTF`` + 2-digit year + 7 lower-case letters; the step is coprime to 26.
_ZTF_OID = re.compile(r"^(ZTF\d\d)([a-z]{7})$")
_OID_MOD = 26**7
_OID_STEP = 3_093_215_027  # odd and not a multiple of 13

# --------------------------------------------------------------------------- ZTF schema


def ztf_schema_path(version: str = ZTF_SCHEMA_VERSION) -> Path:
    return REPO_ROOT / "schemas" / "ztf" / version / "alert.avsc"


@lru_cache(maxsize=4)
def ztf_schema(version: str = ZTF_SCHEMA_VERSION) -> dict:
    """The parsed ZTF alert schema committed under ``schemas/ztf/<version>/``."""
    path = ztf_schema_path(version)
    if not path.exists():
        raise FileNotFoundError(f"no ZTF alert schema {version} at {path}")
    return fastavro.parse_schema(json.loads(path.read_text()))


@lru_cache(maxsize=4)
def _container_header(version: str) -> tuple[bytes, bytes]:
    """(header bytes, sync marker) of a one-schema container; every packet reuses them.

    Writing the ~20 KB header once and appending one block per packet is what a container file
    is; asking fastavro to write a fresh container per packet costs more than the record itself.
    """
    out = io.BytesIO()
    fastavro.writer(out, ztf_schema(version), [], codec="null")
    header = out.getvalue()
    return header, header[-16:]


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _container(header: bytes, sync: bytes, bodies: list[bytes], codec: str = "null") -> bytes:
    data = b"".join(bodies)
    if codec == "deflate":
        comp = zlib.compressobj(6, zlib.DEFLATED, -15)
        data = comp.compress(data) + comp.flush()
    return b"".join((header, _zigzag(len(bodies)), _zigzag(len(data)), data, sync))


def _record_fields(parsed: dict, path: tuple[str, ...]) -> list[dict]:
    """Fields of the record reached by ``path`` (field names; arrays/unions are looked through)."""
    node: Any = parsed
    for name in path:
        node = next(f["type"] for f in node["fields"] if f["name"] == name)
        while not (isinstance(node, dict) and node.get("type") == "record"):
            if isinstance(node, list):
                node = next(t for t in node if t != "null")
            elif isinstance(node, dict) and node.get("type") == "array":
                node = node["items"]
            else:
                raise ValueError(f"schema path {path} does not end in a record")
    return node["fields"]


def _default_for(ftype: Any) -> Any:
    """Value for a schema field the devkit alert lacks (see the module docstring)."""
    if isinstance(ftype, list):
        if "null" in ftype:
            return None
        ftype = ftype[0]
    if ftype in ("int", "long"):
        return 0
    if ftype in ("float", "double"):
        return math.nan
    if ftype == "string":
        return ""
    if ftype == "boolean":
        return False
    raise ValueError(f"no default for non-nullable schema type {ftype!r}")


# --------------------------------------------------------------------------- devkit → ZTF packets


def _upper_limit_object(alert_id: str) -> str:
    """``ztf_upper_limit:ZTF18aauselm-512350896115`` → ``ZTF18aauselm``."""
    return alert_id.split(":", 1)[1].rsplit("-", 1)[0]


def assign_object_ids(alerts: list[dict]) -> list[str | None]:
    """ZTF object id per devkit alert (time-ordered list); see the module docstring for the rule."""
    known: list[str | None] = []
    for a in alerts:
        if a["id"].startswith("ztf_upper_limit:"):
            known.append(_upper_limit_object(a["id"]))
        else:
            known.append(a["properties"].get("ztf_object_id"))
    named_detections = Counter(o for a, o in zip(alerts, known, strict=True)
                               if o and a["id"].startswith("ztf_candidate:"))
    mjd = np.array([a["mjd"] for a in alerts], dtype=float)
    idx = np.flatnonzero([o is not None for o in known])
    if idx.size == 0:
        return known
    kmjd = mjd[idx]
    out = list(known)
    for i in np.flatnonzero([o is None for o in known]):
        pos = int(np.searchsorted(kmjd, mjd[i]))
        best = min(abs(kmjd[j] - mjd[i]) for j in (pos - 1, pos) if 0 <= j < idx.size)
        near: set[str] = set()
        for t in (mjd[i] - best, mjd[i] + best):  # several objects share an exposure's mjd
            a, b = np.searchsorted(kmjd, t - 1e-9), np.searchsorted(kmjd, t + 1e-9, side="right")
            near.update(known[idx[j]] for j in range(a, b))
        out[i] = max(sorted(near), key=lambda o: named_detections.get(o, 0))
    return out


def _row(props: dict[str, Any], fields: list[dict]) -> dict[str, Any]:
    row = {}
    for f in fields:
        v = props.get("ztf_" + f["name"])
        row[f["name"]] = _default_for(f["type"]) if v is None else v
    return row


def _enc_str(v: str) -> bytes:
    b = v.encode("utf-8")
    return _zigzag(len(b)) + b


class _ZtfAlertWriter:
    """Assembles ZTF alert bodies from pre-encoded history rows.

    Why by hand: a packet's 30-day history repeats in the next packets, and fastavro spends
    ~90% of a packet re-checking the union types of those same rows. Avro arrays are just a
    count plus the items' bytes, so each row is encoded once and packets concatenate them.
    The tests compare the result with fastavro's own encoding byte for byte.
    """

    TOP = ("schemavsn", "publisher", "objectId", "candid", "candidate", "prv_candidates",
           "cutoutScience", "cutoutTemplate", "cutoutDifference")

    def __init__(self, version: str) -> None:
        raw = json.loads(ztf_schema_path(version).read_text())
        names = [f["name"] for f in raw["fields"]]
        if tuple(names) != self.TOP:
            raise ValueError(f"ZTF schema {version}: unexpected top-level fields {names}")
        types = {f["name"]: f["type"] for f in raw["fields"]}
        self.candidate = fastavro.parse_schema(types["candidate"])
        prv_union = types["prv_candidates"]
        self.prv_array = _zigzag(next(i for i, t in enumerate(prv_union) if t != "null"))
        self.prv_null = _zigzag(prv_union.index("null"))
        prv_items = next(t for t in prv_union if t != "null")["items"]
        self.prv = fastavro.parse_schema(prv_items)
        self.cutouts_null = b"".join(_zigzag(types[c].index("null")) for c in self.TOP[6:])

    def body(self, schemavsn: str, publisher: str, object_id: str, candid: int, candidate: dict,
             history: list[bytes]) -> bytes:
        parts = [_enc_str(schemavsn), _enc_str(publisher), _enc_str(object_id), _zigzag(candid),
                 encode_schemaless(candidate, self.candidate)]
        if history:
            parts += [self.prv_array, _zigzag(len(history)), *history, b"\x00"]
        else:
            parts.append(self.prv_null)
        parts.append(self.cutouts_null)
        return b"".join(parts)


def devkit_ztf_packets(locus: dict | None = None, limit: int | None = None) -> Iterator[bytes]:
    """The devkit locus's detections as real-schema ZTF alert packets, oldest first.

    Each packet decodes (:func:`broker.decode.decode_message`) to the same ``ant_*`` values and
    ``ztf_candidate:<candid>`` id as the devkit alert it was made from.
    """
    if locus is None:
        from broker.samples import devkit_locus

        locus = devkit_locus()
    parsed = ztf_schema()
    writer = _ZtfAlertWriter(ZTF_SCHEMA_VERSION)
    header, sync = _container_header(ZTF_SCHEMA_VERSION)
    cand_fields = _record_fields(parsed, ("candidate",))
    prv_fields = _record_fields(parsed, ("prv_candidates",))
    cand_names = {f["name"] for f in cand_fields}

    alerts = sorted((a for a in locus["alerts"] if a["id"].startswith(("ztf_candidate:", "ztf_upper_limit:"))),
                    key=lambda a: a["mjd"])
    oids = assign_object_ids(alerts)
    is_det = [a["id"].startswith("ztf_candidate:") for a in alerts]
    mjds = [a["mjd"] for a in alerts]
    prv_bodies: list[bytes | None] = [None] * len(alerts)  # encoded on first use

    produced = 0
    n_det = 0
    for i, a in enumerate(alerts):
        if not is_det[i]:
            continue
        n_det += 1
        if limit is not None and produced >= limit:
            return
        props = a["properties"]
        cand = _row(props, cand_fields)
        if "ztf_ndethist" not in props and "ndethist" in cand_names:
            cand["ndethist"] = n_det
        if "ztf_ncovhist" not in props and "ncovhist" in cand_names:
            cand["ncovhist"] = i + 1
        oid = oids[i] or ""
        start = bisect.bisect_right(mjds, mjds[i] - HISTORY_DAYS, 0, i)
        history = []
        for j in range(start, i):
            if mjds[j] < mjds[i] and (is_det[j] or oids[j] == oid):
                if prv_bodies[j] is None:
                    row = _row(alerts[j]["properties"], prv_fields)
                    if not is_det[j]:  # no candid: how ZTF (and our decoder) marks an upper limit
                        row["candid"] = None
                    prv_bodies[j] = encode_schemaless(row, writer.prv)
                history.append(prv_bodies[j])
        body = writer.body(ZTF_SCHEMA_VERSION, ZTF_PUBLISHER, oid, cand["candid"], cand, history)
        yield _container(header, sync, [body])
        produced += 1


# --------------------------------------------------------------------------- stream files


def write_stream_file(packets: Iterable[bytes], path: str | Path) -> int:
    """Write packets as a length-prefixed ``.avro-stream`` file (what FileSource reads); returns the count."""
    n = 0
    with open(path, "wb") as fh:
        for p in packets:
            fh.write(struct.pack(">I", len(p)))
            fh.write(p)
            n += 1
    return n


def ensure_demo_ztf_stream(cache_dir: str | Path) -> Path:
    """The devkit ZTF stream file under ``cache_dir``, written once (atomic rename) and reused."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"devkit-ANT202037lq-ztf{ZTF_SCHEMA_VERSION}-v{DEMO_STREAM_VERSION}{STREAM_SUFFIX}"
    if path.exists():
        return path
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".demo-", suffix=".tmp")
    os.close(fd)
    try:
        write_stream_file(devkit_ztf_packets(), tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class StreamFileSink(Sink):
    """Appends every message (any topic) to one ``.avro-stream`` file: ``albireo replay --out FILE``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fh = open(self.path, "ab")  # noqa: SIM115 - closed in close()
        self.count = 0

    def publish(self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str] | None = None) -> None:
        self._fh.write(struct.pack(">I", len(value)))
        self._fh.write(value)
        self.count += 1

    def flush(self, timeout_s: float = 30.0) -> None:
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


# --------------------------------------------------------------------------- jitter

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
        from broker.decode import default_registry

        _, parsed, record = decode_confluent(raw, default_registry())
        return "confluent", parsed, [record]
    if raw[:2] == SINGLE_OBJECT_MAGIC:
        from broker.decode import SINGLE_OBJECT_SCHEMAS

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


def _jitter(raw: bytes, rng: np.random.Generator, index: int, max_shift_deg: float,
            time_shift_days: float) -> tuple[bytes, str | None]:
    framing, ctx, records = _decode_any(raw)
    dra, ddec = rng.uniform(-max_shift_deg, max_shift_deg, size=2) if max_shift_deg > 0 else (0.0, 0.0)
    for rec in records:
        _jitter_record(rec, float(dra), float(ddec), float(time_shift_days), index)
    if framing == "container":
        parsed = ctx.schema.parsed
        out = _container(raw[: ctx.data_start], ctx.sync, [encode_schemaless(r, parsed) for r in records], ctx.codec)
    else:
        prefix = raw[:5] if framing == "confluent" else raw[:10]
        out = prefix + encode_schemaless(records[0], ctx)
    return out, (_object_key(records[0]) if records else None)


def jitter_packet(raw: bytes, *, rng: np.random.Generator, index: int, max_shift_deg: float,
                  time_shift_days: float) -> bytes:
    """A copy of a real packet that is a different object: ids unique per ``index``, moved, re-timed.

    One random (dRA, dDec) drawn from ``rng`` (uniform in ±``max_shift_deg``) moves the trigger
    and every history row alike, so the copy stays one locus; RA wraps into [0, 360) and dec
    reflects at the poles. Every JD/MJD field moves by ``time_shift_days``. Ids (``candid``,
    ``diaSourceId``, ``objectId``/``diaObjectId`` ...) go through a per-``index`` bijection, so a
    history row keeps pointing at the copy of its own detection. The bytes are re-encoded with the
    input's own framing and writer schema; every other value is the real one.
    """
    return _jitter(raw, rng, index, max_shift_deg, time_shift_days)[0]


# --------------------------------------------------------------------------- replay


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


def read_packets(paths: Iterable[str | Path]) -> list[bytes]:
    """Every message under ``paths``: one per ``.avro`` file, all of each ``.avro-stream`` file."""
    out: list[bytes] = []
    for path in expand_paths(paths):
        if path.suffix == STREAM_SUFFIX:
            out.extend(iter_stream_file(path))
        elif path.name.endswith(".gz"):
            import gzip

            out.append(gzip.decompress(path.read_bytes()))
        else:
            out.append(path.read_bytes())
    return out


def _plain_key(raw: bytes) -> str | None:
    from broker.decode import decode_message

    try:
        packets = decode_message(raw)
    except DecodeError:
        return None
    return packets[0].trigger.object_id if packets else None


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
) -> ReplayStats:
    """Produce the packets under ``paths`` to ``topic``; cycle until ``count`` (default: each once).

    With ``jitter`` every message is :func:`jitter_packet` of its input with ``index`` = message
    number (so each message is a new object), a position shift drawn from ``seed``, and times
    moved by ``days_per_pass`` per completed pass over the inputs. Messages are keyed by object
    id. Without ``sink`` a :class:`~broker.streams.kafka.KafkaSink` to ``bootstrap`` is used and
    the topic created if missing.
    """
    packets = read_packets(paths)
    stats = ReplayStats(inputs=len(packets))
    if not packets:
        raise ValueError("no alert packets found under the given paths")
    total = len(packets) if count is None else int(count)
    owned = sink is None
    if owned:
        if not bootstrap:
            raise ValueError("replay needs a Kafka bootstrap address or a sink")
        from broker.streams.kafka import KafkaSink, ensure_topics

        ensure_topics(bootstrap, [topic])
        sink = KafkaSink(bootstrap)
    rng = np.random.default_rng(seed)
    bucket = TokenBucket(rate) if rate else None
    keys: dict[int, str | None] = {}
    from tqdm import tqdm

    bar = tqdm(total=total, unit="msg", file=sys.stderr, disable=not progress or not sys.stderr.isatty())
    t0 = time.perf_counter()
    try:
        for n in range(total):
            src = n % len(packets)
            raw = packets[src]
            key: str | None
            if jitter:
                try:
                    value, key = _jitter(raw, rng, n, max_shift_deg, (n // len(packets)) * days_per_pass)
                    stats.jittered += 1
                except DecodeError:
                    value, key = raw, None
                    stats.undecodable += 1
            else:
                if src not in keys:
                    keys[src] = _plain_key(raw)
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
