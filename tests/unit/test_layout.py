"""The shape the folders promise: stages reach the outside world only through ports.

``docs/architecture.md`` says a stage never imports an adapter or a client library, that
``broker/assemble.py`` is where adapters are chosen, and that the web layer asks ports rather than
adapter classes. These tests read the source (``ast``), so a change that breaks the shape fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BROKER = ROOT / "broker"
#: the stage packages and modules, in the order data flows.
STAGES = ["ingest", "association.py", "crossmatch", "multimessenger", "filtering", "emit.py", "pipeline.py",
          "worker.py"]
CLIENTS = ("confluent_kafka", "cassandra", "elasticsearch", "elastic_transport")


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def _files(entry: str) -> list[Path]:
    p = BROKER / entry
    return sorted(p.rglob("*.py")) if p.is_dir() else [p]


def test_no_stage_imports_an_adapter_or_a_client_library():
    bad = {}
    for entry in STAGES:
        for f in _files(entry):
            found = {m for m in _imports(f) if m.startswith("broker.adapters") or m.split(".")[0] in CLIENTS
                     or m.startswith(("broker.assemble", "broker.cli", "broker.ops"))}
            # The registry's local test runs through the embedded worker: it may ask assemble for one.
            if f.name == "registry.py":
                found -= {"broker.assemble"}
            if found:
                bad[str(f.relative_to(ROOT))] = sorted(found)
    assert bad == {}


def test_only_adapters_import_client_libraries():
    users = set()
    for f in sorted(BROKER.rglob("*.py")):
        if any(m.split(".")[0] in CLIENTS for m in _imports(f)):
            users.add(str(f.relative_to(BROKER)))
    allowed = {"adapters/", "ops/services.py"}  # the health probes of the local servers
    assert {u for u in users if not any(u.startswith(a) for a in allowed)} == set()


def test_the_web_layer_never_asks_which_adapter_it_has():
    offenders = []
    for f in sorted((ROOT / "web").rglob("*.py")):
        text = f.read_text()
        if "__name__ ==" in text or "type(index)" in text or "type(store)" in text or "._db" in text or "._es" in text:
            offenders.append(f.name)
        if any(m.startswith("broker.adapters") for m in _imports(f) if m != "broker.adapters.search.sky"):
            offenders.append(f"{f.name} imports an adapter")
    assert offenders == []


def test_architecture_doc_names_every_package_of_broker():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    packages = [p.name for p in BROKER.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    assert packages and [p for p in packages if f"broker/{p}/" not in doc] == []
    assert "broker/ports.py" in doc and "broker/assemble.py" in doc


def test_each_command_lives_in_its_own_module_and_is_registered_in_one_place():
    from broker.cli import COMMANDS, main

    assert [c.name for c in COMMANDS] == list(main.commands)
    modules = {c.callback.__module__ for c in COMMANDS}
    assert len(modules) == len(COMMANDS)  # one module per command group
    assert all(m.startswith("broker.cli.") for m in modules)
