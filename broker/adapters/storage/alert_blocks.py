"""A locus's new alerts stored as one value (a *block*): the Cassandra store's light-curve rows.

Why blocks: a fresh ZTF packet brings about 77 alerts (its candidate and 30 days of history),
each with ~100 properties. Kept as one Cassandra row of 13 cells per alert, a batch of 1,000
packets was ~77,000 rows: binding them cost the worker about 5 s, and the server spent as much
CPU writing them as the worker spent on the whole pipeline. A block is one row with one JSON
value per locus and batch, so the same batch is ~1,000 rows; a light curve is read back as a
handful of blocks instead of hundreds of rows (the driver's per-row decoding was slow too).

The value is UTF-8 JSON, compressed as a zlib stream (RFC 1950, level 1)::

    {"format": 1, "columns": ["alert_id", "mjd", ...], "rows": [[...], ...]}

self-describing, so any tool with zlib can read it (a value that starts with ``{`` is read as
uncompressed JSON). ``properties`` is the last column, written by
:func:`broker.jsonutil.dumps_flat` (NaN and infinity kept). Compression: about 1 KB of JSON per
ZTF alert shrinks 5×, at ~165 MB/s on the worker, and every byte saved is one the server does
not write to its commit log, memtable and SSTables. A block never holds more than
:data:`MAX_BLOCK_BYTES` of JSON (a locus with a very long new history gets several), well under
Cassandra's mutation limit, and which also bounds what reading one inflates.

**Each alert once.** A block's id is derived from its alert ids, so a replayed batch rewrites
the same cells. A replay that groups the alerts differently (another batch boundary after a
crash, before the "stored" marks were written) writes a second block holding some of the same
alerts: :func:`decode_blocks` keeps one of each (the triggering version over a history copy,
which carries fewer fields), in (mjd, alert id) order, the order the per-alert rows had.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from broker.adapters.storage.common import alert_from_row
from broker.alert import Alert
from broker.jsonutil import dumps, dumps_flat, loads

BLOCK_FORMAT = 1
#: a block's JSON is split before it passes this many bytes (Cassandra refuses mutations over
#: half its commit-log segment, 16 MiB by default; its frames are 16 MiB too).
MAX_BLOCK_BYTES = 1 << 20
#: the columns of a block's rows, in order (the alert's locus is the row's partition key).
COLUMNS = ("alert_id", "mjd", "survey", "ra", "dec", "passband", "mag", "magerr", "maglim", "object_id",
           "is_history", "properties")
_HEAD = {"format": BLOCK_FORMAT, "columns": list(COLUMNS)}


def _num(x: Any) -> float | None:
    return None if x is None else float(x)


def _row(a: Alert) -> Any:
    """One alert as a JSON array; its properties spliced in as text already written."""
    props = dumps_flat(a.properties)
    numbers = (float(a.mjd), _num(a.ra), _num(a.dec), _num(a.mag), _num(a.magerr), _num(a.maglim))
    scalars = [a.alert_id, numbers[0], int(a.survey), numbers[1], numbers[2], a.passband or "", numbers[3],
               numbers[4], numbers[5], a.object_id, bool(a.is_history)]
    if math.inf not in numbers and -math.inf not in numbers:  # a C loop of == (NaN and None equal neither)
        scalars.append(orjson.Fragment(props))  # orjson writes a NaN as null: read back as NaN/None, as before
        return scalars
    # an infinity, which orjson would write as null: this row goes through json, which keeps it
    # (a NaN column still becomes null, as it does on the fast path)
    text = dumps([None if isinstance(v, float) and math.isnan(v) else v for v in scalars])
    return orjson.Fragment(f"{text[:-1]},{props}]")


def block_id(alerts: Sequence[Alert]) -> str:
    """Derived from the alerts it holds: the same alerts always make the same id (replays rewrite it)."""
    first = min(float(a.mjd) for a in alerts)
    digest = hashlib.blake2b("\n".join(sorted(a.alert_id for a in alerts)).encode(), digest_size=12).hexdigest()
    return f"{first:013.6f}-{digest}"


def encode_blocks(alerts: Sequence[Alert], max_bytes: int = MAX_BLOCK_BYTES) -> list[tuple[str, list[str], bytes]]:
    """(block id, its alert ids, JSON bytes) for ``alerts`` (of one locus), each block under ``max_bytes``."""
    if not alerts:
        return []
    ordered = sorted(alerts, key=lambda a: (float(a.mjd), a.alert_id))
    rows = [_row(a) for a in ordered]
    texts = [orjson.dumps(r) for r in rows]
    out: list[tuple[str, list[str], bytes]] = []
    start, size = 0, 0
    for i, t in enumerate(texts):
        if i > start and size + len(t) > max_bytes:
            out.append(_block(ordered[start:i], texts[start:i]))
            start, size = i, 0
        size += len(t) + 1
    out.append(_block(ordered[start:], texts[start:]))
    return out


def _block(alerts: Sequence[Alert], texts: list[bytes]) -> tuple[str, list[str], bytes]:
    body = orjson.dumps({**_HEAD, "rows": [orjson.Fragment(t) for t in texts]})
    return block_id(alerts), [a.alert_id for a in alerts], zlib.compress(body, 1)


def block_json(blob: bytes | str) -> bytes | str:
    """A stored block's JSON text (inflated, unless it was stored uncompressed)."""
    if isinstance(blob, str) or blob[:1] == b"{":
        return blob
    inflater = zlib.decompressobj()
    text = inflater.decompress(blob, 2 * MAX_BLOCK_BYTES)
    if inflater.unconsumed_tail:
        raise ValueError(f"an alert block inflates past {2 * MAX_BLOCK_BYTES} bytes (blocks are written under "
                         f"{MAX_BLOCK_BYTES})")
    return text


def decode_blocks(locus_id: str, blocks: Iterable[bytes | str]) -> list[Alert]:
    """The alerts of a locus's blocks, each alert once, in (mjd, alert id) order."""
    best: dict[str, dict[str, Any]] = {}
    for blob in blocks:
        doc = loads(block_json(bytes(blob) if isinstance(blob, memoryview) else blob))
        if not isinstance(doc, dict) or doc.get("format") != BLOCK_FORMAT:
            raise ValueError(f"locus {locus_id}: alert block format {doc.get('format') if isinstance(doc, dict) else doc!r} "
                             f"is not {BLOCK_FORMAT} (written by a newer broker?)")
        cols = doc["columns"]
        for values in doc["rows"]:
            row = dict(zip(cols, values, strict=True))
            kept = best.get(row["alert_id"])
            if kept is None or (kept["is_history"] and not row["is_history"]):
                best[row["alert_id"]] = row
    out = []
    for row in best.values():
        row["locus_id"] = locus_id
        if row["mjd"] is None:  # a NaN time, written as null
            row["mjd"] = math.nan
        out.append(alert_from_row(row))
    out.sort(key=lambda a: (a.mjd, a.alert_id))
    return out


__all__ = ["BLOCK_FORMAT", "COLUMNS", "MAX_BLOCK_BYTES", "block_id", "block_json", "decode_blocks", "encode_blocks"]
