"""The Index contract: the embedded index and Elasticsearch answer the same queries the same way."""

from __future__ import annotations

import numpy as np
import pytest

from broker.adapters.search.document import locus_document
from broker.adapters.search.sky import angular_distance_deg
from broker.ports import LocusQuery, QueryError


def _sky(locus_factory, n: int = 300, seed: int = 7):
    """Loci scattered over a 1° patch straddling RA 0/360, with tags and filter properties."""
    rng = np.random.default_rng(seed)
    loci = []
    for i in range(n):
        ra = float((359.6 + rng.uniform(0, 0.8)) % 360.0)
        dec = float(rng.uniform(-0.4, 0.4))
        tags = tuple(t for t, m in (("high_snr", 2), ("nuclear_transient", 3)) if i % m == 0)
        props = {"snr_max": float(rng.uniform(0, 100))} if i % 5 else {}
        if i % 4 == 0:
            props["class"] = "SN Ia" if i % 8 == 0 else "AGN"
        loci.append(locus_factory(ra, dec, n=2 + i % 3, mjd0=60000.0 + (i % 37), seed=1000 + i,
                                  tags=tags, props=props))
    return loci


@pytest.fixture
def filled(index, locus_factory):
    loci = _sky(locus_factory)
    docs = [locus_document(x) for x in loci]
    index.upsert(docs[:150])
    index.upsert(docs[150:])
    index.refresh()
    return index, loci, docs


def _all_pages(index, query: LocusQuery) -> list[str]:
    ids, cursor = [], None
    for _ in range(1000):
        query.search_after = cursor
        page = index.search(query)
        ids += [h["locus_id"] for h in page.hits]
        cursor = page.next_cursor
        if cursor is None:
            return ids
    raise AssertionError("pagination did not end")


def test_upsert_get_count_tags(filled, locus_factory):
    index, loci, docs = filled
    assert index.count() == 300
    got = index.get(loci[24].locus_id)
    assert got["locus_id"] == loci[24].locus_id and got["ra"] == loci[24].ra
    assert got["tags"] == ["high_snr", "nuclear_transient"]
    assert got["properties"]["class"] == "SN Ia"
    assert got["num_alerts"] == loci[24].internal_properties["num_alerts"]
    assert got["ztf_object_id"] == loci[24].internal_properties["ztf_object_id"]
    assert index.get("ALBnope") is None
    assert index.tag_counts() == {"high_snr": 150, "nuclear_transient": 100}
    # replace: a re-sent document overwrites tags and properties
    loci[24].user_tags = {"retracted"}
    index.upsert([locus_document(loci[24])])
    index.refresh()
    assert index.count() == 300
    assert index.get(loci[24].locus_id)["tags"] == ["retracted"]
    assert index.tag_counts()["high_snr"] == 149


@pytest.mark.parametrize("center,radius", [((0.0, 0.0), 0.2), ((359.8, 0.1), 0.15), ((0.1, -0.2), 3 / 60)])
def test_cone_is_exact(filled, center, radius):
    index, loci, _ = filled
    ra = np.array([x.ra for x in loci])
    dec = np.array([x.dec for x in loci])
    d = angular_distance_deg(ra, dec, *center)
    expect = {x.locus_id for x, di in zip(loci, d, strict=True) if di <= radius}
    res = index.search(LocusQuery(cone=(*center, radius), limit=1000))
    assert res.total == len(expect) > 0
    assert {h["locus_id"] for h in res.hits} == expect
    # a radius exactly at one locus's distance includes it; a hair less excludes it
    k = int(np.argsort(d)[5])
    at = index.search(LocusQuery(cone=(*center, float(d[k])), limit=1000))
    assert loci[k].locus_id in {h["locus_id"] for h in at.hits}
    below = index.search(LocusQuery(cone=(*center, float(d[k]) * (1 - 1e-9)), limit=1000))
    assert loci[k].locus_id not in {h["locus_id"] for h in below.hits}
    assert below.total == at.total - 1


