"""JSON for stored records: NaN-safe, bytes-safe, numpy-safe, and fast enough for the hot path."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import numpy as np


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


def loads(text: str | bytes | None) -> Any:
    if text is None:
        return None
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
