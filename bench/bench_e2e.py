"""End-to-end benchmark of the real stack: Kafka in, the whole pipeline, tagged streams out.

What runs (``make bench-e2e``; ``albireo bench e2e`` is the same):

* input: ``--count`` realistic alerts (default 200,000) made by the load generator from real packets
  (antares-devkit's locus re-encoded as ZTF, ../shared/data/ztf, every Rubin sample), jittered into
  distinct objects, produced into a fresh topic of the real local Kafka. By default every alert is a
  new object whose whole history is new to the store (a survey's first night, the store's worst
  case); ``--visits K`` sends each object K times, a new trigger each time with the same history
  (a survey's steady state, where the store writes an object's history once);
* the pipeline as ``albireo run --workers N`` runs it: 1″ association; cross-match against OpenNGC
  and a 10^7-row synthetic catalog (memory-mapped); the built-in filters plus 10 ANTARES devkit
  filters that need no ML model, registered and sandboxed as users' filters are; transactional
  tagged output streams;
* two stacks: ``production`` (Cassandra + Elasticsearch) and ``embedded`` (SQLite store and index,
  still Kafka in and out), each with 1 and 2 workers.

What it reports, per stack and worker count: sustained alerts/s (from the consumer group's committed
offsets, so start-up is not counted), per-stage time shares, peak RSS per worker, the servers' own
CPU time during the run; then, on one worker, latency from the input message's produce timestamp to
the tagged output being visible to a ``read_committed`` consumer (p50/p95/p99) at 80% of the measured
maximum rate, and the time to drain a 40,000-alert burst. The ceiling is measured in the same run:
decode-only throughput of the same packets with the same number of processes; every throughput is
also printed as a fraction of it.

Results go to ``bench/results/<date>-<commit>.json`` with a PNG plot, and a row is appended to
``bench/results/README.md``. ``--quick`` is a bounded version (a few thousand alerts, one stack).
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("ALBIREO_BENCH_CACHE", "/var/tmp/albireo-bench"))
RESULTS = ROOT / "bench" / "results"
#: ANTARES devkit filters that need no ML model (name → module), run sandboxed as registered user filters.
DEVKIT_FILTERS = ("HighSNR", "Highfluxchange", "HighAmp_v2", "InM31", "InDecamShadow", "InShadowVirgo",
                  "In_LSSTDDF", "NuclearTransient", "RecentReddening", "refitt_newsources_snrcut")
PARTITIONS = 4
BURST = 40_000


# --------------------------------------------------------------------------- inputs
def make_stream(count: int, seed: int = 42, visits: int = 1) -> Path:
    """``count`` jittered real packets in one stream file, cached by (count, seed, visits).

    ``visits`` > 1: the stream revisits its objects (``replay(visits=...)``), so only an object's
    first message brings history rows the store has not seen; 1 (the default, and every run
    before ``--visits`` existed) makes each message a new object: a survey's first night.
    """
    from broker.adapters.streams.files import StreamFileSink
    from broker.ops.devkit_ztf import ensure_demo_ztf_stream
    from broker.ops.loadgen import replay
    from broker.ops.samples import lsst_sample_packets, shared_ztf_dir

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / (f"input-{count}-{seed}.avro-stream" if visits == 1 else f"input-{count}-{seed}-v{visits}.avro-stream")
    if path.exists():
        return path
    inputs: list[Path] = [ensure_demo_ztf_stream(CACHE / "demo"), *lsst_sample_packets()]
    if shared_ztf_dir() is not None:
        inputs.append(shared_ztf_dir())
    # the sources interleaved (a seeded shuffle), so any prefix of the stream is a realistic mix
    import numpy as np

    from broker.adapters.streams.files import write_stream_file
    from broker.ops.loadgen import read_packets

    packets = read_packets(inputs)
    mixed = CACHE / f"mixed-{seed}.avro-stream"
    write_stream_file([packets[i] for i in np.random.default_rng(seed).permutation(len(packets))], mixed)
    tmp = path.with_suffix(".tmp.avro-stream")
    tmp.unlink(missing_ok=True)
    sink = StreamFileSink(tmp)
    replay([mixed], topic="bench", sink=sink, count=count, jitter=True, seed=seed, progress=sys.stderr.isatty(),
           max_shift_deg=20.0, visits=visits)
    sink.close()
    tmp.rename(path)
    return path


def ensure_catalogs(rows: int) -> Path:
    """OpenNGC plus an enabled ``rows``-row synthetic catalog under the bench cache (built once)."""
    from broker.crossmatch import ensure_default_catalogs
    from broker.crossmatch.build import build_index
    from broker.crossmatch.catalogset import catalog_names
    from catalogs import synth

    root = CACHE / "catalogs"
    root.mkdir(parents=True, exist_ok=True)
    ensure_default_catalogs(root)
    name = f"synth_{rows:.0e}".replace("+", "")
    if name not in catalog_names(root):
        build_index(root, synth.definition(name, enabled=True), lambda: synth.chunks(rows, 0), total_rows=rows,
                    progress=sys.stderr.isatty())
    return root


def _decode_share(args: tuple[str, int, int]) -> int:
    from broker.adapters.streams.files import iter_stream_file
    from broker.ingest import DecodeError, decode_message, validate_packet

    path, k, n = args
    ok = 0
    for i, raw in enumerate(iter_stream_file(Path(path))):
        if i % n != k:
            continue
        try:
            for p in decode_message(raw):
                validate_packet(p)
                ok += 1
        except DecodeError:
            pass
    return ok


def decode_ceiling(stream: Path, processes: int) -> float:
    """Decode-only packets/s of the same stream with the same number of processes (the ceiling)."""
    from broker.adapters.streams.files import FileSource

    n = FileSource([stream]).count()
    ctx = mp.get_context("spawn")
    with ctx.Pool(processes) as pool:
        pool.map(_decode_share, [(str(stream), 0, 10**9)] * processes)  # warm: imports, schema caches
        t0 = time.perf_counter()
        pool.map(_decode_share, [(str(stream), k, processes) for k in range(processes)])
        return n / (time.perf_counter() - t0)


# --------------------------------------------------------------------------- one run
@dataclass
class Run:
    stack: str
    workers: int
    messages: int
    seconds: float
    rate: float
    stage_share: dict[str, float] = field(default_factory=dict)
    #: peak RSS of each worker process (the one running the pipeline; its filter processes not included).
    peak_rss_mb: list[float] = field(default_factory=list)
    server_cpu_s: dict[str, float] = field(default_factory=dict)
    #: CPU time of the whole ``albireo run`` tree: the workers, their filter processes, the supervisor.
    worker_cpu_s: float = 0.0
    #: of which the filter processes (the sandbox zygotes and the children they fork).
    filter_cpu_s: float = 0.0
    #: the largest filter process's peak RSS.
    filter_peak_rss_mb: float = 0.0


class TreeSampler:
    """Peak RSS and CPU time of every process under ``albireo run``, the root included.

    Which processes are workers: the root itself with one worker (``albireo run`` then runs the
    pipeline in its own process), else the root's direct children (the supervisor's slots).
    Everything below a worker is its filters' sandbox. (Before 2026-12-04 the benchmark sampled
    the root's descendants only, so a one-worker run reported its largest filter process as the
    worker's RSS and left the worker's own CPU time out.)
    """

    def __init__(self, root_pid: int, workers: int):
        self.root_pid, self.workers = root_pid, workers
        self.rss: dict[int, float] = {}
        self.cpu: dict[int, float] = {}
        self.worker_pids: set[int] = set()

    def sample(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.root_pid)
            procs = [root, *root.children(recursive=True)]
            if self.workers == 1:
                self.worker_pids.add(root.pid)
            else:
                self.worker_pids.update(c.pid for c in root.children())
        except psutil.Error:
            return
        for p in procs:
            try:
                self.rss[p.pid] = max(self.rss.get(p.pid, 0.0), p.memory_info().rss / 2**20)
                t = p.cpu_times()
                self.cpu[p.pid] = t.user + t.system
            except psutil.Error:
                continue

    def worker_rss(self) -> list[float]:
        return sorted((self.rss[p] for p in self.worker_pids if p in self.rss), reverse=True)

    def filter_pids(self) -> set[int]:
        return set(self.rss) - self.worker_pids - ({self.root_pid} if self.workers > 1 else set())


#: configuration the workers run with on top of the benchmark's own (``--set section.key=value``).
OVERRIDES: dict[str, str] = {}


def _env(stack: str, topic: str, group: str, work: Path, catalogs: Path, metrics_port: int = 0) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALBIREO_")}
    from broker.ops import services

    env.update(
        ALBIREO_KAFKA__BOOTSTRAP_SERVERS=services.endpoints()["kafka"], ALBIREO_KAFKA__INPUT_TOPICS=topic,
        ALBIREO_KAFKA__GROUP_ID=group, ALBIREO_KAFKA__OUTPUT_PREFIX=f"{topic}.loci.",
        ALBIREO_KAFKA__DEAD_LETTER_TOPIC=f"{topic}.dlq", ALBIREO_KAFKA__TRANSACTIONAL="true",
        ALBIREO_CATALOGS__ROOT=str(catalogs), ALBIREO_HOME=str(work / "home"),
        ALBIREO_FILTERS__REFRESH_S="1", ALBIREO_SERVICE__LOG_LEVEL="WARNING",
        ALBIREO_SERVICE__METRICS_PORT=str(metrics_port), PYTHONUNBUFFERED="1",
    )
    env.update(OVERRIDES)
    if stack == "production":
        env.update(ALBIREO_STORE__BACKEND="cassandra", ALBIREO_STORE__KEYSPACE=f"bench_{group.replace('-', '_')}",
                   ALBIREO_SEARCH__BACKEND="elasticsearch", ALBIREO_SEARCH__INDEX_NAME=f"bench-{group}",
                   ALBIREO_SEARCH__OUTBOX_PATH=str(work / "outbox.sqlite"))
    env.update(ALBIREO_STORE__PATH=str(work / "store.sqlite"), ALBIREO_SEARCH__PATH=str(work / "index.sqlite"))
    return env


def register_devkit_filters(env: dict[str, str]) -> list[str]:
    """Register and enable the devkit filters in the run's store (as `albireo filter add --enable` does)."""
    import importlib
    import inspect

    code = {}
    from antares_devkit.utils import get_filters_path

    paths = get_filters_path()
    for name in DEVKIT_FILTERS:
        code[name] = inspect.getsource(importlib.import_module(paths[name]))
    script = ("import json, sys\nfrom broker.assemble import open_store\nfrom broker.config import load_config\n"
              "from broker.filtering import registry as reg\n"
              "store = open_store(load_config())\nfor name, src in json.load(sys.stdin).items():\n"
              "    reg.add_revision(store, src, 'bench', name=name, approved_by='bench', enable=True)\nstore.close()\n")
    subprocess.run([sys.executable, "-c", script], input=json.dumps(code), text=True, env=env, check=True)
    return list(code)