def test_tags_ranges_terms(filled):
    index, loci, _ = filled
    both = {x.locus_id for x in loci if {"high_snr", "nuclear_transient"} <= x.user_tags}
    res = index.search(LocusQuery(tags=["high_snr", "nuclear_transient"], limit=1000))
    assert {h["locus_id"] for h in res.hits} == both and res.total == len(both)
    rng_ids = {x.locus_id for x in loci if 20.0 <= x.user_properties.get("snr_max", -1) <= 40.0}
    res = index.search(LocusQuery(ranges={"snr_max": (20.0, 40.0)}, limit=1000))
    assert {h["locus_id"] for h in res.hits} == rng_ids
    open_ids = {x.locus_id for x in loci if x.user_properties.get("snr_max", -1) >= 90.0}
    assert {h["locus_id"] for h in index.search(LocusQuery(ranges={"snr_max": (90.0, None)}, limit=1000)).hits} \
        == open_ids
    sn = {x.locus_id for x in loci if x.user_properties.get("class") == "SN Ia"}
    res = index.search(LocusQuery(terms={"class": "SN Ia"}, tags=["high_snr"], limit=1000))
    assert {h["locus_id"] for h in res.hits} == sn
    obj = loci[17].internal_properties["ztf_object_id"]
    assert [h["locus_id"] for h in index.search(LocusQuery(terms={"ztf_object_id": obj})).hits] == [
        loci[17].locus_id]


def test_sort_and_deep_pagination(filled):
    index, loci, _ = filled
    key = {x.locus_id: x.internal_properties["newest_alert_observation_time"] for x in loci}
    expect = sorted(key, key=lambda i: (-key[i], i))
    first = index.search(LocusQuery(limit=10))
    assert [h["locus_id"] for h in first.hits] == expect[:10] and first.total == 300
    assert _all_pages(index, LocusQuery(limit=23)) == expect
    # ascending on a filter property; loci without it come last, by id
    snr = {x.locus_id: x.user_properties.get("snr_max") for x in loci}
    expect_snr = sorted((i for i in snr if snr[i] is not None), key=lambda i: (snr[i], i)) + sorted(
        i for i in snr if snr[i] is None)
    assert _all_pages(index, LocusQuery(sort="snr_max", limit=41)) == expect_snr
    # pagination inside a cone with a tag
    cone_tag = _all_pages(index, LocusQuery(cone=(0.0, 0.0, 0.3), tags=["high_snr"], limit=7))
    ra = np.array([x.ra for x in loci])
    dec = np.array([x.dec for x in loci])
    inside = {x.locus_id for x, di in zip(loci, angular_distance_deg(ra, dec, 0.0, 0.0), strict=True)
              if di <= 0.3 and "high_snr" in x.user_tags}
    assert cone_tag == [i for i in expect if i in inside]


def test_bad_queries_are_refused(filled):
    index, _, _ = filled
    for bad in (LocusQuery(limit=5000), LocusQuery(cone=(0.0, 95.0, 1.0)), LocusQuery(sort="-"),
                LocusQuery(ranges={"snr_max": ("a", 3)}), LocusQuery(ranges={"x; DROP": (1, 2)})):
        with pytest.raises(QueryError):
            index.search(bad)


