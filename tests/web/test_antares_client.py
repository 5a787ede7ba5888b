"""``albireo serve`` on loopback, driven by the unmodified ``antares-client`` (ANTARES_API_BASE_URL → /v2/).

The client runs in a subprocess so that the environment variable is read exactly as a user's script
reads it (at import). Every value is compared with the store the real pipeline filled.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from tests.web.conftest import ROOT

CLIENT_SCRIPT = textwrap.dedent('''
    import json, sys
    from astropy.coordinates import Angle, SkyCoord
    from antares_client import search

    args = json.loads(sys.argv[1])
    out = {}
    loc = search.get_by_id(args["locus_id"])
    out["get_by_id"] = {"id": loc.locus_id, "ra": loc.ra, "dec": loc.dec, "tags": sorted(loc.tags),
                        "num_alerts": loc.properties["num_alerts"], "lightcurve_rows": len(loc.lightcurve),
                        "lightcurve_ids": sorted(loc.lightcurve["alert_id"].astype(str)),
                        "timeseries_rows": len(loc.timeseries), "alert_ids": [a.alert_id for a in loc.alerts],
                        "catalogs": {k: [o["name"] for o in v] for k, v in loc.catalog_objects.items()}}
    cone = search.cone_search(SkyCoord(args["ra"], args["dec"], unit="deg"), Angle("2 arcsec"))
    out["cone"] = [x.locus_id for x in cone]
    z = search.get_by_ztf_object_id(args["ztf"])
    out["ztf"] = None if z is None else {"id": z.locus_id, "tags": sorted(z.tags)}
    out["missing"] = search.get_by_id("ALBdoesnotexist") is None
    out["tags"] = sorted(search.get_available_tags())
    q = {"query": {"bool": {"filter": [{"range": {"properties.num_alerts": {"gte": 20}}}]}}}
    out["search"] = sorted(x.locus_id for x in search.search(q))
    out["by_tag"] = sorted(x.locus_id for x in search.search({"query": {"bool": {"filter": {"term": {"tags": args["tag"]}}}}}))
    out["catalog_search"] = sorted(search.catalog_search(10.6848, 41.2690))
    print(json.dumps(out))
''')


@pytest.fixture(scope="module")
def server(web_config, pipeline_workdir):
    env = dict(os.environ, ALBIREO_CATALOGS__ROOT=web_config.catalogs.root, ALBIREO_HOME=str(pipeline_workdir / "home"))
    proc = subprocess.Popen([sys.executable, "-m", "broker.cli", "serve", "--port", "0", "--store", web_config.store.path,
                             "--index", web_config.search.path], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"listening on (http://\S+)", line)
        assert m, f"serve did not start: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}"
        yield m.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_antares_client_against_albireo(server, store, host_objects):
    ztf, ra, dec = host_objects[0]
    loci = {x.locus_id: x for b in store.iter_loci() for x in b}
    target = next(x for x in loci.values() if x.internal_properties.get("ztf_object_id") == ztf)
    tagged = {t for x in loci.values() for t in x.user_tags}
    tag = sorted(tagged)[0]
    args = {"locus_id": target.locus_id, "ra": ra, "dec": dec, "ztf": ztf, "tag": tag}
    env = dict(os.environ, ANTARES_API_BASE_URL=f"{server}v2/")
    proc = subprocess.run([sys.executable, "-c", CLIENT_SCRIPT, json.dumps(args)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    got = out["get_by_id"]
    assert got["id"] == target.locus_id
    assert got["ra"] == pytest.approx(target.ra, abs=1e-9) and got["dec"] == pytest.approx(target.dec, abs=1e-9)
    assert got["tags"] == sorted(target.user_tags)
    assert got["num_alerts"] == len(target.alerts)
    assert got["alert_ids"] == [a.alert_id for a in target.alerts]
    assert got["timeseries_rows"] == len(target.alerts)
    assert got["lightcurve_ids"] == sorted(a.alert_id for a in target.alerts)
    assert got["catalogs"] == {"sample_hosts": [f"HOST-{ztf}"]}

    assert out["cone"] == [target.locus_id]
    assert out["ztf"] == {"id": target.locus_id, "tags": sorted(target.user_tags)}
    assert out["missing"] is True
    assert out["tags"] == sorted(tagged)
    assert out["search"] == sorted(i for i, x in loci.items() if x.internal_properties["num_alerts"] >= 20)
    assert out["by_tag"] == sorted(i for i, x in loci.items() if tag in x.user_tags)
    assert out["catalog_search"] == ["openngc"]


TIMESERIES_SCRIPT = textwrap.dedent('''
    import json, sys
    from antares_client import search

    out = {}
    for lid in json.loads(sys.argv[1]):
        loc = search.get_by_id(lid)
        ts = loc.timeseries  # astropy Time from ant_mjd: ErfaError on a time in the wrong unit
        out[lid] = sorted(float(t) for t in ts["ant_mjd"])
    print(json.dumps(out))
''')


def test_antares_client_builds_every_rubin_timeseries(server, store):
    """Every stored Rubin locus has times antares-client turns into a TimeSeries: the samples whose
    times are seconds (v3.0–v7.4) were dead-lettered, not stored as MJD 1.48e9."""
    rubin = {x.locus_id: x for b in store.iter_loci() for x in b if any(a.survey == 4 for a in x.alerts)}
    assert rubin, "the demo stored no Rubin locus"
    env = dict(os.environ, ANTARES_API_BASE_URL=f"{server}v2/")
    proc = subprocess.run([sys.executable, "-c", TIMESERIES_SCRIPT, json.dumps(sorted(rubin))], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for lid, locus in rubin.items():
        assert got[lid] == pytest.approx(sorted(a.mjd for a in locus.alerts), abs=1e-9)
        assert all(40587 <= t <= 88069 for t in got[lid])
    letters = [d for d in store.dead_letters(limit=1000) if d.reason == "implausible_time"]
    assert len(letters) == 10 and all("1480360995" in d.message for d in letters)
