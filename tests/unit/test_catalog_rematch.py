"""`albireo catalog rematch`: stored loci pick up matches from catalogs built after them."""

from __future__ import annotations

from click.testing import CliRunner

from broker.adapters.search.sqlite import SQLiteIndex
from broker.adapters.storage.sqlite import SQLiteStore
from broker.alert import Alert
from broker.association import Associator
from broker.cli.catalog import catalog
from broker.crossmatch import ensure_default_catalogs
from broker.locus import Locus


def test_rematch_updates_store_and_index(tmp_path):
    order = Associator(1.0).order
    store = SQLiteStore(tmp_path / "s.sqlite", order)
    inside = Locus("ALBin", 185.7287, 15.8222 + 30 / 3600)  # 30" from the centre of NGC 4321 (M100)
    outside = Locus("ALBout", 185.7287, 17.0)
    for i, x in enumerate((inside, outside)):
        x.add_alerts([Alert(f"ztf_candidate:{i}", 1, 60000.0, x.ra, x.dec, "g", 18.0, 0.1, 20.0, {})])
    store.save_batch([inside, outside], inside.alerts + outside.alerts)
    store.close()
    ensure_default_catalogs(tmp_path / "cats")
    cfg = tmp_path / "a.toml"
    cfg.write_text(f'[store]\npath = "{tmp_path / "s.sqlite"}"\n[search]\npath = "{tmp_path / "i.sqlite"}"\n'
                   f'[catalogs]\nroot = "{tmp_path / "cats"}"\n')
    out = CliRunner().invoke(catalog, ["rematch", "--config", str(cfg)])
    assert out.exit_code == 0, out.output
    assert "2 of 2 loci re-matched" in out.output
    again = CliRunner().invoke(catalog, ["rematch", "--config", str(cfg)])
    assert "0 of 2 loci re-matched" in again.output
    store = SQLiteStore(tmp_path / "s.sqlite", order)
    loci = store.load_loci(["ALBin", "ALBout"])
    assert [r["name"] for r in loci["ALBin"].catalog_objects["openngc"]] == ["NGC4321"]
    assert loci["ALBout"].catalog_objects == {}
    assert SQLiteIndex(tmp_path / "i.sqlite").get("ALBin")["catalogs"] == ["openngc"]