def test_raw_body_sky_distance(filled):
    index, loci, _ = filled
    body = {"query": {"bool": {"filter": [
        {"sky_distance": {"radius": "0.2 degree", "location": "00h00m00s +00d00m00s"}}]}}}
    ra = np.array([x.ra for x in loci])
    dec = np.array([x.dec for x in loci])
    expect = {x.locus_id for x, di in zip(loci, angular_distance_deg(ra, dec, 0.0, 0.0), strict=True) if di <= 0.2}
    res = index.search(LocusQuery(raw=body, limit=1000))
    assert {h["locus_id"] for h in res.hits} == expect and res.total == len(expect)
    # same cone, written in arcmin and with a tag term inside the raw body
    body2 = {"query": {"bool": {"must": [
        {"sky_distance": {"radius": "12 arcmin", "location": "0:00:00 +0:00:00"}},
        {"term": {"tags": "nuclear_transient"}}]}}}
    res2 = index.search(LocusQuery(raw=body2, limit=1000))
    assert {h["locus_id"] for h in res2.hits} == {i for i in expect if
                                                   "nuclear_transient" in next(x for x in loci if x.locus_id == i).user_tags}
    for bad in ({"query": {"match_all": {}}, "size": 10},
                {"query": {"script": {"script": {"source": "true"}}}},
                {"query": {"bool": {"filter": [{"script_score": {"query": {"match_all": {}}}}]}}},
                {"query": {"wrapper": {"query": "eyJtYXRjaF9hbGwiOnt9fQ=="}}},
                {"query": {"sky_distance": {"radius": "2 parsec", "location": "00h00m00s +00d00m00s"}}},
                {"query": {"sky_distance": {"radius": "1 degree", "location": "25h00m00s +95d"}}}):
        with pytest.raises(QueryError):
            index.search(LocusQuery(raw=bad))


def test_event_queries_and_summary_agree_with_the_documents(index, locus_factory):
    """Loci listing multi-messenger events are found by event; the summary counts tags, catalogs, events."""
    loci = _sky(locus_factory, n=60, seed=3)
    for i, x in enumerate(loci):
        if i % 3 == 0:
            x.grav_wave_events_metadata["S230518h"] = {"gracedb_id": "S230518h"}
        if i % 4 == 0:
            x.grav_wave_events_metadata["IceCube-230612A"] = {"gracedb_id": "IceCube-230612A"}
        if i % 5 == 0:
            x.catalog_objects["ngc"] = [{"name": f"NGC{i}"}]
    docs = [locus_document(x) for x in loci]
    index.upsert(docs)
    index.refresh()
    want = {e: sorted(d["locus_id"] for d in docs if e in d["grav_wave_events"])
            for e in ("S230518h", "IceCube-230612A")}
    for event, ids in want.items():
        assert sorted(_all_pages(index, LocusQuery(events=[event], limit=7))) == ids
    both = set(want["S230518h"]) & set(want["IceCube-230612A"])
    assert set(_all_pages(index, LocusQuery(events=["S230518h", "IceCube-230612A"]))) == both
    s = index.summary()
    assert s.count == 60
    assert s.events == {e: len(ids) for e, ids in sorted(want.items())}
    assert s.catalogs == {"ngc": sum(1 for d in docs if "ngc" in d["catalogs"])}
    assert s.tags == index.tag_counts()
    assert (s.min_num_alerts, s.max_num_alerts) == (min(d["num_alerts"] for d in docs),
                                                    max(d["num_alerts"] for d in docs))
    with pytest.raises(QueryError):
        index.search(LocusQuery(events=[""]))


def _p(d: dict, name: str):
    return (d.get("properties") or {}).get(name)


