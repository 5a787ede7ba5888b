"""Backfills that compare revisions, write their results, publish them, and resume after an interruption.

``albireo filter backfill`` (and ``POST /api/filters/<name>/backfill``) run a registered revision
(sandboxed, as the live pipeline runs it) over stored loci:

* a dry run (:func:`broker.filtering.registry.backfill_filter`): what it would tag; nothing written;
* :func:`compare_revisions`: two revisions on the same loci; per locus the tags gained and lost and
  the properties whose value changed, plus totals;
* :func:`run_backfill`: the revision's new tags and changed properties are written to the store
  (and, through the pipeline's index writer, to the search index) with provenance: filter,
  revision, pipeline version, the backfill run id and the time written. With a sink, each locus
  that gained a tag is also published to that tag's stream, encoded by the pipeline's
  :class:`~broker.emit.StreamRouter`.

A writing run has an id and a checkpoint in the store (``put_backfill_run``): the loci are taken
in one fixed order (sorted ids) and the checkpoint holds the last locus finished, so
``--resume RUN_ID`` goes on after it. Each batch is published before it is written, and every
publication is recorded under ``backfill:<run>:<locus>`` (the exactly-once record the pipeline
keeps, ``record_outputs``): a batch interrupted between publishing and writing is redone on resume
without publishing it again, and a batch already written finds nothing new to write or publish.
Writes are idempotent anyway: a tag already on the locus or a property already at the value is
left alone.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import broker
from broker.filtering.sandbox import SandboxLimits
from broker.locus import Locus, Provenance

#: where a test interrupts a run: ``hook(point, batch_number)`` is called at each.
HOOK_POINTS = ("after_run", "after_publish", "after_write", "after_checkpoint")
#: per-locus changes a report keeps in full (totals count every locus).
KEEP_PER_LOCUS = 200
_ABSENT = object()


def _window(since: str | float | None, until: str | float | None) -> tuple[float | None, float | None]:
    from broker.filtering.registry import to_mjd

    lo, hi = to_mjd(since), to_mjd(until)
    return (None if lo is None or math.isinf(lo) else lo), hi


def _chunks(ids: list[str], n: int) -> list[list[str]]:
    return [ids[i : i + n] for i in range(0, len(ids), max(1, n))]


def _load(store, ids: list[str]) -> list[Locus]:
    found = store.load_loci(ids)
    return [found[i] for i in ids if i in found]


def _effects(pool, loci: list[Locus]) -> tuple[Any, dict[str, tuple[set[str], dict[str, Any]]]]:
    """Run ``pool`` over ``loci``; per locus, the tags and properties the filter *set* in this run.

    What it set, not what changed: a tag the locus already had counts if the filter set it again
    (what comparing two revisions needs). A property set in this run is one whose provenance entry
    is a new object after the run.
    """
    before = {x.locus_id: dict(x.provenance) for x in loci}
    report = pool.run(loci)
    out = {}
    for x in loci:
        prov0 = before[x.locus_id]
        props = {k[9:]: x.user_properties.get(k[9:]) for k, p in x.provenance.items()
                 if k.startswith("property:") and prov0.get(k) is not p}
        out[x.locus_id] = (set(report.tags_by_locus.get(x.locus_id, ())), props)
    return report, out


def _errors(f, keep: int = 20) -> list[dict[str, Any]]:
    return [e.to_dict() for e in list(f.recent_errors)[:keep]]


# ---- comparing two revisions ----------------------------------------------------------------------
def compare_revisions(store, name: str, rev_a: str, rev_b: str, since: str | float | None = None,
                      until: str | float | None = None, limit: int | None = None,
                      limits: SandboxLimits | None = None, batch_size: int = 200,
                      on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run revisions ``rev_a`` and ``rev_b`` of ``name`` on the same stored loci; what differs (nothing written).

    Per locus: ``tags_gained`` (set by B, not by A), ``tags_lost`` (by A, not by B) and
    ``properties_changed`` (``{name: {"a": value, "b": value}}``, None where one did not set it).
    Totals count every locus; ``per_locus`` keeps the first :data:`KEEP_PER_LOCUS` that differ.
    """
    from broker.filtering.registry import _pool_for, _revision, _spec

    ra, rb = _revision(store, name, rev_a), _revision(store, name, rev_b)
    lo, hi = _window(since, until)
    ids = store.locus_ids(lo, hi)
    if limit is not None:
        ids = ids[:limit]
    fa, pool_a = _pool_for(_spec(ra), limits)
    fb, pool_b = _pool_for(_spec(rb), limits)
    totals: dict[str, Any] = {"loci": 0, "loci_differing": 0, "tags_gained": Counter(), "tags_lost": Counter(),
                              "properties_changed": Counter()}
    per_locus: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with pool_a, pool_b:
        for chunk in _chunks(ids, batch_size):
            _, ea = _effects(pool_a, _load(store, chunk))
            _, eb = _effects(pool_b, _load(store, chunk))
            for lid in chunk:
                if lid not in ea or lid not in eb:
                    continue  # deleted between listing and loading
                (ta, pa), (tb, pb) = ea[lid], eb[lid]
                gained, lost = sorted(tb - ta), sorted(ta - tb)
                changed = {k: {"a": pa.get(k), "b": pb.get(k)} for k in sorted(set(pa) | set(pb))
                           if pa.get(k, _ABSENT) != pb.get(k, _ABSENT)}
                totals["loci"] += 1
                totals["tags_gained"].update(gained)
                totals["tags_lost"].update(lost)
                totals["properties_changed"].update(list(changed))
                if gained or lost or changed:
                    totals["loci_differing"] += 1
                    if len(per_locus) < KEEP_PER_LOCUS:
                        per_locus.append({"locus_id": lid, "tags_gained": gained, "tags_lost": lost,
                                          "properties_changed": changed})
            if on_batch is not None:
                on_batch(len(chunk))
            if not (fa.enabled and fb.enabled):
                break  # one stopped after repeated failures: the report says why
    return {
        "filter": name, "mode": "compare", "revision_a": ra["revision"], "revision_b": rb["revision"],
        "since_mjd": lo, "until_mjd": hi, "dry_run": True,
        "totals": {k: dict(v) if isinstance(v, Counter) else v for k, v in totals.items()},
        "per_locus": per_locus,
        "errors": {ra["revision"]: {"count": fa.stats.errors, "first": _errors(fa), "stopped": fa.disabled_reason or None},
                   rb["revision"]: {"count": fb.stats.errors, "first": _errors(fb), "stopped": fb.disabled_reason or None}},
        "wall_s": time.perf_counter() - t0,
    }


