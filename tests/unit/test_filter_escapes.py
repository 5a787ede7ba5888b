"""Deliberate sandbox escapes, each tried as an attacker would from a submitted filter, each contained.

Every attack below once worked (issue 11): the parent unpickled what a child sent, the sandbox was
an audit hook that pure Python defeats, filters shared one interpreter, and the worker trusted the
child's word on who was running. Each filter here tries the escape, records in a property what
the kernel or the worker answered, and the test checks on the host that the effect is absent, the
worker goes on (a well-behaved filter still tags every locus), and the *filter* was charged.
"""

from __future__ import annotations

import os
import pickle
import socket
import sqlite3
import stat
import uuid

import pytest

import broker
from broker.filtering import registry as reg
from broker.filtering.runner import ErrorPolicy
from broker.filtering.sandbox import FilterSpec, SandboxLimits, SandboxPool, sandbox_status
from tests.unit.test_filter_sandbox import GOOD, _loci, filter_code, spec

SECRET = f"s3cret-token-{uuid.uuid4().hex}"


def _report(body: str, name: str) -> str:
    """A filter body that runs ``body`` (which fills ``out``) and stores ``out`` as a property."""
    indented = "\n".join("        " + line for line in body.strip("\n").splitlines())
    return (f"        out = []\n{indented}\n"
            f"        locus.set_property('{name}_outcome', ' | '.join(map(str, out))[:4000])")


def _try(expr: str) -> str:
    """Lines appending the value of ``expr``, or the exception it raised, to ``out``."""
    return (f"try:\n    out.append(('ok', {expr}))\nexcept BaseException as exc:\n"
            f"    out.append(('refused', type(exc).__name__, getattr(exc, 'errno', None), str(exc)[:120]))")


