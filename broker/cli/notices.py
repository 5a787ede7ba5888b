"""``albireo notices``: neutrino and gravitational-wave notices in, events and coincidences out.

* ``ingest FILE…`` — the notice pipeline over files (GCN/LVK JSON, VOEvent XML, LVK Avro; folders
  are searched for them), into the configured store and index (or a demo's, ``--workdir``);
  tag streams go to files. The same worker machinery as ``albireo run``, embedded.
* ``run`` — one worker of the notice consumer group on Kafka (``[multimessenger] notice_topics``).
* ``list`` / ``show EVENT`` — the stored events, and one event's revisions.
* ``alerts EVENT`` — issue the event's outgoing alerts (``multimessenger.outgoing``): GCN JSON
  notices, VOEvent, circular; stored, and published to stream files (``--out``) or Kafka (``--kafka``).
"""

from __future__ import annotations

from pathlib import Path

import click

from broker.cli.common import config_option, load, progress_bar, setup_logging


def _point_at_workdir(cfg, workdir: Path | None) -> None:
    if workdir is None:
        return
    from broker.cli.demo import demo_store_paths

    store, index = demo_store_paths(workdir)
    cfg.store.backend, cfg.store.path = "sqlite", str(store)
    cfg.search.backend, cfg.search.path, cfg.search.outbox_path = "sqlite", str(index), ""


def _open_existing(opener, config_path: str | None, workdir: Path | None):
    """The configured (or a demo workdir's) store or index; a one-line error when there is none yet."""
    from broker.assemble import StoreMissing

    cfg = load(config_path)
    _point_at_workdir(cfg, workdir)
    try:
        return opener(cfg, create=False)
    except StoreMissing as exc:
        raise click.ClickException(f"{exc}: ingest notices first") from exc


@click.group("notices")
def notices_group() -> None:
    """Neutrino and gravitational-wave notices: ingest, run the consumer, list events."""


@notices_group.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@config_option
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Use the store and index of `albireo demo --workdir DIR` (default: the configured ones).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the tag streams (default: <workdir>/streams, else beside the store).")
def ingest(paths: tuple[Path, ...], config_path: str | None, workdir: Path | None, out: Path | None) -> None:
    """Ingest notice files: validate, store revisions, tag the loci inside each event's region.

    A notice that fails its schema is a dead letter (printed in the summary, kept in the store
    and in <out>/<dead_letter_topic>.avro-stream) and the others go on.
    """
    from broker.adapters.streams.files import NOTICE_SUFFIXES, expand_paths
    from broker.assemble import embedded_notice_worker

    cfg = load(config_path)
    setup_logging("WARNING" if cfg.service.log_level == "INFO" else cfg.service.log_level)
    _point_at_workdir(cfg, workdir)
    files = [p for p in expand_paths(paths, NOTICE_SUFFIXES) if not p.name.endswith(".schema.json")]
    if not files:
        raise click.ClickException("no notice files (.json, .xml, .avro) under the given paths")
    out = out or ((workdir / "streams") if workdir else Path(cfg.store.path).parent / "streams")
    assembly = embedded_notice_worker(cfg, files, out)
    with assembly:
        with progress_bar(len(files), "notice", "notices") as bar:
            summary = assembly.worker.run(on_batch=lambda res: bar.update(res.messages))
        caught_up = assembly.index_writer.close()
        letters = assembly.store.dead_letters(limit=max(summary.result.rejected_total, 1))
    r, t = summary.result, assembly.pipeline.totals
    click.echo(f"notices read       {r.messages}")
    click.echo(f"notices stored     {r.packets}")
    click.echo(f"rejected           {r.rejected_total}"
               + "".join(f"\n  - {reason}: {n}" for reason, n in sorted(r.rejected.items())))
    for letter in letters[: r.rejected_total]:
        click.echo(f"    {letter.source}: {letter.message.splitlines()[0][:200]}")
    click.echo("events             " + (", ".join(f"{k.removeprefix('events_')}={v}" for k, v in sorted(t.items())
                                                   if k.startswith("events_")) or "(none)"))
    click.echo(f"loci re-tagged     {r.loci_updated}")
    click.echo("tags per stream    " + (", ".join(f"{k}={v}" for k, v in sorted(r.tags.items())) or "(none)"))
    click.echo(f"messages published {r.published} to {out}" + ("" if caught_up else " (index still draining)"))


@notices_group.command("run")
@config_option
@click.option("--max-messages", type=click.IntRange(min=1), default=None, help="Stop after this many notices.")
@click.option("--idle-timeout", type=click.FloatRange(min=0), default=None,
              help="Stop after this many seconds without input.")
def run_notices(config_path: str | None, max_messages: int | None, idle_timeout: float | None) -> None:
    """Run one worker of the notice consumer group: notice topics in, tagged Kafka streams out."""
    from broker.adapters.streams.kafka import check_reachable
    from broker.assemble import kafka_notice_worker

    cfg = load(config_path)
    setup_logging(cfg.service.log_level)
    check_reachable(cfg.kafka.bootstrap_servers)
    with kafka_notice_worker(cfg) as assembly:  # closing drains the outbox (bounded) and the sandbox
        if cfg.service.metrics_port:
            from broker.metrics_server import serve_metrics

            serve_metrics(assembly.pipeline.metrics, cfg.service.metrics_port)
        assembly.worker.install_signal_handlers()
        summary = assembly.worker.run(max_messages=max_messages, idle_timeout_s=idle_timeout)
    r = summary.result
    click.echo(f"notices read {r.messages}, stored {r.packets}, rejected {r.rejected_total}, "
               f"loci re-tagged {r.loci_updated}, published {r.published}")