def drop_run_data(env: dict[str, str], topic: str) -> None:
    """Drop what one run left on the servers: its keyspace, search index and topics.

    Why: every run writes its own keyspace (10^5 loci, gigabytes at the default size) and topics.
    Left behind, they are still the servers' work (Cassandra's compactions and size estimates walk
    every table), so each later run would start from a heavier node than the one before.
    """
    from confluent_kafka.admin import AdminClient

    from broker.assemble import open_index_writer, open_store
    from broker.config import load_config

    cfg = load_config(env=env)
    try:
        if cfg.store.backend == "cassandra":
            store = open_store(cfg)
            store.drop_keyspace()
            store.close()
        if cfg.search.backend == "elasticsearch":
            writer = open_index_writer(cfg)
            writer.close()  # flushes its outbox first: the drop then leaves nothing to re-create the index
            writer.index.drop()
        admin = AdminClient({"bootstrap.servers": cfg.kafka.bootstrap_servers})
        ours = [t for t in admin.list_topics(timeout=30).topics if t == topic or t.startswith(f"{topic}.")]
        if ours:
            for fut in admin.delete_topics(ours, operation_timeout=60).values():
                fut.result()
    except Exception as exc:  # the run's numbers are measured already: report the leftovers, keep the result
        print(f"warning: could not drop the run's data ({type(exc).__name__}: {exc}); "
              f"drop keyspace {cfg.store.keyspace!r} and topics {topic!r}.* by hand", file=sys.stderr, flush=True)


