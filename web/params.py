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


#: how deeply a request's JSON may nest. ANTARES query bodies nest ~8 levels; deeper ones only
#: exist to make the parser or the query translator recurse until the interpreter gives up (a 500).
MAX_JSON_DEPTH = 32


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """Nesting depth of a decoded JSON value, walked iteratively; stops counting past ``limit``."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth)
            if depth > limit:
                return depth
            stack.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict) else node))
    return deepest


def parse_json(raw: str | bytes, name: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Untrusted JSON text → value, or a 400 naming ``name``: malformed, too deep (either parser or ours)."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise bad_request(f"{name}: JSON nests deeper than {max_depth} levels") from None
    except ValueError as exc:  # includes UnicodeDecodeError
        raise bad_request(f"{name}: not valid JSON ({exc})") from None
    if json_depth(value, max_depth) > max_depth:
        raise bad_request(f"{name}: JSON nests deeper than {max_depth} levels")
    return value


def json_arg(args: Any, name: str) -> Any:
    raw = args.get(name)
    if raw in (None, ""):
        return None
    return parse_json(raw, f"parameter {name!r}")


def json_object_body(required: bool = False) -> dict[str, Any]:
    """The request's JSON body as an object: a 400 when it is malformed, too deep or not an object.

    Flask's ``get_json(silent=True)`` turns a 10,000-deep body into a RecursionError (a 500) and
    passes a list through to code that calls ``.get`` on it; every JSON body goes through here.
    An empty body is ``{}`` unless ``required``.
    """
    from flask import request

    raw = request.get_data(cache=True)
    if not raw.strip():
        if required:
            raise bad_request("request body: a JSON object is required")
        return {}
    value = parse_json(raw, "request body")
    if not isinstance(value, dict):
        raise bad_request(f"request body: expected a JSON object, got a JSON {type(value).__name__}")
    return value


def encode_cursor(cursor: list[Any] | None) -> str | None:
    if cursor is None:
        return None
    return base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode().rstrip("=")


def decode_cursor(raw: str | None) -> list[Any] | None:
    if not raw:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, RecursionError):
        raise bad_request("parameter 'page[cursor]': not a cursor from a previous page") from None
    if (not isinstance(value, list) or len(value) != 2
            or not all(v is None or isinstance(v, (str, int, float)) for v in value)):  # no dicts/lists inside
        raise bad_request("parameter 'page[cursor]': not a cursor from a previous page")
    if any(isinstance(v, float) and not math.isfinite(v) for v in value):
        raise bad_request("parameter 'page[cursor]': not a cursor from a previous page")
    return value
