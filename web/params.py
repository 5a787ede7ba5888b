"""Request-parameter parsing that fails with a 400 naming the parameter."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from web.errors import bad_request


def int_arg(args: Any, name: str, default: int, lo: int, hi: int) -> int:
    raw = args.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"parameter {name!r}: {raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise bad_request(f"parameter {name!r}: {value} is outside [{lo}, {hi}]")
    return value


def float_arg(args: Any, name: str, default: float | None = None) -> float | None:
    raw = args.get(name)
    if raw in (None, ""):
        return default
    return parse_float(raw, name)


def parse_float(raw: str, name: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise bad_request(f"parameter {name!r}: {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise bad_request(f"parameter {name!r}: must be finite")
    return value


def json_arg(args: Any, name: str) -> Any:
    raw = args.get(name)
    if raw in (None, ""):
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise bad_request(f"parameter {name!r}: not valid JSON ({exc})") from None


def encode_cursor(cursor: list[Any] | None) -> str | None:
    if cursor is None:
        return None
    return base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode().rstrip("=")


def decode_cursor(raw: str | None) -> list[Any] | None:
    if not raw:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except ValueError:
        raise bad_request("parameter 'page[cursor]': not a cursor from a previous page") from None
    if not isinstance(value, list) or len(value) != 2:
        raise bad_request("parameter 'page[cursor]': not a cursor from a previous page")
    return value
