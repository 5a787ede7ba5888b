"""Cross-match kernels against brute-force haversine, healpy and astropy; CatalogSet output shape."""

from __future__ import annotations

import healpy as hp
import numpy as np
import pytest

from broker.crossmatch import CatalogIndex, CatalogSet, Chunk, build_index, ensure_default_catalogs
from broker.crossmatch.catalogset import DIST_KEY
from broker.crossmatch.healpix import ang2pix_nest, neighbour
from catalogs.definitions import CatalogDefinition, RadiusPolicy


def hav_arcsec(ra1, dec1, ra2, dec2):
    ra1, dec1, ra2, dec2 = map(np.radians, (ra1, dec1, ra2, dec2))
    h = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1)))) * 3600


def sphere(rng, n):
    return rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))


def corners(order):
    """Pixel corners at ``order`` (where 3-4 pixels meet) as (ra, dec)."""
    ns = 1 << order
    pix = np.arange(0, 12 * ns * ns, max(1, 12 * ns * ns // 300))
    b = hp.boundaries(ns, pix, step=1, nest=True)  # (n, 3, 4)
    v = np.moveaxis(b, 1, 2).reshape(-1, 3)
    ra, dec = hp.vec2ang(v, lonlat=True)
    return ra % 360, dec


@pytest.fixture(scope="module")
def hard_catalog():
    """Random sky plus clusters at both poles, across RA 0/360 and on pixel corners."""
    rng = np.random.default_rng(7)
    ra, dec = sphere(rng, 60000)
    parts_ra, parts_dec = [ra], [dec]
    parts_ra += [rng.uniform(0, 360, 3000), rng.uniform(0, 360, 3000)]
    parts_dec += [90 - rng.uniform(0, 0.02, 3000), -90 + rng.uniform(0, 0.02, 3000)]
    parts_ra.append(rng.uniform(-0.02, 0.02, 3000) % 360)
    parts_dec.append(rng.uniform(-1, 1, 3000))
    cra, cdec = corners(6)  # order of the index for ~75k rows
    k = rng.integers(0, cra.size, 4000)
    parts_ra.append((cra[k] + rng.normal(0, 3e-4, k.size)) % 360)
    parts_dec.append(np.clip(cdec[k] + rng.normal(0, 3e-4, k.size), -90, 90))
    parts_ra.append(np.array([0.0, 359.9999999, 180.0, 0.0]))
    parts_dec.append(np.array([90.0, 0.0, -90.0, -90.0]))
    return np.concatenate(parts_ra), np.concatenate(parts_dec)


@pytest.fixture(scope="module")
def hard_index(hard_catalog, tmp_path_factory):
    ra, dec = hard_catalog
    root = tmp_path_factory.mktemp("cat")
    n = ra.size
    defn = CatalogDefinition(name="hard", columns=("id",))
    build_index(root, defn, lambda: (Chunk(ra[i:i + 20000], dec[i:i + 20000],
                                           {"id": np.arange(i, min(n, i + 20000))}, "mem", i)
                                     for i in range(0, n, 20000)))
    ix = CatalogIndex.open(root / "hard")
    return ix, np.asarray(ix._columns["col:id"])


def queries(hard_catalog, rng):
    ra, dec = hard_catalog
    qra, qdec = sphere(rng, 400)
    j = rng.integers(0, ra.size, 400)  # near real rows: pole, wrap and corner clusters included
    cra, cdec = corners(6)
    extra_ra = np.array([0.0, 359.99999, 0.0, 180.0, 45.0, 0.00001, 90.0])
    extra_dec = np.array([90.0, 0.0, -90.0, 89.99999, 41.8103149, -0.5, -89.9999])
    qra = np.concatenate([qra, (ra[j] + rng.normal(0, 5e-4, j.size)) % 360, cra[:300], extra_ra])
    qdec = np.concatenate([qdec, np.clip(dec[j] + rng.normal(0, 5e-4, j.size), -90, 90), cdec[:300], extra_dec])
    return qra, qdec


def brute_pairs(qra, qdec, ra, dec, radius):
    """Reference pairs, and the pairs too close to the boundary for float64 to decide (excluded)."""
    sure, edge = set(), set()
    r = np.asarray(radius, dtype=float)
    for s in range(0, qra.size, 64):
        d = hav_arcsec(qra[s:s + 64, None], qdec[s:s + 64, None], ra[None, :], dec[None, :])
        i, j = np.nonzero(d <= r - 1e-7)
        sure |= set(zip((i + s).tolist(), j.tolist(), strict=True))
        i, j = np.nonzero(np.abs(d - r) < 1e-7)
        edge |= set(zip((i + s).tolist(), j.tolist(), strict=True))
    return sure, edge


def test_pixels_match_healpy():
    rng = np.random.default_rng(1)
    ra, dec = sphere(rng, 50000)
    cra, cdec = corners(5)  # just off the corners: exactly on them either pixel is right
    ra = np.concatenate([ra, cra + 1e-7, [0, 360 - 1e-9, 180]]) % 360
    dec = np.concatenate([dec, np.clip(cdec + 1e-7, -90, 90), [90, -90, 89.99999999]])
    for order in (0, 1, 5, 11, 18):
        assert np.array_equal(ang2pix_nest(ra, dec, order), hp.ang2pix(1 << order, ra, dec, nest=True, lonlat=True))


def test_neighbours_match_healpy():
    for order in (0, 1, 3):
        ns = 1 << order
        for p in range(12 * ns * ns):
            x, y, f = hp.pix2xyf(ns, p, nest=True)
            mine = {neighbour(int(x), int(y), int(f), order, k) for k in range(8)} - {-1}
            assert mine == set(hp.get_all_neighbours(ns, p, nest=True).tolist()) - {-1}


@pytest.mark.parametrize("radius", [0.1, 1.0, 10.0, 60.0, 600.0, 3600.0])
def test_cone_equals_brute_force(hard_catalog, hard_index, radius):
    ix, ids = hard_index
    ra, dec = hard_catalog
    qra, qdec = queries(hard_catalog, np.random.default_rng(int(radius * 10)))
    q, row, dist = ix.cone(qra, qdec, radius)
    got = set(zip(q.tolist(), ids[row].tolist(), strict=True))
    sure, edge = brute_pairs(qra, qdec, ra, dec, radius)
    assert sure <= got
    assert got - sure <= edge
    assert len(sure) > 0
    # reported distances are the haversine distances of the original rows
    ref = hav_arcsec(qra[q], qdec[q], ra[ids[row]], dec[ids[row]])
    np.testing.assert_allclose(dist, ref, rtol=1e-9, atol=1e-9)


def test_nearest_equals_brute_force(hard_catalog, hard_index):
    ix, ids = hard_index
    ra, dec = hard_catalog
    qra, qdec = queries(hard_catalog, np.random.default_rng(3))
    row, dist = ix.nearest(qra, qdec, 30.0)
    found = 0
    for i in range(qra.size):
        d = hav_arcsec(qra[i], qdec[i], ra, dec)
        k = int(np.argmin(d))
        if d[k] <= 30.0 - 1e-7:
            assert row[i] >= 0 and abs(dist[i] - d[k]) < 1e-7
            found += 1
        elif d[k] > 30.0 + 1e-7:
            assert row[i] == -1 and np.isinf(dist[i])
    assert found > 100


def test_own_radius_equals_brute_force(tmp_path):
    rng = np.random.default_rng(11)
    ra, dec = sphere(rng, 5000)
    rad = rng.lognormal(3.0, 1.0, ra.size)  # ~20" typical
    rad[:3] = [5 * 3600.0, 2 * 3600.0, 0.5]  # two huge objects (brute-force path) and a tiny one
    ra[:3], dec[:3] = [10.0, 359.0, 200.0], [-70.0, 88.0, 10.0]
    defn = CatalogDefinition(name="ext", columns=("id",),
                             radius=RadiusPolicy(kind="column", column="size", scale=1.0))
    build_index(tmp_path, defn, lambda: [Chunk(ra, dec, {"id": np.arange(ra.size), "size": rad}, "mem", 0)])
    ix = CatalogIndex.open(tmp_path / "ext")
    assert ix._big_rows.size >= 1
    ids = np.asarray(ix._columns["col:id"])
    qra, qdec = sphere(rng, 300)
    j = rng.integers(0, ra.size, 700)
    qra = np.concatenate([qra, (ra[j] + rng.normal(0, 0.005, j.size)) % 360, [12.0, 0.5, 200.0]])
    qdec = np.concatenate([qdec, np.clip(dec[j] + rng.normal(0, 0.005, j.size), -90, 90), [-68.0, 86.5, 10.0]])
    q, row, dist = ix.within_own_radius(qra, qdec)
    got = set(zip(q.tolist(), ids[row].tolist(), strict=True))
    sure, edge = brute_pairs(qra, qdec, ra, dec, rad)
    assert sure <= got and got - sure <= edge
    assert any(r == 0 for _, r in got) and any(r == 1 for _, r in got)
    assert np.all(np.diff(q) >= 0)


@pytest.fixture(scope="module")
def ngc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ngc")
    ensure_default_catalogs(root)
    return root


def test_openngc_equals_astropy(ngc_root):
    import astropy.units as u
    from astropy.coordinates import SkyCoord, search_around_sky

    ix = CatalogIndex.open(ngc_root / "openngc")
    assert ix.n_rows > 13000
    rng = np.random.default_rng(5)
    j = rng.integers(0, ix.n_rows, 3000)
    qra = np.concatenate([(ix.ra[j] + rng.normal(0, 0.01, j.size)) % 360, sphere(rng, 2000)[0]])
    qdec = np.concatenate([np.clip(ix.dec[j] + rng.normal(0, 0.01, j.size), -90, 90), sphere(rng, 2000)[1]])
    cat = SkyCoord(np.asarray(ix.ra) * u.deg, np.asarray(ix.dec) * u.deg)
    qc = SkyCoord(qra * u.deg, qdec * u.deg)
    for r in (1.0, 60.0, 1800.0):
        i1, i2, sep, _ = search_around_sky(qc, cat, r * u.arcsec)
        q, row, dist = ix.cone(qra, qdec, r)
        ref = {(a, b) for a, b, s in zip(i1.tolist(), i2.tolist(), sep.arcsec, strict=True) if abs(s - r) > 1e-6}
        got = set(zip(q.tolist(), row.tolist(), strict=True))
        assert ref <= got
        assert len(got ^ ref) <= np.sum(np.abs(sep.arcsec - r) <= 1e-6)
    # own radius: astropy at the largest radius, then each object's own semi-major axis
    rmax = float(ix.radius.max())
    i1, i2, sep, _ = search_around_sky(qc, cat, rmax * u.arcsec)
    keep = sep.arcsec <= ix.radius[i2] - 1e-6
    q, row, _ = ix.within_own_radius(qra, qdec)
    assert set(zip(i1[keep].tolist(), i2[keep].tolist(), strict=True)) <= set(zip(q.tolist(), row.tolist(), strict=True))
    assert abs(len(q) - keep.sum()) <= np.sum(np.abs(sep.arcsec - ix.radius[i2]) <= 1e-6)
    assert keep.sum() > 1000


def test_ensure_default_catalogs_is_idempotent(ngc_root):
    before = CatalogIndex.open(ngc_root / "openngc").meta["build_id"]
    ensure_default_catalogs(ngc_root)
    assert CatalogIndex.open(ngc_root / "openngc").meta["build_id"] == before


def test_catalogset_shape_matches_antares(ngc_root, tmp_path):
    from antares_devkit.models import DevKitLocus

    cs = CatalogSet.open(ngc_root)
    assert cs.names == ["openngc"]
    m31 = [r for r in cs.indexes[0].rows(np.arange(cs.indexes[0].n_rows)) if r["messier"] == "031"][0]
    out = cs.match([m31["ra"] + 0.05, 10.0], [m31["dec"], -30.0])
    assert len(out) == 2
    assert "openngc" in out[0]
    names = [r["name"] for r in out[0]["openngc"]]
    assert "NGC0224" in names
    dists = [r[DIST_KEY] for r in out[0]["openngc"]]
    assert dists == sorted(dists) and all(d >= 0 for d in dists)
    assert out[1] == {} or all(len(v) > 0 for v in out[1].values())  # keys only for catalogs that matched
    row = out[0]["openngc"][names.index("NGC0224")]
    assert isinstance(row["majax"], float) and isinstance(row["name"], str)
    assert all(not (isinstance(v, float) and v != v) for r in out[0]["openngc"] for v in r.values())  # no NaN
    locus = DevKitLocus(id="L1", ra=m31["ra"] + 0.05, dec=m31["dec"], alerts=[], catalog_objects=out[0])
    assert "openngc" in locus.catalogs


def test_catalogset_version_changes_on_rebuild(tmp_path):
    rng = np.random.default_rng(2)
    ra, dec = sphere(rng, 1000)
    defn = CatalogDefinition(name="pts", columns=("id",))
    build_index(tmp_path, defn, lambda: [Chunk(ra, dec, {"id": np.arange(1000)}, "mem", 0)])
    v1 = CatalogSet.open(tmp_path).version
    assert CatalogSet.open(tmp_path).version == v1
    build_index(tmp_path, defn, lambda: [Chunk(ra, dec, {"id": np.arange(1000)}, "mem", 0)])
    v2 = CatalogSet.open(tmp_path).version
    assert v2 != v1
    build_index(tmp_path, CatalogDefinition(name="pts2"), lambda: [Chunk(ra, dec, {"x": ra}, "mem", 0)])
    assert CatalogSet.open(tmp_path).version not in (v1, v2)
    assert len(list(tmp_path.glob("pts@*"))) == 1  # old builds removed


def test_nan_queries_match_nothing(hard_index):
    ix, _ = hard_index
    q, row, dist = ix.cone([np.nan, 10.0], [0.0, np.nan], 3600.0)
    assert q.size == 0
