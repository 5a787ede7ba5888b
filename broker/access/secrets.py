"""Secrets we hand out and the hashes we keep of them: API keys (scrypt) and Kafka passwords (PBKDF2).

Nothing here stores a secret in clear. An API key is shown once when made, and only its scrypt
hash is kept; a Kafka password is shown once, then lives only as the broker's SCRAM credential
(salted by Kafka) and as a PBKDF2-SHA512 line in the broker's PLAIN credential file.

Both KDFs come from :mod:`hashlib` (OpenSSL underneath): scrypt for API keys because it is
memory-hard; PBKDF2-HMAC-SHA512 for PLAIN because the broker-side check runs in the JVM, whose
standard library has ``PBKDF2WithHmacSHA512`` and no scrypt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

#: scrypt cost: 16 MiB and ~40 ms per hash; the web layer caches a verified key for a minute.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
#: OWASP's 2023 figure for PBKDF2-HMAC-SHA512; the broker computes it once per PLAIN login.
PBKDF2_ITERATIONS = 210_000
KEY_PREFIX = "alb"
_KEY_RE = re.compile(rf"^{KEY_PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{32,64}})$")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def new_password() -> str:
    """A Kafka password: 32 URL-safe characters (192 bits)."""
    return secrets.token_urlsafe(24)


def new_api_key() -> tuple[str, str]:
    """``(key_id, key)``: the id is public (lists, revocation); the key ``alb_<id>_<secret>`` is shown once."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


def split_api_key(key: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed key, else None (so junk never reaches the KDF)."""
    m = _KEY_RE.match(key.strip())
    return (m.group(1), m.group(2)) if m else None


def hash_api_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_api_secret(secret: str, stored: str) -> bool:
    """Constant-time check of ``secret`` against :func:`hash_api_secret`'s output."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(secret.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def plain_verifier(password: str, iterations: int = PBKDF2_ITERATIONS) -> str:
    """The ``pbkdf2-sha512:ITERATIONS:SALT:HASH`` fields of a PLAIN credential line (what the broker checks)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"pbkdf2-sha512:{iterations}:{_b64(salt)}:{_b64(digest)}"


def check_plain_verifier(password: str, fields: str) -> bool:
    """The Python twin of the broker's check (``services/kafka/PlainCredentialsFile.java``), for tests and tools."""
    try:
        scheme, iterations, salt, digest = fields.split(":")
        if scheme != "pbkdf2-sha512":
            return False
        want = base64.b64decode(digest)
        got = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations), len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)
