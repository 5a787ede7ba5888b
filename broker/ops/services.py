"""Fetch, start, check and stop the real Kafka, Cassandra and Elasticsearch servers on 127.0.0.1.

Why this exists: the project has no Docker and no internet but package registries, and CI starts
from a machine with only Java, Maven and Python. So every server is fetched from Maven Central
(jars for Kafka and Cassandra, the integ-test-zip for Elasticsearch) by the poms under
``services/``, cached under one install root, and run as plain detached JVMs.

Layout of the install root (``[services] home``, default ``~/.cache/albireo/services``, or
``/var/cache/albireo/services`` when running as root because ``/root`` is not traversable by the
unprivileged user Elasticsearch must run as)::

    <home>/<name>/lib    jars (Kafka, Cassandra) or the unpacked distribution (Elasticsearch)
    <home>/<name>/conf   generated configuration
    <home>/<name>/data   server data
    <home>/<name>/logs   <name>.log holds the server's stdout/stderr
    <home>/<name>/pid    pid of the server's process-group leader
    <home>/kafka/tls     the local CA (ca.pem: what consumers verify the broker with) and the
                         broker's key and certificate (:mod:`broker.ops.certificates`)
    <home>/kafka/auth    plain-credentials (PBKDF2 hashes that PLAIN logins are checked against,
                         written by ``albireo users``) and the compiled PLAIN handler

Kafka listens twice (see :func:`_kafka_properties`): PLAINTEXT on 127.0.0.1 for the pipeline, the
tests and the operator's tools (loopback only; its principal, ``User:ANONYMOUS``, is the super
user), and SASL_SSL (``[services] kafka_sasl_port``) for consumers, who authenticate with
SCRAM-SHA-512 or PLAIN and read only what an ACL of the StandardAuthorizer grants them.

Use from Python (``up``, ``down``, ``status``, ``wait_healthy``) or from a shell::

    python -m broker.ops.services up kafka cassandra elasticsearch
    python -m broker.ops.services status
    python -m broker.ops.services down
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker import REPO_ROOT

NAMES: tuple[str, ...] = ("kafka", "cassandra", "elasticsearch")
HOST = "127.0.0.1"
ES_USER = "albireo-es"
#: the poms and configuration templates in the checkout.
SRC_DIR = REPO_ROOT / "services"

_MARKER = ".albireo-installed"
# Popen handles of servers started by this process, so a server that dies while we wait is seen
# as dead (a zombie child would otherwise still answer os.kill(pid, 0)).
_CHILDREN: dict[str, subprocess.Popen[bytes]] = {}


class ServiceError(RuntimeError):
    """A server could not be installed, started or made healthy; the message says which and why."""


# --------------------------------------------------------------------------- configuration


def _cfg():
    """The ``[services]`` settings (TOML or ``ALBIREO_SERVICES__*``), read where configuration is read."""
    from broker.config import load_config

    return load_config().services


def services_home() -> Path:
    """The install root; root's default avoids /root, which the Elasticsearch user cannot enter."""
    home = _cfg().home
    if home:
        return Path(home).expanduser().resolve()
    if os.geteuid() == 0:
        return Path("/var/cache/albireo/services")
    return Path("~/.cache/albireo/services").expanduser()


def ports(name: str) -> dict[str, int]:
    """Ports of one server (``[services] <name>_port`` and friends)."""
    c = _cfg()
    if name == "kafka":
        return {"port": c.kafka_port, "controller": c.kafka_controller_port, "sasl": c.kafka_sasl_port}
    if name == "cassandra":
        return {"port": c.cassandra_port, "storage": c.cassandra_storage_port}
    if name == "elasticsearch":
        return {"port": c.elasticsearch_port, "transport": c.elasticsearch_transport_port}
    raise ServiceError(f"unknown service {name!r}; known: {', '.join(NAMES)}")


def endpoints() -> dict[str, str]:
    """Client addresses of the three servers, for tests and adapters."""
    return {
        "kafka": f"{HOST}:{ports('kafka')['port']}",
        "cassandra": f"{HOST}:{ports('cassandra')['port']}",
        "elasticsearch": f"http://{HOST}:{ports('elasticsearch')['port']}",
    }


