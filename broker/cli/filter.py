"""``albireo filter ...``: register, inspect, enable, test and backfill user filters.

The commands are thin: each calls one function of :mod:`broker.filtering.registry`
(the HTTP API calls the same ones) on the configured store, and prints either a
short human summary or, with ``--json``, the full record.
"""

from __future__ import annotations

import datetime
import getpass
import json
from pathlib import Path
from typing import Any

import click

from broker.cli.common import config_option, load, setup_logging


def _store(config_path: str | None):
    from broker.assemble import open_store

    cfg = load(config_path)
    return open_store(cfg), cfg


def _limits(cfg, timeout: float | None = None):
    from broker.filtering.sandbox import SandboxLimits

    return SandboxLimits.from_config(cfg.filters, timeout)


def _when(ts: float | None) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _emit(obj: Any, as_json: bool) -> bool:
    if as_json:
        click.echo(json.dumps(obj, indent=2, default=str, sort_keys=True))
    return as_json


_config_opt = config_option
_json_opt = click.option("--json", "as_json", is_flag=True, help="Print the full record as JSON.")


@click.group(name="filter")
def filter_group() -> None:
    """Register, review, enable, test and backfill user filters (ANTARES devkit compatible).

    A new revision is submitted; an operator approves (or rejects) it; only then can it be
    enabled (unless the configuration sets [filters] require_review = false).
    """


@filter_group.command("add")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--author", default=None, help="Who submits it (default: the current user).")
@click.option("--name", default=None, help="Filter name (default: the filter class name).")
@click.option("--priority", type=int, default=100, show_default=True, help="Lower runs earlier.")
@click.option("--approve", is_flag=True, help="Approve it at once, as the operator named by --by.")
@click.option("--by", "by", default=None, help="With --approve: the operator approving it.")
@click.option("--enable", is_flag=True, help="Enable the new revision at once (needs --approve --by while "
              "[filters] require_review is on).")
@_config_opt
@_json_opt
def add(file: Path, author: str | None, name: str | None, priority: int, approve: bool, by: str | None,
        enable: bool, config_path: str | None, as_json: bool) -> None:
    """Submit FILE.py as a new revision (loading is tried in the sandbox first)."""
    from broker.filtering import registry as reg

    if approve and not by:
        raise click.UsageError("--approve needs --by NAME (the operator approving it)")
    store, cfg = _store(config_path)
    try:
        rec = reg.add_revision(store, file.read_text(), author or getpass.getuser(), name=name, priority=priority,
                               enable=enable, approved_by=by if approve else None,
                               require_review=cfg.filters.require_review, known=cfg.filters.builtin)
    except (reg.FilterRejected, ValueError) as exc:
        raise click.ClickException(f"{file}: {exc}") from exc
    finally:
        store.close()
    if _emit({k: v for k, v in rec.items() if k != "code"}, as_json):
        return
    err = rec.get("load_error") or (rec.get("meta") or {}).get("load_error")
    click.echo(f"{rec['name']}@{rec['revision']}  status={rec['status']}  author={rec['author']}")
    if err:
        click.echo(f"  {err}", err=True)


@filter_group.command("list")
@_config_opt
@_json_opt
def list_(config_path: str | None, as_json: bool) -> None:
    """Every registered filter with its newest and enabled revision."""
    from broker.filtering import registry as reg

    store, _ = _store(config_path)
    try:
        rows = reg.list_filters(store)
    finally:
        store.close()
    if _emit(rows, as_json):
        return
    if not rows:
        click.echo("(no filters registered)")
    for r in rows:
        click.echo(f"{r['name']:30s} {r['status']:9s} review={r['review']['decision']:8s} "
                   f"enabled={r['enabled_revision'] or '-':12s} "
                   f"latest={r['latest_revision']} revisions={r['revisions']} prio={r['priority']} "
                   f"by {r['author']} {_when(r['created'])}" + (f"  [cannot load: {r['load_error']}]"
                                                                if r["load_error"] else ""))


