"""Stream access on the real local Kafka: the SASL_SSL consumer listener, SCRAM and PLAIN, ACLs.

Everything goes through what an operator and a consumer use: ``Users`` (what ``albireo users``
calls) makes the users and grants; consumers are plain confluent-kafka clients and the unmodified
``antares_client.StreamingClient``; the broker is the one ``albireo services up kafka`` starts (its
default configuration has the consumer listener and the StandardAuthorizer). Every refusal is
shown twice: the error the client gets, and nothing consumed (or produced).
"""

from __future__ import annotations

import logging
import time
import uuid

import pytest

from broker.assemble import build_pipeline, open_users
from broker.config import load_config
from broker.emit import decode_locus_message, encode_locus
from broker.filtering.contract import BaseFilter
from broker.filtering.runner import InProcessRunner, load_filter_class
from broker.locus import Locus
from broker.ops import services

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
STREAM = f"acc{RUN}"  # a stream only this run publishes to
OTHER = f"acc{RUN}-other"


@pytest.fixture(scope="module")
def kafka() -> dict[str, str]:
    services.up(["kafka"])
    return {"plaintext": services.endpoints()["kafka"], "consumers": services.check_kafka_consumer_listener(),
            "ca": str(services.kafka_ca_file())}


@pytest.fixture(scope="module")
def users(kafka, tmp_path_factory):
    cfg = load_config()
    cfg.kafka.bootstrap_servers = kafka["plaintext"]
    cfg.users.db = str(tmp_path_factory.mktemp("users") / "users.sqlite")
    svc = open_users(cfg)
    yield svc
    for u in svc.list():  # leave the shared broker as we found it
        svc.remove(u["name"])


@pytest.fixture(scope="module")
def alice(users):
    """A consumer granted STREAM only."""
    new = users.add(f"alice-{RUN}")
    users.grant(new.name, [STREAM])
    return new


@pytest.fixture(scope="module")
def published(kafka) -> list[str]:
    """Three locus messages on each of STREAM and OTHER, written by the pipeline's principal (PLAINTEXT)."""
    from broker.adapters.streams.kafka import KafkaSink

    sink = KafkaSink(kafka["plaintext"])
    ids = []
    for i in range(3):
        locus = _locus(f"ALB{RUN}{i}")
        for stream in (STREAM, OTHER):
            sink.publish(f"albireo.loci.{stream}", locus.locus_id.encode(), encode_locus(locus, stream))
        ids.append(locus.locus_id)
    sink.flush()
    return ids


def _locus(locus_id: str) -> Locus:
    from broker.alert import Alert

    locus = Locus(locus_id=locus_id, ra=150.0, dec=2.0)
    locus.add_alerts([Alert(f"ztf_candidate:{locus_id}", 1, 60000.5, 150.0, 2.0, "g", 18.0, 0.1, 20.0, {}, "ZTF24x")])
    locus.user_tags.add(STREAM)
    return locus


def _sasl(kafka, user: str, password: str, mechanism: str = "SCRAM-SHA-512") -> dict:
    return {"bootstrap.servers": kafka["consumers"], "security.protocol": "SASL_SSL", "sasl.mechanisms": mechanism,
            "sasl.username": user, "sasl.password": password, "ssl.ca.location": kafka["ca"]}


