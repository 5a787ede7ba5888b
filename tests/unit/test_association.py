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


def test_nearest_of_several_fixed_loci_wins_and_matches_brute_force():
    """With positions that cannot move and alerts far enough apart not to found loci for each other."""
    rng = np.random.default_rng(3)
    a = Associator(2.0)
    # a dense clump of loci (0.5″–5″ apart) near RA 0 and a pole, plus random alerts around them
    centres = [(0.0001, 1.0), (359.9999, 1.0), (10.0, 89.9999), (200.0, -89.9999)]
    loci = []
    for c in centres:
        for _ in range(25):
            loci.append(_offset(c[0], c[1], rng.uniform(0, 8), rng.uniform(0, 360)))
    existing = _positions(loci, a.order)
    alerts = [_offset(*loci[rng.integers(len(loci))], rng.uniform(0, 2.0), rng.uniform(0, 360)) for _ in range(400)]
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


# ---- moving loci: the kernel against a plain-Python reference of the same rule ------------------------
def _unit(ra, dec):
    r, d = math.radians(ra), math.radians(dec)
    return np.array([math.cos(d) * math.cos(r), math.cos(d) * math.sin(r), math.sin(d)])


def _reference(ra, dec, objects, existing, weights, sums, existing_objects, radius, object_radius):
    """Sequential association written the slow, obvious way: every locus checked for every alert."""
    loci = [{"id": lid, "pos": (existing.ra[k], existing.dec[k]), "w": weights[k], "s": np.array(sums[k]),
             "obj": set(existing_objects[k])} for k, lid in enumerate(existing.locus_ids)]
    order = sorted(range(len(loci)), key=lambda k: loci[k]["id"])
    loci = [loci[k] for k in order]
    out = []
    for i in range(len(ra)):
        dist = [_sep_arcsec(ra[i], dec[i], *x["pos"]) for x in loci]
        same = [k for k, x in enumerate(loci)
                if objects[i] is not None and objects[i] in x["obj"] and dist[k] <= object_radius]
        near = [k for k in range(len(loci)) if dist[k] <= radius]
        pick = min(same or near, key=lambda k: (dist[k], k)) if (same or near) else None
        v = _unit(ra[i], dec[i])
        if pick is None:
            loci.append({"id": f"~new{i:05d}", "pos": (ra[i], dec[i]), "w": 1, "s": v, "obj": {objects[i]} - {None},
                         "new": i})
            out.append(("new", i))
            continue
        x = loci[pick]
        out.append(("new", x["new"]) if "new" in x else ("old", x["id"]))
        x["obj"] |= {objects[i]} - {None}
        if x["w"] < 0:
            continue
        x["w"] += 1
        x["s"] = x["s"] + v
        x["pos"] = (ra[i], dec[i]) if x["w"] == 1 else (
            math.degrees(math.atan2(x["s"][1], x["s"][0])) % 360,
            math.degrees(math.atan2(x["s"][2], math.hypot(x["s"][0], x["s"][1]))))
    return out


@pytest.mark.parametrize("centre", [(150.0, 2.2), (0.00005, -30.0), (359.99995, 45.0), (10.0, 89.99993)])
def test_moving_loci_match_the_reference(centre):
    """Dense real-looking clumps (sources 0.8″–3″ apart, 0.3″ scatter): loci move as alerts join."""
    rng = np.random.default_rng(11)
    a = Associator(1.0, 2.0)
    sources = [_offset(*centre, rng.uniform(0, 6), rng.uniform(0, 360)) for _ in range(12)]
    stored = sources[:6]
    existing = _positions(stored, a.order)
    existing.locus_ids = [f"L{k:02d}" for k in (5, 3, 1, 0, 2, 4)]  # not in id order: ties go by id
    weights = np.array([3.0, 0.0, -1.0, 10.0, 1.0, 2.0])  # moving, claimed, fixed, ...
    sums = np.array([w * _unit(*p) if w > 0 else np.zeros(3) for w, p in zip(weights, stored, strict=True)])
    existing_objects = [frozenset({f"ztf:S{k}"}) for k in range(6)]
    existing = type(existing)(existing.locus_ids, existing.ra, existing.dec, existing.pixel, weights, sums,
                              existing_objects)
    pts, objects = [], []
    for _ in range(300):
        k = int(rng.integers(len(sources)))
        pts.append(_offset(*sources[k], abs(rng.normal(0, 0.45)), rng.uniform(0, 360)))
        objects.append(f"ztf:S{k}" if rng.uniform() < 0.7 else None)
    ra = np.array([p[0] for p in pts])
    dec = np.array([p[1] for p in pts])
    res = a.associate(ra, dec, existing, objects=objects)
    want = _reference(ra, dec, objects, existing, weights, sums, existing_objects, 1.0, 2.0)
    got = []
    for i in range(len(pts)):
        if res.existing_index[i] >= 0:
            got.append(("old", existing.locus_ids[res.existing_index[i]]))
        else:
            got.append(("new", res.new_founders[res.new_group[i]]))
    assert got == want
    assert sum(g[0] == "old" for g in got) > 50 and len(res.new_founders) > 3  # both kinds really happen