def _server_cpu() -> dict[str, float]:
    from broker.ops import services

    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for name in services.NAMES:
        pid = services._read_pid(name)  # noqa: SLF001 - operator tooling reading its own pid files
        if pid is None:
            continue
        total = 0
        for member in services._group_pids(pid):  # noqa: SLF001
            try:
                f = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(f[11]) + int(f[12])
            except (OSError, IndexError, ValueError):
                continue
        out[name] = total / tick
    return out


def _committed(boot: str, group: str, topic: str) -> int:
    from broker.adapters.streams.kafka import consumer_group_status

    try:
        st = consumer_group_status(boot, group, [topic])
    except Exception:
        return 0
    return sum(max(0, p["committed"]) for p in st["partitions"])


def run_workers(stack: str, workers: int, stream: Path, catalogs: Path, work: Path, n: int) -> Run:
    from broker.adapters.streams.kafka import ensure_topics
    from broker.ops import services
    from broker.ops.loadgen import replay

    boot = services.endpoints()["kafka"]
    topic, group = f"e2e-{uuid.uuid4().hex[:8]}", f"e2e-{uuid.uuid4().hex[:8]}"
    ensure_topics(boot, [topic], partitions=PARTITIONS)
    replay([stream], topic=topic, bootstrap=boot, progress=sys.stderr.isatty())
    env = _env(stack, topic, group, work, catalogs)
    register_devkit_filters(env)
    cpu0 = _server_cpu()
    errlog = open(work / "workers.log", "w+")  # noqa: SIM115 - a file, not a pipe: a full pipe would block them
    proc = subprocess.Popen([sys.executable, "-m", "broker.cli", "run", "--workers", str(workers),
                             "--idle-timeout", "20"], env=env, stdout=subprocess.PIPE, stderr=errlog, text=True)
    out_lines: list[str] = []
    reader = threading.Thread(target=lambda: out_lines.extend(proc.stdout), daemon=True)
    reader.start()
    tree = TreeSampler(proc.pid, workers)
    first: tuple[float, int] | None = None
    last: tuple[float, int] = (time.monotonic(), 0)
    stopped = False
    while proc.poll() is None:
        c = _committed(boot, group, topic)
        now = time.monotonic()
        if c > 0 and first is None:
            first = (now, c)
        if c > last[1]:
            last = (now, c)
        tree.sample()
        if last[1] >= n and not stopped:
            # all committed: drain and stop. Once: a second SIGTERM during the worker's shutdown (its
            # handlers are gone by then) would kill it before it prints its stage summary.
            proc.send_signal(15)
            stopped = True
        time.sleep(0.5)
    reader.join(10)
    errlog.seek(0)
    err = errlog.read()
    errlog.close()
    cpu1 = _server_cpu()
    drop_run_data(env, topic)
    if proc.returncode != 0:
        raise RuntimeError(f"workers exited with {proc.returncode}:\n{err[-3000:]}")
    t0, c0 = first or last
    seconds = max(last[0] - t0, 1e-9)
    rate = (last[1] - c0) / seconds
    text = "".join(out_lines)
    shares: dict[str, float] = {}
    for m in re.finditer(r"(\w+) ([\d.]+)s \(\d+%\)", text):
        shares[m.group(1)] = shares.get(m.group(1), 0.0) + float(m.group(2))
    total = sum(shares.values()) or 1.0
    filters = tree.filter_pids()
    return Run(stack, workers, last[1], seconds, rate, {k: v / total for k, v in shares.items()}, tree.worker_rss(),
               {k: round(cpu1.get(k, 0) - cpu0.get(k, 0), 1) for k in cpu1}, round(sum(tree.cpu.values()), 1),
               round(sum(tree.cpu[p] for p in filters), 1), round(max((tree.rss[p] for p in filters), default=0.0), 1))


