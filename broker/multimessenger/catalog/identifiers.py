"""Persistent identifiers of the catalog: one scheme, stated once, for events, associations and versions.

=======================================  ==========================================================
identifier                               names
=======================================  ==========================================================
``<prefix>:event/<event>``               the event, whatever its version (the *concept*)
``<prefix>:event/<event>/v<n>``          version ``n`` of the event's record (immutable)
``<prefix>:assoc/<event>/<locus>``       the association of a locus with the event (concept)
``<prefix>:assoc/<event>/<locus>/v<n>``  that association as record version ``n`` of the event states it
``<prefix>:catalog/v<n>``                published catalog version ``n`` (immutable)
``<doi_prefix>/<prefix>.events.v<n>``    its DOI, when ``[event_catalog] doi_prefix`` is set
``<doi_prefix>/<prefix>.event.<e>.v<n>`` the DOI of an event's record version (the same condition)
``ark:/<naan>/<prefix>/event/...``       the same names as ARKs, when ``ark_naan`` is set
=======================================  ==========================================================

``<prefix>`` is ``[event_catalog] id_prefix`` (default ``albireo``). Event and locus ids are
percent-encoded outside ``[A-Za-z0-9._~+-]``, so an identifier never holds a ``/`` or a space it
did not put there itself. Every identifier resolves through ``/api/catalog/v1/resolve/<identifier>``
(to the landing page, or a catalog version's record list). Identifiers are never reused: a record
version, once published, keeps its number and content (the store refuses to rewrite it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

if TYPE_CHECKING:
    from broker.config import Config

#: licences whose URL we know (SPDX id → URL); others need ``[event_catalog] license_url``.
LICENSES = {
    "CC-BY-4.0": "https://creativecommons.org/licenses/by/4.0/",
    "CC-BY-SA-4.0": "https://creativecommons.org/licenses/by-sa/4.0/",
    "CC0-1.0": "https://creativecommons.org/publicdomain/zero/1.0/",
    "ODbL-1.0": "https://opendatacommons.org/licenses/odbl/1-0/",
}

_SAFE = "._~+-"
_PID = re.compile(r"^(?P<prefix>[a-z][a-z0-9.-]*):(?P<kind>event|assoc|catalog)/(?P<rest>.+)$")


def license_url(spdx: str) -> str:
    """The URL of a known SPDX licence id, '' for others."""
    return LICENSES.get(spdx, "")


def _enc(x: str) -> str:
    return quote(str(x), safe=_SAFE)


@dataclass(frozen=True)
class Identifiers:
    """Makes and parses identifiers under one configured namespace."""

    prefix: str = "albireo"
    doi_prefix: str = ""
    ark_naan: str = ""

    @classmethod
    def from_config(cls, cfg: Config) -> Identifiers:
        ec = cfg.event_catalog
        return cls(ec.id_prefix, ec.doi_prefix, ec.ark_naan)

    def event(self, event_id: str, version: int | None = None) -> str:
        base = f"{self.prefix}:event/{_enc(event_id)}"
        return base if version is None else f"{base}/v{int(version)}"

    def association(self, event_id: str, locus_id: str, version: int | None = None) -> str:
        base = f"{self.prefix}:assoc/{_enc(event_id)}/{_enc(locus_id)}"
        return base if version is None else f"{base}/v{int(version)}"

    def release(self, version: int) -> str:
        return f"{self.prefix}:catalog/v{int(version)}"

    def doi(self, version: int) -> str | None:
        """The DOI of published version ``version`` (None without ``doi_prefix``)."""
        return f"{self.doi_prefix}/{self.prefix}.events.v{int(version)}" if self.doi_prefix else None

    def event_doi(self, event_id: str, version: int) -> str | None:
        """The DOI of an event's record version (None without ``doi_prefix``)."""
        return f"{self.doi_prefix}/{self.prefix}.event.{_enc(event_id)}.v{int(version)}" if self.doi_prefix else None

    def ark(self, pid: str) -> str | None:
        """The ARK form of a local identifier (None without ``ark_naan``)."""
        if not self.ark_naan:
            return None
        prefix, _, rest = pid.partition(":")
        return f"ark:/{self.ark_naan}/{prefix}/{rest}"

    def parse(self, pid: str) -> dict[str, str | int | None]:
        """``{"kind": event|assoc|catalog, "event_id", "locus_id", "version"}``; ValueError for a foreign or bad id.

        ARK forms of our own identifiers are accepted too.
        """
        text = str(pid).strip()
        if self.ark_naan and text.startswith(f"ark:/{self.ark_naan}/"):
            rest = text[len(f"ark:/{self.ark_naan}/"):]
            text = rest.replace("/", ":", 1)
        m = _PID.match(text)
        if m is None or m["prefix"] != self.prefix:
            raise ValueError(f"{pid!r} is not an identifier of this catalog ({self.prefix}:event/..., "
                             f"{self.prefix}:assoc/..., {self.prefix}:catalog/v<n>)")
        parts = m["rest"].split("/")
        version: int | None = None
        if parts and re.fullmatch(r"v\d{1,9}", parts[-1]):
            version = int(parts.pop()[1:])
        kind = m["kind"]
        want = {"event": 1, "assoc": 2, "catalog": 0}[kind]
        if len(parts) != want or (kind == "catalog" and version is None) or not all(parts[:want] or [True]):
            raise ValueError(f"{pid!r}: malformed {kind} identifier")
        return {"kind": kind, "event_id": unquote(parts[0]) if want else None,
                "locus_id": unquote(parts[1]) if want == 2 else None, "version": version}
