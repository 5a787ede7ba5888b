"""Association geometry: radius edge, RA 0/360 wrap, poles, batches, and the brute-force reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from broker.association import ARCSEC, Associator, LocusPositions, association_order, pixels_of


def _sep_arcsec(ra1, dec1, ra2, dec2):
    ra1, dec1, ra2, dec2 = map(np.radians, (ra1, dec1, ra2, dec2))
    h = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(h))) * 3600


def _offset(ra, dec, sep_arcsec, pa_deg):
    """The point ``sep_arcsec`` from (ra, dec) at position angle ``pa_deg`` (exact spherical)."""
    d = math.radians(sep_arcsec / 3600)
    ra0, dec0, pa = map(math.radians, (ra, dec, pa_deg))
    dec1 = math.asin(math.sin(dec0) * math.cos(d) + math.cos(dec0) * math.sin(d) * math.cos(pa))
    ra1 = ra0 + math.atan2(math.sin(pa) * math.sin(d) * math.cos(dec0), math.cos(d) - math.sin(dec0) * math.sin(dec1))
    return math.degrees(ra1) % 360.0, math.degrees(dec1)


def _positions(coords, order):
    ra = np.array([c[0] for c in coords], dtype=float)
    dec = np.array([c[1] for c in coords], dtype=float)
    return LocusPositions([f"L{i}" for i in range(len(coords))], ra, dec, pixels_of(ra, dec, order))


def test_order_keeps_the_disc_inside_the_neighbour_block():
    for r in (0.5, 1.0, 2.0, 5.0, 30.0):
        order = association_order(r)
        size = math.sqrt(4 * math.pi / (12 * 4**order)) / ARCSEC
        assert size >= 4 * r
        assert order == 29 or math.sqrt(4 * math.pi / (12 * 4 ** (order + 1))) / ARCSEC < 4 * r


@pytest.mark.parametrize(
    "ra,dec",
    [(0.0, 0.0), (359.99999, 10.0), (0.00001, -10.0), (180.0, 89.99995), (42.0, -89.99999), (123.4, 41.8)],
)
@pytest.mark.parametrize("pa", [0.0, 45.0, 90.0, 180.0, 270.0, 333.0])
def test_radius_edge_in_every_direction(ra, dec, pa):
    """0.999″ away joins the locus, 1.001″ away founds a new one — across the wrap and at the poles."""
    a = Associator(1.0)
    existing = _positions([(ra, dec)], a.order)
    inside = _offset(ra, dec, 0.999, pa)
    outside = _offset(ra, dec, 1.001, pa)
    res = a.associate(np.array([inside[0], outside[0]]), np.array([inside[1], outside[1]]), existing)
    assert res.existing_index.tolist() == [0, -1]
    # the test's own offset (asin near ±1) is good to ~1e-5″ at the poles
    assert res.distance_arcsec[0] == pytest.approx(0.999, abs=1e-4)
    assert res.new_founders == [1]


def test_nearest_of_several_loci_wins_and_matches_brute_force():
    rng = np.random.default_rng(3)
    a = Associator(2.0)
    # a dense clump of loci (0.5″–5″ apart) near RA 0 and a pole, plus random alerts around them
    centres = [(0.0001, 1.0), (359.9999, 1.0), (10.0, 89.9999), (200.0, -89.9999)]
    loci = []
    for c in centres:
        for _ in range(25):
            loci.append(_offset(c[0], c[1], rng.uniform(0, 8), rng.uniform(0, 360)))
    existing = _positions(loci, a.order)
    alerts = [_offset(*loci[rng.integers(len(loci))], rng.uniform(0, 3), rng.uniform(0, 360)) for _ in range(400)]
    ra = np.array([p[0] for p in alerts])
    dec = np.array([p[1] for p in alerts])
    res = a.associate(ra, dec, existing)
    for i in range(len(alerts)):
        d = _sep_arcsec(ra[i], dec[i], existing.ra, existing.dec)
        j = int(np.argmin(d))
        if d[j] <= 2.0:
            assert res.existing_index[i] == j, (i, d[j], res.distance_arcsec[i])
            assert res.distance_arcsec[i] == pytest.approx(d[j], abs=1e-6)
        else:
            assert res.existing_index[i] == -1


def test_alerts_of_one_batch_at_one_place_found_one_locus():
    a = Associator(1.0)
    base = (150.0, 2.2)
    pts = [base, _offset(*base, 0.5, 10), _offset(*base, 0.7, 200), _offset(*base, 30.0, 0)]
    res = a.associate(np.array([p[0] for p in pts]), np.array([p[1] for p in pts]), LocusPositions.empty())
    assert res.new_founders == [0, 3]
    assert res.new_group.tolist() == [0, 0, 0, 1]
    assert (res.existing_index == -1).all()


def test_empty_store_and_empty_batch():
    a = Associator(1.0)
    res = a.associate(np.array([]), np.array([]), LocusPositions.empty())
    assert res.new_founders == [] and res.existing_index.size == 0