def test_a_locus_follows_its_alerts_so_an_early_outlier_founds_no_second_locus():
    """The founder is 0.6″ off the source; the source's alerts pull the locus onto it, and an alert
    1.3″ from the founder (0.9″ from the source) still joins."""
    a = Associator(1.0)
    src = (210.0, 54.3)
    founder = _offset(*src, 0.6, 90)
    near = [_offset(*src, 0.05, pa) for pa in range(0, 360, 40)]
    late = _offset(*src, 0.9, 270)
    assert _sep_arcsec(*late, *founder) > 1.0
    pts = [founder, *near, late]
    res = a.associate(np.array([p[0] for p in pts]), np.array([p[1] for p in pts]), LocusPositions.empty())
    assert res.new_founders == [0] and res.new_group.tolist() == [0] * len(pts)
    assert res.distance_arcsec[-1] < 1.0


def test_survey_object_rule_reaches_past_the_radius_and_beats_a_nearer_locus():
    a = Associator(1.0, 2.0)
    src, other = (80.0, -20.0), _offset(80.0, -20.0, 2.2, 0)
    existing = _positions([src, other], a.order)
    existing.weight = np.array([-1.0, -1.0])
    existing.sums = np.zeros((2, 3))
    existing.objects = [frozenset({"ztf:ZTF18aauseln"}), frozenset()]
    wide = _offset(*src, 1.5, 180)           # 1.5″ off: only the object rule reaches it
    between = _offset(*src, 1.3, 0)           # 0.9″ from ``other``, 1.3″ from its object's locus
    stranger = _offset(*src, 1.5, 180)        # same place, no survey object: founds a locus
    ra = np.array([wide[0], between[0], stranger[0]])
    dec = np.array([wide[1], between[1], stranger[1]])
    res = a.associate(ra, dec, existing, objects=["ztf:ZTF18aauseln", "ztf:ZTF18aauseln", None])
    assert res.existing_index.tolist() == [0, 0, -1]
    assert res.new_founders == [2]
    assert Associator(1.0, 0.0).associate(ra, dec, existing, objects=["ztf:ZTF18aauseln"] * 2 + [None]
                                          ).existing_index.tolist() == [-1, 1, -1]  # rule off: radius only
    with pytest.raises(ValueError, match="twice the radius"):
        Associator(1.0, 2.5)


def test_reachable_loci_are_those_within_reach_of_some_alert():
    rng = np.random.default_rng(4)
    a = Associator(1.0, 2.0)
    centre = (359.9999, -45.0)
    loci = [_offset(*centre, rng.uniform(0, 20), rng.uniform(0, 360)) for _ in range(200)]
    existing = _positions(loci, a.order)
    alerts = [_offset(*centre, rng.uniform(0, 20), rng.uniform(0, 360)) for _ in range(60)]
    ra, dec = np.array([p[0] for p in alerts]), np.array([p[1] for p in alerts])
    got = a.reachable(ra, dec, existing)
    want = np.array([min(_sep_arcsec(ra, dec, p[0], p[1])) <= 2.0 for p in loci])
    assert got.tolist() == want.tolist() and 0 < want.sum() < len(loci)
