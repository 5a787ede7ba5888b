"""What the portal and ``/api/filters`` show about filters.

When the filter platform (``broker.filter_registry``) is present, filters, revisions and
submissions go through it. Otherwise the built-in filters are listed from their modules
(``broker.filters.load_builtin_filters``) and per-filter figures come from the index (how many
loci carry each of the filter's output tags); submissions are then refused with a clear message.
"""

from __future__ import annotations

import importlib
from typing import Any

from web.backend import Backend


def registry() -> Any | None:
    try:
        return importlib.import_module("broker.filter_registry")
    except ModuleNotFoundError as exc:
        if exc.name != "broker.filter_registry":
            raise
        return None


def _plain(obj: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def list_filters(b: Backend) -> tuple[list[dict[str, Any]], str]:
    """(filters, source) where source is ``registry`` or ``builtin``."""
    tag_counts = b.index.tag_counts()
    reg = registry()
    if reg is not None and hasattr(reg, "list_filters"):
        out = []
        for f in reg.list_filters(b.store):
            d = _plain(f)
            if not isinstance(d, dict):
                d = {"name": str(f)}
            tags = d.get("output_tags") or []
            d.setdefault("tagged_loci", {t: tag_counts.get(t, 0) for t in tags})
            out.append(d)
        return out, "registry"
    from broker.filters import load_builtin_filters

    out = []
    for lf in load_builtin_filters(b.cfg.filters.builtin):
        tags = lf.output_tags
        inst = lf.instance
        out.append({
            "name": lf.name,
            "revision": lf.revision,
            "status": "enabled" if lf.enabled else "disabled",
            "description": (type(inst).__doc__ or "").strip().split("\n\n")[0],
            "output_tags": tags,
            "tagged_loci": {t: tag_counts.get(t, 0) for t in tags},
            "triggering_survey": getattr(inst, "TRIGGERING_SURVEY", "all"),
            "required_alert_properties": list(getattr(inst, "REQUIRED_ALERT_PROPERTIES", [])),
            "errors": [],
            "revisions": [{"revision": lf.revision, "author": "built-in", "status": "enabled"}],
        })
    return out, "builtin"


def get_filter(b: Backend, name: str) -> dict[str, Any] | None:
    reg = registry()
    if reg is not None and hasattr(reg, "get_filter"):
        f = reg.get_filter(b.store, name)
        return None if f is None else _plain(f)
    return next((f for f in list_filters(b)[0] if f["name"] == name), None)


class SubmissionRefused(Exception):
    """A submission the platform cannot take (no registry, or the registry rejected the code)."""


def submit(b: Backend, code: str, author: str, name: str | None = None) -> dict[str, Any]:
    reg = registry()
    if reg is None or not hasattr(reg, "add_revision"):
        raise SubmissionRefused("filter submission needs the filter platform (broker.filter_registry), "
                                "which this installation does not have yet")
    try:
        rev = reg.add_revision(b.store, code, author) if name is None else _add(reg, b, code, author, name)
    except (ValueError, SyntaxError, TypeError) as exc:
        raise SubmissionRefused(str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - registry-specific validation errors carry the user's message
        if type(exc).__name__.endswith(("Error", "Rejected", "Invalid")):
            raise SubmissionRefused(str(exc)) from exc
        raise
    return _plain(rev) if not isinstance(rev, dict) else rev


def _add(reg: Any, b: Backend, code: str, author: str, name: str) -> Any:
    import inspect

    params = inspect.signature(reg.add_revision).parameters
    if "name" in params:
        return reg.add_revision(b.store, code, author, name=name)
    return reg.add_revision(b.store, code, author)