@filter_group.command("show")
@click.argument("name")
@click.option("--code", "with_code", is_flag=True, help="Print the enabled (else newest) revision's code.")
@_config_opt
@_json_opt
def show(name: str, with_code: bool, config_path: str | None, as_json: bool) -> None:
    """A filter's revisions, statuses and declared outputs."""
    from broker.filtering import registry as reg

    store, _ = _store(config_path)
    try:
        info = reg.get_filter(store, name)
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0])) from exc
    finally:
        store.close()
    if _emit(info, as_json):
        return
    for r in info["revisions"]:
        meta = r.get("meta") or {}
        click.echo(f"{r['revision']}  {r['status']:9s} by {r['author']} {_when(r['created'])}"
                   + (f"  ({r['status_reason']})" if r.get("status_reason") else "")
                   + (f"  [cannot load: {r['load_error']}]" if r.get("load_error") else ""))
        rv = r.get("review") or {}
        if rv.get("decision") not in (None, "pending"):
            click.echo(f"    review: {rv['decision']} by {rv['by']} {_when(rv['at'])}"
                       + (f" ({rv['note']})" if rv.get("note") else ""))
        else:
            click.echo("    review: pending (albireo filter approve / reject)")
        if r.get("requires"):
            click.echo(f"    requires: {', '.join(r['requires'])}")
        tags = [t.get("name") for t in meta.get("OUTPUT_LOCUS_TAGS", []) if isinstance(t, dict)]
        props = [p.get("name") for p in meta.get("OUTPUT_LOCUS_PROPERTIES", []) if isinstance(p, dict)]
        click.echo(f"    tags: {', '.join(tags) or '-'}   properties: {', '.join(props) or '-'}")
    if with_code:
        chosen = [r for r in info["revisions"] if r["status"] == "enabled"] or info["revisions"][-1:]
        click.echo("\n" + chosen[0]["code"])


def _set(name: str, status: str, revision: str | None, reason: str, config_path: str | None, as_json: bool) -> None:
    from broker.filtering import registry as reg

    store, cfg = _store(config_path)
    try:
        rec = reg.set_status(store, name, status, revision, reason, require_review=cfg.filters.require_review,
                             known=cfg.filters.builtin)
    except (KeyError, ValueError) as exc:
        raise click.ClickException(str(exc.args[0] if isinstance(exc, KeyError) else exc)) from exc
    finally:
        store.close()
    if not _emit(rec, as_json):
        click.echo(f"{rec['name']}@{rec['revision']} {rec['status']} (workers pick it up at their next refresh)")


def _review(name: str, decision: str, revision: str | None, by: str, note: str, config_path: str | None,
            as_json: bool) -> None:
    from broker.filtering import registry as reg

    store, _ = _store(config_path)
    try:
        rec = reg.review(store, name, decision, by, revision, note)
    except (KeyError, ValueError) as exc:
        raise click.ClickException(str(exc.args[0] if isinstance(exc, KeyError) else exc)) from exc
    finally:
        store.close()
    if not _emit(rec, as_json):
        click.echo(f"{rec['name']}@{rec['revision']} {decision} by {rec['review']['by']} "
                   f"{_when(rec['review']['at'])}; status {rec['status']}")


@filter_group.command("approve")
@click.argument("name")
@click.option("--revision", default=None, help="Revision (prefix) to approve; default: the newest.")
@click.option("--by", "by", required=True, help="The operator approving it (kept with the revision).")
@click.option("--note", default="", help="Why, or what was checked.")
@_config_opt
@_json_opt
def approve(name: str, revision: str | None, by: str, note: str, config_path: str | None, as_json: bool) -> None:
    """Approve a submitted revision, so that it may be enabled (who and when are recorded)."""
    _review(name, "approved", revision, by, note, config_path, as_json)


