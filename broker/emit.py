"""Outgoing locus messages: each one a complete Avro object container file holding one record.

Why a container file per message (the wire format of ``docs/subscribing.md``): the writer schema
(``schemas/albireo/locus/<version>/locus.avsc``) travels in the header, so a consumer holding only
an Avro library reads a message with ``fastavro.reader(io.BytesIO(msg.value()))`` — no schema
registry, no schema file, no Albireo code. It is what ZTF itself ships, one packet per message.
The header is built once per schema (same sync marker every message); a message is that header
plus one block, so emitting costs one schemaless encode per locus.

:func:`decode_locus_message` also reads the single-object frames (``C3 01`` + fingerprint) that
versions before this one wrote, so old stream files still decode.

A stream can instead (or also) be published in ANTARES's format for antares-client
(:mod:`broker.emit_antares`); :class:`StreamRouter` says which, per stream (``[streams]``).
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import fastavro

import broker
from broker.alert import Alert
from broker.ingest.framing import SINGLE_OBJECT_MAGIC, decode_single_object, encode_schemaless, zigzag
from broker.ingest.registries import SingleObjectRegistry
from broker.jsonutil import dumps
from broker.locus import Locus

SCHEMA_ROOT = Path(__file__).resolve().parent.parent / "schemas"
LOCUS_SCHEMA_VERSION = "1"


@cache
def locus_schema(version: str = LOCUS_SCHEMA_VERSION) -> dict:
    path = SCHEMA_ROOT / "albireo" / "locus" / version / "locus.avsc"
    return fastavro.parse_schema(json.loads(path.read_text()))


@lru_cache(maxsize=1)
def locus_registry() -> SingleObjectRegistry:
    """Every locus schema version we ever wrote, by fingerprint."""
    reg = SingleObjectRegistry()
    for d in sorted((SCHEMA_ROOT / "albireo" / "locus").iterdir()):
        reg.register(locus_schema(d.name))
    return reg


def _scalar(v: Any) -> Any:
    """A map value the Avro union accepts: null, bool, long, double, string (else JSON)."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return v if -(2**63) <= v < 2**63 else str(v)
    if isinstance(v, float):
        return v
    if hasattr(v, "item"):  # numpy scalar
        return _scalar(v.item())
    if isinstance(v, bytes):
        return None
    try:
        return dumps(v)
    except Exception:  # a value no JSON can carry (a filter's mistake): its type, never a failed batch
        return f"<unserialisable {type(v).__name__}>"


def _provenance(locus: Locus) -> dict[str, dict[str, str]]:
    """The provenance map, skipping entries that are not provenance records (they cannot fail the emit)."""
    out = {}
    for k, p in locus.provenance.items():
        try:
            out[str(k)] = {"filter": str(p.filter), "revision": str(p.revision),
                           "pipeline_version": str(p.pipeline_version)}
        except AttributeError:
            continue
    return out


