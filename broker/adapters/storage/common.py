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
    A candidate loses to the nearest stored or claimed locus within the radius (ties: the
    smaller id); otherwise it wins. Candidates of one call never compete with one another.
    """
    import numpy as np

    from broker.association import ARCSEC, Associator, nearest_in_blocks, neighbour_block, pixels_of

    if not candidates:
        return {}, []
    if Associator(radius_arcsec).order != order:
        raise ValueError(f"claim radius {radius_arcsec}\" needs association order "
                         f"{Associator(radius_arcsec).order}, the store is at order {order}")
    ra = np.array([c[1] for c in candidates], dtype=float)
    dec = np.array([c[2] for c in candidates], dtype=float)
    winners: dict[str, str] = {c[0]: c[0] for c in candidates}
    if existing.locus_ids:
        blocks = neighbour_block(pixels_of(ra, dec, order), order)
        ids = np.array(existing.locus_ids, dtype=object)
        by = np.lexsort((ids, existing.pixel))  # pixel order for the kernel, id order within a pixel
        best, _ = nearest_in_blocks(np.radians(ra), np.radians(dec), blocks, existing.pixel[by],
                                    np.radians(existing.ra[by]), np.radians(existing.dec[by]), radius_arcsec * ARCSEC)
        for i, b in enumerate(best.tolist()):
            if b >= 0:
                winners[candidates[i][0]] = existing.locus_ids[int(by[b])]
    known = set(existing.locus_ids)  # a replayed claim: its row is there already
    to_write = [i for i, c in enumerate(candidates) if winners[c[0]] == c[0] and c[0] not in known]
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
