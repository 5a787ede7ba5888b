"""Raw Kafka/file message bytes → normalised :class:`~broker.alert.Packet` objects.

The framing is sniffed from the first bytes, because one Albireo deployment reads ZTF
(container files), Rubin (Confluent wire format) and its own re-published streams
(single-object encoding) through the same code:

* ``Obj\\x01``  → Avro object container file, schema embedded (ZTF, LSST sample files)
* ``0x00``     → Confluent wire format: 4-byte schema id looked up in ``registry``
* ``0xC3 0x01`` → Avro single-object encoding: 8-byte schema fingerprint
* anything else → schemaless body, only if a schema version is configured

The writer schema's full name then picks the normaliser: ``ztf.alert`` or
``lsst.vM_m.alert``. Everything that goes wrong raises :class:`DecodeError` with a ``reason``
the worker counts and dead-letters by.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

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
from broker.ingest.surveys.lsst import normalize_lsst
from broker.ingest.surveys.ztf import normalize_ztf

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


def normalizer_for(schema_name: str) -> Callable[[dict, str], Packet]:
    """The normaliser for a writer schema's full name, or DecodeError('unknown_schema')."""
    if schema_name == "ztf.alert":
        return normalize_ztf
    m = _LSST_NAME.match(schema_name)
    if m:
        major, minor = int(m.group(1)), int(m.group(2))
        if schema_id_for(major, minor) not in default_registry().known_ids:
            raise DecodeError("unknown_schema_version",
                              f"LSST alert schema v{major}.{minor} is not one lsst-alert-packet ships")
        return normalize_lsst
    raise DecodeError("unknown_schema", f"no normaliser for schema {schema_name!r}")


def decode_message(
    raw: bytes,
    *,
    hint: str | None = None,
    registry: SchemaLookup | None = None,
    lsst_schema_version: str | tuple[int, int] | None = None,
    single_object_registry: Callable[[int], dict] | None = None,
    cache: SchemaCache = SCHEMA_CACHE,
) -> list[Packet]:
    """Decode one message (any supported framing) into normalised packets.

    ``hint`` forces a framing (``container``/``ztf``, ``confluent``, ``single_object``,
    ``schemaless``) instead of sniffing; ``registry`` resolves Confluent schema ids (default:
    the local Rubin registry); ``lsst_schema_version`` (``"7.1"``) is the writer schema of
    schemaless bodies.
    """
    if not raw:
        raise DecodeError("empty", "zero-byte message")
    framing = hint if hint is not None else _sniff(raw, lsst_schema_version)
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
        if lsst_schema_version is None:
            raise DecodeError("bad_magic", "no container/Confluent/single-object magic and no schema version "
                              f"configured for schemaless bodies (starts {bytes(raw[:4]).hex()})")
        major, minor = parse_version(lsst_schema_version)
        lookup = registry or default_registry()
        parsed = lookup(schema_id_for(major, minor))
        name = schema_full_name(parsed)
        records = [decode_schemaless(raw, parsed, name=name)]
    else:
        raise DecodeError("bad_hint", f"unknown framing hint {hint!r} (expected one of {sorted(_HINTS)})")

    normalize = normalizer_for(name)
    try:
        return [normalize(rec, name) for rec in records]
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