# --------------------------------------------------------------------------- latency and burst
def latency_and_burst(stack: str, stream: Path, catalogs: Path, work: Path, rate: float, count: int,
                      burst: int, visits: int = 1) -> dict[str, Any]:
    """One worker running; inputs produced at ``rate``; every output's visibility delay; then a burst."""
    from confluent_kafka import Consumer

    from broker.adapters.streams.kafka import ensure_topics
    from broker.ops import services
    from broker.ops.loadgen import replay

    boot = services.endpoints()["kafka"]
    topic, group = f"lat-{uuid.uuid4().hex[:8]}", f"lat-{uuid.uuid4().hex[:8]}"
    ensure_topics(boot, [topic, f"{topic}.dlq"], partitions=PARTITIONS)
    env = _env(stack, topic, group, work, catalogs)
    register_devkit_filters(env)
    delays: list[float] = []
    stop = threading.Event()

    def consume() -> None:
        c = Consumer({"bootstrap.servers": boot, "group.id": f"watch-{uuid.uuid4().hex}",
                      "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                      "topic.metadata.refresh.interval.ms": 1000})
        c.subscribe([f"^{re.escape(topic)}\\.(loci\\..*|dlq)$"])
        while not stop.is_set():
            for m in c.consume(500, 0.2):
                if m.error() is None:
                    h = dict(m.headers() or [])
                    ts = h.get("albireo.source_ts")
                    if ts:
                        delays.append(time.time() - int(ts) / 1000)
        c.close()

    watcher = threading.Thread(target=consume, daemon=True)
    watcher.start()
    proc = subprocess.Popen([sys.executable, "-m", "broker.cli", "run"], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(work / "worker.log", "w"))  # noqa: SIM115
    try:
        time.sleep(15)  # joined, filters loaded
        replay([stream], topic=topic, bootstrap=boot, rate=rate, count=count, progress=False)
        time.sleep(10)
        steady = list(delays)
        delays.clear()
        t0 = time.monotonic()
        replay([stream], topic=topic, bootstrap=boot, count=burst, jitter=True, seed=99, progress=False,
               visits=visits)
        drained = None
        while time.monotonic() - t0 < 900:
            if _committed(boot, group, topic) >= count + burst:
                drained = time.monotonic() - t0
                break
            time.sleep(0.5)
    finally:
        proc.send_signal(15)
        proc.wait(120)
        stop.set()
        watcher.join(10)
        drop_run_data(env, topic)

    def pct(xs: list[float], q: float) -> float | None:
        return statistics.quantiles(xs, n=100)[int(q) - 1] if len(xs) >= 100 else (max(xs) if xs else None)

    return {"rate": rate, "outputs": len(steady), "p50_s": pct(steady, 50), "p95_s": pct(steady, 95),
            "p99_s": pct(steady, 99), "delays": steady, "burst": burst, "burst_drain_s": drained}


# --------------------------------------------------------------------------- report
def _commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip() or "unknown"


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    runs = result["runs"]
    labels = [f"{r['stack']}\n{r['workers']} worker(s)" for r in runs]
    a.bar(labels, [r["rate"] for r in runs], color="#3b6ea5")
    for k, ceiling in result["ceiling"].items():
        a.axhline(ceiling, ls="--", color="#999", lw=1)
        a.text(-0.4, ceiling, f"decode ceiling, {k} proc", fontsize=7, va="bottom")
    a.set_ylabel("alerts/s")
    a.set_title("Sustained throughput")
    lat = result.get("latency") or {}
    if lat.get("delays"):
        xs = sorted(lat["delays"])
        b.plot(xs, [i / len(xs) for i in range(len(xs))], color="#a53b3b")
        b.set_xlabel("produce → visible to read_committed consumer (s)")
        b.set_ylabel("fraction of outputs")
        b.set_title(f"Latency at {lat['rate']:.0f} alerts/s")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--stacks", default="production,embedded")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--catalog-rows", type=float, default=1e7)
    ap.add_argument("--burst", type=int, default=BURST)
    ap.add_argument("--quick", action="store_true", help="a bounded run: 3,000 alerts, production stack, 1 worker")
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--visits", type=int, default=1,
                    help="messages per object (default 1: every alert a new object with all its history new; "
                         "4: the stream revisits its objects, as a survey's steady state does)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="run the workers with this configuration value (repeatable), e.g. "
                         "kafka.decode_ahead=false for an A/B run; recorded in the result file")
    ap.add_argument("--name", default="", help="a suffix for the result files (two runs on one commit)")
    args = ap.parse_args(argv)
    for item in args.set:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not (sep and dot and section and name):
            ap.error(f"--set wants SECTION.KEY=VALUE, not {item!r}")
        OVERRIDES[f"ALBIREO_{section.upper()}__{name.upper()}"] = value
    if args.quick:
        args.count, args.stacks, args.workers, args.catalog_rows, args.burst = 3000, "production", "1", 1e6, 3000

    from broker.ops import services

    services.up(["kafka", "cassandra", "elasticsearch"])
    stream = make_stream(args.count, visits=args.visits)
    catalogs = ensure_catalogs(int(args.catalog_rows))
    worker_counts = [int(w) for w in args.workers.split(",")]
    result: dict[str, Any] = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                              "commit": _commit(), "count": args.count, "visits": args.visits,
                              "catalog_rows": int(args.catalog_rows),
                              "devkit_filters": list(DEVKIT_FILTERS), "cores": os.cpu_count(),
                              "ceiling": {}, "runs": [], "settings": dict(item.split("=", 1) for item in args.set)}
    for w in worker_counts:
        result["ceiling"][w] = round(decode_ceiling(stream, w), 1)
        print(f"decode-only ceiling, {w} process(es): {result['ceiling'][w]:,.0f} alerts/s", flush=True)
    for stack in args.stacks.split(","):
        for w in worker_counts:
            with tempfile.TemporaryDirectory(prefix="albireo-e2e-") as work:
                r = run_workers(stack, w, stream, catalogs, Path(work), args.count)
            row = vars(r) | {"fraction_of_ceiling": round(r.rate / result["ceiling"][w], 3)}
            result["runs"].append(row)
            shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in sorted(r.stage_share.items(), key=lambda kv: -kv[1]))
            print(f"{stack:10s} {w} worker(s): {r.rate:8,.0f} alerts/s ({row['fraction_of_ceiling']:.2f}× decode "
                  f"ceiling) over {r.seconds:.0f}s; peak RSS {r.peak_rss_mb} MiB; server CPU {r.server_cpu_s} s; "
                  f"worker CPU {r.worker_cpu_s} s (filter processes {r.filter_cpu_s} s, largest "
                  f"{r.filter_peak_rss_mb} MiB); stages: {shares}", flush=True)
    one = {r["stack"]: r for r in result["runs"] if r["workers"] == 1}
    two = {r["stack"]: r for r in result["runs"] if r["workers"] == 2}
    result["scaling"] = {s: round(two[s]["rate"] / one[s]["rate"], 2) for s in two if s in one}
    if not args.no_latency and "production" in one:
        with tempfile.TemporaryDirectory(prefix="albireo-lat-") as work:
            target = 0.8 * one["production"]["rate"]
            lat = latency_and_burst("production", stream, catalogs, Path(work), target,
                                    min(args.count, int(target * 120)), args.burst, args.visits)
        result["latency"] = lat
        print(f"latency at {target:,.0f} alerts/s (80% of max): p50 {lat['p50_s']}, p95 {lat['p95_s']}, "
              f"p99 {lat['p99_s']} s over {lat['outputs']} outputs; {args.burst:,}-alert burst drained in "
              f"{lat['burst_drain_s']} s", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = (f"{result['date'][:10]}-{result['commit']}" + (f"-v{args.visits}" if args.visits > 1 else "")
            + (f"-{args.name}" if args.name else ""))
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=1, default=str))
    _plot(result, RESULTS / f"{stem}.png")
    _append_history(result, stem)
    print(f"results: {RESULTS / (stem + '.json')} and .png")