def _heap(name: str, default: str = "512m") -> str:
    value = getattr(_cfg(), f"{name}_heap", default) or default
    if not re.fullmatch(r"\d+[mMgG]", value):
        raise ServiceError(f"services.{name}_heap = {value!r} is not a JVM size like 512m")
    return value


@dataclass(frozen=True)
class _Paths:
    root: Path
    lib: Path
    conf: Path
    data: Path
    logs: Path
    pid: Path
    log: Path


def _paths(name: str) -> _Paths:
    root = services_home() / name
    return _Paths(root, root / "lib", root / "conf", root / "data", root / "logs", root / "pid",
                  root / "logs" / f"{name}.log")


def kafka_consumer_endpoint() -> str:
    """``host:port`` of the SASL_SSL listener, as consumers are told to reach it."""
    return f"{_advertised_host()}:{_cfg().kafka_sasl_port}"


def _advertised_host() -> str:
    c = _cfg()
    if c.kafka_sasl_advertised_host:
        return c.kafka_sasl_advertised_host
    return socket.gethostname() if c.kafka_sasl_host in ("0.0.0.0", "::") else c.kafka_sasl_host


def kafka_ca_file() -> Path:
    """The local CA certificate a consumer passes as ``ssl.ca.location`` (made by ``services up kafka``)."""
    return _paths("kafka").root / "tls" / "ca.pem"


def kafka_plain_credentials_file() -> Path:
    """The PBKDF2 hashes PLAIN logins on the local broker are checked against (``albireo users`` writes it)."""
    return _paths("kafka").root / "auth" / "plain-credentials"


# --------------------------------------------------------------------------- java


def _java_major(home: Path) -> int | None:
    release = home / "release"
    if not (home / "bin" / "java").exists() or not release.exists():
        return None
    match = re.search(r'JAVA_VERSION="(\d+)', release.read_text(errors="replace"))
    return int(match.group(1)) if match else None


def _java_home(name: str, majors: Iterable[int]) -> Path:
    """A JDK whose major version the server supports (Cassandra 5.0 runs on 11/17 only)."""
    wanted = set(majors)
    candidates: list[Path] = []
    if _cfg().java_home:
        candidates.append(Path(_cfg().java_home))
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]))
    java = shutil.which("java")
    if java:
        candidates.append(Path(os.path.realpath(java)).parents[1])
    jvm = Path("/usr/lib/jvm")
    if jvm.is_dir():
        candidates.extend(sorted(jvm.iterdir()))
    for home in candidates:
        if _java_major(home) in wanted:
            return home
    raise ServiceError(f"{name}: no JDK with major version in {sorted(wanted)} found "
                       f"(tried {', '.join(map(str, candidates)) or 'nothing'}); "
                       f"set ALBIREO_{name.upper()}_JAVA_HOME")


# --------------------------------------------------------------------------- install


def _pom(name: str) -> Path:
    pom = SRC_DIR / name / "pom.xml"
    if not pom.exists():
        raise ServiceError(f"{name}: {pom} not found (the checkout's services/ folder)")
    return pom


def _fingerprint(name: str) -> str:
    return hashlib.sha256(_pom(name).read_bytes()).hexdigest()


def is_installed(name: str) -> bool:
    """True when the jars/distribution for the current pom are already in the install root."""
    marker = _paths(name).lib / _MARKER
    return marker.exists() and marker.read_text().strip() == _fingerprint(name)