# ---- writing, publishing, resuming ----------------------------------------------------------------
def new_run_id() -> str:
    """A run id that sorts by start time and names the run uniquely (``bf-20261202T160000-1a2b3c``)."""
    return f"bf-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"


def _empty_totals() -> dict[str, Any]:
    return {"loci": 0, "loci_changed": 0, "tags_written": {}, "properties_written": {}, "published": 0,
            "errors": 0, "runs": 0, "dependency_skipped": 0}


def _merge(totals: dict[str, Any], tags: Counter, props: Counter) -> None:
    for key, c in (("tags_written", tags), ("properties_written", props)):
        d = totals[key]
        for k, v in c.items():
            d[k] = d.get(k, 0) + v


def run_backfill(store, name: str, revision: str | None = None, since: str | float | None = None,
                 until: str | float | None = None, limit: int | None = None,
                 limits: SandboxLimits | None = None, batch_size: int = 200, sink: Any = None,
                 router: Any = None, index_writer: Any = None, resume: str | None = None,
                 run_id: str | None = None, on_batch: Callable[[int], None] | None = None,
                 on_start: Callable[[dict[str, Any]], None] | None = None,
                 hook: Callable[[str, int], None] | None = None, publish_to: str | None = None) -> dict[str, Any]:
    """Run a revision over stored loci and write what it sets (and publish, with ``sink``); resumable.

    ``resume``: the id of an interrupted run: its revision, window, limit and publishing are
    taken from its checkpoint (the arguments given for them are ignored) and it goes on after
    the last locus it finished. ``on_start`` is called with the run record once it exists (so a
    caller can say which id to resume). ``hook(point, batch)`` is the tests' interruption point
    (:data:`HOOK_POINTS`). ``publish_to`` describes the sink in the checkpoint (``kafka`` or
    ``files:<dir>``), so that a resume can reopen the same one. An interruption (``KeyboardInterrupt`` or any error) marks the run
    ``interrupted`` in its checkpoint and is raised again.
    """
    from broker.emit import StreamRouter
    from broker.filtering.registry import _pool_for, _revision, _spec

    now = time.time()
    if resume:
        run = store.get_backfill_run(resume)
        if run is None:
            raise KeyError(f"no backfill run {resume!r}")
        if run["name"] != name:
            raise ValueError(f"backfill run {resume} is of filter {run['name']!r}, not {name!r}")
        if run["status"] == "done":
            return {**run, "resumed": True, "nothing_to_do": True}
        rec = _revision(store, name, run["revision"])
        if run.get("publish") and sink is None:
            raise ValueError(f"backfill run {resume} publishes to streams: resume it with a sink (--publish)")
        run.update(status="running", updated=now, resumed_at=[*run.get("resumed_at", []), now])
    else:
        rec = _revision(store, name, revision)
        lo, hi = _window(since, until)
        run = {"run_id": run_id or new_run_id(), "name": name, "revision": rec["revision"], "since_mjd": lo,
               "until_mjd": hi, "limit": limit, "publish": sink is not None,
               "publish_to": publish_to if sink is not None else None, "status": "running", "started": now,
               "updated": now, "position": 0, "last_locus_id": None, "totals": _empty_totals(),
               "stopped_reason": None, "resumed_at": []}
    ids = store.locus_ids(run["since_mjd"], run["until_mjd"])
    run["total"] = min(len(ids), run["limit"]) if run["limit"] is not None else len(ids)
    if run["last_locus_id"] is not None:
        ids = [i for i in ids if i > run["last_locus_id"]]
    if run["limit"] is not None:
        ids = ids[: max(0, run["limit"] - run["position"])]
    store.put_backfill_run(run)
    if on_start is not None:
        on_start(run)
    router = router or StreamRouter()
    f, pool = _pool_for(_spec(rec), limits)
    totals = run["totals"]
    t0 = time.perf_counter()
    try:
        with pool:
            for n, chunk in enumerate(_chunks(ids, batch_size)):
                runs0, errs0, dep0 = f.stats.runs, f.stats.errors, f.stats.dependency_skipped
                _, effects = _effects(pool, _load(store, chunk))
                if hook is not None:
                    hook("after_run", n)
                changed, gained, tags_c, props_c = _apply(store, chunk, effects, f.name, rec["revision"],
                                                          run["run_id"])
                # counts go into the checkpoint with the batch (an interrupted batch is counted when redone)
                published = _publish(store, sink, router, run["run_id"], changed, gained) if sink is not None else 0
                if hook is not None:
                    hook("after_publish", n)
                if changed:
                    store.save_batch(changed, [])
                    if index_writer is not None:
                        index_writer.write(changed)
                if hook is not None:
                    hook("after_write", n)
                _merge(totals, tags_c, props_c)
                totals["published"] += published
                totals["loci"] += len(chunk)
                totals["loci_changed"] += len(changed)
                totals["runs"] += f.stats.runs - runs0
                totals["errors"] += f.stats.errors - errs0
                totals["dependency_skipped"] += f.stats.dependency_skipped - dep0
                run.update(position=run["position"] + len(chunk), last_locus_id=chunk[-1], updated=time.time())
                store.put_backfill_run(run)
                if hook is not None:
                    hook("after_checkpoint", n)
                if on_batch is not None:
                    on_batch(len(chunk))
                if not f.enabled:
                    run["stopped_reason"] = f.disabled_reason
                    break
    except BaseException as exc:
        run.update(status="interrupted", updated=time.time(), interrupted_by=type(exc).__name__)
        store.put_backfill_run(run)
        raise
    run.update(status="stopped" if run["stopped_reason"] else "done", updated=time.time(),
               finished=time.time())
    store.put_backfill_run(run)
    return {**run, "mode": "write", "dry_run": False, "wall_s": time.perf_counter() - t0,
            "first_errors": _errors(f), "resumed": bool(resume)}


