"""Credible regions and containment against ``ligo.skymap.postprocess.crossmatch`` on the same maps.

Maps: LVK's sample multi-order map (``bayestar.multiorder.fits``, also embedded in the JSON alerts)
and a multi-order map built here (three Gaussian blobs on a flat nside-512 grid, made multi-order
with ``ligo.skymap.bayestar.derasterize``). 50 % / 90 % areas and every position's level and area
must agree within 1 %. Circles and ellipses are checked the same way against crossmatch on a fine
raster of their own density.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table

from broker.multimessenger.localization import Circle, Ellipse, MultiOrderMap, Union, region_ranges
from broker.multimessenger.notice import NoticeError


def _positions(center: tuple[float, float], n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Half near the map's peak (where the credible levels vary), half anywhere on the sky."""
    rng = np.random.default_rng(seed)
    ra = np.concatenate([center[0] + rng.normal(0, 8, n // 2), rng.uniform(0, 360, n - n // 2)]) % 360
    dec = np.concatenate([np.clip(center[1] + rng.normal(0, 8, n // 2), -89.9, 89.9),
                          np.degrees(np.arcsin(rng.uniform(-1, 1, n - n // 2)))])
    return ra, dec


def _crossmatch(table: Table, ra: np.ndarray, dec: np.ndarray):
    from ligo.skymap.postprocess import crossmatch

    return crossmatch(table, SkyCoord(ra * u.deg, dec * u.deg), contours=(0.5, 0.9))


def _agree(loc, table: Table, ra: np.ndarray, dec: np.ndarray) -> None:
    ref = _crossmatch(table, ra, dec)
    for level, want in zip((50, 90), ref.contour_areas, strict=True):
        assert loc.area(level) == pytest.approx(want, rel=0.01)
    level, area = loc.containment(ra, dec)
    bad_level = np.flatnonzero(np.abs(level - 100 * ref.searched_prob) > 1.0)  # 1 % of the probability
    bad_area = np.flatnonzero(np.abs(area - ref.searched_area) > 0.01 * ref.searched_area)
    assert bad_level.size == 0, [(ra[i], dec[i], level[i], 100 * ref.searched_prob[i]) for i in bad_level[:5]]
    assert bad_area.size == 0, [(ra[i], dec[i], area[i], ref.searched_area[i]) for i in bad_area[:5]]
    inside = level <= 90
    assert 0 < inside.sum() < ra.size  # the comparison covers both sides of the 90 % contour


@pytest.fixture(scope="module")
def lvk_table(shared_data) -> Table:
    return Table.read(shared_data / "lvk" / "bayestar.multiorder.fits")


def test_lvk_sample_map_agrees_with_crossmatch(shared_data, lvk_table):
    loc = MultiOrderMap.from_fits_bytes((shared_data / "lvk" / "bayestar.multiorder.fits").read_bytes())
    assert loc.n_pixels == len(lvk_table)
    _agree(loc, lvk_table["UNIQ", "PROBDENSITY"], *_positions(loc.center))


def test_the_map_embedded_in_the_lvk_alert_is_the_same_map(shared_data, lvk_table):
    from broker.multimessenger.parse import parse_notice

    n = parse_notice((shared_data / "lvk" / "MS181101ab-preliminary.json").read_bytes())
    loc = MultiOrderMap.from_fits_bytes(n.skymap)
    _agree(loc, lvk_table["UNIQ", "PROBDENSITY"], *_positions(loc.center, n=500, seed=3))


def _blobs(lon_deg: np.ndarray, lat_deg: np.ndarray) -> np.ndarray:
    """Three Gaussian blobs (unnormalised density)."""
    out = np.zeros(np.shape(lon_deg))
    lon, lat = np.radians(lon_deg), np.radians(lat_deg)
    for ra0, dec0, sigma, w in ((40.0, 10.0, 3.0, 0.6), (52.0, 14.0, 1.5, 0.3), (120.0, -40.0, 6.0, 0.1)):
        r0, d0 = np.radians(ra0), np.radians(dec0)
        cosd = np.sin(d0) * np.sin(lat) + np.cos(d0) * np.cos(lat) * np.cos(lon - r0)
        out += w / sigma**2 * np.exp(-(np.degrees(np.arccos(np.clip(cosd, -1, 1))) ** 2) / (2 * sigma**2))
    return out


@pytest.fixture(scope="module")
def built_map() -> Table:
    """A multi-order map made here by adaptive refinement, as BAYESTAR makes its maps.

    Start from all order-3 cells; split (into its 4 children) every cell holding more than 1e-4 of
    the probability, down to order 11. The result has cells of many orders, UNIQ-indexed.
    """
    import astropy_healpix as ah

    order, ipix = np.full(12 * 4**3, 3), np.arange(12 * 4**3)
    done_o, done_i, done_d = [], [], []
    total = None
    while order.size:
        lon, lat = ah.healpix_to_lonlat(ipix, 2 ** order.astype(np.int64), order="nested")
        dens = _blobs(lon.deg, lat.deg)
        prob = dens * 4 * np.pi / (12 * 4.0**order)
        total = prob.sum() if total is None else total  # the whole sky at order 3: the normalisation
        split = (prob > 1e-4 * total) & (order < 11)
        done_o.append(order[~split])
        done_i.append(ipix[~split])
        done_d.append(dens[~split])
        order = np.repeat(order[split] + 1, 4)
        ipix = (4 * np.repeat(ipix[split], 4) + np.tile(np.arange(4), int(split.sum())))
    order, ipix, dens = map(np.concatenate, (done_o, done_i, done_d))
    area = 4 * np.pi / (12 * 4.0**order)
    dens = dens / np.sum(dens * area)
    uniq = 4 * 4**order.astype(np.int64) + ipix
    assert len(np.unique(order)) >= 5  # really multi-order
    return Table({"UNIQ": uniq, "PROBDENSITY": dens})


def test_a_multi_order_map_built_here_agrees_with_crossmatch(built_map):
    loc = MultiOrderMap(np.asarray(built_map["UNIQ"]), np.asarray(built_map["PROBDENSITY"]))
    _agree(loc, built_map["UNIQ", "PROBDENSITY"], *_positions((40.0, 10.0), seed=1))


@pytest.mark.parametrize("ordering", ["NESTED", "RING"])
def test_flat_maps_are_read_in_either_ordering(ordering):
    """A flat nside-64 map written as a FITS file, as IceCube sends them, read back to the same credible areas."""
    import astropy_healpix as ah
    from astropy.io import fits

    from broker.multimessenger.skymaps import read_skymap

    nside = 64
    lon, lat = ah.healpix_to_lonlat(np.arange(12 * nside**2), nside, order="nested")
    prob = np.exp(-((lon.deg - 200) ** 2 + (lat.deg - 30) ** 2) / 50.0)
    prob /= prob.sum()
    values = prob if ordering == "NESTED" else prob[ah.HEALPix(nside, "nested").ring_to_nested(np.arange(prob.size))]
    hdu = fits.BinTableHDU.from_columns([fits.Column("PROB", "D", array=values)])
    hdu.header.update(PIXTYPE="HEALPIX", ORDERING=ordering, NSIDE=nside)
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buf)
    uniq, density, _ = read_skymap(buf.getvalue())
    loc = MultiOrderMap(uniq, density)
    ref = MultiOrderMap(4 * nside**2 + np.arange(prob.size), prob / ah.nside_to_pixel_area(nside).to_value("sr"))
    assert loc.area(90) == pytest.approx(ref.area(90), rel=1e-9)
    assert loc.center == pytest.approx(ref.center)


def _raster(loc, radius_deg: float = 8.0, order: int = 12) -> Table:
    """The shape's own density on order-12 cells (~50″) within ``radius_deg`` of its centre.

    For both models the density falls linearly with the level (vMF: ``exp(-κ(1 - cos θ)) =
    1 - level·(1 - e^{-2κ})``; the tangent-plane Gaussian: ``(1 - p)^{d²} = 1 - level``), and
    ligo.skymap sums it greedily on its own. Outside the cone the probability is < 1e-4.
    """
    import cdshealpix.nested as hp

    ipix, _, _ = hp.cone_search(loc.center[0] * u.deg, loc.center[1] * u.deg, radius_deg * u.deg, order, flat=True)
    ipix = np.asarray(ipix, dtype=np.int64)
    lon, lat = hp.healpix_to_lonlat(ipix, order)
    level, _ = loc.containment(lon.deg, lat.deg)
    density = np.clip(1.0 - level / 100.0, 0.0, None)
    density /= density.sum() * 4 * np.pi / (12 * 4.0**order)
    return Table({"UNIQ": 4 * 4**order + ipix, "PROBDENSITY": density})


@pytest.mark.parametrize("shape", ["circle", "ellipse"])
def test_circles_and_ellipses_agree_with_crossmatch_on_their_raster(shape):
    loc = Circle(150.0, 20.0, 2.0, 0.9) if shape == "circle" else Ellipse(150.0, 20.0, 3.0, 1.2, 35.0, 0.9)
    table = _raster(loc)
    rng = np.random.default_rng(5)
    ra, dec = (150.0 + rng.normal(0, 2.0, 2000)) % 360, 20.0 + rng.normal(0, 2.0, 2000)
    from broker.multimessenger.localization import angular_distance_deg

    ra, dec = ra[angular_distance_deg(ra, dec, 150.0, 20.0) < 7.5], dec[angular_distance_deg(ra, dec, 150.0, 20.0) < 7.5]
    ref = _crossmatch(table, ra, dec)
    for level, want in zip((50, 90), ref.contour_areas, strict=True):
        assert loc.area(level) == pytest.approx(want, rel=0.01)
    level, area = loc.containment(ra, dec)
    near = 100 * ref.searched_prob < 99  # far out, every cell has level ~100 on both sides
    assert near.sum() > 1000 and (level[near] <= 90).sum() > 500
    assert np.max(np.abs(level[near] - 100 * ref.searched_prob[near])) <= 1.0
    # A position's area follows its level, and on a raster the level is the cell centre's (the cell's, not the
    # point's), so compare the area *function*: our area at crossmatch's level against crossmatch's area.
    big = near & (ref.searched_area > 0.5)
    ours = np.array([loc.area(lv) for lv in 100 * ref.searched_prob[big]])
    assert np.max(np.abs(ours - ref.searched_area[big]) / ref.searched_area[big]) <= 0.01
    assert np.median(np.abs(area[big] - ref.searched_area[big]) / ref.searched_area[big]) <= 0.01


def test_circle_semantics():
    c = Circle(10.0, -30.0, 1.5, 0.9)
    level, area = c.containment([10.0, 10.0, 10.0], [-30.0, -28.5, -25.0])
    assert level[0] == pytest.approx(0.0, abs=1e-9)
    assert level[1] == pytest.approx(90.0, abs=1e-6)  # on the given radius: the given containment
    assert level[2] > 99.9
    assert c.radius_at(90) == pytest.approx(1.5, rel=1e-9)
    assert area[1] == pytest.approx(c.area(90), rel=1e-6)
    sk = Circle(270.82, 31.46, 0.91, 0.68)  # Super-K's 68 % circle: its 90 % region is wider
    assert sk.radius_at(90) > 0.91 and sk.radius_at(68) == pytest.approx(0.91, rel=1e-9)
    assert np.isnan(c.containment([np.nan], [0.0])[0][0])


def test_ellipse_axes_and_position_angle():
    e = Ellipse(100.0, 0.0, 2.0, 0.5, 90.0, 0.9)  # major axis east-west
    lv, _ = e.containment([102.0, 100.0], [0.0, 2.0])
    assert lv[0] == pytest.approx(90.0, abs=0.1)  # 2° east: on the ellipse
    assert lv[1] > 99.99  # 2° north: far outside along the minor axis


def test_union_takes_the_smallest_level():
    a, b = Circle(17.48, 16.15, 0.5), Circle(13.82, 18.66, 0.5)
    u_ = Union([a, b])
    lv, _ = u_.containment([17.48, 13.82, 15.6], [16.15, 18.66, 17.4])
    assert lv[0] == pytest.approx(0.0, abs=1e-9) and lv[1] == pytest.approx(0.0, abs=1e-9) and lv[2] > 99


def test_moc_regions_hold_what_containment_says(shared_data):
    loc = MultiOrderMap.from_fits_bytes((shared_data / "lvk" / "bayestar.multiorder.fits").read_bytes())
    moc = loc.moc(90)
    assert moc.sky_fraction * 4 * np.pi * (180 / np.pi) ** 2 == pytest.approx(loc.area(90), rel=0.01)
    ra, dec = _positions(loc.center, seed=4)
    level, _ = loc.containment(ra, dec)
    inside = moc.contains_lonlat(ra * u.deg, dec * u.deg)
    assert np.array_equal(inside, level <= np.max(loc.cumprob[: np.searchsorted(loc.cumprob, 0.9) + 1]) * 100)
    depth, ranges = region_ranges(moc, 200)
    assert len(ranges) <= 200 and depth < moc.max_order
    from mocpy import MOC

    coarse = MOC.from_depth29_ranges(29, (ranges << np.int64(2 * (29 - depth))).astype(np.uint64))
    assert np.all(coarse.contains_lonlat(ra[inside] * u.deg, dec[inside] * u.deg))  # a superset


def test_implausible_shapes_are_refused():
    for make in (lambda: Circle(0, 0, 0.0), lambda: Circle(0, 0, float("nan")), lambda: Circle(0, 0, 1.0, 1.0),
                 lambda: Ellipse(0, 0, 1.0, 2.0), lambda: MultiOrderMap(np.array([4]), np.array([0.0]))):
        with pytest.raises(NoticeError):
            make()