def _maven_copy(name: str, out: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError(f"{name}: Maven (mvn) is not on PATH; it is needed once to fetch the server")
    cmd = [mvn, "-q", "-B", "-f", str(_pom(name)), "dependency:copy-dependencies",
           f"-DoutputDirectory={out}", "-DincludeScope=runtime"]
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise ServiceError(f"{name}: Maven failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")


def _unzip_es(zip_path: Path, dest: Path) -> None:
    """Unpack the distribution without its top folder, keeping the exec bits zipfile drops."""
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            parts = Path(info.filename).parts[1:]
            if not parts:
                continue
            target = dest.joinpath(*parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                target.chmod(mode)
            elif target.parent.name == "bin":
                target.chmod(0o755)


def install(name: str) -> bool:
    """Fetch one server into ``<home>/<name>/lib`` unless the same pom's output is already there.

    Returns True when Maven ran. Files land in a temporary folder first and are renamed into
    place, so an interrupted install never looks installed.
    """
    if is_installed(name):
        return False
    p = _paths(name)
    p.root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="lib.", dir=p.root))
    try:
        if name == "elasticsearch":
            fetched = Path(tempfile.mkdtemp(prefix="zip.", dir=p.root))
            try:
                _maven_copy(name, fetched)
                zips = sorted(fetched.glob("elasticsearch-*.zip"))
                if len(zips) != 1:
                    raise ServiceError(f"elasticsearch: expected one zip from Maven, got {zips}")
                _unzip_es(zips[0], staging)
            finally:
                shutil.rmtree(fetched, ignore_errors=True)
        else:
            _maven_copy(name, staging)
        (staging / _MARKER).write_text(_fingerprint(name) + "\n")
        staging.chmod(0o755)
        if p.lib.exists():
            shutil.rmtree(p.lib)
        staging.rename(p.lib)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


# --------------------------------------------------------------------------- process helpers


