"""The catalog's pure parts: IceCat-1 errors, sampled sky maps, the record hash, the configuration.

Expectations come from elsewhere: astropy's offsets along an ellipse's boundary, ligo.skymap's
crossmatch of the written FITS file, the LVK sample map's own pixels.
"""

from __future__ import annotations

import math
import tempfile

import numpy as np
import pytest

from broker.multimessenger.catalog.records import content_hash, errors90
from broker.multimessenger.localization import Circle, Ellipse, MultiOrderMap, Union


def _boundary_extent(loc: Ellipse, level: float = 90.0) -> tuple[float, float, float, float]:
    """RA/Dec extent of the ``level`` ellipse, walking its boundary on the sky with astropy."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    s = loc._scale(level)
    a, b = loc.a * s, loc.b * s
    t = np.linspace(0, 2 * np.pi, 3601)
    # a point of the ellipse at parameter t: offset along the major axis (PA) and the minor axis (PA + 90)
    along, across = a * np.cos(t), b * np.sin(t)
    r = np.hypot(along, across)
    pa = loc.pa + np.degrees(np.arctan2(across, along))
    c0 = SkyCoord(*loc.center, unit="deg")
    pts = c0.directional_offset_by(pa * u.deg, r * u.deg)
    dra = (pts.ra.deg - loc.center[0] + 180) % 360 - 180
    return dra.max(), -dra.min(), pts.dec.deg.max() - loc.center[1], loc.center[1] - pts.dec.deg.min()


@pytest.mark.parametrize("ellipse", [Ellipse(100.0, 10.0, 3.0, 1.0, 30.0, 0.9), Ellipse(250.0, -45.0, 1.2, 0.4, 110.0, 0.5),
                                     Ellipse(10.0, 60.0, 0.8, 0.8, 0.0, 0.9)])
def test_ellipse_errors_are_the_extent_of_its_90_percent_boundary(ellipse):
    e = errors90(ellipse, ellipse.center)
    want = _boundary_extent(ellipse)
    got = (e["ra_err_plus"], e["ra_err_minus"], e["dec_err_plus"], e["dec_err_minus"])
    # the tangent-plane model vs the sphere: equal to a few per mille of the axes at these sizes
    assert got == pytest.approx(want, rel=0.02, abs=2e-3)


def test_circle_and_union_errors():
    c = Circle(31.0, 21.0, 1.0, 0.9)
    e = errors90(c, c.center)
    assert e["dec_err_plus"] == e["dec_err_minus"] == pytest.approx(1.0, abs=1e-4)
    assert e["ra_err_plus"] == pytest.approx(1.0 / math.cos(math.radians(21.0)), abs=1e-4)
    u = Union([Circle(10.0, 0.0, 1.0, 0.9), Circle(13.0, 1.0, 0.5, 0.9)])
    eu = errors90(u, (10.0, 0.0))
    assert eu["ra_err_plus"] == pytest.approx(3.5, abs=1e-3) and eu["ra_err_minus"] == pytest.approx(1.0, abs=1e-3)
    assert eu["dec_err_plus"] == pytest.approx(1.5, abs=1e-3) and eu["dec_err_minus"] == pytest.approx(1.0, abs=1e-3)


def test_map_errors_cover_the_90_percent_pixels(shared_data):
    import astropy_healpix as ah
    from astropy.table import Table

    t = Table.read(shared_data / "lvk" / "bayestar.multiorder.fits")
    m = MultiOrderMap(np.asarray(t["UNIQ"]), np.asarray(t["PROBDENSITY"]))
    e = errors90(m, m.center)
    order, ipix = m.region_cells(90.0)
    lon, lat = ah.healpix_to_lonlat(ipix, 2 ** order.astype(np.int64), order="nested")
    assert lat.deg.max() - m.center[1] <= e["dec_err_plus"] and m.center[1] - lat.deg.min() <= e["dec_err_minus"]
    dra = (lon.deg - m.center[0] + 180) % 360 - 180
    cosd = math.cos(math.radians(m.center[1]))
    assert dra.max() <= e["ra_err_plus"] and -dra.min() <= e["ra_err_minus"]
    # and not much more: half a pixel of the coarsest region cell
    half = math.degrees(math.sqrt(4 * math.pi / (12 * 4.0 ** order.min()))) / 2
    assert e["dec_err_plus"] - (lat.deg.max() - m.center[1]) <= half + 1e-4  # records round to 1e-4 deg
    assert e["ra_err_plus"] - dra.max() <= half / cosd + 1e-4


@pytest.mark.parametrize("loc", [Ellipse(100.0, 10.0, 3.0, 1.0, 30.0, 0.9), Circle(200.0, -80.0, 0.2, 0.9),
                                 Circle(0.0, 89.9, 10.0, 0.5)])
def test_sampled_shape_maps_have_the_models_areas_in_ligo_skymap(loc):
    from astropy.coordinates import SkyCoord
    from ligo.skymap.io import read_sky_map
    from ligo.skymap.postprocess import crossmatch

    from broker.multimessenger.catalog.skymap import multiorder_fits

    with tempfile.NamedTemporaryFile(suffix=".fits") as f:
        f.write(multiorder_fits(loc, {"OBJECT": "test"}))
        f.flush()
        m = read_sky_map(f.name, moc=True)
    probs = np.asarray(m["PROBDENSITY"]) * 4 * np.pi / (12 * 4.0 ** np.floor(np.log2(np.asarray(m["UNIQ"]) // 4) / 2))
    assert probs.sum() == pytest.approx(1.0, abs=1e-9)
    r = crossmatch(m, SkyCoord(*loc.center, unit="deg"), contours=(0.5, 0.9))
    assert r.contour_areas == pytest.approx([loc.area(50.0), loc.area(90.0)], rel=0.01)


def test_content_hash_ignores_what_names_a_version_only():
    rec = {"pid": "albireo:event/x/v1", "version": 1, "created": "2026-01-01T00:00:00Z", "ra": 1.0,
           "associations": [{"pid": "albireo:assoc/x/L/v1", "locus_id": "L", "contour_level": 5.0}]}
    same = dict(rec, pid="albireo:event/x/v2", version=2, created="2027-01-01T00:00:00Z",
                associations=[{"pid": "albireo:assoc/x/L/v2", "locus_id": "L", "contour_level": 5.0}])
    assert content_hash(rec) == content_hash(same)
    assert content_hash(rec) != content_hash(dict(rec, ra=1.0001))
    assert content_hash(rec) != content_hash(dict(rec, associations=[]))


@pytest.mark.parametrize("key,value,word", [("ID_PREFIX", "Albireo!", "id_prefix"), ("DOI_PREFIX", "10.x", "doi_prefix"),
                                            ("ARK_NAAN", "abc", "ark_naan"), ("LICENSE", "MyLicence", "license")])
def test_bad_catalog_settings_fail_at_start_up(key, value, word):
    from broker.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=f"event_catalog.{word}"):
        load_config(env={f"ALBIREO_EVENT_CATALOG__{key}": value})
    ok = load_config(env={"ALBIREO_EVENT_CATALOG__LICENSE": "MyLicence",
                          "ALBIREO_EVENT_CATALOG__LICENSE_URL": "https://example.org/licence"})
    assert ok.event_catalog.license == "MyLicence"
