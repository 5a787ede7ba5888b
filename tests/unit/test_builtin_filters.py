"""Each built-in filter on loci made to sit on either side of its thresholds, and on a real galaxy."""

from __future__ import annotations

import numpy as np
import pytest

from broker.alert import Alert
from broker.filtering.runner import InProcessRunner, load_builtin_filters
from broker.locus import Locus


def _det(i, mjd, mag, err=0.05, band="g", diffpos="t", ra=10.0, dec=20.0, survey=1):
    return Alert(f"ztf_candidate:{i}", survey, mjd, ra, dec, band, mag, err, 20.5,
                 {"ztf_isdiffpos": diffpos, "ztf_fid": 1}, object_id="ZTF00aaaaaaa")


def _run(name, locus):
    runner = InProcessRunner(load_builtin_filters([name]))
    report = runner.run([locus])
    assert not report.errors, report.errors
    return report.tags_by_locus[locus.locus_id]


def _locus(alerts, ra=10.0, dec=20.0):
    locus = Locus(locus_id="L", ra=ra, dec=dec)
    locus.add_alerts(alerts)
    return locus


@pytest.mark.parametrize("err,tagged", [(0.0215, True), (0.0219, False)])
def test_high_snr(err, tagged):
    locus = _locus([_det(1, 59000.0, 17.0, err=err)])
    assert ("high_snr" in _run("high_snr", locus)) is tagged
    assert locus.properties["newest_alert_snr"] == pytest.approx(2.5 / np.log(10) / err)


def test_high_snr_ignores_upper_limits():
    ul = Alert("ztf_upper_limit:ZTF00aaaaaaa-1", 2, 59001.0, float("nan"), float("nan"), "g", None, None, 20.0, {})
    locus = _locus([_det(1, 59000.0, 17.0, err=0.01), ul])
    assert _run("high_snr", locus) == set()


def test_fast_riser_tags_a_real_rise_only():
    rise = _locus([_det(1, 59000.0, 19.0), _det(2, 59001.0, 18.2)])
    assert "fast_riser" in _run("fast_riser", rise)
    assert rise.properties["rise_rate_mag_per_day"] == pytest.approx(0.8)

    slow = _locus([_det(1, 59000.0, 19.0), _det(2, 59003.0, 18.2)])
    assert _run("fast_riser", slow) == set()  # 0.27 mag/day

    noisy = _locus([_det(1, 59000.0, 19.0, err=0.3), _det(2, 59001.0, 18.4, err=0.3)])
    assert _run("fast_riser", noisy) == set()  # 0.6 mag but < 3 sigma

    fading_ref = _locus([_det(1, 59000.0, 19.0), _det(2, 59001.0, 18.2, diffpos="f")])
    assert _run("fast_riser", fading_ref) == set()  # a negative difference is not a rising source

    other_band = _locus([_det(1, 59000.0, 19.0, band="R"), _det(2, 59001.0, 18.2, band="g")])
    assert _run("fast_riser", other_band) == set()


def test_fast_riser_uses_a_deeper_upper_limit():
    ul = Alert("ztf_upper_limit:ZTF00aaaaaaa-1", 2, 59000.0, float("nan"), float("nan"), "g", None, None, 20.5, {})
    locus = _locus([ul, _det(2, 59001.0, 18.0)])
    assert "fast_riser" in _run("fast_riser", locus)
    assert locus.properties["rise_rate_mag_per_day"] == pytest.approx(2.5)


def test_nearby_galaxy_on_a_real_openngc_galaxy(tmp_path):
    from broker.crossmatch import CatalogSet, ensure_default_catalogs

    ensure_default_catalogs(tmp_path)
    cats = CatalogSet.open(tmp_path)
    # NGC 4321 (M100): RA 185.7287, Dec +15.8222, 7.4' across; a point 30" from its centre is inside.
    ra, dec = np.array([185.7287, 185.7287]), np.array([15.8222 + 30 / 3600, 15.8222 + 2.0])
    inside, far = cats.match(ra, dec)
    assert "openngc" in inside and "openngc" not in far
    locus = _locus([_det(1, 59000.0, 17.0, ra=ra[0], dec=dec[0])], ra=ra[0], dec=dec[0])
    locus.catalog_objects = inside
    assert "in_nearby_galaxy" in _run("nearby_galaxy", locus)
    assert locus.properties["host_name"] == "NGC4321"
    assert 25 < locus.properties["host_distance_arcsec"] < 35
