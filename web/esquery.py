"""ANTARES field names in the ``sort`` parameter antares-client sends → the names :class:`LocusQuery` sorts on.

Query bodies themselves are not translated here: both index backends take the body as sent
(Elasticsearch runs it; the embedded index evaluates it with ``broker.adapters.search.dsl``).
"""

from __future__ import annotations

from broker.ports import QueryError

#: ANTARES field paths whose value the embedded index keeps under another name.
FIELD_ALIASES = {
    "survey.lsst.dia_object_id": "lsst_dia_object_id",
    "survey.ztf.id": "ztf_object_id",
    "locus_id": "locus_id",
}


def field_name(path: str) -> str:
    """``properties.ztf_object_id`` → ``ztf_object_id`` (the name :class:`LocusQuery` uses)."""
    if not isinstance(path, str) or not path:
        raise QueryError(f"bad field name {path!r}")
    name = path.removeprefix("properties.").removesuffix(".keyword")
    return FIELD_ALIASES.get(name, name)


def sort_name(sort: str) -> str:
    """ANTARES sorts on ``-properties.newest_alert_observation_time``; ours on the bare name."""
    desc = sort.startswith("-")
    name = field_name(sort.lstrip("-"))
    return ("-" if desc else "") + name
