"""A store and index filled by the real pipeline (``albireo demo``) from real ZTF and LSST packets.

Catalogs: OpenNGC (built from pyongc) plus a tiny catalog built with the real ingestion code
(``build_index``) whose two rows sit 0.3" from two real ZTF sample alerts, so that the pipeline's
cross-match stage gives those loci catalog matches to assert on (no sample alert lies in an NGC
galaxy). Built once per session (~20 s).
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import fastavro
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
ZTF_DIR = ROOT.parent / "shared" / "data" / "ztf"  # ../shared beside the checkout, as in CI
HOST_ALERTS = ("697252845015010002.avro", "697252845015010003.avro")


def _sample_positions() -> list[tuple[str, float, float]]:
    out = []
    for name in HOST_ALERTS:
        with open(ZTF_DIR / "fink-datasim" / name, "rb") as fh:
            rec = next(iter(fastavro.reader(fh)))
        out.append((rec["objectId"], rec["candidate"]["ra"], rec["candidate"]["dec"]))
    return out


def _build_catalogs(root: Path, hosts: list[tuple[str, float, float]]) -> None:
    from broker.crossmatch import ensure_default_catalogs
    from broker.crossmatch.build import Chunk, build_index
    from catalogs.definitions import CatalogDefinition, RadiusPolicy

    ensure_default_catalogs(root)
    defn = CatalogDefinition(name="sample_hosts", description="test hosts 0.3\" from two real ZTF alerts",
                             columns=("name", "ra", "dec", "kind"), radius=RadiusPolicy(kind="fixed", arcsec=2.0))
    off = 0.3 / 3600
    ra = np.array([h[1] + off for h in hosts])
    dec = np.array([h[2] for h in hosts])
    cols = {"name": np.array([f"HOST-{h[0]}" for h in hosts]), "ra": ra, "dec": dec,
            "kind": np.array(["galaxy"] * len(hosts))}
    build_index(root, defn, lambda: iter([Chunk(ra, dec, cols, source="test", first_row=0)]))


@pytest.fixture(scope="session")
def pipeline_workdir(tmp_path_factory, shared_data) -> Path:
    """Run ``albireo demo`` (the real pipeline) over the shared ZTF samples and the LSST samples."""
    from broker.ops.samples import lsst_sample_packets

    work = tmp_path_factory.mktemp("albireo-web")
    cat_root = work / "catalogs"
    hosts = _sample_positions()
    _build_catalogs(cat_root, hosts)
    env = dict(os.environ, ALBIREO_CATALOGS__ROOT=str(cat_root), ALBIREO_HOME=str(work / "home"))
    args = [sys.executable, "-m", "broker.cli", "demo", "--workdir", str(work / "demo"),
            "--alerts", str(ZTF_DIR)]
    for p in lsst_sample_packets():
        args += ["--alerts", str(p)]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return work


@pytest.fixture(scope="session")
def web_config(pipeline_workdir):
    from broker.config import load_config

    cfg = load_config(env={})
    cfg.store.path = str(pipeline_workdir / "demo" / "albireo.sqlite")
    cfg.search.path = str(pipeline_workdir / "demo" / "index.sqlite")
    cfg.catalogs.root = str(pipeline_workdir / "catalogs")
    cfg.web.data_dir = str(pipeline_workdir / "web")
    # Per-user API keys (no shared token): records only, no broker behind these tests.
    cfg.users.db = str(pipeline_workdir / "users.sqlite")
    cfg.users.stream_access = "none"
    cfg.users.consumer_bootstrap = "kafka.example.org:9094"
    cfg.streams.formats = {"fast_riser": "antares"}  # one stream in ANTARES's format, the others ours
    return cfg


@pytest.fixture(scope="session")
def keys(web_config) -> dict[str, str]:
    """Real API keys made the way the operator makes them (``albireo users add``): an admin and a user."""
    from broker.assemble import open_users

    users = open_users(web_config)
    return {name: users.add(name, role).api_key for name, role in (("admin", "admin"), ("alice", "user"),
                                                                    ("bob", "user"))}


@pytest.fixture(scope="session")
def admin_auth(keys) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys['admin']}"}


@pytest.fixture(scope="session")
def user_auth(keys) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys['alice']}"}


@pytest.fixture(scope="session")
def app(web_config, keys):
    from web import create_app

    return create_app(web_config)


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def store(app):
    return app.extensions["albireo"].store


@pytest.fixture
def locus_with(store):
    """``locus_with(pred)``: the first stored locus for which ``pred`` is true (fails if none is)."""

    def find(pred):
        for batch in store.iter_loci():
            for loc in batch:
                if pred(loc):
                    return loc
        raise AssertionError("no stored locus matches")

    return find


@pytest.fixture(scope="session")
def host_objects() -> list[tuple[str, float, float]]:
    return _sample_positions()


def shared_ztf_files() -> list[str]:
    return sorted(glob.glob(str(ZTF_DIR / "**" / "*.avro"), recursive=True))
