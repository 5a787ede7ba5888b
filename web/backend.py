"""What every blueprint reads from: the store, the index, the catalogs and the configuration.

One :class:`Backend` per app, kept in ``app.extensions["albireo"]``. Blueprints never open
connections themselves, so a test can hand the factory an already filled store and index, and
``albireo serve`` hands it the configured ones (embedded SQLite or Cassandra/Elasticsearch).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from flask import current_app

from broker.config import Config
from broker.locus import Locus
from broker.ports import Index, Store


@dataclass
class Backend:
    cfg: Config
    store: Store
    index: Index
    #: a ``broker.crossmatch.CatalogSet`` or None when catalogs are disabled / missing.
    catalogs: Any = None
    started_at: float = field(default_factory=time.time)
    #: (time, alert count) samples for the home page's alerts/s figure.
    _rate_samples: list[tuple[float, int]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def locus(self, locus_id: str, with_alerts: bool = True) -> Locus | None:
        return self.store.load_loci([locus_id], with_alerts=with_alerts).get(locus_id)

    def alert_rate(self) -> tuple[dict[str, int], float | None]:
        """Store counts now, and alerts/s since the previous call at least 1 s ago (None on the first)."""
        counts = self.store.counts()
        now = time.time()
        with self._lock:
            samples = self._rate_samples
            samples.append((now, counts.get("alerts", 0)))
            # keep a window of about a minute
            while len(samples) > 2 and now - samples[1][0] > 60:
                samples.pop(0)
            t0, n0 = samples[0]
            rate = (counts.get("alerts", 0) - n0) / (now - t0) if now - t0 >= 1.0 else None
        return counts, rate


def backend() -> Backend:
    return current_app.extensions["albireo"]


def stored_cutout(alert_id: str, kind: str) -> bytes:
    """One alert's stamp (``science``/``template``/``difference``) from the store: 400/404 otherwise."""
    from web.cutouts import KINDS
    from web.errors import bad_request, not_found

    if kind not in KINDS:
        raise bad_request(f"cutout kind {kind!r}: expected one of {', '.join(KINDS)}")
    data = backend().store.cutouts(alert_id).get(kind)
    if data is None:
        raise not_found(f"alert {alert_id!r} has no {kind} cutout")
    return data