def _read_pid(name: str) -> int | None:
    try:
        return int(_paths(name).pid.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _pid_alive(name: str, pid: int | None) -> bool:
    """Alive, not a zombie, and really ours (its command line names our install root)."""
    if pid is None:
        return False
    child = _CHILDREN.get(name)
    if child is not None and child.pid == pid and child.poll() is not None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X") and str(_paths(name).root) in cmdline


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            pids.append(int(entry.name))
    return pids


def rss_mb(name: str) -> float | None:
    """Resident memory of the server's whole process group (ES runs a launcher plus the node)."""
    pid = _read_pid(name)
    if not _pid_alive(name, pid):
        return None
    total_kb = 0
    for member in _group_pids(pid):  # type: ignore[arg-type]
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return round(total_kb / 1024, 1)


def _port_open(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _log_tail(name: str, lines: int = 60) -> str:
    log = _paths(name).log
    if not log.exists():
        return f"(no log at {log})"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _spawn(name: str, cmd: list[str], env: dict[str, str], cwd: Path) -> int:
    """Start a detached server in its own session, stdout/stderr to its log, and record its pid."""
    p = _paths(name)
    p.logs.mkdir(parents=True, exist_ok=True)
    if p.log.exists() and p.log.stat().st_size:
        p.log.replace(p.log.with_suffix(".log.1"))
    with open(p.log, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=cwd, env=env, start_new_session=True)
    _CHILDREN[name] = proc
    p.pid.write_text(f"{proc.pid}\n")
    return proc.pid


# --------------------------------------------------------------------------- per-server start


#: the PLAIN server callback (source in the checkout, compiled once per source version).
_PLAIN_HANDLER_SRC = SRC_DIR / "kafka" / "PlainCredentialsFile.java"
_PLAIN_HANDLER_CLASS = "org.albireo.kafka.PlainCredentialsFile"


def _build_plain_handler(java_home: Path, lib: Path, out: Path) -> Path:
    """Compile :data:`_PLAIN_HANDLER_SRC` against the installed Kafka jars into ``out`` (cached by source hash)."""
    digest = hashlib.sha256(_PLAIN_HANDLER_SRC.read_bytes()).hexdigest()
    marker = out / _MARKER
    if marker.exists() and marker.read_text().strip() == digest:
        return out
    javac = java_home / "bin" / "javac"
    if not javac.exists():
        raise ServiceError(f"kafka: {javac} not found; the consumer listener's PLAIN handler is compiled with the "
                           "JDK's javac (install a JDK, not only a JRE, or set services.java_home)")
    staging = Path(tempfile.mkdtemp(prefix="classes.", dir=out.parent))
    try:
        proc = subprocess.run([str(javac), "--release", "17", "-cp", f"{lib}/*", "-d", str(staging),
                               str(_PLAIN_HANDLER_SRC)], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise ServiceError(f"kafka: compiling {_PLAIN_HANDLER_SRC.name} failed:\n{proc.stdout}{proc.stderr}")
        (staging / _MARKER).write_text(digest + "\n")
        staging.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _jaas(module: str, **options: str) -> str:
    opts = "".join(f' {k}="{v}"' for k, v in options.items())
    return f"{module} required{opts};"


def _kafka_properties(p: _Paths, pt: dict[str, int], keystore: Path, plain_file: Path) -> dict[str, str]:
    """The broker's configuration: the loopback PLAINTEXT listener and the consumers' SASL_SSL listener.

    * ``PLAINTEXT://127.0.0.1`` carries the pipeline, the tests and ``albireo users`` (the admin
      API). Its connections have the principal ``User:ANONYMOUS``, the only super user. It is
      reachable only from this host; a deployment whose pipeline runs elsewhere gives it a
      ``pipeline`` user on the SASL_SSL listener instead (``albireo users add NAME --role pipeline``).
    * ``CONSUMERS://<kafka_sasl_host>`` is SASL_SSL with SCRAM-SHA-512 (credentials in the KRaft
      metadata, set through the admin API) and PLAIN (antares-client; checked by
      :data:`_PLAIN_HANDLER_CLASS` against PBKDF2 hashes in ``plain_file``). No ACL, no access:
      ``allow.everyone.if.no.acl.found=false``.
    """
    c = _cfg()
    listener = "listener.name.consumers."
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{pt['controller']}",
        "listeners": (f"PLAINTEXT://{HOST}:{pt['port']},CONTROLLER://{HOST}:{pt['controller']},"
                      f"CONSUMERS://{c.kafka_sasl_host}:{pt['sasl']}"),
        "advertised.listeners": f"PLAINTEXT://{HOST}:{pt['port']},CONSUMERS://{_advertised_host()}:{pt['sasl']}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,CONSUMERS:SASL_SSL",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": "User:ANONYMOUS",
        "allow.everyone.if.no.acl.found": "false",
        listener + "sasl.enabled.mechanisms": "SCRAM-SHA-512,PLAIN",
        listener + "scram-sha-512.sasl.jaas.config": _jaas("org.apache.kafka.common.security.scram.ScramLoginModule"),
        listener + "plain.sasl.jaas.config": _jaas("org.apache.kafka.common.security.plain.PlainLoginModule",
                                                   credentials_file=str(plain_file)),
        listener + "plain.sasl.server.callback.handler.class": _PLAIN_HANDLER_CLASS,
        listener + "ssl.keystore.type": "PEM",
        listener + "ssl.keystore.location": str(keystore),
        listener + "ssl.client.auth": "none",
        "log.dirs": str(p.data / "kraft-logs"),
        "num.partitions": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "auto.create.topics.enable": "true",
        "group.initial.rebalance.delay.ms": "0",
        "delete.topic.enable": "true",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "log.retention.hours": "24",
        "log.segment.bytes": str(64 * 1024 * 1024),
    }


def _start_kafka() -> None:
    from broker.ops.certificates import default_names, ensure_broker_tls

    p, pt = _paths("kafka"), ports("kafka")
    java_home = _java_home("kafka", range(17, 100))
    java = java_home / "bin" / "java"
    auth = p.root / "auth"
    for d in (p.conf, p.data, p.logs, auth):
        d.mkdir(parents=True, exist_ok=True)
    tls = ensure_broker_tls(p.root / "tls", default_names([_advertised_host()]))
    plain_file = kafka_plain_credentials_file()
    if not plain_file.exists():
        plain_file.write_text("# NAME:pbkdf2-sha512:ITERATIONS:SALT:HASH, written by `albireo users`\n")
    plugins = _build_plain_handler(java_home, p.lib, auth / "classes")
    props = _kafka_properties(p, pt, tls.keystore, plain_file)
    server_props = p.conf / "server.properties"
    server_props.write_text("# Generated by broker/ops/services.py; edits are overwritten on start.\n"
                            + "".join(f"{k}={v}\n" for k, v in props.items()))
    server_props.chmod(0o600)
    shutil.copyfile(SRC_DIR / "kafka" / "log4j2.xml", p.conf / "log4j2.xml")
    classpath = f"{p.lib}/*:{plugins}"
    jvm = [str(java), f"-Xms{_heap('kafka', '512m')}", f"-Xmx{_heap('kafka', '512m')}",
           "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
           "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={p.conf / 'log4j2.xml'}",
           f"-Dkafka.logs.dir={p.logs}", "-cp", classpath]
    if not (p.data / "kraft-logs" / "meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        fmt = subprocess.run(jvm + ["kafka.tools.StorageTool", "format", "-t", cluster_id,
                                    "-c", str(server_props), "--ignore-formatted"],
                             capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if fmt.returncode != 0:
            raise ServiceError(f"kafka: storage format failed (exit {fmt.returncode}):\n"
                               f"{fmt.stdout}\n{fmt.stderr}")
    _spawn("kafka", jvm + ["kafka.Kafka", str(server_props)], dict(os.environ), p.root)


def _start_cassandra() -> None:
    p, pt = _paths("cassandra"), ports("cassandra")
    java = _java_home("cassandra", (11, 17)) / "bin" / "java"
    for d in (p.conf, p.data, p.logs):
        d.mkdir(parents=True, exist_ok=True)
    yaml = (SRC_DIR / "cassandra" / "cassandra.yaml").read_text()
    for key, value in {"@NATIVE_PORT@": pt["port"], "@STORAGE_PORT@": pt["storage"],
                       "@DATA_DIR@": p.data}.items():
        yaml = yaml.replace(key, str(value))
    (p.conf / "cassandra.yaml").write_text(yaml)
    shutil.copyfile(SRC_DIR / "cassandra" / "logback.xml", p.conf / "logback.xml")
    options = [line.strip() for line in (SRC_DIR / "cassandra" / "jvm17-server.options").read_text().splitlines()
               if line.strip() and not line.lstrip().startswith("#")]
    jvm_args: list[str] = []
    for opt in options:  # "--add-opens a=b" is one option written as two argv words
        jvm_args.extend(opt.split(" ", 1) if opt.startswith("--") else [opt])
    heap = _heap("cassandra", "1g")
    jamm = sorted(p.lib.glob("jamm-*.jar"))
    cmd = [str(java), f"-Xms{heap}", f"-Xmx{heap}", *jvm_args,
           *(f"-javaagent:{j}" for j in jamm[:1]),
           "-Djava.net.preferIPv4Stack=true", "-XX:+PerfDisableSharedMem",
           "-Dcassandra-foreground=yes",
           f"-Dcassandra.config=file://{p.conf / 'cassandra.yaml'}",
           f"-Dcassandra.storagedir={p.data}", f"-Dcassandra.logdir={p.logs}",
           f"-Dlogback.configurationFile={p.conf / 'logback.xml'}",
           # A lone seed node has no ring to wait for; the default 30 s ring delay is pure waiting.
           "-Dcassandra.skip_wait_for_gossip_to_settle=0", "-Dcassandra.ring_delay_ms=1000",
           "-XX:+ExitOnOutOfMemoryError",
           "-cp", f"{p.conf}:{p.lib}/*", "org.apache.cassandra.service.CassandraDaemon"]
    _spawn("cassandra", cmd, dict(os.environ), p.root)


def _ensure_es_user() -> None:
    """Elasticsearch refuses to run as root, so as root we run it as a dedicated system user."""
    if subprocess.run(["id", "-u", ES_USER], capture_output=True).returncode == 0:
        return
    nologin = "/usr/sbin/nologin" if Path("/usr/sbin/nologin").exists() else "/bin/false"
    proc = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", nologin,
                           "--user-group", ES_USER], capture_output=True, text=True)
    if proc.returncode not in (0, 9):  # 9: created meanwhile by a concurrent up
        raise ServiceError(f"elasticsearch: useradd {ES_USER} failed: {proc.stderr.strip()}")


