"""JSON for stored records: NaN-safe, bytes-safe, numpy-safe, and fast enough for the hot path."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import numpy as np
import orjson


def _default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"$base64": base64.b64encode(bytes(obj)).decode()}
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    return str(obj)


def dumps(obj: Any) -> str:
    """Serialise to JSON; NaN/inf are kept (Python's json reads them back)."""
    return json.dumps(obj, default=_default, separators=(",", ":"))


#: types orjson would write its own way (a datetime as ISO 8601 with a "T", where :func:`dumps`
#: writes ``str(obj)``): refused, so that such a record takes :func:`dumps`'s path.
_ORJSON_REFUSES = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


def dumps_flat(record: dict[str, Any]) -> str:
    """:func:`dumps` for a flat record (an alert's properties), about 5× faster.

    Every stored alert writes its properties, so this is on the hot path (a ZTF packet carries
    ~80 alerts of ~100 fields each). orjson writes NaN and infinity as ``null``, which would
    silently change a stored value; so when the text holds more unquoted ``null``s than the
    record has None values (a NaN, an infinity, a nested None, "null" inside a longer string:
    every NaN adds one, and no string equal to "null" counts) the record goes
    through :func:`dumps` instead, as does anything orjson refuses (bytes, numpy values, integers
    beyond 64 bits) or is told to refuse (datetimes, dataclasses, subclasses of str and int).
    Both counts are C loops. The text may differ from :func:`dumps`'s (non-ASCII unescaped,
    float spelling), never the value read back, with one exception that alert properties never
    meet (fastavro decodes Avro enums to str): an Enum member is written as its value.
    """
    try:
        text = orjson.dumps(record, option=_ORJSON_REFUSES)
    except TypeError:  # orjson.JSONEncodeError is one
        return dumps(record)
    # a NaN's null is never between quotes; ZTF's "ssnamenr": "null" always is
    if text.count(b"null") - text.count(b'"null"') != list(record.values()).count(None):
        return dumps(record)
    return text.decode()


def loads(text: str | bytes | None) -> Any:
    """Parse stored JSON; orjson first (several times faster), Python's json for what it refuses.

    orjson refuses the ``NaN``/``Infinity`` tokens that :func:`dumps` writes, integers beyond 64
    bits and lone surrogates; Python's json reads all of them, so no stored record changes meaning.
    """
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def strict(obj: Any) -> Any:
    """A copy with NaN/inf replaced by None: for consumers that need RFC 8259 JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return obj
