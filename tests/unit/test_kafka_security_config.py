"""The local broker's security configuration without a broker: the CA and certificate, the listeners.

A real TLS handshake (Python's ssl, both ends) checks the certificate chain the way librdkafka
does: the server presents ``server.pem``, the client trusts only ``ca.pem`` and checks the name.
The running broker with this configuration is tested in tests/integration/test_stream_access_kafka.py.
"""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from broker.ops import services
from broker.ops.certificates import ensure_broker_tls


def _handshake(tls_dir: Path, ca: Path, name: str) -> str:
    """Serve one TLS connection with the broker's key and certificate; return what the client saw."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tls_dir / "server.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as s:
                s.recv(1)
        except (ssl.SSLError, OSError):
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        client_ctx = ssl.create_default_context(cafile=str(ca))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                client_ctx.wrap_socket(raw, server_hostname=name) as s:
            return s.version() or ""
    finally:
        listener.close()
        t.join(5)


def test_the_ca_signs_a_certificate_for_the_broker_names(tmp_path):
    tls = ensure_broker_tls(tmp_path, ["127.0.0.1", "localhost"])
    assert tls.issued and tls.ca_cert.exists()
    assert oct((tmp_path / "ca.key").stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "server.pem").stat().st_mode & 0o777) == "0o600"
    assert _handshake(tmp_path, tls.ca_cert, "127.0.0.1").startswith("TLS")
    assert _handshake(tmp_path, tls.ca_cert, "localhost").startswith("TLS")
    with pytest.raises(ssl.SSLCertVerificationError):  # a name it was not made for
        _handshake(tmp_path, tls.ca_cert, "kafka.example.org")
    other = ensure_broker_tls(tmp_path / "other", ["127.0.0.1"])
    with pytest.raises(ssl.SSLCertVerificationError):  # another CA does not vouch for it
        _handshake(tmp_path, other.ca_cert, "127.0.0.1")


def test_restarts_keep_the_ca_and_new_names_reissue_only_the_server_certificate(tmp_path):
    ensure_broker_tls(tmp_path, ["127.0.0.1"])
    ca = (tmp_path / "ca.pem").read_bytes()
    server = (tmp_path / "server.pem").read_bytes()
    again = ensure_broker_tls(tmp_path, ["127.0.0.1"])
    assert not again.issued and (tmp_path / "server.pem").read_bytes() == server
    renamed = ensure_broker_tls(tmp_path, ["127.0.0.1", "kafka.example.org"])
    assert renamed.issued and (tmp_path / "ca.pem").read_bytes() == ca  # consumers' CA copies stay valid
    assert _handshake(tmp_path, renamed.ca_cert, "kafka.example.org").startswith("TLS")


def _props(monkeypatch, tmp_path, **env) -> dict[str, str]:
    monkeypatch.setenv("ALBIREO_SERVICES__HOME", str(tmp_path))
    for k, v in env.items():
        monkeypatch.setenv(f"ALBIREO_SERVICES__{k.upper()}", v)
    return services._kafka_properties(services._paths("kafka"), services.ports("kafka"),  # noqa: SLF001
                                      tmp_path / "server.pem", tmp_path / "plain")


def test_plaintext_stays_on_loopback_whatever_the_consumer_listener_binds(monkeypatch, tmp_path):
    props = _props(monkeypatch, tmp_path, kafka_sasl_host="0.0.0.0", kafka_port="19092", kafka_sasl_port="19094")
    listeners = dict(x.split("://") for x in props["listeners"].split(","))
    assert listeners == {"PLAINTEXT": "127.0.0.1:19092", "CONTROLLER": f"127.0.0.1:{services.ports('kafka')['controller']}",
                         "CONSUMERS": "0.0.0.0:19094"}
    advertised = dict(x.split("://") for x in props["advertised.listeners"].split(","))
    assert advertised["PLAINTEXT"] == "127.0.0.1:19092"
    assert advertised["CONSUMERS"] == f"{socket.gethostname()}:19094"  # a name consumers can reach
    assert props["listener.security.protocol.map"].endswith("CONSUMERS:SASL_SSL")
    assert props["super.users"] == "User:ANONYMOUS" and props["allow.everyone.if.no.acl.found"] == "false"
    assert props["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert props["listener.name.consumers.sasl.enabled.mechanisms"] == "SCRAM-SHA-512,PLAIN"
    assert str(tmp_path / "plain") in props["listener.name.consumers.plain.sasl.jaas.config"]


def test_an_advertised_name_is_what_consumers_are_told(monkeypatch, tmp_path):
    props = _props(monkeypatch, tmp_path, kafka_sasl_advertised_host="kafka.example.org")
    assert "CONSUMERS://kafka.example.org:" in props["advertised.listeners"]
    assert services.kafka_consumer_endpoint().startswith("kafka.example.org:")