@notices_group.command("list")
@config_option
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Use the store and index of `albireo demo --workdir DIR`.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
def list_events(config_path: str | None, workdir: Path | None, limit: int) -> None:
    """The stored events, newest first: id, messenger, status, time, 90% area, notices."""
    from broker.assemble import open_index
    from broker.ports import EventQuery

    index = _open_existing(open_index, config_path, workdir)
    try:
        res = index.search_events(EventQuery(limit=limit))
    finally:
        index.close()
    click.echo(f"{res.total} event(s)")
    for d in res.hits:
        area = f"{d['area90']:.1f} deg²" if d.get("area90") is not None else "-"
        click.echo(f"{d['event_id']:<28} {d.get('messenger') or '':<9} {d.get('status') or '':<10} "
                   f"{d.get('event_time') or '':<28} 90%: {area:<14} notices: {d.get('notices')}"
                   + ("  (test)" if d.get("test") else ""))


@notices_group.command("show")
@click.argument("event_id")
@config_option
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Use the store and index of `albireo demo --workdir DIR`.")
def show_event(event_id: str, config_path: str | None, workdir: Path | None) -> None:
    """One event: its current state and every notice revision, oldest first."""
    from broker.assemble import open_store

    store = _open_existing(open_store, config_path, workdir)
    try:
        ev = store.event(event_id)
        if ev is None:
            raise click.ClickException(f"no event {event_id!r}")
        notices = store.notices(event_id)
    finally:
        store.close()
    areas = (ev.get("summary") or {}).get("areas") or {}
    click.echo(f"{ev['event_id']} ({ev.get('name')}): {ev.get('messenger')}, {ev.get('status')}, "
               f"event time {ev.get('event_time')}, current {ev.get('current_kind')}"
               + "".join(f", {k}%: {v:.2f} deg²" for k, v in areas.items()))
    for n in notices:
        mark = "*" if n["notice_id"] == ev.get("current_notice_id") else " "
        loc = (n.get("localization") or {}).get("shape", "-")
        click.echo(f" {mark} {n['created']}  {n['kind']:<13} rev {n['revision']:<3} {n['format']:<9} "
                   f"localization {loc:<8} {n['notice_id']}")


@notices_group.command("alerts")
@click.argument("event_id")
@config_option
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Use the store and index of `albireo demo --workdir DIR`.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Publish to stream files in this folder (one per topic) and write each alert as a file.")
@click.option("--kafka", "to_kafka", is_flag=True, help="Publish on the Kafka topics (multimessenger.alert_topic_prefix).")
@click.option("--show", type=click.Choice(["circular", "neutrino", "optical", "voevent", "none"]), default="circular",
              show_default=True, help="Which alert of the latest revision to print.")
def event_alerts(event_id: str, config_path: str | None, workdir: Path | None, out: Path | None, to_kafka: bool,
                 show: str) -> None:
    """Issue an event's outgoing alerts: GCN JSON notices, VOEvent, circular (a new revision only if changed).

    Every alert is validated (GCN unified JSON schemas, VOEvent 2.0 XSD) before it is stored and
    published; a retracted event yields retraction notices.
    """
    import json

    from broker.assemble import StoreMissing, build_alert_publisher, open_index, open_store

    cfg = load(config_path)
    _point_at_workdir(cfg, workdir)
    sink = None
    if to_kafka:
        from broker.adapters.streams.kafka import KafkaSink, check_reachable, ensure_topics
        from broker.multimessenger.outgoing.publish import TOPICS

        check_reachable(cfg.kafka.bootstrap_servers)
        ensure_topics(cfg.kafka.bootstrap_servers, [cfg.multimessenger.alert_topic_prefix + t for t in TOPICS.values()],
                      extra=cfg.kafka.extra)
        sink = KafkaSink(cfg.kafka.bootstrap_servers, extra=cfg.kafka.extra)
    elif out is not None:
        from broker.adapters.streams.files import StreamFileSink

        sink = StreamFileSink(out)
    try:
        store, index = open_store(cfg, create=False), open_index(cfg, create=False)
    except StoreMissing as exc:
        raise click.ClickException(f"{exc}: ingest notices first") from exc
    try:
        try:
            rec, new = build_alert_publisher(cfg, store, index, sink).issue(event_id)
        except KeyError:
            raise click.ClickException(f"no event {event_id!r}") from None
    finally:
        store.close()
        index.close()
        if sink is not None:
            sink.close()
    if not rec:
        raise click.ClickException(f"{event_id} was retracted before any alert was issued: nothing to retract")
    click.echo(f"{event_id}: revision {rec['record_number']} ({rec['alert_type']}, {rec['candidates']} candidate(s))"
               + (" issued" if new else " unchanged, not reissued"), err=True)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        stem = f"{event_id}-{rec['record_number']}"
        for kind, ext in (("neutrino", "json"), ("optical", "json"), ("voevent", "xml"), ("circular", "txt")):
            if rec.get(kind) is not None:
                doc = rec[kind]
                (out / f"{stem}.{kind}.{ext}").write_text(json.dumps(doc, indent=2) if ext == "json" else doc)
    if show != "none" and rec.get(show) is not None:
        doc = rec[show]
        click.echo(json.dumps(doc, indent=2) if isinstance(doc, dict) else doc.rstrip("\n"))
