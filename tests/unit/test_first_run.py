"""A new user's first hour, as subprocesses: every command ends in a clear line and the right exit code.

Each test runs the real ``albireo`` command (``python -m broker.cli``) in a scratch folder with its
own ``ALBIREO_HOME``, so nothing here reads or writes the developer's own stores.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALBIREO_")}
    env.update(ALBIREO_HOME=str(tmp / "home"), PYTHONUNBUFFERED="1", **extra)
    return env


def albireo(*args: str, cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "broker.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(err) >= 1 and err[-1].startswith("Error"), proc.stderr
    for n in needles:
        assert n in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory, lsst_samples) -> Path:
    """A folder where `albireo demo` ran (on three Rubin samples: quick, real)."""
    d = tmp_path_factory.mktemp("first-run")
    samples = [str(lsst_samples[v]) for v in ("9.0", "10.0", "11.1")]
    args = ["demo", "--no-catalogs"]
    for s in samples:
        args += ["--alerts", s]
    proc = albireo(*args, cwd=d, env=_env(d))
    assert proc.returncode == 0, proc.stderr
    assert "browse:  albireo serve  " in proc.stdout
    return d


def _serve(cwd: Path, env: dict[str, str], *args: str):
    proc = subprocess.Popen([sys.executable, "-m", "broker.cli", "serve", "--port", "0", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    line = proc.stdout.readline() if ready else ""
    return proc, line


def test_bare_serve_after_demo_serves_the_demo_store(demo_dir):
    proc, line = _serve(demo_dir, _env(demo_dir))
    try:
        m = re.search(r"listening on (http://\S+) \(store=sqlite:(\S+), (\d+) loci", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
        assert Path(m.group(2)).resolve() == (demo_dir / "albireo-demo" / "albireo.sqlite").resolve()
        assert int(m.group(3)) > 0
        stats = json.load(urllib.request.urlopen(m.group(1) + "api/status", timeout=10))
        assert stats["counts"]["loci"] == int(m.group(3))
    finally:
        proc.terminate()
        proc.wait(10)
    assert "serving the demo's store" in proc.stderr.read()


def test_serve_refuses_a_store_that_does_not_exist_unless_asked_to_create(tmp_path):
    missing = tmp_path / "typo" / "albireo.sqlite"
    proc = albireo("serve", "--port", "0", "--store", str(missing), cwd=tmp_path, env=_env(tmp_path), timeout=60)
    assert_one_line_error(proc, f"no store at {missing}", "--create")
    assert not missing.exists()
    srv, line = _serve(tmp_path, _env(tmp_path), "--store", str(missing), "--create")
    try:
        assert "listening on" in line and ", 0 loci" in line
        assert missing.exists()
    finally:
        srv.terminate()
        srv.wait(10)


def test_broken_toml_is_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[association\nradius_arcsec = 1\n")
    assert_one_line_error(albireo("config", "show", "--config", str(bad), cwd=tmp_path, env=_env(tmp_path)),
                          "is not valid TOML", "line 1")


def test_impossible_setting_is_refused_with_its_name(tmp_path):
    bad = tmp_path / "neg.toml"
    bad.write_text("[association]\nradius_arcsec = -1\n")
    assert_one_line_error(albireo("demo", "--config", str(bad), cwd=tmp_path, env=_env(tmp_path)),
                          "association.radius_arcsec", "must be > 0")
    env = _env(tmp_path, ALBIREO_KAFKA__BATCH_SIZE="0")
    assert_one_line_error(albireo("config", "show", cwd=tmp_path, env=env), "kafka.batch_size")


def test_backfill_with_a_bad_date_says_what_it_expected(demo_dir):
    proc = albireo("filter", "backfill", "anything", "--since", "notadate", cwd=demo_dir, env=_env(demo_dir))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "'notadate' is neither an MJD nor an ISO date" in proc.stderr


def test_run_with_kafka_unreachable_is_one_line(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _env(tmp_path, ALBIREO_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{port}")
    proc = albireo("run", "--max-messages", "1", cwd=tmp_path, env=env, timeout=60)
    assert proc.returncode == 3
    assert_one_line_error(proc, f"cannot reach Kafka at 127.0.0.1:{port}", "albireo services up kafka")


_HANG = '''from broker.filtering import BaseFilter


class Hang(BaseFilter):
    OUTPUT_LOCUS_TAGS = [{"name": "never", "description": "never set"}]

    def _run(self, locus):
        while True:
            pass
'''

_RAISE = '''from broker.filtering import BaseFilter


class Raises(BaseFilter):
    OUTPUT_LOCUS_TAGS = [{"name": "never", "description": "never set"}]

    def _run(self, locus):
        raise ValueError("always")
'''


@pytest.mark.parametrize("code,kind", [(_HANG, "FilterTimeout"), (_RAISE, "ValueError")], ids=["hangs", "raises"])
def test_filter_test_stops_a_filter_that_fails_everywhere(tmp_path, shared_data, code, kind):
    f = tmp_path / "f.py"
    f.write_text(code)
    proc = albireo("filter", "test", str(f), "--timeout", "1", "--json", "--alerts",
                   str(shared_data / "ztf" / "fink-datasim"), cwd=tmp_path, env=_env(tmp_path))
    assert proc.returncode == 1, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["loci"] == 31 and rep["stopped"] and rep["failed_everywhere"]
    assert 3 <= rep["runs"] <= 4  # stopped after three failures in a row (one more may be in flight)
    assert {e["exception"] for e in rep["errors"]} == {kind}
    assert "was stopped: stopped after 3 failed runs in a row" in proc.stderr.splitlines()[-1]


def test_demo_shows_a_progress_bar_on_a_terminal_only(tmp_path, lsst_samples):
    """On a terminal (a pty) the demo draws tqdm's bar on stderr; piped, it prints none."""
    import pty

    args = [sys.executable, "-m", "broker.cli", "demo", "--no-catalogs", "--workdir", str(tmp_path / "w")]
    for v in sorted(lsst_samples)[-3:]:
        args += ["--alerts", str(lsst_samples[v])]
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a terminal has a width
    proc = subprocess.Popen(args, cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=slave,
                            stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 1)
        if r:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(60)
    os.close(master)
    tty_err = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    assert re.search(r"demo: .*\d+/\d+", tty_err), tty_err[-500:]
    piped = albireo(*args[3:], cwd=tmp_path, env=_env(tmp_path))
    assert piped.returncode == 0 and "msg/s" not in piped.stderr and "it/s" not in piped.stderr