@filter_group.command("reject")
@click.argument("name")
@click.option("--revision", default=None, help="Revision (prefix) to reject; default: the newest.")
@click.option("--by", "by", required=True, help="The operator rejecting it (kept with the revision).")
@click.option("--reason", required=True, help="Why it is rejected (shown to its author).")
@_config_opt
@_json_opt
def reject(name: str, revision: str | None, by: str, reason: str, config_path: str | None, as_json: bool) -> None:
    """Reject a revision: it cannot be enabled (an enabled one stops at the workers' next refresh)."""
    _review(name, "rejected", revision, by, reason, config_path, as_json)


@filter_group.command("enable")
@click.argument("name")
@click.option("--revision", default=None, help="Revision (prefix) to enable; default: the newest.")
@_config_opt
@_json_opt
def enable(name: str, revision: str | None, config_path: str | None, as_json: bool) -> None:
    """Enable an approved revision (any other enabled revision of the filter is disabled).

    Refused (exit 1, with the reason) for a revision not approved (while ``[filters]
    require_review`` is on) or rejected, and when a filter it requires (``REQUIRES_FILTERS``) is
    not enabled or the requirements would form a cycle.
    """
    _set(name, "enabled", revision, "", config_path, as_json)


@filter_group.command("disable")
@click.argument("name")
@click.option("--revision", default=None, help="Revision (prefix); default: the enabled one.")
@click.option("--reason", default="disabled by hand", show_default=True)
@_config_opt
@_json_opt
def disable(name: str, revision: str | None, reason: str, config_path: str | None, as_json: bool) -> None:
    """Disable a filter (its enabled revision by default)."""
    _set(name, "disabled", revision, reason, config_path, as_json)


def _print_report(rep: dict[str, Any]) -> None:
    click.echo(f"filter {rep['filter']}@{rep['revision']}")
    if rep.get("load_error"):
        click.echo(f"  CANNOT LOAD: {rep['load_error']}")
        return
    t = rep["timing"]
    click.echo(f"  loci {rep['loci']}  runs {rep['runs']}  skipped (constraints) {rep['skipped']}  "
               f"errors {rep['error_count']} (timeouts {rep['timeouts']}, crashes {rep['crashes']})")
    click.echo(f"  time total {t['total_s'] * 1e3:.1f} ms  p50 {t['p50_s'] * 1e3:.2f} ms  "
               f"p99 {t['p99_s'] * 1e3:.2f} ms  max {t['max_s'] * 1e3:.2f} ms")
    click.echo("  tags: " + (", ".join(f"{k}={v}" for k, v in sorted(rep["tags"].items())) or "(none)"))
    click.echo("  properties: " + (", ".join(f"{k}={v['count']} (e.g. {v['examples'][:3]})"
                                              for k, v in sorted(rep["properties"].items())) or "(none)"))
    for c in rep["changes"][:10]:
        click.echo(f"    {c['locus_id']} (alert {c['alert_id']}): tags {c['new_tags']} properties {c['new_properties']}")
    seen = set()
    for e in rep["errors"]:
        key = (e["exception"], e["message"])
        if key in seen:
            continue
        seen.add(key)
        click.echo(f"  ERROR {e['exception']}: {e['message']}  (locus {e['locus_id']}, alert {e['alert_id']})")
        click.echo("    " + "\n    ".join(e["traceback"].rstrip().splitlines()[-6:]))


@filter_group.command("test")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--alerts", "alerts", multiple=True, required=True, type=click.Path(exists=True, path_type=Path),
              help="Avro packet files or folders (repeatable).")
