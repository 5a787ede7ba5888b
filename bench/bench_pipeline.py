"""End-to-end pipeline throughput, against the decode ceiling measured in the same run.

The baselines are what no Python broker can avoid: reading every packet with ``fastavro.reader``
(schema parsed per message, the naive way) and with our cached-schema decoder alone. The pipeline
figure adds normalisation, association, cross-match, filters, emission and the store/index
writes; the ratios say what the whole broker costs over decoding.

    python -m bench.bench_pipeline            # ~1,000 jittered real ZTF + LSST packets
    python -m bench.bench_pipeline --count 5000 --kafka   # also through the real local Kafka
"""

from __future__ import annotations

import argparse
import io
import resource
import tempfile
import time
import uuid
from pathlib import Path

import fastavro

from broker.adapters.outbox import OutboxIndexWriter
from broker.adapters.search.sqlite import SQLiteIndex
from broker.adapters.storage.sqlite import SQLiteStore
from broker.adapters.streams.files import FileSource, StreamFileSink, iter_stream_file
from broker.assemble import build_pipeline, open_catalogs
from broker.association import Associator
from broker.config import load_config
from broker.ingest.decode import decode_message
from broker.ops.loadgen import replay
from broker.ops.samples import lsst_sample_packets, shared_ztf_dir
from broker.worker import Worker


def _make_stream(path: Path, count: int) -> list[bytes]:
    inputs = [*lsst_sample_packets()]
    ztf = shared_ztf_dir()
    if ztf is not None:
        inputs.insert(0, ztf)
    else:
        from broker.ops.devkit_ztf import ensure_demo_ztf_stream

        inputs.insert(0, ensure_demo_ztf_stream(path.parent / "cache"))
    sink = StreamFileSink(path)
    replay(inputs, topic="bench", sink=sink, count=count, jitter=True, seed=42, progress=False)
    sink.close()
    return list(iter_stream_file(path))


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--kafka", action="store_true", help="also run one worker on the real local Kafka")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="albireo-bench-") as tmp:
        tmp = Path(tmp)
        stream = tmp / "bench.avro-stream"
        msgs = _make_stream(stream, args.count)
        container = [m for m in msgs if m[:4] == b"Obj\x01"]
        mb = sum(map(len, msgs)) / 1e6
        print(f"input: {len(msgs)} messages ({mb:.1f} MB), jittered real ZTF/LSST packets")

        t = time.perf_counter()
        for m in container:
            with io.BytesIO(m) as fh:
                for _ in fastavro.reader(fh):
                    pass
        naive = _rate(len(container), time.perf_counter() - t)

        t = time.perf_counter()
        ok = 0
        for m in msgs:
            try:
                ok += len(decode_message(m))
            except Exception:  # the deliberately unreadable packet
                pass
        ours = _rate(len(msgs), time.perf_counter() - t)

        cfg = load_config(env={})
        cfg.catalogs.root = str(tmp / "catalogs")
        assoc = Associator.from_config(cfg.association)
        store = SQLiteStore(tmp / "store.sqlite", assoc.order)
        writer = OutboxIndexWriter(SQLiteIndex(tmp / "index.sqlite"), tmp / "outbox.sqlite")
        pipe = build_pipeline(cfg, store, StreamFileSink(tmp / "out"), index_writer=writer, catalogs=open_catalogs(cfg),
                              associator=assoc)
        summary = Worker(pipe, FileSource([stream]), batch_size=args.batch_size).run()
        writer.close()
        full = summary.alerts_per_s

        print(f"{'stage':42s} {'packets/s':>12s} {'× naive decode':>15s}")
        print(f"{'baseline: fastavro.reader per message':42s} {naive:12,.0f} {1.0:15.2f}")
        print(f"{'decode + normalise (cached schemas)':42s} {ours:12,.0f} {ours / naive:15.2f}")
        print(f"{'whole pipeline, embedded (SQLite + files)':42s} {full:12,.0f} {full / naive:15.2f}")
        total = sum(summary.stage_seconds.values()) or 1.0
        print("pipeline time per stage: " + ", ".join(
            f"{k} {100 * v / total:.0f}%" for k, v in sorted(summary.stage_seconds.items(), key=lambda kv: -kv[1])))
        print(f"loci {summary.result.loci_created}, alerts stored {summary.result.alerts_new}, "
              f"tags {dict(summary.result.tags)}, rejected {dict(summary.result.rejected)}")

        if args.kafka:
            from broker.adapters.streams.kafka import KafkaSink, KafkaSource
            from broker.ops import services

            services.up(["kafka"])
            boot = services.endpoints()["kafka"]
            topic = f"bench-{uuid.uuid4().hex[:8]}"
            replay([stream], topic=topic, bootstrap=boot, progress=False)
            store2 = SQLiteStore(tmp / "store2.sqlite", assoc.order)
            cfg.kafka.output_prefix = f"{topic}.loci."
            cfg.kafka.dead_letter_topic = f"{topic}.dlq"
            pipe2 = build_pipeline(cfg, store2, KafkaSink(boot), catalogs=open_catalogs(cfg), associator=assoc)
            source = KafkaSource(boot, f"g-{topic}", [topic])
            s2 = Worker(pipe2, source, batch_size=args.batch_size).run(idle_timeout_s=5)
            source.close()
            rate = _rate(s2.result.packets, s2.seconds - 5)
            print(f"{'whole pipeline, one worker on Kafka':42s} {rate:12,.0f} {rate / naive:15.2f}")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
