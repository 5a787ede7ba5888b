"""Portal pages through the Flask test client: every page renders real data, errors render cleanly."""

from __future__ import annotations

import io
import json
import re

import pytest


def test_home_shows_counts_and_loci(client, store):
    html = client.get("/").data.decode()
    assert f'id="n-alerts">{store.counts()["alerts"]}<' in html
    assert "locus-link" in html


@pytest.mark.parametrize("q", ["{ra} {dec}", "{ra}, {dec}", "{hms} {dms}", "{ztf}"])
def test_search_by_coordinates_and_ids(client, host_objects, q):
    from astropy.coordinates import SkyCoord

    ztf, ra, dec = host_objects[0]
    c = SkyCoord(ra, dec, unit="deg")
    text = q.format(ra=ra, dec=dec, hms=c.ra.to_string(unit="hour", sep="hms", precision=3),
                    dms=c.dec.to_string(sep="dms", precision=2, alwayssign=True), ztf=ztf)
    html = client.get("/search", query_string={"q": text, "radius": "3"}).data.decode()
    assert ztf in html and 'id="result-count">1 loci' in html


def test_search_by_catalog_name_resolves(client):
    r = client.get("/search", query_string={"q": "Andromeda Galaxy", "radius": "60"})
    assert r.status_code == 200
    assert "NGC0224 (openngc)" in r.data.decode()


def test_search_unknown_name_is_400(client):
    r = client.get("/search", query_string={"q": "Planet Nine"})
    assert r.status_code == 400 and "neither coordinates" in r.data.decode()


def test_search_tags_ranges_and_paging(client, app):
    tags = app.extensions["albireo"].index.tag_counts()
    tag, n = max(tags.items(), key=lambda kv: kv[1])
    html = client.get("/search", query_string={"tags": tag}).data.decode()
    assert f'id="result-count">{n} loci' in html
    html = client.get("/search", query_string={"prop0": "num_alerts", "min0": "20", "limit": "2"}).data.decode()
    assert 'id="next-page"' in html
    assert client.get("/search", query_string={"prop0": "num_alerts", "min0": "x"}).status_code == 400
    assert client.get("/search", query_string={"q": "1 2", "radius": "-3"}).status_code == 400


def test_locus_page_chart_data_cutouts_and_matches(client, store, host_objects, locus_with):
    ztf = host_objects[0][0]
    loc = locus_with(lambda x: x.internal_properties.get("ztf_object_id") == ztf)
    html = client.get(f"/loci/{loc.locus_id}").data.decode()
    chart = json.loads(re.search(r'<script id="lc-data" type="application/json">(.*?)</script>', html, re.S).group(1))
    n_det = sum(1 for a in loc.alerts if a.mag is not None)
    assert sum(s["n"] for s in chart["series"] if s["kind"] == "detection") == n_det
    assert {s["band"] for s in chart["series"]} == {a.passband for a in loc.alerts}
    assert f"HOST-{ztf}" in html and "sample_hosts" in html
    imgs = re.findall(r'<img class="cutout" alt="(\w+) cutout" src="([^"]+)"', html)
    assert {k for k, _ in imgs} == {"science", "template", "difference"}
    from PIL import Image

    png = client.get(imgs[0][1])
    assert png.mimetype == "image/png"
    assert Image.open(io.BytesIO(png.data)).size[0] >= 63


def test_locus_page_shows_tag_provenance(client, store, locus_with):
    loc = locus_with(lambda x: x.user_tags and x.provenance)
    html = client.get(f"/loci/{loc.locus_id}").data.decode()
    tag = sorted(loc.user_tags)[0]
    assert f"set by {loc.provenance[tag].filter}" in html


def test_missing_locus_page_is_404_html(client):
    r = client.get("/loci/ALBnothing")
    assert r.status_code == 404 and "text/html" in r.content_type


def test_cutout_bad_kind_is_400(client):
    assert client.get("/cutouts/x/bogus.png").status_code == 400


def test_filters_and_streams_pages(client):
    html = client.get("/filters").data.decode()
    # logged out: no form, a way to log in; a post without a session is refused
    assert "high_snr" in html and 'id="filter-form"' not in html and 'id="login-to-submit"' in html
    assert client.post("/filters", data={"code": "print(1)"}).status_code == 401
    html = client.get("/streams").data.decode()
    assert "confluent_kafka import Consumer" in html and "from antares_client import StreamingClient" in html
    assert "client.fast_riser" in html and "albireo.loci.high_snr" in html
    assert "kafka.example.org:9094" in html and "127.0.0.1:9092" not in html  # consumers see the SASL listener only
    assert client.get("/filters/high_snr").status_code == 200
