"""The end-to-end benchmark's process sampler counts the worker itself, and tells it from its filter processes.

With one worker, ``albireo run`` runs the pipeline in its own process; before this sampler the
benchmark looked at the root's descendants only and reported a filter process as the worker.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bench.bench_e2e import TreeSampler

#: a root holding ~60 MiB that starts two children, each starting a grandchild (a worker and its filter).
_TREE = """
import subprocess, sys, time
ballast = bytearray(60 * 2**20)
for i in range(len(ballast) // 4096):
    ballast[i * 4096] = 1
kids = [subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                          "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"])
        for _ in range(2)]
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture
def tree():
    root = subprocess.Popen([sys.executable, "-c", _TREE], stdout=subprocess.PIPE, text=True)
    try:
        assert root.stdout.readline().strip() == "ready"
        import psutil

        for _ in range(100):  # until both grandchildren exist
            if len(psutil.Process(root.pid).children(recursive=True)) == 4:
                break
            time.sleep(0.05)
        yield root
    finally:
        import psutil

        for p in psutil.Process(root.pid).children(recursive=True):
            p.kill()
        root.kill()
        root.wait()


def test_one_worker_is_the_root_process_itself(tree):
    s = TreeSampler(tree.pid, workers=1)
    s.sample()
    assert s.worker_pids == {tree.pid}
    (rss,) = s.worker_rss()
    assert rss > 60  # the root's ballast: it is the root that is measured, not a child
    assert len(s.filter_pids()) == 4 and tree.pid not in s.filter_pids()
    assert tree.pid in s.cpu


def test_two_workers_are_the_roots_children(tree):
    import psutil

    s = TreeSampler(tree.pid, workers=2)
    s.sample()
    kids = {c.pid for c in psutil.Process(tree.pid).children()}
    assert s.worker_pids == kids and len(kids) == 2
    assert all(r < 60 for r in s.worker_rss())  # the children, not the root with the ballast
    filters = s.filter_pids()
    assert len(filters) == 2 and not filters & kids and tree.pid not in filters
