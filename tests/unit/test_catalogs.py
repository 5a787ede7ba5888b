"""Ingestion (CSV/FITS/Parquet/HATS/VizieR VOTable), bad-input errors, atomic builds, CLI."""

from __future__ import annotations

import os

import numpy as np
import pytest
from click.testing import CliRunner

from broker.cli.catalog import catalog
from broker.crossmatch import CatalogError, CatalogIndex, CatalogSet, Chunk, build_index
from catalogs import synth
from catalogs.definitions import RC3, CatalogDefinition, RadiusPolicy
from catalogs.ingest import ingest

DEFN = CatalogDefinition(name="pts", columns=("id", "name"))


def table(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return {"ra": rng.uniform(0, 360, n), "dec": np.degrees(np.arcsin(rng.uniform(-1, 1, n))),
            "id": np.arange(n), "name": np.array([f"obj{i}" for i in range(n)])}


def write_csv(path, t, nan_row=None):
    lines = ["ra,dec,id,name"]
    for i in range(len(t["ra"])):
        ra = "nan" if i == nan_row else repr(float(t["ra"][i]))
        lines.append(f"{ra},{float(t['dec'][i])!r},{t['id'][i]},{t['name'][i]}")
    path.write_text("\n".join(lines) + "\n")


def check_index(root, t, name="pts"):
    ix = CatalogIndex.open(root / name)
    assert ix.n_rows == len(t["ra"])
    ids = np.asarray(ix._columns["col:id"])
    np.testing.assert_allclose(np.asarray(ix.ra), t["ra"][ids])
    rows = ix.rows(np.arange(3))
    assert rows[0]["name"] == f"obj{rows[0]['id']}"
    q, row, d = ix.cone(t["ra"][:50], t["dec"][:50], 0.1)
    assert set(zip(q.tolist(), ids[row].tolist(), strict=True)) >= {(i, i) for i in range(50)}
    return ix


def test_csv_roundtrip(tmp_path):
    t = table()
    write_csv(tmp_path / "c.csv", t)
    ingest(tmp_path / "c.csv", DEFN, tmp_path / "root", chunk_rows=37)
    check_index(tmp_path / "root", t)


def test_csv_nan_coordinates_named(tmp_path):
    t = table()
    write_csv(tmp_path / "c.csv", t, nan_row=57)
    with pytest.raises(CatalogError, match=r"c\.csv: row 58: RA is nan"):
        ingest(tmp_path / "c.csv", DEFN, tmp_path / "root", chunk_rows=20)
    assert not (tmp_path / "root" / "pts").exists()


def test_csv_missing_column_and_garbage(tmp_path):
    (tmp_path / "m.csv").write_text("ra,declination,id,name\n1,2,3,x\n")
    with pytest.raises(CatalogError, match=r"m\.csv: missing column\(s\) \['dec'\]"):
        ingest(tmp_path / "m.csv", DEFN, tmp_path / "root")
    (tmp_path / "g.csv").write_text("ra,dec,id,name\n1,2,3,x\n1,abc,4,y\n")
    with pytest.raises(CatalogError, match=r"g\.csv: row 2: column 'dec' value 'abc' is not a number"):
        ingest(tmp_path / "g.csv", DEFN, tmp_path / "root")


def test_csv_truncated(tmp_path):
    t = table()
    write_csv(tmp_path / "c.csv", t)
    data = (tmp_path / "c.csv").read_bytes()
    (tmp_path / "c.csv").write_bytes(data[: len(data) - 12])  # cut inside the last row
    with pytest.raises(CatalogError, match=r"c\.csv: row 200: truncated"):
        ingest(tmp_path / "c.csv", DEFN, tmp_path / "root")


def test_fits_roundtrip_and_truncated(tmp_path):
    from astropy.table import Table

    t = table(500)
    Table(t).write(tmp_path / "c.fits")
    ingest(tmp_path / "c.fits", DEFN, tmp_path / "root", chunk_rows=100)
    check_index(tmp_path / "root", t)
    data = (tmp_path / "c.fits").read_bytes()
    (tmp_path / "t.fits").write_bytes(data[: len(data) // 2])
    with pytest.raises(CatalogError, match=r"t\.fits"):
        ingest(tmp_path / "t.fits", DEFN, tmp_path / "root2")
    assert not (tmp_path / "root2" / "pts").exists()


def test_parquet_roundtrip_and_corrupt(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = table(300)
    pq.write_table(pa.table(t), tmp_path / "c.parquet", row_group_size=64)
    ingest(tmp_path / "c.parquet", DEFN, tmp_path / "root", chunk_rows=50)
    check_index(tmp_path / "root", t)
    data = (tmp_path / "c.parquet").read_bytes()
    (tmp_path / "bad.parquet").write_bytes(data[:100] + b"\0" * 50 + data[150:-10])
    with pytest.raises(CatalogError, match=r"bad\.parquet"):
        ingest(tmp_path / "bad.parquet", DEFN, tmp_path / "root2")


def test_hats_catalog(tmp_path):
    import healpy as hp
    import pyarrow as pa
    import pyarrow.parquet as pq
    from hats.catalog import CatalogType, PartitionInfo, TableProperties
    from hats.io import paths
    from hats.pixel_math import HealpixPixel

    t = table(400)
    base = tmp_path / "hats_cat"
    base.mkdir()
    pix = hp.ang2pix(1, t["ra"], t["dec"], nest=True, lonlat=True)
    pixels = []
    for p in np.unique(pix):
        hpx = HealpixPixel(0, int(p))
        f = paths.pixel_catalog_file(base, hpx)
        os.makedirs(os.path.dirname(str(f)), exist_ok=True)
        m = pix == p
        pq.write_table(pa.table({"RA": t["ra"][m], "DEC": t["dec"][m], "id": t["id"][m], "name": t["name"][m]}), str(f))
        pixels.append(hpx)
    TableProperties(catalog_name="t", catalog_type=CatalogType.OBJECT, total_rows=400, ra_column="RA",
                    dec_column="DEC").to_properties_file(base)
    PartitionInfo.from_healpix(pixels).write_to_file(base / "partition_info.csv")
    with pytest.warns(UserWarning):  # hats: no _metadata file in this hand-made catalog
        ingest(base, DEFN, tmp_path / "root")
    ix = CatalogIndex.open(tmp_path / "root" / "pts")
    assert ix.n_rows == 400 and ix.definition.ra_column == "RA"


VOTABLE = """<?xml version="1.0" encoding="UTF-8"?>
<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">
<RESOURCE ID="yCat_7155" name="VII/155">
<TABLE ID="VII_155_rc3" name="VII/155/rc3">
<FIELD name="_RAJ2000" ucd="pos.eq.ra" datatype="double" unit="deg"/>
<FIELD name="_DEJ2000" ucd="pos.eq.dec" datatype="double" unit="deg"/>
<FIELD name="PGC" datatype="int"/>
<FIELD name="logD25" datatype="float"/>
<DATA><TABLEDATA>
<TR><TD>10.6847</TD><TD>41.2690</TD><TD>2557</TD><TD>3.25</TD></TR>
<TR><TD>148.8882</TD><TD>69.0653</TD><TD>28630</TD><TD>2.43</TD></TR>
<TR><TD>0.0100</TD><TD>-0.5</TD><TD>1</TD><TD></TD></TR>
</TABLEDATA></DATA>
</TABLE>
</RESOURCE>
</VOTABLE>
"""


def test_vizier_response_rc3(tmp_path):
    (tmp_path / "rc3.vot").write_text(VOTABLE)
    ingest(tmp_path / "rc3.vot", RC3, tmp_path / "root")
    ix = CatalogIndex.open(tmp_path / "root" / "RC3")
    assert ix.n_rows == 3
    # M31: logD25 = 3.25 -> radius 10**3.25 * 3" = 5336"; a point 1 deg away is inside, 2 deg is not
    q, row, _ = ix.within_own_radius([10.6847, 10.6847, 0.0100], [42.2690, 43.2690, -0.5 + 0.5 / 3600])
    assert sorted(q.tolist()) == [0, 2]  # the third row has no size: 1" fallback
    assert ix.rows(row[q == 0])[0]["PGC"] == 2557
    (tmp_path / "bad.vot").write_text(VOTABLE[:300])
    with pytest.raises(CatalogError, match=r"bad\.vot"):
        ingest(tmp_path / "bad.vot", RC3, tmp_path / "root")


def test_failed_build_leaves_no_index_and_keeps_old(tmp_path):
    t = table()
    ok = lambda: [Chunk(t["ra"], t["dec"], {"id": t["id"], "name": t["name"]}, "good", 0)]  # noqa: E731
    build_index(tmp_path, DEFN, ok)
    old = CatalogIndex.open(tmp_path / "pts").meta["build_id"]
    calls = {"n": 0}

    def failing():
        calls["n"] += 1
        yield Chunk(t["ra"][:100], t["dec"][:100], {"id": t["id"][:100], "name": t["name"][:100]}, "f", 0)
        if calls["n"] == 2:  # fail in the middle of the scatter pass, after files were written
            raise OSError("disk went away")
        yield Chunk(t["ra"][100:], t["dec"][100:], {"id": t["id"][100:], "name": t["name"][100:]}, "f", 100)

    with pytest.raises(OSError):
        build_index(tmp_path, DEFN, failing)
    assert CatalogIndex.open(tmp_path / "pts").meta["build_id"] == old
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    calls["n"] = 0
    with pytest.raises(OSError):
        build_index(tmp_path / "fresh", DEFN, failing)
    assert CatalogSet.open(tmp_path / "fresh").names == []


def test_corrupt_or_truncated_index_rejected(tmp_path):
    t = table()
    build_index(tmp_path, DEFN, lambda: [Chunk(t["ra"], t["dec"], {"id": t["id"], "name": t["name"]}, "g", 0)])
    real = (tmp_path / "pts").resolve()
    dec = real / "dec.npy"
    data = bytearray(dec.read_bytes())
    data[-5] ^= 0xFF
    dec.write_bytes(bytes(data))
    with pytest.raises(CatalogError, match=r"dec\.npy: checksum mismatch"):
        CatalogIndex.open(tmp_path / "pts")
    dec.write_bytes(bytes(data[:-16]))
    with pytest.raises(CatalogError, match=r"dec\.npy: size"):
        CatalogIndex.open(tmp_path / "pts", verify=False)
    cs = CatalogSet.open(tmp_path)
    assert cs.names == [] and "pts" in cs.errors
    with pytest.raises(CatalogError):
        CatalogSet.open(tmp_path, strict=True)
    (real / "manifest.json").unlink()
    with pytest.raises(CatalogError, match="no manifest"):
        CatalogIndex.open(tmp_path / "pts")


def test_dec_out_of_range_named(tmp_path):
    with pytest.raises(CatalogError, match=r"src: row 3: Dec 91.0 outside"):
        build_index(tmp_path, CatalogDefinition(name="x"),
                    lambda: [Chunk(np.zeros(3), np.array([0, 1, 91.0]), {}, "src", 0)])
    assert list(tmp_path.iterdir()) == []


def test_synth_density_has_a_disk():
    from astropy.coordinates import SkyCoord

    ra, dec = synth.positions(np.random.default_rng(0), 20000)
    b = SkyCoord(ra=ra, dec=dec, unit="deg").galactic.b.deg
    frac = np.mean(np.abs(b) < 10)
    assert 0.40 < frac < 0.60  # isotropic would give 0.17
    again = next(synth.chunks(1000, seed=3))
    np.testing.assert_array_equal(again.ra, next(synth.chunks(1000, seed=3)).ra)


def test_cli_ingest_list_synth(tmp_path):
    t = table()
    write_csv(tmp_path / "c.csv", t)
    r = CliRunner()
    res = r.invoke(catalog, ["ingest", str(tmp_path / "c.csv"), "--name", "mycat", "--radius", "2",
                             "--root", str(tmp_path / "root")])
    assert res.exit_code == 0, res.output
    res = r.invoke(catalog, ["synth", "--rows", "5000", "--name", "s5k", "--root", str(tmp_path / "root")])
    assert res.exit_code == 0, res.output
    res = r.invoke(catalog, ["list", "--verify", "--root", str(tmp_path / "root")])
    assert res.exit_code == 0
    assert "mycat" in res.output and "200" in res.output and '2"' in res.output and "5,000" in res.output
    res = r.invoke(catalog, ["ingest", str(tmp_path / "nope.csv"), "--name", "x", "--root", str(tmp_path)])
    assert res.exit_code == 2 and "nope.csv: no such file" in res.output


def test_definition_roundtrip():
    d = CatalogDefinition(name="a", columns=("x",), radius=RadiusPolicy(kind="column", column="s", log10=True))
    assert CatalogDefinition.from_dict(d.to_dict()) == d
    with pytest.raises(ValueError):
        RadiusPolicy(kind="column")