#: ES-DSL bodies antares-client users send, each with what it must select, decided here in Python
#: from the documents (never from either backend): both backends must return exactly that set.
DSL_CASES = [
    ("should_and_must_not",
     {"query": {"bool": {"should": [{"term": {"tags": "high_snr"}}, {"term": {"tags": "nuclear_transient"}}],
                         "must_not": [{"exists": {"field": "properties.snr_max"}}]}}},
     lambda d: bool({"high_snr", "nuclear_transient"} & set(d["tags"])) and _p(d, "snr_max") is None),
    ("terms_or_with_filter_range",
     {"query": {"bool": {"filter": [{"terms": {"properties.class": ["SN Ia", "AGN"]}},
                                    {"range": {"properties.snr_max": {"gte": 50}}}]}}},
     lambda d: _p(d, "class") in ("SN Ia", "AGN") and (_p(d, "snr_max") or -1) >= 50),
    ("should_alongside_filter_is_optional",
     {"query": {"bool": {"filter": [{"term": {"tags": "nuclear_transient"}}],
                         "should": [{"term": {"properties.class": "AGN"}}]}}},
     lambda d: "nuclear_transient" in d["tags"]),
    ("minimum_should_match_2",
     {"query": {"bool": {"should": [{"term": {"tags": "high_snr"}}, {"term": {"tags": "nuclear_transient"}},
                                    {"range": {"properties.snr_max": {"lt": 30}}}],
                         "minimum_should_match": 2}}},
     lambda d: ("high_snr" in d["tags"]) + ("nuclear_transient" in d["tags"])
     + ((_p(d, "snr_max") if _p(d, "snr_max") is not None else 99) < 30) >= 2),
    ("nested_bool_must_not_inside_should",
     {"query": {"bool": {"should": [
         {"bool": {"must": [{"term": {"tags": "high_snr"}}],
                   "must_not": [{"term": {"properties.class": "SN Ia"}}]}},
         {"range": {"num_alerts": {"gte": 4}}}]}}},
     lambda d: ("high_snr" in d["tags"] and _p(d, "class") != "SN Ia") or d["num_alerts"] >= 4),
    ("wildcard_question_mark",
     {"query": {"wildcard": {"properties.ztf_object_id": {"value": "ZTF24aa00110?"}}}},
     lambda d: _p(d, "ztf_object_id").startswith("ZTF24aa00110") and len(_p(d, "ztf_object_id")) == 13),
    ("wildcard_star_top_level",
     {"query": {"wildcard": {"ztf_object_id": "ZTF24aa0012*"}}},
     lambda d: d["ztf_object_id"].startswith("ZTF24aa0012")),
    ("prefix",
     {"query": {"prefix": {"properties.ztf_object_id": "ZTF24aa00102"}}},
     lambda d: _p(d, "ztf_object_id").startswith("ZTF24aa00102")),
    ("term_number_on_top_level_long",
     {"query": {"term": {"num_alerts": 3}}},
     lambda d: d["num_alerts"] == 3),
    ("exists_tags_and_not_exists",
     {"query": {"bool": {"must": [{"exists": {"field": "tags"}}],
                         "must_not": [{"exists": {"field": "properties.class"}}]}}},
     lambda d: bool(d["tags"]) and _p(d, "class") is None),
    ("query_string_and_not",
     {"query": {"query_string": {"query": "tags:high_snr AND NOT properties.class:AGN"}}},
     lambda d: "high_snr" in d["tags"] and _p(d, "class") != "AGN"),
    ("query_string_phrase_or_open_range",
     {"query": {"query_string": {"query": 'properties.class:"SN Ia" OR properties.snr_max:[90 TO *]'}}},
     lambda d: _p(d, "class") == "SN Ia" or (_p(d, "snr_max") or -1) >= 90),
    ("query_string_parentheses_wildcard_default_and",
     {"query": {"query_string": {"query": "(tags:nuclear_transient OR properties.ztf_object_id:ZTF24aa0010*) "
                                          "properties.snr_max:>20", "default_operator": "AND"}}},
     lambda d: ("nuclear_transient" in d["tags"] or _p(d, "ztf_object_id").startswith("ZTF24aa0010"))
     and (_p(d, "snr_max") or -1) > 20),
    ("ids",
     {"query": {"ids": {"values": ["ALBnope"]}}},
     lambda d: False),
]


@pytest.mark.parametrize("name,body,want", DSL_CASES, ids=[c[0] for c in DSL_CASES])
def test_es_dsl_answers_the_same_on_both_backends(filled, name, body, want):
    index, _, docs = filled
    expect = {d["locus_id"] for d in docs if want(d)}
    assert 0 < len(expect) < len(docs) or name == "ids"  # every case selects something, never everything
    res = index.search(LocusQuery(raw=body, limit=1000))
    assert {h["locus_id"] for h in res.hits} == expect and res.total == len(expect)


