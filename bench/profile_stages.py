"""Profile one worker's pipeline on the real stores: where does an alert's time go?

``bench_e2e`` says which stage is slow; this says which functions. It runs the same pipeline as
``albireo run`` (the same input stream, catalogs and sandboxed devkit filters as ``bench_e2e``)
under :mod:`cProfile`, with Kafka replaced by the stream file so that only the pipeline's own
work is measured, and prints the top functions by own time and by cumulative time, plus the
stage times the pipeline's metrics recorded.

    python -m bench.profile_stages                      # 1,000 alerts, Cassandra + Elasticsearch
    python -m bench.profile_stages --stack embedded --count 3000
    python -m bench.profile_stages --visits 4          # a stream that revisits its objects
    python -m bench.profile_stages --out /tmp/prof.pstats   # keep the profile for snakeviz/pstats

The production stack needs the local servers (``albireo services up``). Each run uses a fresh
Cassandra keyspace and Elasticsearch index, dropped at the end.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
import uuid
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1000, help="alerts to process (default 1,000)")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--stack", choices=("production", "embedded"), default="production")
    ap.add_argument("--visits", type=int, default=1, help="messages per object (as bench_e2e --visits)")
    ap.add_argument("--catalog-rows", type=int, default=1_000_000)
    ap.add_argument("--top", type=int, default=40, help="functions to print per table")
    ap.add_argument("--out", type=Path, help="also write the raw profile here")
    args = ap.parse_args(argv)

    from bench.bench_e2e import _env, _server_cpu, ensure_catalogs, make_stream, register_devkit_filters

    stream = make_stream(args.count, visits=args.visits)
    catalogs = ensure_catalogs(args.catalog_rows)
    work = Path(tempfile.mkdtemp(prefix="albireo-profile-"))
    group = f"prof-{uuid.uuid4().hex[:8]}"
    env = _env(args.stack, "profile", group, work, catalogs)
    register_devkit_filters(env)
    os.environ.update({k: v for k, v in env.items() if k.startswith("ALBIREO_")})

    from broker.adapters.streams.files import StreamFileSink, iter_stream_file
    from broker.assemble import build_pipeline, open_catalogs, open_index_writer, open_store
    from broker.config import load_config
    from broker.ports import Message

    cfg = load_config()
    store = open_store(cfg)
    writer = open_index_writer(cfg)
    sink = StreamFileSink(work / "out")
    pipe = build_pipeline(cfg, store, sink, index_writer=writer, catalogs=open_catalogs(cfg), exactly_once=True)
    pipe.prepare()
    raws = []
    for raw in iter_stream_file(stream):
        raws.append(raw)
        if len(raws) >= args.count:
            break
    batches = [[Message(r, "profile", 0, i + j) for j, r in enumerate(raws[i : i + args.batch_size])]
               for i in range(0, len(raws), args.batch_size)]
    prof = cProfile.Profile()
    cpu0 = _server_cpu()
    t0 = time.perf_counter()
    prof.enable()
    for b in batches:
        pipe.process(b)
    prof.disable()
    wall = time.perf_counter() - t0
    cpu1 = _server_cpu()
    print(f"{len(raws)} alerts in {wall:.1f} s: {len(raws) / wall:.0f} alerts/s under the profiler ({args.stack})")
    print("stages:", ", ".join(f"{k} {v:.1f}s" for k, v in sorted(pipe.metrics.stage_totals().items(),
                                                                      key=lambda kv: -kv[1])))
    print("server CPU:", ", ".join(f"{k} {cpu1.get(k, 0) - v:.1f}s" for k, v in cpu0.items()))
    # a sandboxed filter's time is spent in its own process, which cProfile does not see: its runs' times
    print("filters by time per locus (ms; sandboxed ones run in their own processes):",
          ", ".join(f"{f.name} {1000 * f.stats.total_s / f.stats.runs:.1f}" for f in
                    sorted(pipe.filters.filters, key=lambda f: -f.stats.total_s) if f.stats.runs))
    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats(key).print_stats(args.top)
        print(f"\n=== by {key} ===")
        print("\n".join(line for line in buf.getvalue().splitlines() if line.strip())[:20_000])
    if args.out:
        prof.dump_stats(args.out)
    pipe.filters.close()
    writer.close()
    if args.stack == "production":
        store.drop_keyspace()
        writer.index.drop()
    store.close()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