class Evil:
    """What an attacker pickles: unpickling it in the worker would create ``path``."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """Things on the worker's side an escape would reach: a store file, a secret, sockets, a pid."""
    tmp = tmp_path_factory.mktemp("escapes")
    db = tmp / "store.sqlite"
    with sqlite3.connect(db) as con:
        con.execute("create table loci (id text)")
        con.execute("insert into loci values ('precious')")
    (tmp / "secret.txt").write_text(SECRET)
    unix_path = str(tmp / "worker.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(unix_path)
    listener.listen(8)
    abstract = f"\0albireo-escape-{uuid.uuid4().hex}"
    abstract_listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract_listener.bind(abstract)
    abstract_listener.listen(8)
    yield {"tmp": tmp, "db": str(db), "secret": str(tmp / "secret.txt"), "unix": unix_path, "abstract": abstract,
           "listeners": (listener, abstract_listener), "pickle_sentinel": str(tmp / "unpickled-in-the-worker")}
    listener.close()
    abstract_listener.close()


def _escape_filters(host) -> dict[str, str]:
    worker_pid = os.getpid()
    broker_dir = os.path.dirname(broker.__file__)
    evil = pickle.dumps(Evil(host["pickle_sentinel"]))
    fork_exec = ("_posixsubprocess.fork_exec([b'/bin/sh', b'-c', b'echo > " + host["tmp"].as_posix() + "/forked'], "
                 "[b'/bin/sh'], True, (), None, None, -1, -1, -1, -1, -1, -1, *os.pipe(), False, False, -1, None, "
                 "None, None, -1, None, False)")
    libc = "ctypes.CDLL(None, use_errno=True)"
    return {
        # 1. the parent must never unpickle: a raw pickle written to the socket, then a forged frame
        "Pickler": filter_code("Pickler", _report(
            f"os.write(3, struct.pack('>I', {len(evil)}) + {evil!r})\n"
            "out.append('sent a pickle')", "Pickler"), "import os, struct", tag="pickler"),
        # 2. sqlite3.connect on the store file, and reading the worker's files
        "Sqlite": filter_code("Sqlite", _report(
            _try(f"sqlite3.connect({host['db']!r}).execute('delete from loci').rowcount") + "\n"
            + _try(f"open({host['secret']!r}).read()") + "\n"
            + _try("open('/etc/shadow').read()[:10]") + "\n"
            + _try(f"open({os.path.join(os.path.dirname(broker_dir), 'pyproject.toml')!r}).read()[:10]"), "Sqlite"),
            "import os, sqlite3",
            tag="sqlite"),
        # 3. _posixsubprocess.fork_exec: starting a process without an audit event
        "ForkExec": filter_code("ForkExec", _report(_try(fork_exec), "ForkExec"), "import os, _posixsubprocess",
                                tag="forkexec"),
        # 4. rewriting the audit hook's closure cells (its idea of the allowed directory), then writing
        "Closure": filter_code("Closure", _report(
            "hooks = [o for o in gc.get_objects() if isinstance(o, types.FunctionType) and o.__name__ == 'hook'"
            " and o.__closure__]\n"
            "for h in hooks:\n"
            "    for c in h.__closure__:\n"
            "        if isinstance(c.cell_contents, str) and c.cell_contents.endswith('/'):\n"
            "            c.cell_contents = '/'\n"
            "out.append(('hooks rewritten', len(hooks)))\n"
            + _try(f"open({os.path.join(broker_dir, 'escaped.txt')!r}, 'w').write('x')") + "\n"
            + _try(f"open({str(host['tmp'] / 'escaped.txt')!r}, 'w').write('x')"), "Closure"),
            "import gc, types", tag="closure"),
        # 5. killing the worker: its pid as the worker sees it, and the parent
        "Killer": filter_code("Killer", _report(
            "out.append(('ppid', os.getppid()))\n"
            + _try(f"os.kill({worker_pid}, signal.SIGKILL)") + "\n"
            + _try("os.kill(os.getppid(), signal.SIGKILL)"), "Killer"), "import os, signal", tag="killer"),
        # 6. ctypes: open, fork (a bomb), connect to AF_UNIX sockets (a path and an abstract name), AF_INET
        "Ctypes": filter_code("Ctypes", _report(
            f"libc = {libc}\n"
            f"fd = libc.open({host['secret'].encode()!r}, os.O_RDONLY)\n"
            "out.append(('open secret', fd, ctypes.get_errno()))\n"
            f"fd = libc.open({os.path.join(broker_dir, 'ctypes-escape').encode()!r}, os.O_WRONLY | os.O_CREAT, 0o644)\n"
            "out.append(('create in code dir', fd, ctypes.get_errno()))\n"
            "forks = 0\n"
            "for _ in range(200):\n"
            "    pid = libc.fork()\n"
            "    if pid == 0:\n"
            "        libc._exit(0)\n"
            "    forks += pid > 0\n"
            "out.append(('forks', forks, ctypes.get_errno()))\n"
            "for addr in (" + repr(host["unix"]) + ", " + repr(host["abstract"]) + "):\n"
            "    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
            "    try:\n"
            "        s.connect(addr)\n"
            "        out.append(('connected', addr))\n"
            "    except OSError as exc:\n"
            "        out.append(('connect refused', exc.errno))\n"
            "out.append(('inet socket', libc.socket(2, 1, 0), ctypes.get_errno()))", "Ctypes"),
            "import ctypes, os, socket", tag="ctypes"),
        # 7. the worker's secrets: its environment, through every door
        "Environ": filter_code("Environ", _report(
            f"secret = {SECRET!r}\n"
            "out.append(('env', secret in repr(dict(os.environ))))\n"
            "for p in ('/proc/self/environ', '/proc/1/environ', '/proc/%d/environ' % " + str(worker_pid) + "):\n"
            "    try:\n"
            "        out.append((p, secret.encode() in open(p, 'rb').read()))\n"
            "    except OSError as exc:\n"
            "        out.append((p, 'refused', exc.errno))\n"
            "out.append(('pids', sorted(int(d) for d in os.listdir('/proc') if d.isdigit())))\n"
            "out.append(('uid', os.getuid()))\n"
            "out.append(('nproc', resource.getrlimit(resource.RLIMIT_NPROC)))", "Environ"), "import os, resource",
            tag="environ"),
        # 8. shared state: patch builtins and every other filter's _run; forge a result for another locus
        "Patcher": filter_code("Patcher", _report(
            "import builtins\n"
            "others = [o for o in gc.get_objects() if isinstance(o, type) and hasattr(o, '_run')"
            " and o.__name__ not in ('Patcher', 'BaseFilter')]\n"
            "for cls in others:\n"
            "    cls._run = lambda self, locus: locus.tag('pwned')\n"
            "out.append(('patched classes', [c.__name__ for c in others]))\n"
            "if locus.locus_id.endswith('-1'):  # the second locus: break len() for good (Good uses it)\n"
            "    builtins.len = lambda x: 0", "Patcher"), "import gc", tag="patcher"),
        "Forger": filter_code("Forger", _report(
            "fake = {'t': 'result', 'seq': 999, 'status': 'ok', 'dt': 0.0, 'tags': ['good'],"
            " 'props': [['good_n', -1]], 'error': None, 'provenance': {'good': {'filter': 'Good'}}}\n"
            "os.write(3, wire.pack_plain(fake))\n"
            "out.append('forged')", "Forger"), "import os\nfrom broker.filtering import wire", tag="forger"),
        "Blamer": filter_code("Blamer", "        os._exit(7)", "import os", tag="blamer"),
        # 10. the shared memory every child reads its loci from (sandbox.SharedLoci): make it writable and zero
        # it (the Good filter after this one would then read garbage), find a descriptor to it, reopen it
        "Sharer": filter_code("Sharer", _report(
            f"libc = {libc}\n"
            "libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]\n"
            "spans = [line.split()[0] for line in open('/proc/self/maps') if 'albireo-loci' in line]\n"
            "out.append(('mapped', len(spans)))\n"
            "for span in spans:\n"
            "    lo, hi = (int(v, 16) for v in span.split('-'))\n"
            "    rc = libc.mprotect(ctypes.c_void_p(lo), hi - lo, 3)\n"
            "    out.append(('mprotect', rc, ctypes.get_errno()))\n"
            "    if rc == 0:\n"
            "        ctypes.memset(lo, 0, hi - lo)\n"
            "        out.append('zeroed')\n"
            "    try:\n"
            "        fd = os.open('/proc/self/map_files/' + span, os.O_RDWR)\n"
            "        out.append(('map_files opened', fd, os.write(fd, b'x' * 4096)))\n"
            "    except OSError as exc:\n"
            "        out.append(('map_files refused', exc.errno))\n"
            "held = []\n"
            "for n in os.listdir('/proc/self/fd'):\n"
            "    try:\n"
            "        if 'albireo-loci' in os.readlink('/proc/self/fd/' + n):\n"
            "            held.append(int(n))\n"
            "    except OSError:\n"
            "        pass\n"
            "out.append(('descriptors', len(held)))\n"
            "for fd in held:  # Python's mmap object keeps a duplicate: every write through it must fail\n"
            "    " + _try("os.write(fd, b'x')").replace("\n", "\n    ") + "\n"
            "    " + _try("os.ftruncate(fd, 0)").replace("\n", "\n    ") + "\n"
            "    " + _try("mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)").replace(
                "\n", "\n    ") + "\n"
            "    out.append(('punch', libc.fallocate(fd, 3, ctypes.c_long(0), ctypes.c_long(4096)), ctypes.get_errno()))",
            "Sharer"), "import ctypes, mmap, os", tag="sharer"),
        # 9. a patched builtin that hangs the child after its call returned (no call "in flight")
        "Hanger": filter_code("Hanger", "        import time\n        from broker.filtering import wire\n"
                              "        wire.pack_plain = lambda *a, **k: time.sleep(3600)\n        locus.tag('hanger')",
                              tag="hanger"),
    }


@pytest.fixture(scope="module")
def attacked(host):
    os.environ["ALBIREO_WEB__TOKEN"] = SECRET  # a write token in the worker's environment
    try:
        codes = _escape_filters(host)
        filters = [spec(name, code, i) for i, (name, code) in enumerate(codes.items())]
        filters.append(spec("Good", GOOD, 100))
        loci = _loci(2)
        # a generous budget: the Patcher walks every object of its interpreter (gc.get_objects); on a loaded CI machine
        # it once came back with no outcome under the 2 s budget; only the Hanger needs the deadline at all
        with SandboxPool(filters, SandboxLimits(timeout_s=6.0, grace_s=1.0), ErrorPolicy(max_error_rate=0)) as pool:
            report = pool.run(loci)
            isolation = dict(pool.isolation)
            after = pool.run(_loci(1))
    finally:
        os.environ.pop("ALBIREO_WEB__TOKEN", None)
    outcome = {f.name: loci[0].user_properties.get(f"{f.name}_outcome", "") for f in filters}
    return {"report": report, "loci": loci, "filters": {f.name: f for f in filters}, "outcome": outcome,
            "isolation": isolation, "after": after}


def _errors(attacked, name):
    return [e for e in attacked["report"].errors if e.filter == name]


def test_the_worker_goes_on_after_every_attack(attacked):
    for x in attacked["loci"]:
        assert x.provenance["good"].filter == "Good"
        assert x.user_properties["good_n"] == len(x.alerts)  # not the forged -1
        assert "good" in attacked["report"].tags_by_locus[x.locus_id]
    assert all("good" in t for t in attacked["after"].tags_by_locus.values())
    assert not [e for e in attacked["report"].errors if e.filter == "Good"]  # nobody else is charged


def test_a_pickle_sent_by_a_filter_is_never_unpickled(attacked, host):
    assert not os.path.exists(host["pickle_sentinel"])
    errs = _errors(attacked, "Pickler")
    assert errs and errs[0].exception == "FilterProtocolError", [(e.exception, e.message) for e in errs]


def test_submitting_a_filter_whose_setup_sends_a_pickle_runs_nothing_in_the_worker(host, tmp_path):
    from broker.adapters.storage.sqlite import SQLiteStore
    from broker.association import Associator

    sentinel = str(tmp_path / "unpickled-at-submission")
    evil = pickle.dumps(Evil(sentinel))
    code = ("import os, struct\nfrom broker.filtering import BaseFilter\n\n"
            "class Submitted(BaseFilter):\n    OUTPUT_LOCUS_TAGS = []\n\n    def setup(self):\n"
            f"        os.write(3, struct.pack('>I', {len(evil)}) + {evil!r})\n\n"
            "    def _run(self, locus):\n        pass\n")
    store = SQLiteStore(str(tmp_path / "s.sqlite"), Associator(1.0).order)
    rec = reg.add_revision(store, code, "mallory", limits=SandboxLimits(timeout_s=2))
    store.close()
    assert not os.path.exists(sentinel)
    assert rec["meta"]["load_error"] and "malformed frame" in rec["meta"]["load_error"], rec["meta"]


def test_sqlite_on_the_store_and_reading_worker_files_find_nothing(attacked, host):
    with sqlite3.connect(host["db"]) as con:
        assert con.execute("select id from loci").fetchall() == [("precious",)]
    out = attacked["outcome"]["Sqlite"]
    assert out.count("refused") == 4, out  # the store, the secret, /etc/shadow, the project's folder
    assert SECRET not in out


def test_posixsubprocess_fork_exec_starts_nothing(attacked, host):
    assert not (host["tmp"] / "forked").exists()
    out = attacked["outcome"]["ForkExec"]
    assert out.startswith("('refused', 'PermissionError', 1"), out  # seccomp: EPERM on fork/clone


def test_rewriting_the_audit_hook_closure_still_writes_nothing(attacked, host):
    out = attacked["outcome"]["Closure"]
    assert "('hooks rewritten', 1)" in out, out  # the hook was defeated ...
    assert out.count("refused") == 2, out  # ... and the kernel refused both writes
    assert not os.path.exists(os.path.join(os.path.dirname(broker.__file__), "escaped.txt"))
    assert not (host["tmp"] / "escaped.txt").exists()


def test_killing_the_worker_is_impossible(attacked):
    out = attacked["outcome"]["Killer"]
    assert "('ppid', 0)" in out, out  # the worker is outside the filter's pid namespace
    assert "ProcessLookupError" in out, out  # its pid does not exist there
    os.kill(os.getpid(), 0)  # and the worker (this process) lives


def test_ctypes_open_fork_and_connect_are_refused_by_the_kernel(attacked, host):
    out = attacked["outcome"]["Ctypes"]
    assert "('open secret', -1, 2)" in out, out  # ENOENT: not in the filter's root
    # EROFS (mounted read-only) or EACCES (not the sandbox user's): the kernel refuses either way
    assert "('create in code dir', -1, 30)" in out or "('create in code dir', -1, 13)" in out, out
    assert "('forks', 0, 1)" in out, out  # seccomp: EPERM
    assert out.count("connect refused") == 2, out
    assert "('inet socket', -1, 1)" in out, out
    assert not os.path.exists(os.path.join(os.path.dirname(broker.__file__), "ctypes-escape"))
    for listener in host["listeners"]:
        listener.settimeout(0.1)
        with pytest.raises(TimeoutError):
            listener.accept()  # nobody connected


def test_the_worker_environment_and_processes_are_out_of_sight(attacked):
    out = attacked["outcome"]["Environ"]
    assert SECRET not in out and "True" not in out, out
    assert "('env', False)" in out and "('pids', [1])" in out, out  # alone in its pid namespace
    assert f"('nproc', ({SandboxLimits.threads}, {SandboxLimits.threads}))" in out, out  # a bound on tasks
    if os.geteuid() == 0:
        import pwd

        assert f"('uid', {pwd.getpwnam('albireo-sandbox').pw_uid})" in out, out


def test_the_shared_loci_cannot_be_written_or_reopened_by_a_filter(attacked):
    out = attacked["outcome"]["Sharer"]
    assert "('mapped', 1)" in out, out  # the loci did come through the shared memory
    assert "('mprotect', -1, 13)" in out and "zeroed" not in out, out  # EACCES: the seal
    assert "map_files opened" not in out and "map_files refused" in out, out
    # the descriptor the child's mapping holds: a write, a truncation, a writable mapping, a hole punch
    # are each refused by the seals (EPERM), and nothing else succeeded
    assert "('descriptors', 1)" in out, out
    assert out.count("('refused', 'PermissionError', 1,") == 3 and "('punch', -1, 1)" in out, out
    assert "('ok'" not in out, out
    for x in attacked["loci"]:  # the filter after it read intact loci
        assert x.user_properties["good_n"] == len(x.alerts) > 0


def test_a_filter_cannot_patch_builtins_or_other_filters(attacked):
    out = attacked["outcome"]["Patcher"]
    assert "('patched classes', [])" in out, [(e.exception, e.message) for e in _errors(attacked, "Patcher")]  # alone in its interpreter: no other filter to patch
    for x in attacked["loci"]:
        assert "pwned" not in x.user_tags
        assert "good" in x.user_tags and x.user_properties["good_n"] == len(x.alerts) > 0
    # breaking len() broke only the Patcher's own process, and the Patcher was charged for it
    assert [e.exception for e in _errors(attacked, "Patcher")] == ["FilterProtocolError"]


def test_forged_results_for_another_locus_or_filter_are_refused_and_charged(attacked):
    errs = _errors(attacked, "Forger")
    assert errs and all(e.exception == "FilterProtocolError" for e in errs), [(e.exception, e.message) for e in errs]
    assert "in order" in errs[0].message
    for x in attacked["loci"]:
        assert x.provenance["good"].filter == "Good" and x.user_properties["good_n"] > 0


def test_a_crash_is_charged_to_the_filter_that_crashed(attacked):
    errs = _errors(attacked, "Blamer")
    assert len(errs) == 2 and {e.exception for e in errs} == {"FilterCrashed"}
    assert "exited with code 7" in errs[0].message


def test_a_child_hanging_after_its_call_is_stopped_by_the_deadline(attacked):
    errs = _errors(attacked, "Hanger")
    assert len(errs) == 2 and {e.exception for e in errs} == {"FilterTimeout"}, [(e.exception, e.message)
                                                                               for e in errs]


def test_isolation_holds_and_is_reported(attacked):
    facts = attacked["isolation"]
    status = sandbox_status(SandboxLimits(timeout_s=2))
    assert status["holds"]["process_per_filter"] and status["holds"]["seccomp"], status
    if os.geteuid() == 0:  # as in CI: every boundary
        assert not status["degraded"], status
        assert facts["user"]["name"] == "albireo-sandbox"
        assert {"mount", "pid", "network"} <= set(facts["namespaces"])


def test_the_sandbox_user_owns_nothing_of_the_worker(attacked):
    if os.geteuid() != 0:
        pytest.skip("the dedicated user exists only when the worker runs as root")
    import pwd

    pw = pwd.getpwnam("albireo-sandbox")
    assert pw.pw_uid != 0 and pw.pw_shell.endswith(("nologin", "false"))
    assert stat.S_IMODE(os.stat(os.path.dirname(broker.__file__)).st_mode) & 0o002 == 0


def test_probe_load_of_a_harmless_filter_still_works(tmp_path):
    assert reg.probe_load(FilterSpec("Good", "r", GOOD, 0), SandboxLimits(timeout_s=2)) is None



def _run_mode(host, mode: str, names: tuple[str, ...]):
    os.environ["ALBIREO_WEB__TOKEN"] = SECRET
    try:
        codes = _escape_filters(host)
        filters = [spec(n, codes[n], i) for i, n in enumerate(names)] + [spec("Good", GOOD, 100)]
        loci = _loci(1)
        with SandboxPool(filters, SandboxLimits(timeout_s=2.0, grace_s=1.0, mode=mode),
                         ErrorPolicy(max_error_rate=0)) as pool:
            report = pool.run(loci)
            facts = dict(pool.isolation)
    finally:
        os.environ.pop("ALBIREO_WEB__TOKEN", None)
    assert "good" in report.tags_by_locus[loci[0].locus_id]
    return {n: loci[0].user_properties.get(f"{n}_outcome", "") for n in names}, facts


def test_the_user_namespace_path_contains_the_same_escapes(host):
    """What a worker that is not root gets (forced here as root): a user namespace, no capabilities."""
    out, facts = _run_mode(host, "userns", ("Sqlite", "Ctypes", "Environ", "Killer"))
    assert facts["mode"] == "userns" and "user" in facts["namespaces"] and facts["root"], facts
    assert facts["child"]["seccomp"] and facts["child"]["pid_namespace"], facts
    assert out["Sqlite"].count("refused") == 4, out["Sqlite"]
    assert "('open secret', -1, 2)" in out["Ctypes"] and "('forks', 0, 1)" in out["Ctypes"], out["Ctypes"]
    assert out["Ctypes"].count("connect refused") == 2, out["Ctypes"]
    assert SECRET not in out["Environ"] and "('pids', [1])" in out["Environ"], out["Environ"]
    assert "('ppid', 0)" in out["Killer"], out["Killer"]
    with sqlite3.connect(host["db"]) as con:
        assert con.execute("select count(*) from loci").fetchone() == (1,)


def test_without_namespaces_the_degradation_is_reported_and_the_rest_still_holds(host):
    """A kernel refusing namespaces: filters still run, data-only, seccomp and a clean environment hold,
    and ``albireo filter sandbox`` says what is missing."""
    out, facts = _run_mode(host, "none", ("ForkExec", "Environ"))
    assert facts["mode"] == "none" and not facts["namespaces"] and not facts["root"]
    assert out["ForkExec"].startswith("('refused', 'PermissionError', 1"), out  # seccomp still refuses processes
    assert not (host["tmp"] / "forked").exists()
    assert "('env', False)" in out["Environ"], out["Environ"]  # no secret in the environment
    status = sandbox_status(SandboxLimits(timeout_s=2.0, mode="none"))
    assert {"mount_namespace", "pid_namespace", "network_namespace"} <= set(status["degraded"]), status
    assert status["holds"]["seccomp"] and status["holds"]["data_only_wire"]
