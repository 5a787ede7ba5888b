"""Locus aggregation against ANTARES's own values, and the devkit filter API on our Locus."""

from __future__ import annotations

import math
import random

import pytest

from broker.alert import Alert
from broker.locus import Locus, aggregate_properties, locus_from_record, locus_record, make_locus_id
from broker.ops.samples import devkit_locus


def _alert(d: dict) -> Alert:
    p = dict(d["properties"])
    return Alert(
        alert_id=d["id"],
        survey=p["ant_survey"],
        mjd=d["mjd"],
        ra=p.get("ant_ra", math.nan),
        dec=p.get("ant_dec", math.nan),
        passband=p.get("ant_passband", ""),
        mag=p.get("ant_mag"),
        magerr=p.get("ant_magerr"),
        maglim=p.get("ant_maglim"),
        properties={k: v for k, v in p.items() if not k.startswith("ant_")},
        object_id=p.get("ztf_object_id") or (d["id"].split(":")[1].split("-")[0] if "upper_limit" in d["id"] else None),
    )


@pytest.fixture(scope="module")
def large():
    return devkit_locus("large_locus")


def test_aggregates_equal_antares_on_the_real_3959_alert_locus(large):
    alerts = [_alert(a) for a in large["alerts"]]
    props = aggregate_properties(alerts)
    want = large["old_properties"]
    for key in ("num_alerts", "num_mag_values", "brightest_alert_id", "brightest_alert_magnitude",
                "brightest_alert_observation_time", "newest_alert_id", "newest_alert_magnitude",
                "newest_alert_observation_time", "oldest_alert_id", "oldest_alert_magnitude",
                "oldest_alert_observation_time", "ztf_ssnamenr"):
        assert props[key] == want[key], key
    assert props["survey"]["ztf"]["field"] == want["survey"]["ztf"]["field"]
    assert props["survey"]["ztf"]["rcid"] == want["survey"]["ztf"]["rcid"]
    assert props["survey"]["ztf"]["ssnamenr"] == want["survey"]["ztf"]["ssnamenr"]


def test_incremental_folding_equals_folding_from_scratch(large):
    """Alerts arriving in any order, a few at a time, give the same properties and order."""
    alerts = [_alert(a) for a in large["alerts"][:600]]
    shuffled = alerts[:]
    random.Random(5).shuffle(shuffled)
    locus = Locus(locus_id="X", ra=1.0, dec=2.0)
    for i in range(0, len(shuffled), 37):
        locus.add_alerts(shuffled[i : i + 37])
    assert locus.internal_properties == aggregate_properties(alerts)
    assert [a.alert_id for a in locus.alerts] == [a.alert_id for a in sorted(alerts, key=lambda a: (a.mjd, a.alert_id))]
    # Same ids again change nothing.
    before = dict(locus.internal_properties)
    assert locus.add_alerts(alerts[:50]) == []
    assert locus.internal_properties == before


def test_devkit_api_on_our_locus(large):
    alerts = [_alert(a) for a in large["alerts"][:300]]
    locus = Locus(locus_id="ALB2020x", ra=large["ra"], dec=large["dec"])
    locus.add_alerts(alerts)
    assert locus.id == locus.locus_id == "ALB2020x"
    assert locus.alert.id == max(alerts, key=lambda a: (a.mjd, a.alert_id)).alert_id
    assert locus.alert.properties["ant_mag"] == locus.alert.mag
    ts = locus.timeseries()
    assert len(ts) == 300 and "ant_mag_corrected" in ts.colnames
    ts["ant_mag"][0] = -99  # a filter scribbling on its copy does not touch the shared cache
    assert locus.timeseries()["ant_mag"][0] != -99
    lc = locus.lightcurve()
    assert lc.colnames[:3] == ["alert_id", "ant_mjd", "ant_survey"]
    locus.tag("x")
    locus.set_property("score", 1.5)
    assert "x" in locus.tags and locus.properties["score"] == 1.5
    with pytest.raises(ValueError):
        locus.set_property("bad", [1, 2])
    with pytest.raises(ValueError):
        locus.tag(3)


def test_record_round_trip_keeps_everything(large):
    locus = Locus(locus_id="L1", ra=10.0, dec=-5.0)
    locus.add_alerts([_alert(a) for a in large["alerts"][:20]])
    locus.tag("t")
    locus.set_property("p", "v")
    locus.catalog_objects = {"openngc": [{"name": "NGC 1", "match_distance_arcsec": 3.0}]}
    back = locus_from_record(locus_record(locus), locus.alerts)
    assert locus_record(back) == locus_record(locus)
    assert back.properties == locus.properties


def test_locus_ids_are_stable_and_distinct():
    a = make_locus_id("ztf_candidate:1", 58000.0)
    assert a == make_locus_id("ztf_candidate:1", 58000.0)
    assert a.startswith("ALB2017") and len(a) == len("ALB2017") + 10
    ids = {make_locus_id(f"ztf_candidate:{i}", 59000.0) for i in range(20000)}
    assert len(ids) == 20000
    assert make_locus_id("x", float("nan")).startswith("ALB0")
