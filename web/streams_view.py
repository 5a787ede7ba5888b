"""The tag streams: what each carries, and copy-paste code to subscribe to it."""

from __future__ import annotations

from typing import Any

from web.backend import Backend
from web.filters_view import list_filters


def streams(b: Backend) -> list[dict[str, Any]]:
    prefix = b.cfg.kafka.output_prefix
    counts = b.index.tag_counts()
    by_tag: dict[str, dict[str, Any]] = {}
    for f in list_filters(b)[0]:
        for t in f.get("output_tags") or []:
            by_tag.setdefault(t, {"tag": t, "filters": [], "description": ""})
            by_tag[t]["filters"].append(f["name"])
            by_tag[t]["description"] = by_tag[t]["description"] or f.get("description", "")
    for t in counts:
        by_tag.setdefault(t, {"tag": t, "filters": [], "description": ""})
    out = []
    for t in sorted(by_tag):
        s = by_tag[t]
        s["topic"] = f"{prefix}{t}"
        s["loci"] = counts.get(t, 0)
        s["confluent_kafka"] = confluent_snippet(b, s["topic"])
        s["antares_client"] = antares_snippet(b, s["topic"])
        out.append(s)
    return out


def confluent_snippet(b: Backend, topic: str) -> str:
    return f'''from confluent_kafka import Consumer
import fastavro, io

consumer = Consumer({{
    "bootstrap.servers": "{b.cfg.kafka.bootstrap_servers}",
    "group.id": "my-group",
    "auto.offset.reset": "earliest",
    "isolation.level": "read_committed",
}})
consumer.subscribe(["{topic}"])
while True:
    msg = consumer.poll(1.0)
    if msg is None or msg.error():
        continue
    for locus in fastavro.reader(io.BytesIO(msg.value())):
        print(locus["locus_id"], locus.get("tags"))
'''


def antares_snippet(b: Backend, topic: str) -> str:
    return f'''import os
os.environ["ANTARES_API_BASE_URL"] = "<this server>/v2/"   # before importing antares_client
from antares_client import search, StreamingClient

# Loci of this stream, newest first, over the API:
for locus in search.search({{"query": {{"bool": {{"filter": {{"term": {{"tags": "{topic.removeprefix(b.cfg.kafka.output_prefix)}"}}}}}}}}}}):
    print(locus.locus_id, locus.ra, locus.dec)

# Or live, from Kafka:
client = StreamingClient(topics=["{topic}"], api_key="", api_secret="",
                         host="{b.cfg.kafka.bootstrap_servers}")
for topic, locus in client.iter():
    print(topic, locus.locus_id)
'''
