"""Stage 1, ingest: raw message bytes → validated, normalised :class:`~broker.alert.Packet` objects.

* :mod:`~broker.ingest.framing`    Avro framings: container files, Confluent wire format, single-object, schemaless;
* :mod:`~broker.ingest.registries` where writer schemas come from: Rubin's schemas, a Confluent registry, fingerprints;
* :mod:`~broker.ingest.decode`     sniff the framing, decode, pick the survey normaliser;
* :mod:`~broker.ingest.surveys`    one normaliser per survey (ZTF, Rubin/LSST);
* :mod:`~broker.ingest.validate`   reject what later stages cannot place or key.

Everything that goes wrong raises :class:`~broker.ingest.framing.DecodeError` with a short
``reason``, which the pipeline turns into a dead letter.
"""

from broker.ingest.decode import decode_message
from broker.ingest.framing import DecodeError
from broker.ingest.validate import validate_packet

__all__ = ["DecodeError", "decode_message", "validate_packet"]
