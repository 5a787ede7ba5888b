"""Raw Kafka/file message bytes → normalised :class:`~broker.alert.Packet` objects.

The framing is sniffed from the first bytes, because one Albireo deployment reads ZTF
(container files), Rubin (Confluent wire format) and its own re-published streams
(single-object encoding) through the same code:

* ``Obj\\x01``  → Avro object container file, schema embedded (ZTF, LSST sample files)
* ``0x00``     → Confluent wire format: 4-byte schema id looked up in ``registry``
* ``0xC3 0x01`` → Avro single-object encoding: 8-byte schema fingerprint
* anything else → schemaless body, only if a schema version is configured

The record's own fields then pick the normaliser (:func:`normalizer_for`): a ``candidate`` and
an ``objectId`` make a ZTF alert, a ``diaSource`` a Rubin one, whatever the writer schema is
called — tools that re-serialise real alerts rename it (a Spark job writes ``topLevelRecord``,
other brokers' archives their own names) and add columns, which are kept as properties. The
schema name (``ztf.alert``, ``lsst.vM_m.alert``) is only a hint for a record that looks like
both. A container with a header and no record holds no alert: it decodes to no packet (the
pipeline counts it as empty; it is no dead letter). Everything that goes wrong raises
:class:`DecodeError` with a ``reason`` the worker counts and dead-letters by.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import broker.ingest.framing as framing_mod
from broker.alert import Packet
from broker.ingest.framing import (
    CONTAINER_MAGIC,
    SCHEMA_CACHE,
    SINGLE_OBJECT_MAGIC,
    DecodeError,
    SchemaCache,
    SchemaLookup,
    decode_confluent,
    decode_schemaless,
    decode_single_object,
    read_container,
    schema_full_name,
)
from broker.ingest.registries import LsstSchemaRegistry, SingleObjectRegistry, parse_version, schema_id_for
from broker.ingest.surveys.lsst import looks_like_lsst, normalize_lsst
from broker.ingest.surveys.ztf import looks_like_ztf, normalize_ztf, ztf_schema

__all__ = ["DecodeError", "decode_message", "normalizer_for", "default_registry"]


_LSST_NAME = re.compile(r"^lsst\.v(\d+)_(\d+)\.alert$")


_HINTS = {"container", "ztf", "confluent", "single_object", "schemaless"}


_default_registry: LsstSchemaRegistry | None = None


#: fingerprint → schema for single-object frames; register Albireo's outgoing schemas here.
SINGLE_OBJECT_SCHEMAS = SingleObjectRegistry()


def default_registry() -> LsstSchemaRegistry:
    """The process-wide local registry of Rubin schemas (built on first use)."""
    global _default_registry
    if _default_registry is None:
        _default_registry = LsstSchemaRegistry()
    return _default_registry


def normalizer_for(schema_name: str, record: dict | None = None) -> Callable[[dict, str], Packet]:
    """The normaliser for a decoded record: by its fields, the writer schema's name only a hint.

    Without ``record`` the name alone decides (``ztf.alert``, ``lsst.vM_m.alert``). A record
    that is neither survey's raises DecodeError('unknown_schema') naming the fields it has.
    """
    m = _LSST_NAME.match(schema_name)
    if record is None:
        if schema_name == "ztf.alert":
            return normalize_ztf
        if m:
            return normalize_lsst
        raise DecodeError("unknown_schema", f"no normaliser for schema {schema_name!r}")
    ztf, lsst = looks_like_ztf(record), looks_like_lsst(record)
    if ztf and lsst:  # both shapes in one record: let the name say which
        return normalize_lsst if m else normalize_ztf
    if ztf:
        return normalize_ztf
    if lsst:
        return normalize_lsst
    raise DecodeError("unknown_schema", f"schema {schema_name!r}: a record with fields {sorted(record)[:12]} is "
                      "neither a ZTF alert (candidate + objectId) nor a Rubin one (diaSource)")


def decode_message(
    raw: bytes,
    *,
    hint: str | None = None,
    registry: SchemaLookup | None = None,
    lsst_schema_version: str | tuple[int, int] | None = None,
    ztf_schema_version: str | None = None,
    single_object_registry: Callable[[int], dict] | None = None,
    cache: SchemaCache = SCHEMA_CACHE,
) -> list[Packet]:
    """Decode one message (any supported framing) into normalised packets (none for an empty container).

    ``hint`` forces a framing (``container``/``ztf``, ``confluent``, ``single_object``,
    ``schemaless``) instead of sniffing; ``registry`` resolves Confluent schema ids (default:
    the local Rubin registry); ``lsst_schema_version`` (``"7.1"``) or ``ztf_schema_version``
    (``"3.2"``, one of ``schemas/ztf/``) is the writer schema of schemaless bodies — at most one.
    """
    if not raw:
        raise DecodeError("empty", "zero-byte message")
    limit = framing_mod.LIMITS.max_message_bytes
    if len(raw) > limit:
        raise DecodeError("message_too_large", f"{len(raw)} bytes (limit ingest.max_message_bytes = {limit})")
    if lsst_schema_version and ztf_schema_version:
        raise DecodeError("bad_config", "schemaless bodies can have one writer schema: set the Rubin or the "
                          "ZTF schemaless version, not both")
    framing = hint if hint is not None else _sniff(raw, lsst_schema_version or ztf_schema_version)
    if framing in ("container", "ztf"):
        entry, records = read_container(raw, cache)
        name = entry.name
    elif framing == "confluent":
        _, parsed, record = decode_confluent(raw, registry or default_registry())
        name, records = schema_full_name(parsed), [record]
    elif framing == "single_object":
        parsed, record = decode_single_object(raw, single_object_registry or SINGLE_OBJECT_SCHEMAS)
        name, records = schema_full_name(parsed), [record]
    elif framing == "schemaless":
        if ztf_schema_version:
            parsed = ztf_schema(ztf_schema_version)
        elif lsst_schema_version:
            major, minor = parse_version(lsst_schema_version)
            parsed = (registry or default_registry())(schema_id_for(major, minor))
        else:
            raise DecodeError("bad_magic", "no container/Confluent/single-object magic and no schema version "
                              f"configured for schemaless bodies (starts {bytes(raw[:4]).hex()})")
        name = schema_full_name(parsed)
        records = [decode_schemaless(raw, parsed, name=name)]
    else:
        raise DecodeError("bad_hint", f"unknown framing hint {hint!r} (expected one of {sorted(_HINTS)})")

    try:
        return [normalizer_for(name, rec)(rec, name) for rec in records]
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise DecodeError("bad_record", f"{name} record lacks or mistypes a required field: "
                          f"{type(exc).__name__}: {exc}") from exc


def _sniff(raw: bytes, lsst_schema_version: Any) -> str:
    if raw[:4] == CONTAINER_MAGIC:
        return "container"
    if raw[0] == 0:
        return "confluent"
    if raw[:2] == SINGLE_OBJECT_MAGIC:
        return "single_object"
    if len(raw) < 4 and CONTAINER_MAGIC.startswith(raw):
        raise DecodeError("truncated", f"{len(raw)} bytes: shorter than any frame header")
    return "schemaless"
