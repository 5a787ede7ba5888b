"""Counts that add up: one demo run, and every count the summary, the store, the index, ``/v2`` and
``/api`` give agrees — then the same input again, which adds nothing and stores no dead letter twice.

The input is real and has every kind of message: ZTF packets across the schema history (pre-1.0
packets that repeat their trigger in ``prv_candidates``, objects seen twice whose histories
overlap, one unreadable packet), every Rubin sample (ten whose times are in the wrong unit, five
that share one diaSource), antares-devkit's small locus, and an empty container file.
"""

from __future__ import annotations

import re
import shutil

import pytest
from click.testing import CliRunner

from broker.adapters.streams.files import write_stream_file
from broker.cli import main
from broker.ingest.framing import read_container_header
from broker.ops.devkit_ztf import devkit_ztf_packets
from broker.ops.samples import devkit_locus


def _summary(text: str) -> dict[str, int]:
    """The numbers of ``albireo demo``'s printed summary."""
    pats = {
        "messages": r"messages read\s+(\d+)\s+\((\d+) with alerts, (\d+) empty, (\d+) rejected\)",
        "packets": r"packets decoded\s+(\d+)\s+\((\d+) new, (\d+) duplicates skipped\)",
        "alerts": r"alerts stored\s+(\d+)",
        "rejected": r"rejected\s+(\d+)\s+\((\d+) new dead letters stored\)",
        "loci_created": r"loci created\s+(\d+)",
        "store": r"store: (\d+) loci, (\d+) alerts, (\d+) dead letters",
        "index": r"index: (\d+) locus documents",
    }
    out = {}
    for key, pat in pats.items():
        m = re.search(pat, text)
        assert m, (key, text)
        out[key] = tuple(int(g) for g in m.groups())
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, shared_data, lsst_samples):
    d = tmp_path_factory.mktemp("inputs")
    ztf = shared_data / "ztf"
    raw = (ztf / "ztf-avro-alert" / "2019_01_10_739260766315010006.avro").read_bytes()
    (d / "empty.avro").write_bytes(raw[: read_container_header(raw).data_start])  # a header, zero records
    write_stream_file(devkit_ztf_packets(devkit_locus("small_locus")), d / "small.avro-stream")
    shutil.copytree(ztf, d / "ztf")
    return [d / "ztf", *lsst_samples.values(), d / "empty.avro", d / "small.avro-stream"]


def _demo(workdir, inputs, keep: bool = False) -> str:
    args = ["demo", "--workdir", str(workdir), "--no-catalogs", *(x for p in inputs for x in ("--alerts", str(p)))]
    out = CliRunner().invoke(main, args + (["--keep"] if keep else []))
    assert out.exit_code == 0, out.output
    return out.output


def test_every_count_agrees_summary_store_index_and_apis(tmp_path, inputs):
    from broker.config import load_config
    from web import create_app

    work = tmp_path / "w"
    s = _summary(_demo(work, inputs))
    messages, with_alerts, empty, rejected = s["messages"]
    packets, new, duplicates = s["packets"]
    (alerts,) = s["alerts"]
    n_rejected, letters_new = s["rejected"]
    (loci,) = s["loci_created"]
    store_loci, store_alerts, store_letters = s["store"]
    # the summary adds up, and says what the store gained
    assert messages == with_alerts + empty + rejected and rejected == n_rejected
    assert (empty, packets) == (1, new + duplicates) and with_alerts == packets  # one packet per message here
    assert duplicates == 4  # five Rubin samples of one diaSource (v8.0 … v11.1)
    assert n_rejected == 11 == letters_new == store_letters  # 87704463155002 + ten Rubin times in seconds
    assert (store_loci, store_alerts) == (loci, alerts) and s["index"] == (loci,)

    cfg = load_config(env={})
    cfg.store.path, cfg.search.path = str(work / "albireo.sqlite"), str(work / "index.sqlite")
    cfg.catalogs.enabled = False
    app = create_app(cfg, catalogs=None)
    client = app.test_client()
    store = app.extensions["albireo"].store
    assert store.counts() == {"loci": loci, "alerts": alerts, "dead_letters": n_rejected}
    status = client.get("/api/status").get_json()
    assert status["counts"] == store.counts() and status["index"]["num_loci"] == loci
    assert client.get("/v2/loci/statistics").get_json()["data"]["num_loci"] == loci
    listing = client.get("/v2/loci?limit=1000").get_json()
    assert listing["meta"]["count"] == len(listing["data"]) == loci
    num_alerts = {h["id"]: h["locus"]["properties"]["num_alerts"] for h in listing["data"]}
    assert sum(num_alerts.values()) == alerts
    for lid, n in num_alerts.items():  # each locus's count is its alert rows, on both APIs' views
        rows = client.get(f"/v2/loci/{lid}/alerts").get_json()
        assert rows["meta"]["count"] == len(rows["data"]) == n, lid
        detail = client.get(f"/v2/loci/{lid}").get_json()["data"]
        assert detail["internal_properties"]["num_alerts"] == n, lid
        assert len(detail["lightcurve"].strip().splitlines()) - 1 == n, lid  # the CSV light curve: a row per alert
        assert not any(a["id"] == b["id"] for a, b in zip(rows["data"], rows["data"][1:], strict=False))
    store.close()

    # the same input again: every packet a duplicate, every bad message rejected but stored once
    s2 = _summary(_demo(work, inputs, keep=True))
    assert s2["messages"] == s["messages"] and s2["packets"] == (packets, 0, packets)
    assert s2["alerts"] == (0,) and s2["loci_created"] == (0,)
    assert s2["rejected"] == (n_rejected, 0)
    assert s2["store"] == s["store"] and s2["index"] == s["index"]
