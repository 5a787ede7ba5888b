"""An example reconstruction plug-in (``[scans] plugins = ["tests.scans_plugin_example"]``).

A real reconstruction registers itself the same way when its module is imported; this one is a
per-pixel callable (no numpy), the shape a reconstruction that fits one direction at a time has.
"""

from __future__ import annotations

import math

from broker.multimessenger.scans.reconstructions import Param, angular_distance, register_per_pixel


@register_per_pixel("example_ring", params={"radius_deg": Param(5.0, 0.5, 45.0, "ring radius (deg)")})
def ring(event, ra: float, dec: float, params: dict[str, float]) -> tuple[float, float, float]:
    """Best on a ring of ``radius_deg`` around the event: llh = (d − r)² / 2 (deg²)."""
    d = math.degrees(float(angular_distance(ra, dec, event.ra, event.dec)))
    return (d - params["radius_deg"]) ** 2 / 2.0, 0.0, d
