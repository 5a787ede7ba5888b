"""The tag streams: what each carries, where it is published, and copy-paste code to subscribe to it."""

from __future__ import annotations

from typing import Any

from broker.assemble import stream_router
from web import snippets
from web.backend import Backend
from web.filters_view import list_filters


def streams(b: Backend, consumer_bootstrap: str = "") -> list[dict[str, Any]]:
    """Every stream a filter declares or the index holds, with its format, topics and subscription code.

    ``consumer_bootstrap`` is the SASL_SSL listener consumers connect to (default: what ``albireo
    users`` tells them); the PLAINTEXT address the pipeline uses is never shown.
    """
    from web.auth import users

    consumer_bootstrap = consumer_bootstrap or users().consumer_bootstrap
    router = stream_router(b.cfg)
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
        fmt = router.format_of(t)
        avro_topic, antares_topic = router.topics(t)
        s["format"] = fmt
        s["topics"] = [x for x, on in ((avro_topic, fmt != "antares"), (antares_topic, fmt != "albireo")) if on]
        s["topic"] = s["topics"][0]
        s["loci"] = counts.get(t, 0)
        s["confluent_kafka"] = (snippets.confluent_antares(consumer_bootstrap, antares_topic) if fmt == "antares"
                                else snippets.confluent_avro(consumer_bootstrap, avro_topic))
        s["antares_client"] = snippets.antares_client(consumer_bootstrap, t) if fmt != "albireo" else ""
        #: the embedded demo's file of the same stream (``albireo demo`` writes ``albireo-demo/streams/``).
        s["stream_file"] = (snippets.stream_file(f"albireo-demo/streams/{avro_topic}.avro-stream")
                            if fmt != "antares" else "")
        out.append(s)
    return out