def _start_elasticsearch() -> None:
    p, pt = _paths("elasticsearch"), ports("elasticsearch")
    java_home = _java_home("elasticsearch", range(17, 100))
    tmp = p.root / "tmp"
    for d in (p.conf, p.data, p.logs, tmp):
        d.mkdir(parents=True, exist_ok=True)
    for item in (p.lib / "config").iterdir():  # jvm.options, log4j2.properties, ...
        target = p.conf / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        elif item.name != "elasticsearch.yml":
            shutil.copyfile(item, target)
    yml = (SRC_DIR / "elasticsearch" / "elasticsearch.yml").read_text()
    for key, value in {"@HTTP_PORT@": pt["port"], "@TRANSPORT_PORT@": pt["transport"],
                       "@DATA_DIR@": p.data, "@LOG_DIR@": p.logs}.items():
        yml = yml.replace(key, str(value))
    (p.conf / "elasticsearch.yml").write_text(yml)
    heap = _heap("elasticsearch", "512m")
    env = {"ES_JAVA_HOME": str(java_home), "ES_PATH_CONF": str(p.conf), "ES_TMPDIR": str(tmp),
           "ES_JAVA_OPTS": f"-Xms{heap} -Xmx{heap}", "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "LANG": "C.UTF-8"}
    cmd = [str(p.lib / "bin" / "elasticsearch")]
    if os.geteuid() == 0:
        _ensure_es_user()
        for ancestor in p.root.parents:
            if ancestor.stat().st_mode & 0o001 == 0:
                raise ServiceError(f"elasticsearch: {ancestor} is not traversable by {ES_USER}; "
                                   "set services.home (ALBIREO_SERVICES__HOME) to a path outside private home folders")
        subprocess.run(["chown", "-R", f"{ES_USER}:{ES_USER}", str(p.root)], check=True)
        cmd = ["runuser", "-u", ES_USER, "--", "env", *(f"{k}={v}" for k, v in env.items()), *cmd]
    _spawn("elasticsearch", cmd, {**os.environ, **env}, p.root)


_STARTERS = {"kafka": _start_kafka, "cassandra": _start_cassandra, "elasticsearch": _start_elasticsearch}


# --------------------------------------------------------------------------- health


def _kafka_healthy(timeout: float) -> bool:
    """A metadata answer on PLAINTEXT, and the consumer listener open when this broker was configured with one."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": endpoints()["kafka"], "socket.timeout.ms": int(timeout * 1000),
                         "log_level": 0})
    metadata = admin.list_topics(timeout=timeout)
    return bool(metadata.brokers) and (not _has_consumer_listener() or _port_open(ports("kafka")["sasl"]))


def _has_consumer_listener() -> bool:
    """The broker's generated configuration on disk declares the SASL_SSL consumer listener."""
    props = _paths("kafka").conf / "server.properties"
    try:
        return "CONSUMERS://" in props.read_text()
    except (FileNotFoundError, PermissionError):
        return False


def check_kafka_consumer_listener(timeout: float = 10.0) -> str:
    """The consumer listener's ``host:port`` once it completes a TLS handshake verified with the local CA.

    Raises ServiceError naming the cause when the running Kafka has no such listener (a broker
    started before it existed keeps its old configuration until ``albireo services down kafka``
    and ``up kafka``), or when its certificate does not verify against :func:`kafka_ca_file`.
    """
    import ssl

    host, port = _advertised_host(), _cfg().kafka_sasl_port
    if not _has_consumer_listener():
        raise ServiceError(f"kafka: the broker under {_paths('kafka').root} was configured without the SASL_SSL "
                           "consumer listener (started by an older Albireo); restart it: "
                           "albireo services down kafka && albireo services up kafka")
    ca = kafka_ca_file()
    deadline = time.monotonic() + timeout
    while True:
        try:
            ctx = ssl.create_default_context(cafile=str(ca))
            with socket.create_connection((host, port), timeout=timeout) as raw, \
                    ctx.wrap_socket(raw, server_hostname=host):
                return f"{host}:{port}"
        except ssl.SSLError as exc:
            raise ServiceError(f"kafka: the consumer listener {host}:{port} does not verify with {ca}: {exc}") from exc
        except OSError as exc:
            if time.monotonic() > deadline:
                raise ServiceError(f"kafka: the consumer listener {host}:{port} does not answer: {exc}") from exc
            time.sleep(0.5)


def _cassandra_healthy(timeout: float) -> bool:
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import WhiteListRoundRobinPolicy

    profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([HOST]), request_timeout=timeout)
    cluster = Cluster([HOST], port=ports("cassandra")["port"], connect_timeout=timeout,
                      execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    try:
        row = cluster.connect().execute("SELECT release_version FROM system.local").one()
        return row is not None and bool(row.release_version)
    finally:
        cluster.shutdown()


def _elasticsearch_healthy(timeout: float) -> bool:
    url = f"{endpoints()['elasticsearch']}/_cluster/health?timeout={int(timeout)}s"
    with urllib.request.urlopen(url, timeout=timeout + 1) as resp:
        return json.load(resp).get("status") in ("yellow", "green")


_HEALTH = {"kafka": _kafka_healthy, "cassandra": _cassandra_healthy, "elasticsearch": _elasticsearch_healthy}


def is_healthy(name: str, timeout: float = 5.0) -> bool:
    """One real request (Kafka metadata, a CQL query, cluster health); any failure counts as unhealthy."""
    if not _port_open(ports(name)["port"]):
        return False
    try:
        return _HEALTH[name](timeout)
    except Exception:  # noqa: BLE001 - a health probe reports, it does not raise
        return False


def _looks_dead(name: str) -> bool:
    """Our server process is gone and nothing listens on its port.

    A server this process started is judged by its ``Popen`` (exited or not); one started by
    another process (an earlier ``albireo services up``) by ``/proc``.
    """
    pid = _read_pid(name)
    if pid is None or _port_open(ports(name)["port"]):
        return False
    child = _CHILDREN.get(name)
    if child is not None and child.pid == pid:
        return child.poll() is not None
    return not _pid_alive(name, pid)


#: what each health probe asks for, for error messages.
_WAITED_FOR = {"kafka": "a metadata answer", "cassandra": "a CQL query answer",
               "elasticsearch": "cluster health yellow or green"}


def _progress_marker(name: str) -> tuple[int, int]:
    """(log size, CPU ticks of the server's process group): either growing means it is still starting up."""
    log = _paths(name).log
    size = log.stat().st_size if log.exists() else 0
    ticks = 0
    pid = _read_pid(name)
    if pid is not None:
        for member in _group_pids(pid):
            try:
                fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])  # utime + stime
            except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError, ValueError):
                continue
    return size, ticks


