"""The ``Store`` port: where loci, alerts, cutouts and dead letters live.

The pipeline talks only to this interface; ``sqlite.SQLiteStore`` (embedded
default) and ``cassandra.CassandraStore`` are adapters passing the same
contract tests (``tests/contract``).

Writes are idempotent: alert ids and locus ids are keys, so replaying a batch
after a crash rewrites the same rows. Within :meth:`Store.save_batch` the locus
rows are written before the alert rows: an alert row is the mark that its
packet was fully processed.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from broker.alert import Alert
from broker.association import LocusPositions
from broker.locus import Locus


@dataclass
class DeadLetter:
    """A message that could not be processed, kept whole with the reason."""

    source: str
    reason: str
    message: str
    payload: bytes
    received_at: float
    headers: dict[str, str]


class Store(abc.ABC):
    """Persistent state shared by every worker of a consumer group."""

    #: the HEALPix order of the ``pixel`` column used for association lookups.
    association_order: int

    @abc.abstractmethod
    def locus_positions(self, pixels: Iterable[int]) -> LocusPositions:
        """Every locus whose association pixel is in ``pixels``."""

    @abc.abstractmethod
    def load_loci(self, locus_ids: Iterable[str], with_alerts: bool = True) -> dict[str, Locus]:
        """Loci by id, with their alerts (time-ordered) unless ``with_alerts`` is False."""

    @abc.abstractmethod
    def existing_alert_ids(self, alert_ids: Iterable[str]) -> set[str]:
        """The subset of ``alert_ids`` already stored."""

    @abc.abstractmethod
    def save_batch(
        self, loci: list[Locus], new_alerts: list[Alert], cutouts: dict[str, dict[str, bytes]] | None = None
    ) -> None:
        """Upsert ``loci`` (properties, tags, catalog matches, provenance), then insert ``new_alerts``."""

    @abc.abstractmethod
    def alerts_for_locus(self, locus_id: str) -> list[Alert]:
        """The alerts of one locus, oldest first."""

    @abc.abstractmethod
    def cutouts(self, alert_id: str) -> dict[str, bytes]:
        """Stamp name → FITS bytes for one alert (empty when it had none)."""

    @abc.abstractmethod
    def record_dead_letter(self, letter: DeadLetter) -> None:
        """Keep a rejected message (used when no dead-letter topic exists, e.g. embedded mode)."""

    @abc.abstractmethod
    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Most recent dead letters first."""

    @abc.abstractmethod
    def iter_loci(self, batch_size: int = 500, since_mjd: float | None = None,
                  until_mjd: float | None = None) -> Iterator[list[Locus]]:
        """All loci (with alerts) whose newest alert lies in the window, in batches (backfills)."""

    @abc.abstractmethod
    def claim_new_loci(self, candidates: Sequence[tuple[str, float, float]], radius_arcsec: float) -> dict[str, str]:
        """Atomically create the position rows of new loci, unless another worker got there first.

        ``candidates`` are ``(locus_id, ra, dec)`` of loci the caller wants to found (its own
        association found nothing within ``radius_arcsec``). Under a lock covering every
        candidate's 3×3 association-pixel block, each candidate is re-checked against the stored
        and already claimed loci: if one lies within the radius, that locus wins; otherwise the
        candidate's position row is written and it wins. Returns candidate id → winning locus id
        (itself when it won). Replaying a claim returns the same answer.
        """

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """``loci``, ``alerts``, ``dead_letters`` row counts (for status pages and tests)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    # -- the filter registry: revisions kept beside the loci, so every worker sees the same ones --------
    def put_filter_revision(self, rec: dict[str, Any]) -> None:
        """Insert or replace one filter revision (keyed by name and revision; fields: FILTER_REVISION_FIELDS)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no filter registry")

    def list_filter_revisions(self, name: str | None = None) -> list[dict[str, Any]]:
        """Revisions of filter ``name`` (every filter when None), oldest first."""
        raise NotImplementedError(f"{type(self).__name__} keeps no filter registry")

    def set_filter_status(self, name: str, revision: str, status: str, reason: str = "",
                          at: float | None = None) -> None:
        """Change one revision's status (``submitted``, ``enabled``, ``disabled``) and say why."""
        raise NotImplementedError(f"{type(self).__name__} keeps no filter registry")


def resolve_claims(
    candidates: Sequence[tuple[str, float, float]], existing: LocusPositions, order: int, radius_arcsec: float
) -> tuple[dict[str, str], list[int]]:
    """The decision step of :meth:`Store.claim_new_loci`, shared by every adapter.

    Returns (candidate id → winner id, indices of the candidates that win and must be written).
    A candidate loses to the nearest known locus within the radius, else to an earlier candidate
    of the same call within the radius.
    """
    import numpy as np

    from broker.association import Associator, neighbour_block, pixels_of

    if not candidates:
        return {}, []
    assoc = Associator(radius_arcsec)
    if assoc.order != order:
        raise ValueError(f"claim radius {radius_arcsec}\" needs association order {assoc.order}, "
                         f"the store is at order {order}")
    ra = np.array([c[1] for c in candidates], dtype=float)
    dec = np.array([c[2] for c in candidates], dtype=float)
    blocks = neighbour_block(pixels_of(ra, dec, order), order)
    if not existing.locus_ids:
        # Associator.associate indexes into ``existing``; give it one row no block can reach (pixel -2).
        existing = LocusPositions([""], np.zeros(1), np.zeros(1), np.full(1, -2, dtype=np.int64))
    result = assoc.associate(ra, dec, existing, blocks)
    winners: dict[str, str] = {}
    to_write: list[int] = []
    for i, (lid, _, _) in enumerate(candidates):
        e = int(result.existing_index[i])
        if e >= 0:
            winners[lid] = existing.locus_ids[e]
        else:
            founder = result.new_founders[int(result.new_group[i])]
            winners[lid] = candidates[founder][0]
            if founder == i:
                to_write.append(i)
    return winners, to_write


def alert_to_row(a: Alert) -> dict[str, Any]:
    """The columns every store keeps for an alert (properties serialised by the adapter)."""
    return {
        "alert_id": a.alert_id,
        "locus_id": a.locus_id,
        "survey": a.survey,
        "mjd": a.mjd,
        "ra": a.ra,
        "dec": a.dec,
        "passband": a.passband,
        "mag": a.mag,
        "magerr": a.magerr,
        "maglim": a.maglim,
        "object_id": a.object_id,
        "is_history": a.is_history,
        "properties": a.properties,
    }


def alert_from_row(row: dict[str, Any]) -> Alert:
    return Alert(
        alert_id=row["alert_id"],
        survey=int(row["survey"]),
        mjd=float(row["mjd"]),
        ra=float("nan") if row["ra"] is None else float(row["ra"]),
        dec=float("nan") if row["dec"] is None else float(row["dec"]),
        passband=row["passband"] or "",
        mag=row["mag"],
        magerr=row["magerr"],
        maglim=row["maglim"],
        properties=row["properties"] or {},
        object_id=row["object_id"],
        is_history=bool(row["is_history"]),
        locus_id=row["locus_id"],
    )



#: the fields of a stored filter revision (see ``broker.filter_registry``); ``meta`` is a JSON-able dict.
FILTER_REVISION_FIELDS = ("name", "revision", "hash", "code", "author", "created", "status", "status_reason",
                          "status_changed", "priority", "meta")
