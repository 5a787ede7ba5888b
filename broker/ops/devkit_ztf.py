"""The demo's ZTF input: antares-devkit's real locus re-encoded as genuine ZTF alert packets.

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
  that name it. Then every upper limit must reach the stream, as it reached ANTARES: ZTF sends an
  upper limit only in a later packet (≤ 30 days) of the object its id names, so where no such
  packet was named yet, a detection of unknown object in that window takes the upper limit's
  object (see ``_deliver_upper_limits``). All 3,959 alerts of the locus are then in the stream.
  ``schemavsn`` is ``3.2``, ``publisher`` ZTF's own string, cutouts null.
* Dropped: ``drb``/``drbversion`` (379 alerts; not in schema 3.2) and ANTARES's own ``ant_*``.
"""

from __future__ import annotations

import bisect
import io
import json
import math
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro
import numpy as np

from broker.adapters.streams.files import STREAM_SUFFIX, write_stream_file
from broker.ingest.framing import (
    container_from_bodies,
    encode_schemaless,
    zigzag,
)
from broker.ingest.surveys.ztf import SCHEMA_DIR
from broker.ingest.surveys.ztf import ztf_schema as shipped_ztf_schema

ZTF_SCHEMA_VERSION = "3.2"


ZTF_PUBLISHER = "ZTF (www.ztf.caltech.edu)"


#: ZTF puts a detection's previous 30 days of history in each packet.
HISTORY_DAYS = 30.0


#: bump when the demo stream's content changes, so a cached file is rebuilt.
DEMO_STREAM_VERSION = 2


def ztf_schema_path(version: str = ZTF_SCHEMA_VERSION) -> Path:
    return SCHEMA_DIR / version / "alert.avsc"


def ztf_schema(version: str = ZTF_SCHEMA_VERSION) -> dict:
    """The parsed ZTF alert schema committed under ``schemas/ztf/<version>/``."""
    return shipped_ztf_schema(version)


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
    free = [i for i, a in enumerate(alerts) if a["id"].startswith("ztf_candidate:") and known[i] is None]
    return _deliver_upper_limits(alerts, mjd, out, free)


def _delivers(mjd: np.ndarray, det: int, ul: int) -> bool:
    """Does the packet of detection ``det`` carry upper limit ``ul`` in its history (time-wise)?"""
    return mjd[det] - HISTORY_DAYS < mjd[ul] < mjd[det]


def _deliver_upper_limits(alerts: list[dict], mjd: np.ndarray, oids: list[str | None],
                          free: list[int]) -> list[str | None]:
    """Re-name detections of unknown object so that every upper limit reaches the stream.

    ZTF sends an upper limit only in the history of a later packet (within 30 days) of the object
    it names, and ANTARES holds every one of them, so such a packet existed. The nearest-in-time
    rule alone leaves some unsent (the named object had no packet of its own in the window). For
    each such upper limit, in time order, the latest detection in its window whose object the
    devkit does not record takes the upper limit's object — unless that would leave one of its
    old object's upper limits unsent. Deterministic: the same locus gives the same names.
    """
    oids = list(oids)
    uls = [i for i, a in enumerate(alerts) if a["id"].startswith("ztf_upper_limit:")]
    free_sorted = sorted(free, key=lambda i: mjd[i])
    fmjd = mjd[free_sorted]

    det_idx = [i for i, a in enumerate(alerts) if a["id"].startswith("ztf_candidate:")]
    dmjd = mjd[det_idx]

    def sent(ul: int) -> bool:
        lo, hi = np.searchsorted(dmjd, mjd[ul], side="right"), np.searchsorted(dmjd, mjd[ul] + HISTORY_DAYS)
        return any(oids[det_idx[j]] == oids[ul] for j in range(lo, hi))

    def sole_carrier_of(d: int) -> bool:
        """Is ``d`` the only packet that sends one of its own object's upper limits?"""
        lo, hi = np.searchsorted(mjd, mjd[d] - HISTORY_DAYS, side="right"), np.searchsorted(mjd, mjd[d])
        for u in range(lo, hi):
            if alerts[u]["id"].startswith("ztf_upper_limit:") and oids[u] == oids[d] and _delivers(mjd, d, u):
                lo2 = np.searchsorted(dmjd, mjd[u], side="right")
                hi2 = np.searchsorted(dmjd, mjd[u] + HISTORY_DAYS)
                if sum(oids[det_idx[j]] == oids[u] for j in range(lo2, hi2)) == 1:
                    return True
        return False

    for ul in sorted(uls, key=lambda i: mjd[i]):
        if sent(ul):
            continue
        lo = int(np.searchsorted(fmjd, mjd[ul], side="right"))
        hi = int(np.searchsorted(fmjd, mjd[ul] + HISTORY_DAYS))
        for j in range(hi - 1, lo - 1, -1):
            d = free_sorted[j]
            if not _delivers(mjd, d, ul) or sole_carrier_of(d):
                continue
            oids[d] = oids[ul]
            break
    return oids


def _row(props: dict[str, Any], fields: list[dict]) -> dict[str, Any]:
    row = {}
    for f in fields:
        v = props.get("ztf_" + f["name"])
        row[f["name"]] = _default_for(f["type"]) if v is None else v
    return row


def _enc_str(v: str) -> bytes:
    b = v.encode("utf-8")
    return zigzag(len(b)) + b


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
        self.prv_array = zigzag(next(i for i, t in enumerate(prv_union) if t != "null"))
        self.prv_null = zigzag(prv_union.index("null"))
        prv_items = next(t for t in prv_union if t != "null")["items"]
        self.prv = fastavro.parse_schema(prv_items)
        self.cutouts_null = b"".join(zigzag(types[c].index("null")) for c in self.TOP[6:])

    def body(self, schemavsn: str, publisher: str, object_id: str, candid: int, candidate: dict,
             history: list[bytes]) -> bytes:
        parts = [_enc_str(schemavsn), _enc_str(publisher), _enc_str(object_id), zigzag(candid),
                 encode_schemaless(candidate, self.candidate)]
        if history:
            parts += [self.prv_array, zigzag(len(history)), *history, b"\x00"]
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
        from broker.ops.samples import devkit_locus

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
        yield container_from_bodies(header, sync, [body])
        produced += 1


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
