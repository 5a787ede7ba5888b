"""What both store adapters share: the claim decision for new loci, and the alert row shape."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from broker.alert import Alert
from broker.association import LocusPositions


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


#: the fields of a stored filter revision (see ``broker.filtering.registry``); ``meta`` is a JSON-able dict.
FILTER_REVISION_FIELDS = ("name", "revision", "hash", "code", "author", "created", "status", "status_reason",
                          "status_changed", "priority", "meta")
