"""Survey normalisers: raw decoded packets (dicts) → :class:`broker.alert.Packet`.

One module per survey; each exposes ``normalize_<survey>(record, schema) -> Packet`` and owns
the knowledge of that survey's field names across its schema history.
"""

from broker.ingest.surveys.lsst import normalize_lsst
from broker.ingest.surveys.ztf import normalize_ztf

__all__ = ["normalize_lsst", "normalize_ztf"]
