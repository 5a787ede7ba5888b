"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only sample data beside the repository (../shared/data); fails if it is missing."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir():
        pytest.fail(f"shared sample data not found at {path}")
    return path


@pytest.fixture(scope="session")
def lsst_samples() -> dict[str, Path]:
    """Every Rubin schema version's sample packet shipped by lsst-alert-packet, keyed 'M.m'."""
    from lsst.alert.packet.schema import get_schema_root

    root = Path(get_schema_root())
    samples = {
        f"{p.parents[2].name}.{p.parents[1].name}": p
        for p in root.glob("*/*/sample_data/fakeAlert.avro")
    }
    if not samples:
        pytest.fail(f"no LSST sample packets under {root}")
    return dict(sorted(samples.items(), key=lambda kv: tuple(int(x) for x in kv[0].split("."))))
