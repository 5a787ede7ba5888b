"""Where writer schemas come from: Rubin's own schemas by id, a Confluent registry, fingerprints.

A Confluent-framed message names its schema by a registry id; a single-object frame by a
CRC-64-AVRO fingerprint. Each lookup here is a ``(key) -> parsed schema`` callable raising
:class:`~broker.ingest.framing.DecodeError` when it has none.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import fastavro

from broker.ingest.framing import DecodeError, schema_fingerprint


class LsstSchemaRegistry:
    """Rubin alert schemas from the ``lsst-alert-packet`` package, by Confluent schema id.

    Rubin numbers its registry ids ``major * 100 + minor`` (``lsst.alert.packet.Schema.
    get_schema_id``: the two numbers of ``lsst.vM_m.alert``, minor zero-padded to two digits),
    so v7.1 is 701 and v11.0 is 1100. Schemas load lazily: importing all fifteen costs ~1 s.
    """

    def __init__(self) -> None:
        self._parsed: dict[int, dict] = {}
        self._versions = self._discover()

    @staticmethod
    def _discover() -> dict[int, tuple[int, int]]:
        from pathlib import Path

        from lsst.alert.packet.schema import get_schema_root

        found: dict[int, tuple[int, int]] = {}
        for path in Path(get_schema_root()).glob("*/*/lsst.v*_*.alert.avsc"):
            major, minor = int(path.parent.parent.name), int(path.parent.name)
            found[schema_id_for(major, minor)] = (major, minor)
        return found

    @property
    def known_ids(self) -> list[int]:
        return sorted(self._versions)

    def version_of(self, schema_id: int) -> tuple[int, int]:
        try:
            return self._versions[schema_id]
        except KeyError:
            raise DecodeError("unknown_schema_id", f"no LSST alert schema has id {schema_id} "
                              f"(known: {self.known_ids})") from None

    def __call__(self, schema_id: int) -> dict:
        parsed = self._parsed.get(schema_id)
        if parsed is None:
            from lsst.alert.packet.schema import get_schema_path

            major, minor = self.version_of(schema_id)
            parsed = fastavro.schema.load_schema(f"{get_schema_path(major, minor)}/lsst.v{major}_{minor}.alert.avsc")
            self._parsed[schema_id] = parsed
        return parsed

    get = __call__

    def by_version(self, version: str | tuple[int, int]) -> dict:
        """Parsed schema for ``"7.1"`` / ``(7, 1)``."""
        major, minor = parse_version(version)
        return self(schema_id_for(major, minor))


def schema_id_for(major: int, minor: int) -> int:
    """Rubin's registry id for an alert schema version (7.1 → 701)."""
    return major * 100 + minor


def parse_version(version: str | tuple[int, int]) -> tuple[int, int]:
    if isinstance(version, tuple):
        return int(version[0]), int(version[1])
    try:
        major, minor = str(version).lstrip("v").replace("_", ".").split(".")
        return int(major), int(minor)
    except ValueError:
        raise DecodeError("unknown_schema_version", f"schema version {version!r} is not 'MAJOR.MINOR'") from None


class ConfluentRegistryClient:
    """Schema lookup against a Confluent Schema Registry over HTTP (``GET /schemas/ids/<id>``).

    Parsed schemas are cached forever: a registry id never changes meaning.
    """

    def __init__(self, url: str, *, timeout: float = 10.0, headers: dict[str, str] | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.headers = {"Accept": "application/vnd.schemaregistry.v1+json", **(headers or {})}
        self._parsed: dict[int, dict] = {}

    def __call__(self, schema_id: int) -> dict:
        parsed = self._parsed.get(schema_id)
        if parsed is None:
            parsed = fastavro.parse_schema(json.loads(self._fetch(schema_id)["schema"]))
            self._parsed[schema_id] = parsed
        return parsed

    get = __call__

    def _fetch(self, schema_id: int) -> dict:
        import urllib.error
        import urllib.request

        req = urllib.request.Request(f"{self.url}/schemas/ids/{schema_id}", headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise DecodeError("unknown_schema_id", f"registry {self.url} has no schema id {schema_id}") from exc
            raise DecodeError("registry_error", f"registry {self.url} answered {exc.code} for id {schema_id}") from exc
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
            raise DecodeError("registry_unavailable", f"registry {self.url}: {exc}") from exc


class SingleObjectRegistry:
    """Fingerprint → parsed schema, for decoding Avro single-object frames."""

    def __init__(self, schemas: Iterable[dict] = ()) -> None:
        self._by_fp: dict[int, dict] = {}
        for s in schemas:
            self.register(s)

    def register(self, schema: Any) -> int:
        parsed = schema if isinstance(schema, dict) and "__fastavro_parsed" in schema else fastavro.parse_schema(schema)
        fp = schema_fingerprint(parsed)
        self._by_fp[fp] = parsed
        return fp

    def __call__(self, fingerprint: int) -> dict:
        try:
            return self._by_fp[fingerprint]
        except KeyError:
            raise DecodeError("unknown_fingerprint", f"no registered schema has fingerprint {fingerprint:016x}") from None
