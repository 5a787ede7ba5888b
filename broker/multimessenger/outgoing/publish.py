"""Issue outgoing alerts for an event: build the next revision, store it, publish it.

The loci are found as the notice pipeline finds them (the index's ``events`` filter, then the
store), so an alert always reports what the tags say. A revision is issued only when its
:func:`~.build.content_hash` differs from the last stored one: calling :meth:`AlertPublisher.issue`
again (a replayed batch, a second CLI run) publishes nothing new, and ``record_number`` counts
real changes as GCN's does. The revision is stored before it is published, so a crash between the
two republishes the same numbered revision (readers key on event and ``record_number``).
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any

from broker.locus import Locus
from broker.multimessenger.notice import iso
from broker.multimessenger.outgoing.build import build_revision, content_hash
from broker.multimessenger.outgoing.candidates import Candidate, candidates_from_loci, event_candidates
from broker.ports import Index, Sink, Store

#: topic suffix per kind of outgoing alert.
TOPICS = {"neutrino": "neutrino", "optical": "optical", "voevent": "voevent", "circular": "circular"}


@dataclass
class AlertTopics:
    prefix: str = "albireo.alerts."

    def topic(self, kind: str) -> str:
        return self.prefix + TOPICS[kind]


def encode(doc: Any) -> bytes:
    """JSON notices as compact sorted JSON, the VOEvent and the circular as their UTF-8 text."""
    return (json.dumps(doc, sort_keys=True) if isinstance(doc, dict) else str(doc)).encode()


class AlertPublisher:
    """Builds, stores and publishes an event's outgoing alerts over the given ports."""

    def __init__(self, store: Store, index: Index, sink: Sink | None, topics: AlertTopics | None = None):
        self.store, self.index, self.sink = store, index, sink
        self.topics = topics or AlertTopics()

    def candidates(self, event: dict[str, Any]) -> list[Candidate]:
        self.index.refresh()
        return event_candidates(self.index, self.store, event)

    def issue(self, event_id: str, now: datetime.datetime | None = None,
              loci: list[Locus] | None = None) -> tuple[dict[str, Any], bool]:
        """(the event's latest revision, whether it is new); KeyError for an unknown event.

        ``loci``: the loci carrying the event, when the caller just computed them (the notice
        pipeline, before the index has caught up); else they are found through the index. A
        retracted event that never had a revision gets none (there is nothing to retract).
        """
        event = self.store.event(event_id)
        if event is None:
            raise KeyError(event_id)
        history = self.store.outgoing(event_id)
        last = history[-1] if history else None
        if event.get("status") == "retracted":
            cands: list[Candidate] = []
        elif loci is not None:
            cands = candidates_from_loci(loci, event_id, event["messenger"])
        else:
            cands = self.candidates(event)
        if last is not None and last["content_hash"] == content_hash(event, cands):
            return last, False
        if last is None and event.get("status") == "retracted":
            return {}, False
        when = iso((now or datetime.datetime.now(datetime.UTC)).replace(microsecond=0))
        rec = build_revision(event, cands, (last["record_number"] + 1) if last else 1, when)
        self.store.put_outgoing(rec)
        self.publish(rec)
        return rec, True

    def publish(self, rec: dict[str, Any]) -> int:
        """Send every kind the revision holds on its topic; the count sent."""
        if self.sink is None:
            return 0
        key = rec["event_id"].encode()
        sent = 0
        for kind in TOPICS:
            doc = rec.get(kind)
            if doc is None:
                continue
            self.sink.publish(self.topics.topic(kind), key, encode(doc),
                              {"albireo.event": rec["event_id"], "albireo.record_number": str(rec["record_number"]),
                               "albireo.alert_type": rec["alert_type"]})
            sent += 1
        self.sink.flush()
        return sent