def _append_history(result: dict[str, Any], stem: str) -> None:
    readme = RESULTS / "README.md"
    if not readme.exists():
        readme.write_text("# End-to-end benchmark history\n\n`python -m bench.bench_e2e` (`make bench-e2e`) appends "
                          "a row per run; the JSON and PNG beside this file hold the details.\n\n"
                          "| run | alerts | stack | workers | alerts/s | × decode ceiling | p50 / p99 latency (s) "
                          "| 40k burst (s) | peak RSS (MiB) |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
    lat = result.get("latency") or {}
    rows = []
    for r in result["runs"]:
        latency = (f"{lat.get('p50_s', 0):.2f} / {lat.get('p99_s', 0):.2f}"
                   if r["workers"] == 1 and r["stack"] == "production" and lat.get("p50_s") is not None else "")
        burst = f"{lat['burst_drain_s']:.0f}" if latency and lat.get("burst_drain_s") else ""
        visits = result.get("visits", 1)
        alerts = f"{result['count']:,}" + (f" ({visits} visits/object)" if visits > 1 else "")
        rows.append(f"| {stem} | {alerts} | {r['stack']} | {r['workers']} | {r['rate']:,.0f} | "
                    f"{r['fraction_of_ceiling']:.2f} | {latency} | {burst} | "
                    f"{max(r['peak_rss_mb'], default=0):.0f} |\n")
    with open(readme, "a") as fh:
        fh.writelines(rows)


if __name__ == "__main__":
    main()
