"""deploy/: the Kubernetes manifests validate against the Kubernetes schemas, and the Grafana
dashboard queries only metrics a real pipeline exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))


def _documents():
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path.name, doc


def test_manifests_validate_against_the_kubernetes_schemas():
    import kubernetes_validate

    version = kubernetes_validate.latest_version()
    kinds = []
    for _name, doc in _documents():
        kubernetes_validate.validate(doc, version, strict=True)  # raises ValidationError naming the field
        kinds.append(doc["kind"])
    assert {"Namespace", "ConfigMap", "Secret", "Deployment", "HorizontalPodAutoscaler", "Service"} <= set(kinds)


def test_a_broken_manifest_is_refused():
    import kubernetes_validate

    doc = next(d for _, d in _documents() if d["kind"] == "Deployment")
    broken = json.loads(json.dumps(doc))
    broken["spec"]["replicas"] = "four"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


def test_the_configmap_is_a_valid_albireo_configuration(tmp_path):
    from broker.config import load_config

    cm = next(d for _, d in _documents() if d["kind"] == "ConfigMap")
    path = tmp_path / "albireo.toml"
    path.write_text(cm["data"]["albireo.toml"])
    cfg = load_config(path, env={})
    assert cfg.store.backend == "cassandra" and cfg.search.backend == "elasticsearch" and cfg.kafka.transactional


def test_the_dashboard_queries_metrics_a_pipeline_exposes(tmp_path, lsst_samples):
    from broker.assemble import embedded_worker
    from broker.config import Config
    from web import create_app

    cfg = Config()
    cfg.store.path, cfg.search.path = str(tmp_path / "s.sqlite"), str(tmp_path / "i.sqlite")
    cfg.catalogs.enabled, cfg.filters.registry = False, False
    with embedded_worker(cfg, list(lsst_samples.values()), tmp_path / "out") as a:
        a.worker.run()
        a.pipeline.filters.export_metrics(a.pipeline.metrics)
        text = a.pipeline.metrics.render()
        app = create_app(cfg, store=a.store, index=a.index, catalogs=None)
        client = app.test_client()
        client.get("/api/status")
        text += client.get("/metrics").get_data(as_text=True)
    exposed = set(re.findall(r"^# TYPE (\w+) (\w+)", text, re.M))
    names = {n for n, _ in exposed} | {f"{n}_{s}" for n, k in exposed if k == "histogram"
                                       for s in ("bucket", "sum", "count")} | {
        f"{n}_total" for n, k in exposed if k == "counter"}
    dash = json.loads((ROOT / "deploy" / "grafana" / "albireo-dashboard.json").read_text())
    used = {m for p in dash["panels"] for t in p["targets"] for m in re.findall(r"albireo_\w+", t["expr"])}
    assert used and used - names == set()
