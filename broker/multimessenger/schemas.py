"""The schemas every notice is checked against before it is used, and the checks themselves.

* GCN unified JSON notices: the JSON Schemas of ``schemas/gcn/notices/`` (draft 2020-12, copied
  from nasa-gcn/gcn-schema). A notice names its schema in ``$schema``; the ``$ref``s between
  schema files resolve locally through a :class:`referencing.Registry`, so validation never
  touches the network.
* LVK ``igwn.gwalert``: the JSON Schema and the Avro schema shipped in the PyPI package
  ``igwn-gwalert-schema`` (an Avro alert is decoded with its writer schema, then its JSON form is
  checked against the JSON Schema too, so both forms pass the same rules).
* GCN Classic VOEvent 2.0: the VOEvent XSD shipped with ``voevent-parse``.

A failed check raises :class:`~broker.multimessenger.notice.NoticeError` with reason
``schema_invalid`` and the validator's own message (the path of the offending value, the rule
it broke), which is what lands in the dead-letter stream.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from broker.multimessenger.notice import NoticeError

GCN_ROOT = Path(__file__).resolve().parents[2] / "schemas" / "gcn" / "notices"
GCN_BASE_URL = "https://gcn.nasa.gov/schema/main/gcn/notices/"
LVK_JSON_SCHEMA_ID = "http://emfollow.docs.ligo.org/_static/igwn.alerts.Alert.schema.json"


@cache
def _registry():
    """Every GCN and LVK JSON Schema by its ``$id`` (and the GCN ones by their path under the base URL)."""
    from referencing import Registry, Resource

    resources_: list[tuple[str, Any]] = []
    for path in sorted(GCN_ROOT.rglob("*.schema.json")):
        contents = json.loads(path.read_text())
        resource = Resource.from_contents(contents)
        resources_.append((contents.get("$id") or GCN_BASE_URL + path.relative_to(GCN_ROOT).as_posix(), resource))
    lvk = lvk_json_schema()
    resources_.append((lvk["$id"], Resource.from_contents(lvk)))
    return Registry().with_resources(resources_)


def gcn_schema_ids() -> list[str]:
    """The ``$id`` of every GCN notice schema we hold (what a notice's ``$schema`` may name)."""
    return sorted(u for u in _registry() if u.startswith(GCN_BASE_URL))


@cache
def _validator(schema_id: str):
    from jsonschema import Draft202012Validator

    registry = _registry()
    try:
        schema = registry.contents(schema_id)
    except Exception:  # referencing raises its own NoSuchResource
        raise NoticeError("unknown_schema", f"no schema {schema_id!r} is known (GCN schemas: "
                          f"{', '.join(u.removeprefix(GCN_BASE_URL) for u in gcn_schema_ids())})") from None
    return Draft202012Validator(schema, registry=registry)


def validate_json(document: Any, schema_id: str) -> None:
    """Check ``document`` against the schema ``schema_id``; the most relevant error is the message.

    ``jsonschema.exceptions.best_match`` descends into ``oneOf``/``anyOf`` failures, so a wrong
    ``event.far`` is reported at ``event/far``, not as "the whole event matches no alternative".
    """
    from jsonschema.exceptions import best_match

    errors = list(_validator(schema_id).iter_errors(document))
    if errors:
        e = best_match(errors)
        while e.context:  # the deepest cause of a oneOf/anyOf failure
            e = best_match(e.context)
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise NoticeError("schema_invalid", f"{schema_id.removeprefix(GCN_BASE_URL)}: at {where}: "
                          f"{_short(e.message)}{more}")


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


@cache
def lvk_json_schema() -> dict[str, Any]:
    return json.loads(resources.files("igwn_gwalert_schema").joinpath("igwn.alerts.Alert.schema.json").read_text())


@cache
def lvk_avro_schema() -> Any:
    """The parsed ``igwn.alerts.Alert`` Avro schema (what LVK writes its Avro alerts with)."""
    import fastavro

    raw = json.loads(resources.files("igwn_gwalert_schema").joinpath("igwn.alerts.Alert.avsc").read_text())
    return fastavro.parse_schema(raw)


def validate_voevent(root: Any) -> None:
    """Check a parsed VOEvent against the VOEvent 2.0 XSD (shipped with voevent-parse)."""
    import voeventparse

    try:
        voeventparse.assert_valid_as_v2_0(root)
    except Exception as exc:  # lxml.etree.DocumentInvalid: the XSD's own message, with the line
        raise NoticeError("schema_invalid", f"VOEvent 2.0 XSD: {_short(str(exc))}") from None