def wait_healthy(name: str, timeout: float | None = None) -> float:
    """Block until ``name`` answers a real request; returns the seconds waited.

    The wait follows the server's own progress, not a fixed budget: while its log grows or its
    processes use CPU it is still starting (a busy 2-core machine can take minutes), and only
    ``services.stall_s`` seconds without either, or ``timeout`` (default ``services.max_wait_s``)
    in all, end the wait. Raises ServiceError saying what it waited for, why it stopped, and the
    tail of the server's log.
    """
    c = _cfg()
    timeout = c.max_wait_s if timeout is None else timeout
    start = time.monotonic()
    seen_dead = 0
    marker, last_progress = _progress_marker(name), start
    what = f"{name} to answer with {_WAITED_FOR[name]} on {HOST}:{ports(name)['port']}"
    while True:
        if is_healthy(name):
            return time.monotonic() - start
        if _looks_dead(name):
            seen_dead += 1
        else:
            seen_dead = 0
        now = time.monotonic()
        # Three looks a second apart: one /proc read racing a start-up (runuser, exec) is no verdict.
        if seen_dead >= 3:
            raise ServiceError(f"waited {now - start:.0f}s for {what}, but the server exited; last log lines "
                               f"({_paths(name).log}):\n{_log_tail(name)}")
        new = _progress_marker(name)
        if new != marker:
            marker, last_progress = new, now
        if now - last_progress > c.stall_s:
            raise ServiceError(f"waited {now - start:.0f}s for {what}; it made no progress (no log output, "
                               f"no CPU time) for {c.stall_s:.0f}s; last log lines ({_paths(name).log}):\n"
                               f"{_log_tail(name)}")
        if now - start > timeout:
            raise ServiceError(f"waited {timeout:.0f}s for {what} (still making progress); last log lines "
                               f"({_paths(name).log}):\n{_log_tail(name)}")
        time.sleep(1.0)


