"""A private certificate authority and the Kafka broker's TLS certificate, as PEM files.

Why Python ``cryptography`` rather than the JDK's ``keytool``: Kafka (since 2.7) reads PEM
keystores directly (``ssl.keystore.type=PEM``), and librdkafka clients (confluent-kafka,
antares-client) want the CA as a PEM file too, so PEM is the one format both ends need. keytool
makes JKS/PKCS12 stores and would need several invocations (a CA, a request, a signature, an
import, an export) plus a conversion for the clients; ``cryptography`` writes the CA, the key and
the signed certificate with its subject-alternative names in a few calls, checked by the same
library that reads them back (:func:`ensure_broker_tls` regenerates what no longer fits).

Files in ``<dir>`` (mode 0600 for keys)::

    ca.pem          the CA certificate: what a consumer passes as ssl.ca.location
    ca.key          the CA's private key (never leaves the broker host)
    server.pem      the broker's PKCS#8 private key followed by its certificate and the CA
                    (Kafka's PEM keystore: key + chain in one file)
    server.json     the names the server certificate was made for (a change re-issues it)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

CA_DAYS = 3650
SERVER_DAYS = 825
#: a certificate this close to expiry is re-issued on the next start.
RENEW_DAYS = 30


@dataclass(frozen=True)
class BrokerTLS:
    ca_cert: Path
    keystore: Path
    issued: bool  #: True when this call (re)made the server certificate


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    os.replace(tmp, path)


def default_names(extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The names a local broker answers to: loopback, this host's names, and any advertised host."""
    names = ["localhost", "127.0.0.1", socket.gethostname()]
    try:
        names.append(socket.getfqdn())
    except OSError:
        pass
    names.extend(extra)
    return sorted({n for n in names if n and n not in ("0.0.0.0", "::")})


def _san(names: list[str]):
    from cryptography import x509

    out = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(out)


def _new_key():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


def _make_ca(directory: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Albireo"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"Albireo local CA ({socket.gethostname()})")])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write_private(directory / "ca.key", key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    _write_public(directory / "ca.pem", cert.public_bytes(serialization.Encoding.PEM))


def _load_ca(directory: Path):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
    return cert, key


def _issue_server(directory: Path, names: list[str]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert, ca_key = _load_ca(directory)
    key = _new_key()
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Albireo"),
                                     x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
            .add_extension(_san(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
           + cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(directory / "server.pem", pem)
    _write_public(directory / "server.json", json.dumps({"names": names}).encode())


def _server_fits(directory: Path, names: list[str]) -> bool:
    """The server certificate exists, was made for ``names``, is signed by the current CA and not expiring."""
    from cryptography import x509

    try:
        recorded = json.loads((directory / "server.json").read_text())["names"]
        certs = x509.load_pem_x509_certificates((directory / "server.pem").read_bytes())
    except (FileNotFoundError, KeyError, ValueError):
        return False
    ca_cert, _ = _load_ca(directory)
    if recorded != names or len(certs) < 2 or certs[0].issuer != ca_cert.subject or certs[1] != ca_cert:
        return False
    return certs[0].not_valid_after_utc - _now() > dt.timedelta(days=RENEW_DAYS)


def ensure_broker_tls(directory: Path, names: list[str]) -> BrokerTLS:
    """Make the CA once, and the broker certificate whenever it is missing or no longer fits ``names``.

    The CA is kept across restarts (consumers hold a copy of ``ca.pem``); it is re-made only when
    it is missing or expiring, which invalidates the consumers' copies and is said in the log.
    """
    from cryptography import x509

    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    ca = directory / "ca.pem"
    remake_ca = not ca.exists() or not (directory / "ca.key").exists()
    if not remake_ca:
        cert = x509.load_pem_x509_certificate(ca.read_bytes())
        remake_ca = cert.not_valid_after_utc - _now() < dt.timedelta(days=RENEW_DAYS)
    if remake_ca:
        _make_ca(directory)
    issued = remake_ca or not _server_fits(directory, names)
    if issued:
        _issue_server(directory, names)
    return BrokerTLS(ca, directory / "server.pem", issued)