@click.option("--timeout", type=float, default=None, help="Per-locus time budget, seconds.")
@_config_opt
@_json_opt
def test(file: Path, alerts: tuple[Path, ...], timeout: float | None, config_path: str | None,
         as_json: bool) -> None:
    """Run FILE.py (sandboxed) on real packets and print what it would tag, set, cost and raise."""
    from broker.filtering import registry as reg

    cfg = load(config_path)
    setup_logging("CRITICAL")  # every error is in the report; log lines would repeat them
    try:
        rep = reg.test_filter(file.read_text(), alerts=list(alerts), limits=_limits(cfg, timeout),
                              radius_arcsec=cfg.association.radius_arcsec)
    except reg.FilterRejected as exc:
        raise click.ClickException(f"{file}: {exc}") from exc
    if not _emit(rep, as_json):
        _print_report(rep)
    _fail_if_broken(rep)


def _fail_if_broken(rep: dict[str, Any]) -> None:
    """Exit 1 (with a one-line reason) when the filter cannot load, was stopped, or failed on every run."""
    if rep.get("load_error"):
        click.echo(f"Error: {rep['filter']} cannot load: {rep['load_error']}", err=True)
        raise SystemExit(1)
    if rep.get("stopped"):
        click.echo(f"Error: {rep['filter']} was stopped: {rep.get('disabled_reason')}", err=True)
        raise SystemExit(1)
    if rep.get("failed_everywhere"):
        click.echo(f"Error: {rep['filter']} failed on every one of its {rep['runs']} runs", err=True)
        raise SystemExit(1)


def _mjd_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from broker.filtering.registry import to_mjd

    try:
        to_mjd(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


@filter_group.command("backfill")
@click.argument("name")
@click.option("--since", default=None, callback=_mjd_option, help="Oldest newest-alert time: MJD or ISO date.")
@click.option("--until", default=None, callback=_mjd_option, help="Newest newest-alert time: MJD or ISO date.")
@click.option("--revision", default=None, help="Revision (prefix); default: the newest.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Stop after this many loci.")
@click.option("--compare", nargs=2, default=None, metavar="REV_A REV_B",
              help="Compare two revisions on the same loci: tags gained and lost, properties changed.")
@click.option("--against", default=None, metavar="REV",
              help="Compare --revision (default: the newest) against REV (as --compare REV REVISION).")
@click.option("--write", is_flag=True, help="Write the new tags and properties to the store and the index, "
              "with provenance (filter, revision, run id, time).")
@click.option("--publish", is_flag=True, help="With --write: also publish the loci that gained a tag to its "
              "stream (Kafka; with --streams-dir, stream files).")
@click.option("--streams-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With --publish: write .avro-stream files under this folder (the embedded stack's "
              "sink, as albireo demo writes them) instead of Kafka.")
@click.option("--resume", "resume", default=None, metavar="RUN_ID",
              help="Continue an interrupted --write run after its last finished locus.")
@click.option("--batch-size", type=click.IntRange(min=1, max=10_000), default=200, show_default=True)
@_config_opt
@_json_opt
def backfill(name: str, since: str | None, until: str | None, revision: str | None, limit: int | None,
             compare: tuple[str, str] | None, against: str | None, write: bool, publish: bool,
             streams_dir: Path | None, resume: str | None, batch_size: int, config_path: str | None,
             as_json: bool) -> None:
    """Run a registered revision over stored loci: a dry run unless --write.

    \b
    dry run (default)      what it would tag and set; nothing is written
    --compare A B          two revisions on the same loci; per locus tags gained/lost, property changes
    --write                write new tags and properties (store + index) with provenance
    --write --publish      also publish each locus that gained a tag to that tag's stream
    --resume RUN_ID        continue an interrupted --write run (no locus written or published twice)

    A --write run prints its id first; its checkpoint is kept in the store.
    """
    from broker.cli.common import progress_bar
    from broker.filtering import registry as reg

    if compare and against:
        raise click.UsageError("give --compare REV_A REV_B or --against REV, not both")
    comparing = bool(compare or against)
    if comparing and (write or publish or resume):
        raise click.UsageError("a comparison writes nothing: --compare/--against cannot go with --write, "
                               "--publish or --resume")
    if publish and not (write or resume):
        raise click.UsageError("--publish needs --write (a dry run publishes nothing)")
    if streams_dir is not None and not (publish or resume):
        raise click.UsageError("--streams-dir goes with --publish")
    store, cfg = _store(config_path)
    setup_logging("CRITICAL")  # every error is in the report; log lines would repeat them
    try:
        total = store.counts().get("loci", 0)
        total = min(total, limit) if limit else total
        if comparing:
            a, b = compare if compare else (against, revision or reg._revision(store, name, None)["revision"])
            with progress_bar(total, "loci", f"compare {name}") as bar:
                rep = reg.compare_revisions(store, name, a, b, since, until, limit=limit, limits=_limits(cfg),
                                            batch_size=batch_size, on_batch=bar.update)
            if not _emit(rep, as_json):
                _print_comparison(rep)
            return
        if write or resume:
            rep = _write_backfill(store, cfg, name, since, until, revision, limit, publish, streams_dir, resume,
                                  batch_size, as_json)
            if not _emit(rep, as_json):
                _print_write(rep)
            if rep.get("status") == "stopped":
                click.echo(f"Error: {name} was stopped: {rep.get('stopped_reason')}", err=True)
                raise SystemExit(1)
            return
        with progress_bar(total, "loci", f"backfill {name}") as bar:
            rep = reg.backfill_filter(store, name, since, until, revision=revision, limit=limit,
                                      limits=_limits(cfg), batch_size=batch_size, on_batch=bar.update)
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0])) from exc
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()
    if not _emit(rep, as_json):
        click.echo("dry run (nothing written)")
        _print_report(rep)
        for tag, ids in sorted(rep["tag_examples"].items()):
            click.echo(f"  would tag {tag}: {', '.join(ids[:10])}" + (" ..." if len(ids) > 10 else ""))
    _fail_if_broken(rep)