# --------------------------------------------------------------------------- public API


def _names(names: Iterable[str] | None) -> list[str]:
    chosen = list(names) if names else list(NAMES)
    unknown = [n for n in chosen if n not in NAMES]
    if unknown:
        raise ServiceError(f"unknown service(s) {', '.join(unknown)}; known: {', '.join(NAMES)}")
    return chosen


def up(names: Iterable[str] | None = None, timeout: float | None = None) -> dict[str, dict[str, Any]]:
    """Install (once) and start each named server that is not already healthy, then wait for health.

    Servers are started together and waited for afterwards, so their JVM start-ups overlap.
    Returns per server: action ("already healthy" or "started"), install_s, healthy_s.
    """
    chosen = _names(names)
    report: dict[str, dict[str, Any]] = {}
    pending = []
    for name in chosen:  # install everything first so healthy_s measures start-up alone
        if is_healthy(name):
            report[name] = {"action": "already healthy", "install_s": 0.0, "healthy_s": 0.0}
            continue
        t0 = time.monotonic()
        fetched = install(name)
        report[name] = {"action": "started", "installed_now": fetched,
                        "install_s": round(time.monotonic() - t0, 1)}
        pending.append(name)
    started: dict[str, float] = {}
    for name in pending:
        if _pid_alive(name, _read_pid(name)):
            report[name]["action"] = "was starting"  # a previous up's server still booting
        else:
            if _port_open(ports(name)["port"]):
                raise ServiceError(f"{name}: port {ports(name)['port']} is taken by a process that is not "
                                   f"our server and does not answer as {name}")
            _STARTERS[name]()
        started[name] = time.monotonic()
    for name in pending:
        wait_healthy(name, timeout)
        report[name]["healthy_s"] = round(time.monotonic() - started[name], 1)
    return report


