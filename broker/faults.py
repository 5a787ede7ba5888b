"""Named points in a batch's path where a test (``make chaos``, the fault tests) injects a failure.

The points, in the order a batch passes them: ``before_publish`` (filters done, nothing sent),
``after_publish`` (outputs flushed, inside the transaction), ``after_store`` (loci and alerts
written), ``at_commit`` (the commit itself fails, as a timeout or a broker restart would make it),
``after_commit`` (committed; the process dies before the next batch).

A plan is ``point:batch=N:action`` items separated by commas (``[service] faults``, empty in
production): at the N-th batch reaching ``point`` the action happens once. ``raise`` raises
:class:`InjectedFault` (an infrastructure error: the worker aborts and retries the batch);
``crash`` ends the process at once (``os._exit``), as ``kill -9`` would.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from broker.ports import DeliveryError

log = logging.getLogger("albireo.faults")

POINTS = ("before_publish", "after_publish", "after_store", "at_commit", "after_commit")
ACTIONS = ("raise", "crash")


class InjectedFault(DeliveryError):
    """A failure injected by a fault plan (treated as an infrastructure error, like a failed commit)."""


@dataclass
class FaultPlan:
    #: point → (batch number at which to act, action); consumed when it fires.
    plan: dict[str, tuple[int, str]] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> FaultPlan | None:
        if not text.strip():
            return None
        plan = {}
        for item in text.split(","):
            try:
                point, batch, action = item.strip().split(":")
                n = int(batch.removeprefix("batch="))
            except ValueError:
                raise ValueError(f"fault {item!r}: expected point:batch=N:action") from None
            if point not in POINTS or action not in ACTIONS:
                raise ValueError(f"fault {item!r}: point one of {POINTS}, action one of {ACTIONS}")
            plan[point] = (n, action)
        return cls(plan)

    def hit(self, point: str) -> None:
        if point not in self.plan:
            return
        self.seen[point] = self.seen.get(point, 0) + 1
        batch, action = self.plan[point]
        if self.seen[point] != batch:
            return
        del self.plan[point]
        log.warning("injected fault: %s at %s (batch %d)", action, point, batch)
        if action == "crash":
            os._exit(137)
        raise InjectedFault(f"injected fault at {point} (batch {batch})")