def test_a_server_that_stops_making_progress_is_reported_with_what_was_awaited(tmp_path, monkeypatch):
    """`albireo services up` waits as long as the server shows progress, and says what it waited for."""
    from broker.ops import services as svc

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("ALBIREO_SERVICES__HOME", str(tmp_path / "svc"))
    monkeypatch.setenv("ALBIREO_SERVICES__KAFKA_PORT", str(port))
    monkeypatch.setenv("ALBIREO_SERVICES__STALL_S", "3")
    root = tmp_path / "svc" / "kafka"
    (root / "logs").mkdir(parents=True)
    # a "server" that is alive but silent and idle: no log lines, no CPU time, never listening
    idle = subprocess.Popen([sys.executable, "-c", "import time, sys; time.sleep(120)", str(root)],
                            start_new_session=True)
    try:
        (root / "pid").write_text(f"{idle.pid}\n")
        t0 = time.monotonic()
        with pytest.raises(svc.ServiceError) as err:
            svc.wait_healthy("kafka")
        assert time.monotonic() - t0 < 60
    finally:
        idle.kill()
        idle.wait()
    msg = str(err.value)
    assert f"kafka to answer with a metadata answer on 127.0.0.1:{port}" in msg
    assert "made no progress (no log output, no CPU time) for 3s" in msg


def test_the_benchmark_extra_declares_what_the_benchmarks_import():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    bench = meta["project"]["optional-dependencies"]["bench"]
    assert any(d.startswith("scipy") for d in bench)
    assert "bench" in re.search(r'pip install --quiet -e "\.\[([^\]]+)\]"', (ROOT / "Makefile").read_text()).group(1)
    src = (ROOT / "bench" / "bench_crossmatch.py").read_text()
    assert "search_around_sky" in src or "scipy" in src  # the baseline that needs it is still there


def test_unit_tests_on_a_clone_without_shared_data_say_what_they_left_out(tmp_path):
    """A bare clone (no ../shared beside it) collects the unit tests and names what it leaves out."""
    clone = tmp_path / "bare" / "albireo"
    clone.mkdir(parents=True)
    for folder in ("tests", "bench"):  # a clone has bench/ too (a unit test checks its process sampler)
        shutil.copytree(ROOT / folder, clone / folder, ignore=shutil.ignore_patterns("artifacts", "__pycache__",
                                                                                    "results"))
    shutil.copy(ROOT / "pyproject.toml", clone)
    env = _env(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
                           "-m", "not integration", "tests/unit"], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = re.search(r"left out (\d+) tests that need \.\./shared/data", proc.stdout)
    assert m and int(m.group(1)) > 10, proc.stdout[-2000:]
    collected = [line for line in proc.stdout.splitlines() if "::" in line]
    assert collected and not any("test_filter_registry.py" in c for c in collected)
    assert any("test_association.py" in c for c in collected)


def test_status_says_what_is_there(demo_dir):
    env = _env(demo_dir, ALBIREO_STORE__PATH=str(demo_dir / "albireo-demo" / "albireo.sqlite"),
               ALBIREO_SEARCH__PATH=str(demo_dir / "albireo-demo" / "index.sqlite"))
    proc = albireo("status", "--json", cwd=demo_dir, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["store"]["loci"] > 0 and info["index"]["documents"] == info["store"]["loci"]
    assert set(info["servers"]) == {"kafka", "cassandra", "elasticsearch"}
    empty = albireo("status", cwd=demo_dir, env=_env(demo_dir / "elsewhere"), timeout=120)
    assert empty.returncode == 0 and "no store yet" in empty.stdout