def _consume(conf: dict, topics: list[str], want: int, timeout_s: float = 30.0) -> tuple[list, list, list]:
    """(messages, message errors, client errors from error_cb) until ``want`` messages, an error, or the timeout."""
    from confluent_kafka import Consumer

    client_errors: list = []
    c = Consumer({**conf, "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "error_cb": client_errors.append})
    c.subscribe(topics)
    got, errors, deadline = [], [], time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and len(got) < want and not errors:
            m = c.poll(0.5)
            if m is None:
                if client_errors and any(e.code() == e._AUTHENTICATION for e in client_errors):  # noqa: SLF001
                    break
                continue
            if m.error():
                errors.append(m.error())
            else:
                got.append(m)
    finally:
        c.close()
    return got, errors, client_errors


# ------------------------------------------------------------------------------------- SCRAM (our clients)
def test_a_granted_stream_is_read_over_scram(kafka, alice, published):
    got, errors, _ = _consume({**_sasl(kafka, alice.name, alice.password), "group.id": f"{alice.name}.reader"},
                              [f"albireo.loci.{STREAM}"], want=3)
    assert errors == []
    assert [decode_locus_message(m.value())["locus_id"] for m in got] == published


def test_a_wrong_password_is_refused_and_reads_nothing(kafka, alice, published):
    for mechanism in ("SCRAM-SHA-512", "PLAIN"):
        got, _, client_errors = _consume({**_sasl(kafka, alice.name, alice.password + "x", mechanism),
                                          "group.id": f"{alice.name}.wrong"}, [f"albireo.loci.{STREAM}"],
                                         want=1, timeout_s=15)
        assert got == []
        assert any(e.code() == e._AUTHENTICATION for e in client_errors), (mechanism, client_errors)  # noqa: SLF001


def test_an_unknown_user_is_refused(kafka, published):
    got, _, client_errors = _consume({**_sasl(kafka, f"nobody-{RUN}", "whatever"), "group.id": f"nobody-{RUN}"},
                                     [f"albireo.loci.{STREAM}"], want=1, timeout_s=15)
    assert got == [] and any(e.code() == e._AUTHENTICATION for e in client_errors)  # noqa: SLF001


def test_an_ungranted_stream_is_refused(kafka, alice, published):
    from confluent_kafka import KafkaError

    got, errors, _ = _consume({**_sasl(kafka, alice.name, alice.password), "group.id": f"{alice.name}.other"},
                              [f"albireo.loci.{OTHER}"], want=1)
    assert got == []
    assert [e.code() for e in errors][:1] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]


def test_another_users_consumer_group_is_refused(kafka, users, alice, published):
    from confluent_kafka import KafkaError

    bob = users.add(f"bob-{RUN}", with_key=False)
    users.grant(bob.name, [STREAM])
    got, errors, _ = _consume({**_sasl(kafka, bob.name, bob.password), "group.id": f"{alice.name}.reader"},
                              [f"albireo.loci.{STREAM}"], want=1)
    assert got == [] and [e.code() for e in errors][:1] == [KafkaError.GROUP_AUTHORIZATION_FAILED]


def test_consumers_are_told_only_of_the_sasl_listener_and_plaintext_is_loopback(kafka, alice):
    """The PLAINTEXT listener (super user) binds 127.0.0.1 only; a consumer's metadata names the SASL_SSL one."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    props = (services._paths("kafka").conf / "server.properties").read_text()  # noqa: SLF001
    assert f"listeners=PLAINTEXT://127.0.0.1:{services.ports('kafka')['port']}," in props
    assert "super.users=User:ANONYMOUS" in props and "allow.everyone.if.no.acl.found=false" in props
    meta = AdminClient(_sasl(kafka, alice.name, alice.password)).list_topics(timeout=15)
    assert {f"{b.host}:{b.port}" for b in meta.brokers.values()} == {kafka["consumers"]}
    assert f"albireo.loci.{OTHER}" not in meta.topics  # topics it may not read are not even listed
    with pytest.raises(KafkaException):  # and without a credential, not even metadata
        AdminClient({**_sasl(kafka, "nobody", "x"), "socket.timeout.ms": 5000}).list_topics(timeout=8)


def test_revoking_a_grant_stops_the_next_read(kafka, users, published):
    from confluent_kafka import KafkaError

    carol = users.add(f"carol-{RUN}", with_key=False)
    users.grant(carol.name, [STREAM])
    conf = {**_sasl(kafka, carol.name, carol.password), "group.id": f"{carol.name}.r"}
    assert len(_consume(conf, [f"albireo.loci.{STREAM}"], want=3)[0]) == 3
    users.revoke(carol.name, [STREAM])
    time.sleep(1.0)  # the ACL change reaches the authorizer through the metadata log
    got, errors, _ = _consume({**conf, "group.id": f"{carol.name}.r2"}, [f"albireo.loci.{STREAM}"], want=1)
    assert got == [] and [e.code() for e in errors][:1] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]


def test_a_new_password_replaces_the_old_one_for_both_mechanisms(kafka, users, published):
    dave = users.add(f"dave-{RUN}", with_key=False)
    users.grant(dave.name, [STREAM])
    old = dave.password
    new = users.set_password(dave.name)
    for mechanism in ("SCRAM-SHA-512", "PLAIN"):
        got, _, client_errors = _consume({**_sasl(kafka, dave.name, old, mechanism), "group.id": f"{dave.name}.o"},
                                         [f"albireo.loci.{STREAM}"], want=1, timeout_s=15)
        assert got == [] and client_errors, mechanism
        got, errors, _ = _consume({**_sasl(kafka, dave.name, new, mechanism), "group.id": f"{dave.name}.n"},
                                  [f"albireo.loci.{STREAM}"], want=3)
        assert errors == [] and len(got) == 3, mechanism


# ------------------------------------------------------------------------------------- writing
def test_only_the_pipeline_principal_writes_over_sasl(kafka, users, alice):
    """A ``pipeline`` user produces streams over SASL_SSL; a consumer's credentials produce nothing."""
    from broker.adapters.streams.kafka import KafkaSink
    from broker.ports import DeliveryError

    pipe = users.add(f"pipe-{RUN}", role="pipeline")
    topic = f"albireo.loci.{STREAM}-w"
    sink = KafkaSink(kafka["consumers"], extra=_sasl(kafka, pipe.name, pipe.password))
    sink.publish(topic, b"k", b"by the pipeline")
    sink.flush()
    assert sink.delivered == 1
    consumer_sink = KafkaSink(kafka["consumers"], extra=_sasl(kafka, alice.name, alice.password))
    consumer_sink.publish(topic, b"k", b"forged by a consumer")
    with pytest.raises(DeliveryError):
        consumer_sink.flush(20)
    # what is on the topic: the pipeline's message only (read with the super user on loopback)
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": kafka["plaintext"], "group.id": f"check-{RUN}", "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    seen, deadline = [], time.monotonic() + 20
    while time.monotonic() < deadline and not seen:
        m = c.poll(0.5)
        if m is not None and not m.error():
            seen.append(m.value())
    time.sleep(1)
    m = c.poll(1)
    c.close()
    assert seen == [b"by the pipeline"] and (m is None or m.error())


def test_the_brokers_acls_match_the_records(kafka, users, alice):
    assert users.check() == {}
    from broker.ports import AccessRule

    extra = AccessRule("topic", f"albireo.loci.{OTHER}", "literal", "read")
    users.access.allow(alice.name, [extra])  # an ACL added behind the records' back
    drift = users.check()
    assert drift == {alice.name: {"missing": [], "extra": [extra]}}
    users.repair(alice.name)
    assert users.check() == {}


# ------------------------------------------------------------------------------------- antares-client
class _TagsStream(BaseFilter):
    OUTPUT_LOCUS_TAGS = [{"name": STREAM + "-ant", "description": "every locus, for the antares-client test"}]

    def _run(self, locus):
        locus.tag(STREAM + "-ant")


@pytest.fixture(scope="module")
def antares_stream(kafka, tmp_path_factory, shared_data) -> dict:
    """The real pipeline over real ZTF packets, its stream configured as ANTARES format, out to Kafka."""
    from broker.adapters.storage.sqlite import SQLiteStore
    from broker.adapters.streams.files import FileSource
    from broker.adapters.streams.kafka import KafkaSink
    from broker.association import Associator

    stream = STREAM + "-ant"
    cfg = load_config(env={"ALBIREO_STREAMS__FORMATS": f"{stream}=antares"})
    cfg.catalogs.enabled = False
    assoc = Associator(cfg.association.radius_arcsec)
    store = SQLiteStore(tmp_path_factory.mktemp("ant") / "s.sqlite", assoc.order)
    sink = KafkaSink(kafka["plaintext"])
    pipe = build_pipeline(cfg, store, sink, filters=InProcessRunner([load_filter_class(_TagsStream)]),
                          associator=assoc)
    res = pipe.process(FileSource([shared_data / "ztf" / "fink-datasim"]).poll_batch(10_000, 0))
    sink.close()
    assert res.tags[stream] >= 3
    loci = {x.locus_id: x for batch in store.iter_loci() for x in batch}
    return {"stream": stream, "count": res.tags[stream], "loci": loci}


def _antares_client(kafka, user: str, password: str, stream: str, group: str):
    from antares_client import StreamingClient

    return StreamingClient(topics=[stream], api_key=user, api_secret=password, bootstrap_server=kafka["consumers"],
                           ssl_ca_location=kafka["ca"], group=group)


def test_antares_client_consumes_a_granted_stream(kafka, users, antares_stream):
    erin = users.add(f"erin-{RUN}", with_key=False)
    users.grant(erin.name, [antares_stream["stream"]])
    client = _antares_client(kafka, erin.name, erin.password, antares_stream["stream"], f"{erin.name}.ant")
    got = {}
    try:
        while len(got) < antares_stream["count"]:
            topic, locus = client.poll(timeout=30)
            assert topic == f"client.{antares_stream['stream']}", "no message within 30 s"
            got[locus.locus_id] = locus
    finally:
        client.close()
    assert set(got) <= set(antares_stream["loci"]) and len(got) == antares_stream["count"]
    for lid, locus in got.items():
        mine = antares_stream["loci"][lid]
        assert antares_stream["stream"] in locus.tags
        assert (locus.ra, locus.dec) == (pytest.approx(mine.ra), pytest.approx(mine.dec))
        assert locus.properties["num_alerts"] == mine.properties["num_alerts"]


def test_antares_client_with_a_wrong_secret_gets_nothing_and_an_authentication_error(kafka, users, antares_stream,
                                                                                      caplog):
    frank = users.add(f"frank-{RUN}", with_key=False)
    users.grant(frank.name, [antares_stream["stream"]])
    client = _antares_client(kafka, frank.name, "not-" + frank.password, antares_stream["stream"], f"{frank.name}.a")
    with caplog.at_level(logging.ERROR, logger="antares_client.stream"):
        try:
            assert client.poll(timeout=10) == (None, None)
        finally:
            client.close()
    assert any("SASL authentication error" in r.getMessage() and "Invalid username or password" in r.getMessage()
               for r in caplog.records)


def test_antares_client_on_an_ungranted_stream_is_refused(kafka, users, antares_stream):
    from antares_client.exceptions import AntaresException
    from confluent_kafka import KafkaError

    gina = users.add(f"gina-{RUN}", with_key=False)
    users.grant(gina.name, [OTHER])  # a grant, but not on this stream
    client = _antares_client(kafka, gina.name, gina.password, antares_stream["stream"], f"{gina.name}.a")
    try:
        with pytest.raises(AntaresException) as caught:
            client.poll(timeout=30)
    finally:
        client.close()
    assert caught.value.__cause__.args[0] == KafkaError.TOPIC_AUTHORIZATION_FAILED
