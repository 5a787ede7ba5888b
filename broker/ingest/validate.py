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
from broker.alert import Alert, Packet
from broker.ingest.framing import (
    DecodeError,
)
from broker.ingest.surveys.lsst import PLAUSIBLE_MJD

#: Longest survey-object id admitted. Ids become storage keys (Cassandra partition keys are at
#: most 64 KiB, and one packet's object key partitions every alert it carries), so an oversized
#: id must be a dead letter here rather than a store write that fails its whole batch again on
#: every retry. Real ids are far shorter: ZTF ``objectId`` 12 characters, Rubin ``diaObjectId``
#: 19 digits.
MAX_ID_CHARS = 256
#: Longest alert id admitted: twice :data:`MAX_ID_CHARS`, because a ZTF upper limit's id embeds
#: its object id (``ztf_upper_limit:<objectId>-<jd digits>``).
MAX_ALERT_ID_CHARS = 2 * MAX_ID_CHARS


def _check_ids(a: Alert, where: str) -> None:
    """Raise ``oversized_id`` when ``a``'s alert id or survey-object id is over its bound."""
    for name, value, bound in (("object id", a.object_id, MAX_ID_CHARS), ("alert id", a.alert_id, MAX_ALERT_ID_CHARS)):
        if value is not None and len(value) > bound:
            raise DecodeError("oversized_id",
                              f"{where} {name} has {len(value)} characters (at most {bound}): {value[:40]!r}...")


def validate_packet(packet: Packet) -> Counter:
    """Reject packets later stages cannot place or key: raises DecodeError with a reason.

    Reasons: ``missing_id`` (trigger or history alert without an id), ``oversized_id`` (an
    object id over :data:`MAX_ID_CHARS` or an alert id over :data:`MAX_ALERT_ID_CHARS`
    characters, in the trigger or any history row),
    ``invalid_coordinates``
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
    _check_ids(t, "trigger")
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
        if len(h.alert_id) > MAX_ALERT_ID_CHARS or (h.object_id is not None and len(h.object_id) > MAX_ID_CHARS):
            _check_ids(h, f"{t.alert_id}: history alert {i}")
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