def down(names: Iterable[str] | None = None, grace: float = 60.0) -> dict[str, str]:
    """Stop each named server: SIGTERM to its process group, SIGKILL after ``grace`` seconds."""
    result: dict[str, str] = {}
    for name in _names(names):
        pid = _read_pid(name)
        if not _pid_alive(name, pid):
            _paths(name).pid.unlink(missing_ok=True)
            result[name] = "not running"
            continue
        assert pid is not None
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace
        while _group_pids(pid) and time.monotonic() < deadline:
            child = _CHILDREN.get(name)
            if child is not None:
                child.poll()
            time.sleep(0.5)
        outcome = "stopped"
        if _group_pids(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            outcome = "killed"
        _CHILDREN.pop(name, None)
        _paths(name).pid.unlink(missing_ok=True)
        result[name] = outcome
    return result


def status(names: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """Per server: installed?, pid and whether it is alive, port answering?, healthy?, RSS in MiB."""
    out: dict[str, dict[str, Any]] = {}
    for name in _names(names):
        pid = _read_pid(name)
        port = ports(name)["port"]
        out[name] = {
            "installed": is_installed(name),
            "pid": pid,
            "alive": _pid_alive(name, pid),
            "port": port,
            "port_open": _port_open(port),
            **({"sasl_port": ports(name)["sasl"], "sasl_port_open": _port_open(ports(name)["sasl"])}
               if name == "kafka" else {}),
            "healthy": is_healthy(name),
            "rss_mb": rss_mb(name),
            "log": str(_paths(name).log),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m broker.ops.services up|down|status|install [names...]``; exit 1 on any failure."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("up", "down", "status", "install"):
        print("usage: python -m broker.ops.services up|down|status|install [kafka cassandra elasticsearch]",
              file=sys.stderr)
        return 2
    command, names = args[0], args[1:] or None
    try:
        if command == "up":
            result: Any = up(names)
        elif command == "down":
            result = down(names)
        elif command == "install":
            result = {n: ("fetched" if install(n) else "cached") for n in _names(names)}
        else:
            result = status(names)
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, sort_keys=True))
    if command == "status":
        return 0 if all(s["healthy"] for s in result.values()) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