def _write_backfill(store, cfg, name: str, since: str | None, until: str | None, revision: str | None,
                    limit: int | None, publish: bool, streams_dir: Path | None, resume: str | None,
                    batch_size: int, as_json: bool) -> dict[str, Any]:
    """A writing run with its index writer (drained at the end) and, to publish, the configured sink."""
    from broker.assemble import open_index_writer, open_stream_sink, stream_router
    from broker.cli.common import progress_bar
    from broker.filtering import registry as reg

    prior = store.get_backfill_run(resume) if resume else None
    if prior and prior.get("publish"):  # a publishing run resumes publishing, to the same sink by default
        publish = True
        to = prior.get("publish_to") or "kafka"
        if streams_dir is None and to.startswith("files:"):
            streams_dir = Path(to.removeprefix("files:"))
    sink = open_stream_sink(cfg, streams_dir) if publish else None
    index_writer = open_index_writer(cfg)
    bar = None

    def started(run: dict[str, Any]) -> None:
        nonlocal bar
        if not as_json:
            click.echo(f"backfill run {run['run_id']} ({'resuming' if resume else 'writing'}"
                       f"{', publishing' if run.get('publish') else ''}); "
                       f"resume with: albireo filter backfill {name} --resume {run['run_id']}", err=True)
        bar = progress_bar(run["total"], "loci", f"backfill {name}")
        bar.update(run["position"])

    try:
        rep = reg.run_backfill(store, name, revision, since, until, limit=limit, limits=_limits(cfg),
                               batch_size=batch_size, sink=sink, router=stream_router(cfg),
                               index_writer=index_writer, resume=resume, on_start=started,
                               publish_to=f"files:{streams_dir.resolve()}" if streams_dir is not None else "kafka",
                               on_batch=lambda n: bar.update(n) if bar is not None else None)
    except KeyboardInterrupt:
        run = store.list_backfill_runs(name)[-1:] if not resume else [store.get_backfill_run(resume)]
        rid = run[0]["run_id"] if run and run[0] else "?"
        raise click.ClickException(f"interrupted; nothing is lost: albireo filter backfill {name} --resume {rid}") \
            from None
    finally:
        if bar is not None:
            bar.close()
        index_writer.close()
        if sink is not None:
            sink.close()
    return rep


