"""Shared pytest fixtures, and the ``shared_data`` marker.

Tests that read ``../shared/data`` (real packets beside the checkout) are marked ``shared_data``:
automatically when they use the ``shared_data`` fixture, explicitly otherwise. On a bare clone
without that folder they are left out, and the summary says how many and why; with
``ALBIREO_REQUIRE_SHARED=1`` (what ``make test`` and CI set) a missing folder fails them instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "shared_data: reads ../shared/data beside the checkout")


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared_data)
    if SHARED_DATA.is_dir() or os.environ.get("ALBIREO_REQUIRE_SHARED", "") not in ("", "0"):
        return
    left = [i for i in items if i.get_closest_marker("shared_data")]
    if left:
        items[:] = [i for i in items if not i.get_closest_marker("shared_data")]
        config.hook.pytest_deselected(items=left)
    config.stash[_LEFT_OUT] = len(left)


_LEFT_OUT = pytest.StashKey[int]()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    n = config.stash.get(_LEFT_OUT, 0)
    if n:
        terminalreporter.write_line(
            f"left out {n} tests that need ../shared/data (not found at {SHARED_DATA}); "
            "put the shared folder beside the checkout to run them", yellow=True)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only sample data beside the repository (../shared/data); fails if it is missing."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared sample data not found at {SHARED_DATA}")
    return SHARED_DATA


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