def _apply(store, ids: list[str], effects: dict[str, tuple[set[str], dict[str, Any]]], name: str, revision: str,
           run_id: str) -> tuple[list[Locus], dict[str, list[str]], Counter, Counter]:
    """Apply what the filter set onto freshly loaded copies; (changed loci, new tags per locus, counts).

    Fresh copies, loaded just before writing: an alert a live worker added meanwhile is kept.
    A tag already on the locus keeps its provenance (as in the pipeline, the first setter's); a
    property already at the value is left alone, so re-running writes nothing.
    """
    fresh = store.load_loci(ids)
    now = time.time()
    changed: list[Locus] = []
    gained: dict[str, list[str]] = {}
    tags_c: Counter = Counter()
    props_c: Counter = Counter()
    for lid in ids:
        x = fresh.get(lid)
        if x is None or lid not in effects:
            continue
        tags, props = effects[lid]
        prov = Provenance(name, revision, broker.__version__, x.alert.mjd if x.alerts else None,
                          backfill_run=run_id, set_at=now)
        new_tags = sorted(t for t in tags if t not in x.user_tags)
        new_props = {k: v for k, v in props.items() if x.user_properties.get(k, _ABSENT) != v}
        # what this run wrote before an interruption (after the write, before its checkpoint) still counts
        # as this run's, so the totals of an interrupted-and-resumed run are those of an uninterrupted one
        ours_tags = [t for t in tags if t not in new_tags and _by_run(x, t, run_id)]
        ours_props = [k for k in props if k not in new_props and _by_run(x, f"property:{k}", run_id)]
        tags_c.update(ours_tags)
        props_c.update(ours_props)
        if ours_tags:
            gained[lid] = sorted(ours_tags)  # published already (recorded): counted, not sent again
        if not new_tags and not new_props:
            continue
        for t in new_tags:
            x.user_tags.add(t)
            x.provenance[t] = prov
        for k, v in new_props.items():
            x.user_properties[k] = v
            x.provenance[f"property:{k}"] = prov
        tags_c.update(new_tags)
        props_c.update(list(new_props))
        changed.append(x)
        if new_tags:
            gained[lid] = sorted({*gained.get(lid, []), *new_tags})
    return changed, gained, tags_c, props_c


