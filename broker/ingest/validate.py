"""The last ingest step: reject packets later stages cannot place or key (a dead letter with a reason)."""

from __future__ import annotations

import math

from broker.alert import Packet
from broker.ingest.framing import (
    DecodeError,
)


def validate_packet(packet: Packet) -> None:
    """Reject packets later stages cannot place or key: raises DecodeError with a reason.

    Reasons: ``missing_id`` (trigger or history alert without an id), ``invalid_coordinates``
    (trigger ra not in [0, 360) or dec not in [-90, 90], NaN included), ``invalid_time``
    (trigger mjd not finite). History rows may lack a position (upper limits).
    """
    t = packet.trigger
    if not t.alert_id:
        raise DecodeError("missing_id", "trigger alert has no id")
    ra, dec = t.ra, t.dec
    if ra is None or dec is None or not (0.0 <= ra < 360.0) or not (-90.0 <= dec <= 90.0):
        raise DecodeError("invalid_coordinates", f"{t.alert_id}: ra={ra!r} dec={dec!r}")
    if t.mjd is None or not math.isfinite(t.mjd):
        raise DecodeError("invalid_time", f"{t.alert_id}: mjd={t.mjd!r}")
    for i, h in enumerate(packet.history):
        if not h.alert_id:
            raise DecodeError("missing_id", f"{t.alert_id}: history alert {i} has no id")
