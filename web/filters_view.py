"""What the portal and ``/api/filters`` show about filters.

The built-in filters are listed from their modules (``broker.filters.load_builtin_filters``);
submitted filters, their revisions and submissions go through the filter platform
(``broker.filtering.registry``) when it is installed (otherwise submissions are refused with a clear
message). Per-filter figures come from the index: how many loci carry each output tag.
"""

from __future__ import annotations

from typing import Any

from web.backend import Backend


def registry() -> Any:
    """The filter registry (:mod:`broker.filtering.registry`): the one implementation the CLI shares."""
    from broker.filtering import registry as reg

    return reg


def _builtin(b: Backend, tag_counts: dict[str, int]) -> list[dict[str, Any]]:
    from broker.filtering.runner import load_builtin_filters

    out = []
    for lf in load_builtin_filters(b.cfg.filters.builtin):
        tags = lf.output_tags
        inst = lf.instance
        out.append({
            "name": lf.name,
            "kind": "built-in",
            "revision": lf.revision,
            "status": "enabled" if lf.enabled else "disabled",
            "author": "built-in",
            "description": (type(inst).__doc__ or "").strip().split("\n\n")[0],
            "output_tags": tags,
            "tagged_loci": {t: tag_counts.get(t, 0) for t in tags},
            "triggering_survey": getattr(inst, "TRIGGERING_SURVEY", "all"),
            "errors": [],
            "review": {"decision": "built-in", "by": None, "at": None, "note": ""},
            "requires": list(lf.requires),
            "revisions": [{"revision": lf.revision, "author": "built-in", "status": "enabled"}],
        })
    return out


def _from_registry(row: dict[str, Any], tag_counts: dict[str, int]) -> dict[str, Any]:
    tags = [t for t in row.get("tags") or [] if t]
    err = row.get("load_error")
    return {
        "name": row["name"], "kind": "submitted",
        "revision": row.get("enabled_revision") or row.get("latest_revision") or "",
        "status": row.get("status", ""), "author": row.get("author", ""), "description": "",
        "output_tags": tags, "tagged_loci": {t: tag_counts.get(t, 0) for t in tags},
        "errors": [{"exception": "LoadError", "message": err}] if err else [],
        "revision_count": row.get("revisions"),
        "review": row.get("review") or {"decision": "pending", "by": None, "at": None, "note": ""},
        "requires": row.get("requires") or [],
    }


def list_filters(b: Backend) -> tuple[list[dict[str, Any]], str]:
    """(filters, source): the built-in filters, plus submitted ones when the registry exists."""
    tag_counts = b.index.tag_counts()
    out = _builtin(b, tag_counts)
    reg = registry()
    names = {f["name"] for f in out}
    out += [_from_registry(r, tag_counts) for r in reg.list_filters(b.store) if r["name"] not in names]
    return out, "registry"


def get_filter(b: Backend, name: str) -> dict[str, Any] | None:
    tag_counts = b.index.tag_counts()
    builtin = next((f for f in _builtin(b, tag_counts) if f["name"] == name), None)
    if builtin is not None:
        return builtin
    reg = registry()
    try:
        f = reg.get_filter(b.store, name)
    except KeyError:
        return None
    row = next((r for r in reg.list_filters(b.store) if r["name"] == name), {"name": name})
    out = _from_registry(row, tag_counts)
    out["revisions"] = [{"revision": r.get("revision"), "author": r.get("author"), "status": r.get("status"),
                         "created_at": r.get("created"), "load_error": r.get("load_error"),
                         "review": r.get("review"), "requires": r.get("requires") or [],
                         "code": r.get("code")} for r in f.get("revisions", [])]
    return out


class SubmissionRefused(Exception):
    """A submission the platform cannot take (no registry, or the registry rejected the code)."""


def submit(b: Backend, code: str, author: str, name: str | None = None) -> dict[str, Any]:
    """Register a revision through the registry (inspected, load-probed in a sandbox, not enabled)."""
    reg = registry()
    try:
        rec = reg.add_revision(b.store, code, author, name=name)
    except ValueError as exc:  # FilterRejected: no parsable filter class, syntax error (message says where)
        raise SubmissionRefused(str(exc)) from exc
    return {k: v for k, v in rec.items() if k != "code"}