def test_es_dsl_with_sort_and_pages(filled):
    index, _, docs = filled
    body = {"query": {"bool": {"should": [{"term": {"tags": "high_snr"}}, {"terms": {"properties.class": ["AGN"]}}],
                               "must_not": [{"range": {"properties.snr_max": {"lt": 10}}}]}}}
    keep = [d for d in docs if ("high_snr" in d["tags"] or _p(d, "class") == "AGN")
            and not (_p(d, "snr_max") is not None and _p(d, "snr_max") < 10)]
    with_snr = sorted((d for d in keep if _p(d, "snr_max") is not None), key=lambda d: (-_p(d, "snr_max"), d["locus_id"]))
    expect = [d["locus_id"] for d in with_snr] + sorted(d["locus_id"] for d in keep if _p(d, "snr_max") is None)
    assert _all_pages(index, LocusQuery(raw=body, sort="-snr_max", limit=9)) == expect
    first = index.search(LocusQuery(raw=body, sort="-snr_max", limit=5))
    assert [h["locus_id"] for h in first.hits] == expect[:5] and first.total == len(expect)


def test_es_dsl_refusals_name_the_problem(filled):
    index, _, _ = filled
    deep: dict = {"match_all": {}}
    for _ in range(40):
        deep = {"bool": {"must": [deep]}}
    with pytest.raises(QueryError, match="deeper"):
        index.search(LocusQuery(raw={"query": deep}))
    if type(index).__name__ != "SQLiteIndex":
        return
    # what only the embedded evaluator refuses: it never guesses
    for body, fragment in (
        ({"query": {"function_score": {"query": {"match_all": {}}, "random_score": {}}}}, "not supported"),
        ({"query": {"fuzzy": {"properties.class": "AGM"}}}, "not supported"),
        ({"query": {"query_string": {"query": "high_snr"}}}, "cannot parse"),
        ({"query": {"query_string": {"query": "tags:a", "default_field": "tags"}}}, "not supported"),
        ({"query": {"bool": {"should": [{"term": {"tags": "a"}}], "minimum_should_match": "50%"}}}, "integer"),
        ({"query": {"range": {"tags": {"gte": 1}}}}, "keyword"),
        ({"query": {"wildcard": {"num_alerts": "3*"}}}, "numeric"),
        ({"query": {"term": {"location": "x"}}}, "not searchable"),
        ({"query": {"terms": {"tags": [f"t{i}" for i in range(2000)]}}}, "at most"),
        ({"query": {"bool": {"should": [{"term": {"tags": f"t{i}"}} for i in range(1100)]}}}, "more than"),
    ):
        with pytest.raises(QueryError, match=fragment):
            index.search(LocusQuery(raw=body))


def test_random_ids_are_a_uniform_sample_of_the_whole_index(filled):
    index, _, docs = filled
    every = {d["locus_id"] for d in docs}
    draws = [index.random_ids(10) for _ in range(60)]
    for ids in draws:
        assert len(ids) == len(set(ids)) == 10 and set(ids) <= every
    # a sorted page would repeat itself: 60 draws of 10 from 300 cover most of the index
    seen = {i for ids in draws for i in ids}
    assert len(seen) > 0.75 * len(every)
    assert len({tuple(ids) for ids in draws}) > 50
    # the newest loci (what a sorted search returns first) are not favoured
    newest = {h["locus_id"] for h in index.search(LocusQuery(limit=30)).hits}
    assert sum(len(newest & set(ids)) for ids in draws) < 0.3 * 600
    # a seed repeats a draw; n beyond the index returns it all; bad n is refused
    assert index.random_ids(7, seed=42) == index.random_ids(7, seed=42)
    assert set(index.random_ids(1000)) == every
    for bad in (-1, 1001, "3", True):
        with pytest.raises(QueryError):
            index.random_ids(bad)