def _by_run(x: Locus, key: str, run_id: str) -> bool:
    p = x.provenance.get(key)
    return getattr(p, "backfill_run", None) == run_id


def _publish(store, sink, router, run_id: str, loci: list[Locus], gained: dict[str, list[str]]) -> int:
    """Publish each locus that gained tags to those streams, once per run (recorded before the store write)."""
    from broker.ports import Output

    by_id = {x.locus_id: x for x in loci}
    missing = [lid for lid in gained if lid not in by_id]
    if missing:  # loci this run had already written (only counted, since recorded): load them to encode
        by_id.update(store.load_loci(missing))
    origins = {f"backfill:{run_id}:{lid}": lid for lid in gained}
    done = store.recorded_outputs(list(origins))
    outputs: dict[str, list[Output]] = {}
    resent = 0
    for origin, lid in origins.items():
        if origin in done:
            resent += len(done[origin])  # published before an interruption: counted, not sent again
            continue
        outs = []
        for tag in gained[lid]:
            headers = {"albireo.stream": tag, "albireo.backfill": run_id}
            for topic, value in router.messages(by_id[lid], tag):
                outs.append(Output(topic, lid.encode(), value, headers, origin))
        outputs[origin] = outs
    for outs in outputs.values():
        for o in outs:
            sink.publish(o.topic, o.key, o.value, o.headers)
    if outputs:
        sink.flush()
        store.record_outputs(outputs)
    return resent + sum(len(v) for v in outputs.values())