def _print_write(rep: dict[str, Any]) -> None:
    t = rep.get("totals") or {}
    if rep.get("nothing_to_do"):
        click.echo(f"backfill run {rep['run_id']} had already finished: nothing to do")
        return
    click.echo(f"backfill run {rep['run_id']}: {rep['name']}@{rep['revision']} {rep['status']}"
               + (" (resumed)" if rep.get("resumed") else ""))
    click.echo(f"  loci {t.get('loci', 0)} of {rep.get('total', 0)}  changed {t.get('loci_changed', 0)}  "
               f"runs {t.get('runs', 0)}  errors {t.get('errors', 0)}  "
               f"skipped (dependencies) {t.get('dependency_skipped', 0)}  published {t.get('published', 0)}")
    click.echo("  tags written: " + (", ".join(f"{k}={v}" for k, v in sorted(t.get("tags_written", {}).items()))
                                     or "(none)"))
    click.echo("  properties written: " + (", ".join(f"{k}={v}" for k, v in
                                                     sorted(t.get("properties_written", {}).items())) or "(none)"))
    for e in rep.get("first_errors") or []:
        click.echo(f"  ERROR {e['exception']}: {e['message']}  (locus {e['locus_id']})")


def _print_comparison(rep: dict[str, Any]) -> None:
    t = rep["totals"]
    click.echo(f"compare {rep['filter']}: {rep['revision_a']} (A) -> {rep['revision_b']} (B), nothing written")
    click.echo(f"  loci {t['loci']}  differing {t['loci_differing']}")
    click.echo("  tags gained: " + (", ".join(f"{k}={v}" for k, v in sorted(t["tags_gained"].items())) or "(none)"))
    click.echo("  tags lost: " + (", ".join(f"{k}={v}" for k, v in sorted(t["tags_lost"].items())) or "(none)"))
    click.echo("  properties changed: " + (", ".join(f"{k}={v}" for k, v in
                                                     sorted(t["properties_changed"].items())) or "(none)"))
    for c in rep["per_locus"][:20]:
        click.echo(f"    {c['locus_id']}: +{c['tags_gained']} -{c['tags_lost']} "
                   + ", ".join(f"{k}: {v['a']!r} -> {v['b']!r}" for k, v in c["properties_changed"].items()))
    for rev, e in rep["errors"].items():
        if e["count"]:
            click.echo(f"  {rev}: {e['count']} errors" + (f", stopped: {e['stopped']}" if e["stopped"] else ""))


@filter_group.command("sandbox")
@_config_opt
@_json_opt
def sandbox(config_path: str | None, as_json: bool) -> None:
    """Start a probe filter in the sandbox and say which isolation holds on this machine.

    Every mechanism (unprivileged user, namespaces, private root, seccomp, rlimits) is listed with
    whether the kernel allowed it; a worker not running as root, or a kernel refusing namespaces,
    gets fewer, and this is where it shows. Exits 1 if the probe filter could not run at all.
    """
    from broker.filtering.sandbox import sandbox_status

    cfg = load(config_path)
    st = sandbox_status(_limits(cfg))
    if not _emit(st, as_json):
        for mechanism, on in st["holds"].items():
            click.echo(f"{'yes' if on else 'NO ':3s}  {mechanism}")
        user = st.get("user") or {}
        uid = f" (uid {user['uid']})" if "uid" in user else ""
        click.echo(f"mode {st['mode']}, filters run as {user.get('name', 'the worker user')}{uid}, "
                   f"seccomp via {st['seccomp'] or 'none'}; sandbox started in {st['start_s']:.2f}s")
        for d in st["degraded"]:
            click.echo(f"  degraded: {d}", err=True)
    if st["load_errors"]:
        raise click.ClickException(f"the probe filter could not run: {st['load_errors']}")