def _opt(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def _alert_record(a: Alert, with_properties: bool) -> dict[str, Any]:
    rec = {
        "alert_id": a.alert_id,
        "survey": int(a.survey),
        "mjd": float(a.mjd),
        "passband": a.passband or "",
        "mag": _opt(a.mag),
        "magerr": _opt(a.magerr),
        "maglim": _opt(a.maglim),
    }
    if with_properties:
        rec["ra"] = _opt(a.ra)
        rec["dec"] = _opt(a.dec)
        rec["properties"] = {k: _scalar(v) for k, v in a.properties.items()}
    return rec


def _object_id(row: dict) -> str | None:
    for key in ("id", "name", "object_id", "source_id", "designation", "Objid"):
        if row.get(key) is not None:
            return str(row[key])
    return None


def locus_message(locus: Locus, stream: str) -> dict[str, Any]:
    """The record published to ``stream`` for ``locus``."""
    matches = []
    for cat, rows in sorted(locus.catalog_objects.items()):
        for row in rows:
            dist = row.get("match_distance_arcsec")
            matches.append(
                {"catalog": cat, "object_id": _object_id(row), "distance_arcsec": _opt(dist), "row_json": dumps(row)}
            )
    return {
        "schema_version": LOCUS_SCHEMA_VERSION,
        "locus_id": locus.locus_id,
        "ra": float(locus.ra),
        "dec": float(locus.dec),
        "stream": stream,
        "tags": sorted(locus.user_tags),
        "properties": {str(k): _scalar(v) for k, v in locus.properties.items()},
        "provenance": _provenance(locus),
        "catalog_matches": matches,
        "alert": _alert_record(locus.alerts[-1], True),
        "lightcurve": [_alert_record(a, False) for a in locus.alerts],
        "pipeline_version": broker.__version__,
        "processed_at": int(time.time() * 1000),
    }


#: what every Avro object container file starts with.
CONTAINER_MAGIC = b"Obj\x01"
#: the container header's sync marker: fixed, so every message of a schema shares one header.
_SYNC = b"albireo.locus.v1"


@cache
def _container_header(version: str = LOCUS_SCHEMA_VERSION) -> bytes:
    """The container header (magic, schema, codec ``null``, sync marker) every message of ``version`` starts with."""
    buf = io.BytesIO()
    fastavro.writer(buf, locus_schema(version), [], codec="null", sync_marker=_SYNC,
                    metadata={"albireo.locus_schema_version": version})
    return buf.getvalue()


def encode_container(record: dict[str, Any], version: str = LOCUS_SCHEMA_VERSION) -> bytes:
    """One locus record as a complete one-record Avro container file (the stream wire format)."""
    body = encode_schemaless(record, locus_schema(version))
    return _container_header(version) + zigzag(1) + zigzag(len(body)) + body + _SYNC


def encode_locus(locus: Locus, stream: str) -> bytes:
    return encode_container(locus_message(locus, stream))


def decode_locus_message(raw: bytes) -> dict[str, Any]:
    """Decode one output message: a one-record container file, or a legacy single-object frame."""
    if raw[:4] == CONTAINER_MAGIC:
        records = list(fastavro.reader(io.BytesIO(raw)))
        if len(records) != 1:
            raise ValueError(f"a locus message holds one record, this one {len(records)}")
        return records[0]
    if raw[:2] == SINGLE_OBJECT_MAGIC:
        _, record = decode_single_object(raw, locus_registry())
        return record
    raise ValueError(f"not a locus message: starts {raw[:4]!r} (expected an Avro container file)")


#: what a stream can be published as (``[streams] formats``).
FORMATS = ("albireo", "antares", "both")


@dataclass(frozen=True)
class StreamRouter:
    """Which topics a tagged stream goes to, and in which encoding (``[streams]`` of the configuration).

    ``albireo``: our Avro on ``<output_prefix><stream>`` (the default); ``antares``: ANTARES's
    zlib-compressed BSON on ``<antares_prefix><stream>`` (``client.<stream>``, what
    antares-client subscribes to); ``both``: one message on each.
    """

    output_prefix: str = "albireo.loci."
    antares_prefix: str = "client."
    formats: Mapping[str, str] = field(default_factory=dict)
    default_format: str = "albireo"

    def format_of(self, stream: str) -> str:
        return self.formats.get(stream, self.default_format)

    def topics(self, stream: str) -> list[str]:
        """Every topic ``stream`` can appear on, whatever its format now (a read grant covers them all)."""
        return [self.output_prefix + stream, self.antares_prefix + stream]

    def messages(self, locus: Locus, stream: str) -> list[tuple[str, bytes]]:
        """``(topic, value)`` of each message that publishes ``locus`` on ``stream``."""
        fmt = self.format_of(stream)
        out = []
        if fmt in ("albireo", "both"):
            out.append((self.output_prefix + stream, encode_locus(locus, stream)))
        if fmt in ("antares", "both"):
            from broker.emit_antares import encode_antares

            out.append((self.antares_prefix + stream, encode_antares(locus)))
        return out
