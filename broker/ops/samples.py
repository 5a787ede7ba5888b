"""Where the real sample alerts are on any machine that ran ``pip install``.

* Rubin/LSST: the sample packet of every schema version shipped by ``lsst-alert-packet``.
* ZTF: the 3,959 real alerts of ANTARES locus ``ANT202037lq`` shipped with
  ``antares-devkit``, re-encoded as ZTF Avro packets by :mod:`broker.replay`.
* ``../shared/data`` beside the checkout (real ZTF packets across the schema
  history, one deliberately unreadable), when present.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from broker import REPO_ROOT


def lsst_sample_packets() -> list[Path]:
    """One ``fakeAlert.avro`` per Rubin schema version, oldest version first."""
    from lsst.alert.packet.schema import get_schema_root

    root = Path(get_schema_root())
    paths = list(root.glob("*/*/sample_data/fakeAlert.avro"))
    return sorted(paths, key=lambda p: (int(p.parents[2].name), int(p.parents[1].name)))


def shared_data_dir() -> Path | None:
    """``../shared/data`` beside the repository, if this checkout has one."""
    path = REPO_ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


def shared_ztf_dir() -> Path | None:
    d = shared_data_dir()
    return d / "ztf" if d is not None and (d / "ztf").is_dir() else None


def devkit_locus(name: str = "large_locus") -> dict[str, Any]:
    """A real ANTARES locus shipped by antares-devkit (``large_locus``: 3,959 ZTF alerts; ``small_locus``).

    The devkit installs them as a top-level ``test.data`` package, whose name
    clashes with the standard library's ``test``; load the file by path.
    """
    spec = importlib.util.find_spec("antares_devkit")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("antares-devkit is not installed")
    path = Path(spec.origin).parent.parent / "test" / "data" / f"{name}.py"
    if not path.exists():
        raise FileNotFoundError(f"antares-devkit ships no {name} at {path}")
    mod_spec = importlib.util.spec_from_file_location(f"_albireo_devkit_{name}", path)
    module = importlib.util.module_from_spec(mod_spec)
    assert mod_spec.loader is not None
    mod_spec.loader.exec_module(module)
    return module.d


def demo_inputs(cache_dir: Path) -> list[Path]:
    """What ``albireo demo`` reads by default: real packets every installed machine has.

    The devkit locus re-encoded as ZTF packets (written once under ``cache_dir``), every Rubin
    schema's sample packet, and ``../shared/data/ztf`` when the checkout has it.
    """
    from broker.ops.devkit_ztf import ensure_demo_ztf_stream

    inputs: list[Path] = [ensure_demo_ztf_stream(cache_dir), *lsst_sample_packets()]
    shared = shared_ztf_dir()
    if shared is not None:
        inputs.append(shared)
    return inputs
