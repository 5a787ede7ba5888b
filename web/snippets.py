"""Copy-paste code to read one stream, as the portal's Streams page and ``/api/streams`` show it.

The same code as ``docs/subscribing.md``; ``tests/integration/test_subscribing_docs.py`` runs both
(the docs' blocks and these, with a real user's credentials put in for the placeholders) against
the real consumer listener. A consumer replaces the two placeholders, :data:`USER` and
:data:`PASSWORD`, with what ``albireo users add`` printed, and saves the CA as :data:`CA_FILE`.
"""

from __future__ import annotations

USER = "<your user name>"
PASSWORD = "<your Kafka password>"
#: what ``albireo users ca --out albireo-ca.pem`` writes (the operator hands it out).
CA_FILE = "albireo-ca.pem"


def _consumer_conf(bootstrap: str, group_suffix: str) -> str:
    return f'''consumer = Consumer({{
    "bootstrap.servers": "{bootstrap}",
    "security.protocol": "SASL_SSL",
    "sasl.mechanisms": "SCRAM-SHA-512",
    "sasl.username": "{USER}",
    "sasl.password": "{PASSWORD}",
    "ssl.ca.location": "{CA_FILE}",
    "group.id": "{USER}.{group_suffix}",  # yours: <name> and <name>.<anything>
    "auto.offset.reset": "earliest",
    "isolation.level": "read_committed",
}})'''


def confluent_avro(bootstrap: str, topic: str) -> str:
    """confluent-kafka over SCRAM-SHA-512, our Avro (``albireo`` format): fastavro alone reads it."""
    return f'''import io

import fastavro  # every message is one Avro container file: the schema is in it
from confluent_kafka import Consumer

{_consumer_conf(bootstrap, "avro")}
consumer.subscribe(["{topic}"])
while (msg := consumer.poll(10.0)) is not None:  # stops after 10 s without a message
    if msg.error():
        raise SystemExit(msg.error())
    for locus in fastavro.reader(io.BytesIO(msg.value())):
        print(locus["locus_id"], locus["ra"], locus["dec"], locus["tags"])
consumer.close()
'''


def stream_file(path: str) -> str:
    """The embedded broker's stream file (``albireo demo``): length-prefixed messages, each a container file."""
    return f'''import io
import struct

import fastavro

with open("{path}", "rb") as fh:
    while head := fh.read(4):  # each message: 4-byte big-endian length, then one Avro container file
        (size,) = struct.unpack(">I", head)
        for locus in fastavro.reader(io.BytesIO(fh.read(size))):
            print(locus["locus_id"], locus["ra"], locus["dec"], locus["tags"])
'''


def confluent_antares(bootstrap: str, topic: str) -> str:
    """confluent-kafka over SCRAM-SHA-512, ANTARES's zlib-compressed BSON (``antares`` format)."""
    return f'''import zlib

import bson  # pip install bson (what antares-client uses; not pymongo's)
from confluent_kafka import Consumer

{_consumer_conf(bootstrap, "bson")}
consumer.subscribe(["{topic}"])
while (msg := consumer.poll(10.0)) is not None:  # stops after 10 s without a message
    if msg.error():
        raise SystemExit(msg.error())
    locus = bson.loads(zlib.decompress(msg.value()))
    print(locus["id"], locus["ra"], locus["dec"], locus["tags"])
consumer.close()
'''


def antares_client(bootstrap: str, stream: str) -> str:
    """The unmodified antares-client over SASL_SSL/PLAIN (streams in ``antares`` format)."""
    return f'''from antares_client import StreamingClient

client = StreamingClient(
    topics=["{stream}"],  # antares-client subscribes to client.{stream}
    api_key="{USER}",
    api_secret="{PASSWORD}",
    bootstrap_server="{bootstrap}",
    ssl_ca_location="{CA_FILE}",
    group="{USER}.antares",
)
while True:
    topic, locus = client.poll(timeout=10)  # (None, None) after 10 s without a message
    if locus is None:
        break
    print(topic, locus.locus_id, locus.ra, locus.dec, locus.tags)
client.close()
'''
