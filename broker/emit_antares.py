"""Outgoing locus messages in ANTARES's format, for the unmodified ``antares_client.StreamingClient``.

ANTARES publishes each tagged locus on topic ``client.<stream>`` as zlib-compressed BSON of
``{id, ra, dec, properties, tags, catalogs}``; the client decompresses, ``bson.loads`` it and
validates it against its ``LocusMessageToUsers`` model (``antares_client/_stream/schema/locus.py``)
before building an ``antares_client.models.Locus``. This module writes exactly that document, with
the same ``bson`` package the client reads it with. It carries no light curve: the client loads
alerts and catalog rows lazily over the HTTP API (``/v2`` on ``albireo serve``).

Property values are what BSON and the client's ``dict`` accept: null, bool, 64-bit int, double
(NaN kept, as ANTARES does), string; a numpy scalar becomes its Python value, an int outside 64 bits
its decimal string, bytes are dropped, anything else (lists, dicts) its JSON text, as in our Avro.
"""

from __future__ import annotations

import zlib
from typing import Any

import bson

from broker.jsonutil import dumps
from broker.locus import Locus

#: the client's default compression level is irrelevant (zlib.decompress reads any); 6 is zlib's default.
ZLIB_LEVEL = 6


def _value(v: Any) -> Any:
    if v is None or isinstance(v, (bool, str, float)):
        return v
    if isinstance(v, int):
        return v if -(2**63) <= v < 2**63 else str(v)
    if hasattr(v, "item") and not hasattr(v, "__len__"):  # numpy scalar
        return _value(v.item())
    if isinstance(v, (bytes, bytearray, memoryview)):
        return None
    return dumps(v)


def _key(k: Any) -> str:
    """BSON element names are C strings: no NUL byte."""
    return str(k).replace("\x00", "")


def antares_document(locus: Locus) -> dict[str, Any]:
    """The document ANTARES sends for ``locus`` (before BSON and zlib)."""
    return {
        "id": locus.locus_id,
        "ra": float(locus.ra),
        "dec": float(locus.dec),
        "properties": {_key(k): _value(v) for k, v in locus.properties.items()},
        "tags": sorted(locus.user_tags),
        "catalogs": sorted(locus.catalog_objects),
    }


def encode_antares(locus: Locus) -> bytes:
    """zlib(BSON(:func:`antares_document`)): the value of one message on ``client.<stream>``."""
    return zlib.compress(bson.dumps(antares_document(locus)), ZLIB_LEVEL)


def decode_antares(raw: bytes, max_bytes: int = 16 * 1024 * 1024) -> dict[str, Any]:
    """Read a message back (tests, tools); the decompressed size is bounded against zlib bombs."""
    d = zlib.decompressobj()
    data = d.decompress(raw, max_bytes)
    if d.unconsumed_tail:
        raise ValueError(f"ANTARES message inflates beyond {max_bytes} bytes")
    return bson.loads(data)
