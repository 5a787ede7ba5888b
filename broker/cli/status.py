"""``albireo status``: what an operator types first: store, index, filters, local servers, consumer lag."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from broker.cli.common import config_option, load


def collect(cfg, sample_s: float = 0.0) -> dict[str, Any]:
    """Everything ``albireo status`` shows, as plain data (the ``--json`` output)."""
    from broker.assemble import StoreMissing, open_index, open_store, outbox_path

    out: dict[str, Any] = {}
    where = cfg.store.path if cfg.store.backend == "sqlite" else f"{cfg.store.cassandra_hosts}/{cfg.store.keyspace}"
    try:
        store = open_store(cfg, create=False)
    except StoreMissing:
        out["store"] = {"backend": cfg.store.backend, "where": where, "error": "no store yet"}
        store = None
    except Exception as exc:  # an unreachable server is a status, not a crash
        out["store"] = {"backend": cfg.store.backend, "where": where, "error": f"{type(exc).__name__}: {exc}"}
        store = None
    if store is not None:
        try:
            from broker.filtering.registry import list_filters

            out["store"] = {"backend": cfg.store.backend, "where": where, **store.counts()}
            out["filters"] = [{"name": f["name"], "status": f["status"], "revision": f["enabled_revision"]}
                              for f in list_filters(store)]
        finally:
            store.close()
    try:
        index = open_index(cfg, create=False)
        out["index"] = {"backend": cfg.search.backend, "documents": index.count()}
        index.close()
    except Exception as exc:
        out["index"] = {"backend": cfg.search.backend, "error": f"{type(exc).__name__}: {exc}"}
    from pathlib import Path

    ob = outbox_path(cfg)
    if Path(ob).exists():
        from broker.adapters.outbox import Outbox

        box = Outbox(ob)
        out["outbox"] = {"path": ob, "pending": box.pending(), "rejected": len(box.rejected())}
        box.close()
    from broker.ops import services as svc

    out["servers"] = svc.status()
    if out["servers"].get("kafka", {}).get("healthy") or cfg.kafka.bootstrap_servers != svc.endpoints()["kafka"]:
        from broker.adapters.streams.kafka import consumer_group_status

        try:
            out["kafka"] = consumer_group_status(cfg.kafka.bootstrap_servers, cfg.kafka.group_id,
                                                 cfg.kafka.input_topics, extra=cfg.kafka.extra, sample_s=sample_s)
        except Exception as exc:
            out["kafka"] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


@click.command("status")
@config_option
@click.option("--rate", "sample_s", type=click.FloatRange(min=0), default=0.0,
              help="Sample the consumer group twice this many seconds apart to show alerts/s.")
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
def status(config_path: str | None, sample_s: float, as_json: bool) -> None:
    """Store and index counts, filters, local servers, and the consumer group's members, lag and rate."""
    cfg = load(config_path)
    t0 = time.time()
    info = collect(cfg, sample_s)
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    s = info["store"]
    click.echo(f"store    {s['backend']}:{s['where']}  " + (s["error"] if "error" in s else
               f"loci={s.get('loci')} alerts={s.get('alerts')} dead_letters={s.get('dead_letters')}"))
    ix = info["index"]
    click.echo(f"index    {ix['backend']}  " + (ix["error"] if "error" in ix else f"documents={ix['documents']}"))
    if "outbox" in info:
        ob = info["outbox"]
        click.echo(f"outbox   {ob['path']}  pending={ob['pending']} rejected={ob['rejected']}")
    if "filters" in info:
        enabled = [f"{f['name']}@{f['revision']}" for f in info["filters"] if f["status"] == "enabled"]
        click.echo(f"filters  {len(info['filters'])} registered, enabled: {', '.join(enabled) or '(none)'}")
    for name, st in info["servers"].items():
        click.echo(f"server   {name:14s} " + "  ".join(f"{k}={v}" for k, v in st.items()))
    k = info.get("kafka")
    if k is None:
        click.echo("kafka    not running locally (start it with `albireo services up kafka`)")
    elif "error" in k:
        click.echo(f"kafka    {k['error']}")
    else:
        click.echo(f"group    {k['group']}  state={k['state']}  members={len(k['members'])}"
                   + (f"  rate={k['rate']:.1f} msg/s" if k.get("rate") is not None else ""))
        for m in k["members"]:
            click.echo(f"  member {m['client_id']} {m['host']}  partitions {', '.join(m['partitions']) or '-'}")
        for p in k["partitions"]:
            click.echo(f"  {p['topic']}[{p['partition']}]  committed={p['committed']} end={p['end']} lag={p['lag']}")
        click.echo(f"  total lag {k['lag']}")
    click.echo(f"(collected in {time.time() - t0:.1f}s)")
