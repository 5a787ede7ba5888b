"""The last ingest step: reject packets later stages cannot place or key (a dead letter with a reason).

History rows are hostile input too: a row dated in the future would become ``locus.alert``
(the newest alert) for ever, and a NaN time was silently lost by the store. Such rows are
dropped from the packet and counted by reason; the trigger and the other rows are kept.
"Future" is judged against the clock, not the trigger: packets rebuilt from a stored locus
(``broker/ops/devkit_ztf.py``) legitimately carry history later than their trigger.
"""

from __future__ import annotations

import math
import time
from collections import Counter

import broker.ingest.framing as framing
from broker.alert import Packet
from broker.ingest.framing import (
    DecodeError,
)
from broker.ingest.surveys.lsst import PLAUSIBLE_MJD


def validate_packet(packet: Packet) -> Counter:
    """Reject packets later stages cannot place or key: raises DecodeError with a reason.

    Reasons: ``missing_id`` (trigger or history alert without an id), ``invalid_coordinates``
    (trigger ra not in [0, 360) or dec not in [-90, 90], NaN included), ``invalid_time``
    (trigger mjd not finite), ``implausible_time`` (trigger mjd outside :data:`PLAUSIBLE_MJD`,
    1970-2100). History rows may lack a position (upper limits). History rows with a time that
    is not finite (``history_nan_time``), outside 1970-2100 (``history_implausible_time``) or
    later than now by over ``ingest.history_future_days`` (``history_in_future``)
    are removed from ``packet.history``; returns reason → rows removed.
    """
    t = packet.trigger
    if not t.alert_id:
        raise DecodeError("missing_id", "trigger alert has no id")
    ra, dec = t.ra, t.dec
    if ra is None or dec is None or not (0.0 <= ra < 360.0) or not (-90.0 <= dec <= 90.0):
        raise DecodeError("invalid_coordinates", f"{t.alert_id}: ra={ra!r} dec={dec!r}")
    if t.mjd is None or not math.isfinite(t.mjd):
        raise DecodeError("invalid_time", f"{t.alert_id}: mjd={t.mjd!r}")
    lo, hi = PLAUSIBLE_MJD
    if not lo <= t.mjd <= hi:
        raise DecodeError("implausible_time", f"{t.alert_id}: mjd={t.mjd!r} is no plausible MJD ({lo:.0f}-{hi:.0f})")
    latest = time.time() / 86400.0 + 40587.0 + framing.LIMITS.history_future_days  # MJD of now, + slack
    dropped: Counter = Counter()
    kept = []
    for i, h in enumerate(packet.history):
        if not h.alert_id:
            raise DecodeError("missing_id", f"{t.alert_id}: history alert {i} has no id")
        m = h.mjd
        if m is None or not math.isfinite(m):
            dropped["history_nan_time"] += 1
        elif not lo <= m <= hi:
            dropped["history_implausible_time"] += 1
        elif m > latest:
            dropped["history_in_future"] += 1
        else:
            kept.append(h)
    if dropped:
        packet.history = kept
    return dropped
