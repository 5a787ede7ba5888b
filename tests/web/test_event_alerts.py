"""Outgoing alerts through `albireo notices alerts` and on the event page (copy buttons, raw endpoints).

The multi-messenger scenario ingested notices first, then the packets: the notice pipeline issued
revision 1 of the IceCube event with no candidate (no locus yet). `albireo notices alerts` then
issues revision 2 with exactly the scenario's expected loci (decided by astropy separations, not
by our code), writes the files, publishes on the stream files; a second run issues nothing.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from broker.multimessenger.outgoing.build import NEUTRINO_SCHEMA, OPTICAL_SCHEMA
from broker.multimessenger.schemas import validate_json
from tests import mm_scenario

EVENT = "IceCube-137840_57034692"


@pytest.fixture(scope="module")
def mm(tmp_path_factory, shared_data):
    work = tmp_path_factory.mktemp("mm-alerts")
    sc, cfg = mm_scenario.embedded_workdir(shared_data, work / "demo", extra_notices=False)
    return sc, cfg, work


def test_cli_issues_the_next_revision_and_the_page_shows_it(mm):
    from broker.adapters.streams.files import iter_stream_file
    from broker.assemble import open_store
    from broker.cli import main as cli
    from web import create_app

    sc, cfg, work = mm
    out = work / "alerts"
    r = CliRunner().invoke(cli, ["notices", "alerts", EVENT, "--workdir", str(work / "demo"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "TITLE:   GCN CIRCULAR (Albireo alert broker, revision 2)" in r.output.splitlines()  # the printed circular
    store = open_store(cfg, create=False)
    try:
        revs = store.outgoing(EVENT)
        ids = {t["event_name"] for t in revs[-1]["optical"]["data"]["targets"]}
        objects = {x.internal_properties.get("ztf_object_id") for x in store.load_loci(list(ids), False).values()}
    finally:
        store.close()
    assert [r["record_number"] for r in revs] == [1, 2] and revs[0]["optical"] is None  # no locus at first
    assert objects == sc.expected_nu
    nu = json.loads((out / f"{EVENT}-2.neutrino.json").read_text())
    validate_json(nu, NEUTRINO_SCHEMA)
    validate_json(json.loads((out / f"{EVENT}-2.optical.json").read_text()), OPTICAL_SCHEMA)
    import voeventparse as vp

    assert vp.valid_as_v2_0(vp.loads((out / f"{EVENT}-2.voevent.xml").read_bytes()))
    assert len(list(iter_stream_file(out / "albireo.alerts.neutrino.avro-stream"))) == 1
    again = CliRunner().invoke(cli, ["notices", "alerts", EVENT, "--workdir", str(work / "demo"), "--show", "none"])
    assert again.exit_code == 0 and "unchanged, not reissued" in again.output
    missing = CliRunner().invoke(cli, ["notices", "alerts", "nope", "--workdir", str(work / "demo")])
    assert missing.exit_code != 0 and "no event 'nope'" in missing.output

    c = create_app(cfg, catalogs=None).test_client()
    html = c.get(f"/events/{EVENT}").data.decode()
    assert "Outgoing alerts" in html and 'id="alerts-latest"' in html and "Revision 2" in html
    for kind in ("neutrino", "optical", "voevent", "circular"):
        assert f'data-copy-target="alert-{kind}"' in html and f'id="alert-{kind}"' in html
    raw = c.get(f"/api/mm/events/{EVENT}/alerts/2/neutrino")
    assert raw.status_code == 200 and raw.mimetype == "application/json" and json.loads(raw.data) == nu
    circ = c.get(f"/api/mm/events/{EVENT}/alerts/2/circular")
    assert circ.mimetype == "text/plain" and circ.data.decode() == revs[-1]["circular"]
    assert c.get(f"/api/mm/events/{EVENT}/alerts/9/neutrino").status_code == 404
    assert c.get(f"/api/mm/events/{EVENT}/alerts/2/bogus").status_code == 400
    listing = c.get(f"/api/mm/events/{EVENT}/alerts").get_json()
    assert [d["record_number"] for d in listing["data"]] == [2, 1]
    assert "/static/copy.js" in html and b"navigator.clipboard" in c.get("/static/copy.js").data
