"""in_nearby_galaxy: the locus lies inside a cataloged NGC/IC galaxy's own extent.

Transients inside nearby galaxies are the ones worth a spectrum first
(distance known, host known). The cross-match stage matches each locus against
OpenNGC within each object's own semi-major axis; this filter keeps the
galaxy matches, names the host and tags the locus. Solar-system objects
(ZTF ``ssnamenr`` set) are skipped, as ANTARES's ``extragalactic`` filter does.
"""

from __future__ import annotations

import math

from broker.filtering.contract import BaseFilter

CATALOG = "openngc"
GALAXY_TYPES = {"G", "GPair", "GTrpl", "GGroup"}


class InNearbyGalaxy(BaseFilter):
    REQUIRED_ALERT_PROPERTIES = ["ant_survey"]
    OUTPUT_LOCUS_TAGS = [{"name": "in_nearby_galaxy", "description": "Inside an NGC/IC galaxy (OpenNGC)."}]
    OUTPUT_LOCUS_PROPERTIES = [
        {"name": "host_name", "type": "str", "description": "NGC/IC name of the host galaxy."},
        {"name": "host_distance_arcsec", "type": "float", "description": "Distance to the host's centre."},
    ]

    def _run(self, locus) -> None:
        if locus.alert.properties["ant_survey"] == 2:
            return
        if locus.properties.get("ztf_ssnamenr", "null") not in ("null", None, ""):
            return
        rows = [r for r in locus.catalog_objects.get(CATALOG, []) if str(r.get("type", "G")) in GALAXY_TYPES]
        if not rows:
            return
        host = min(rows, key=lambda r: _distance(r.get("match_distance_arcsec")))
        locus.set_property("host_name", str(host.get("name", ""))[:200])
        d = _distance(host.get("match_distance_arcsec"))
        if math.isfinite(d):
            locus.set_property("host_distance_arcsec", d)
        locus.tag("in_nearby_galaxy")


def _distance(x) -> float:
    """A match distance as a finite float, inf for anything else (so it sorts last and is not reported)."""
    try:
        d = float(x)
    except (TypeError, ValueError):
        return math.inf
    return d if math.isfinite(d) and d >= 0 else math.inf
