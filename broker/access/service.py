"""Users: the records and the stream broker changed together (``albireo users``, the portal, the API).

A user has a role, one Kafka password (valid for SCRAM-SHA-512 and PLAIN on the consumer
listener), any number of API keys for the portal and API, and read grants on streams:

======== ============================================================= ==================================
role     portal / API writes                                           Kafka (consumer listener)
======== ============================================================= ==================================
user     submit and test filters, create watch lists, delete own ones   read granted streams, own groups
admin    everything: approvals (enable/disable filters), grants, users  the same as ``user``
pipeline none                                                          read the input topics, write every
                                                                       stream and the dead-letter topic
======== ============================================================= ==================================

Every user may use the consumer groups ``<name>`` and ``<name>.<anything>`` (names cannot hold a
dot, so no user's prefix covers another's) and the extra groups given with ``--group``. A grant
of stream ``S`` allows reading every topic ``S`` can be published on (``albireo.loci.S`` and
``client.S``), so changing a stream's format needs no new grant.

Order of changes: the broker first, then the records. If the broker refuses, nothing was recorded;
:meth:`Users.check` compares the two afterwards (e.g. after the broker's data was wiped).
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from broker.access import NoStreamAccess, NotFound
from broker.access.records import UserRecord, UserRecords
from broker.access.secrets import hash_api_secret, new_api_key, new_password, split_api_key, verify_api_secret
from broker.config import Config
from broker.emit import StreamRouter
from broker.errors import UserError
from broker.ports import AccessRule, StreamAccess

ROLES = ("user", "admin", "pipeline")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
#: Kafka's topic characters; prefix + stream stays under Kafka's 249.
_STREAM = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_GROUP = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_RESERVED = {"anonymous"}
#: a verified API key is trusted this long before scrypt runs again (revocation is checked every time).
KEY_CACHE_S = 60.0


@dataclass(frozen=True)
class Principal:
    """Who is making a request: the user, their role, and the API key that proved it."""

    name: str
    role: str
    key_id: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class NewUser:
    """What ``albireo users add`` shows once: the Kafka password and the first API key (if any)."""

    name: str
    role: str
    password: str
    key_id: str | None
    api_key: str | None


class Users:
    """The one way to change users: every method validates, changes the broker, then the records."""

    def __init__(self, cfg: Config, records: UserRecords, access: StreamAccess, router: StreamRouter, *,
                 consumer_bootstrap: str = "", ca_file: str = ""):
        self.cfg = cfg
        self.records = records
        self.access = access
        self.router = router
        #: what consumers are told to connect to, and the CA they verify the broker with.
        self.consumer_bootstrap = consumer_bootstrap
        self.ca_file = ca_file
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    # ---- validation ----------------------------------------------------------------------------
    @staticmethod
    def check_name(name: str) -> str:
        if not isinstance(name, str) or not _NAME.match(name) or name.lower() in _RESERVED:
            raise UserError(f"user name {name!r}: 1-64 letters, digits, '_' or '-', starting with a letter or "
                            "digit (no '.', which separates a user's consumer groups), not 'ANONYMOUS'")
        return name

    @staticmethod
    def check_streams(streams: Iterable[str]) -> list[str]:
        out = []
        for s in streams:
            if not isinstance(s, str) or not _STREAM.match(s):
                raise UserError(f"stream {s!r}: 1-200 letters, digits, '.', '_' or '-' (a Kafka topic name)")
            out.append(s)
        if not out:
            raise UserError("name at least one stream")
        return out

    def _user(self, name: str) -> UserRecord:
        rec = self.records.get(self.check_name(name))
        if rec is None:
            raise NotFound(f"no user {name!r} (albireo users list)")
        return rec

    # ---- rules -----------------------------------------------------------------------------------
    def stream_rules(self, streams: Iterable[str]) -> list[AccessRule]:
        return [AccessRule("topic", t, "literal", "read") for s in streams for t in self.router.topics(s)]

    def base_rules(self, user: UserRecord) -> list[AccessRule]:
        """What every user may do regardless of grants: use their own consumer groups."""
        rules = [AccessRule("group", user.name, "literal", "read"),
                 AccessRule("group", user.name + ".", "prefixed", "read")]
        rules += [AccessRule("group", g, "literal", "read") for g in user.groups]
        if user.role == "pipeline":
            rules += self._pipeline_rules()
        return rules

    def _pipeline_rules(self) -> list[AccessRule]:
        """The pipeline on the SASL_SSL listener: read the input, write every stream and the DLQ, transactions."""
        k = self.cfg.kafka
        rules = [AccessRule("group", k.group_id, "literal", "read"),
                 AccessRule("transactional_id", k.group_id, "prefixed", "write"),
                 AccessRule("transactional_id", k.group_id, "prefixed", "describe")]
        for topic in k.input_topics:
            rules += [AccessRule("topic", topic, "literal", op) for op in ("read", "describe", "create")]
        for name, pattern in ((self.router.output_prefix, "prefixed"), (self.router.antares_prefix, "prefixed"),
                              (k.dead_letter_topic, "literal")):
            rules += [AccessRule("topic", name, pattern, op) for op in ("write", "describe", "create")]
        return rules

    def expected_rules(self, user: UserRecord) -> list[AccessRule]:
        return sorted(set(self.base_rules(user) + self.stream_rules(user.grants)))

    # ---- users -----------------------------------------------------------------------------------
    def add(self, name: str, role: str = "user", groups: Iterable[str] = (), *, with_key: bool = True,
            label: str = "") -> NewUser:
        """Create a user with a fresh Kafka password (and API key); the secrets are returned once."""
        self.check_name(name)
        if role not in ROLES:
            raise UserError(f"role {role!r}: expected one of {', '.join(ROLES)}")
        groups = sorted(set(groups))
        for g in groups:
            if not _GROUP.match(g):
                raise UserError(f"consumer group {g!r}: 1-200 letters, digits, '.', '_' or '-'")
        try:
            rec = self.records.add_user(name, role, groups)
        except sqlite3.IntegrityError:
            raise UserError(f"user {name!r} exists (albireo users password {name} makes a new password)") from None
        password = new_password()
        try:
            self.access.set_password(name, password)
            self.access.allow(name, self.base_rules(rec))
        except Exception:
            self.records.remove_user(name)
            raise
        key_id = key = None
        if with_key and role != "pipeline":
            key_id, key = self.new_key(name, label or "first key")
        return NewUser(name, role, password, key_id, key)

    def set_password(self, name: str) -> str:
        """A new Kafka password for both mechanisms (the old one stops working at once)."""
        self._user(name)
        password = new_password()
        self.access.set_password(name, password)
        return password

    def remove(self, name: str) -> None:
        self._user(name)
        self.access.delete_user(name)
        self.records.remove_user(name)
        self._forget(lambda p: p.name == name)

    def grant(self, name: str, streams: Iterable[str], by: str = "") -> list[str]:
        """Allow ``name`` to read ``streams``; returns the streams that were not granted before."""
        self._user(name)
        streams = self.check_streams(streams)
        self.access.allow(name, self.stream_rules(streams))
        return self.records.grant(name, streams, by)

    def revoke(self, name: str, streams: Iterable[str]) -> list[str]:
        """Stop ``name`` reading ``streams`` (the broker refuses their next fetch); returns what was granted."""
        self._user(name)
        streams = self.check_streams(streams)
        self.access.disallow(name, self.stream_rules(streams))
        return self.records.revoke(name, streams)

    def list(self) -> list[dict[str, Any]]:
        """Every user with role, groups, grants and keys: key ids, labels, dates; never a secret or a hash."""
        out = []
        for u in self.records.all():
            out.append({"name": u.name, "role": u.role, "created_at": u.created_at, "groups": u.groups,
                        "grants": u.grants,
                        "keys": [{"key_id": k.key_id, "label": k.label, "created_at": k.created_at,
                                  "revoked_at": k.revoked_at, "active": k.active} for k in u.keys]})
        return out

    def check(self) -> dict[str, dict[str, list[AccessRule]]]:
        """Per user whose broker rules differ from the records: the rules ``missing`` and ``extra``."""
        out: dict[str, dict[str, list[AccessRule]]] = {}
        access = getattr(self.access, "target", self.access)
        if isinstance(access, NoStreamAccess):
            return out
        for u in self.records.all():
            want, have = set(self.expected_rules(u)), set(self.access.rules(u.name))
            if want != have:
                out[u.name] = {"missing": sorted(want - have), "extra": sorted(have - want)}
        return out

    def repair(self, name: str) -> None:
        """Make the broker's rules for ``name`` what the records say (after :meth:`check` found a drift)."""
        u = self._user(name)
        want, have = set(self.expected_rules(u)), set(self.access.rules(name))
        self.access.allow(name, sorted(want - have))
        self.access.disallow(name, sorted(have - want))

    # ---- API keys --------------------------------------------------------------------------------
    def new_key(self, name: str, label: str = "") -> tuple[str, str]:
        """``(key_id, key)``: the key is shown once; only its scrypt hash is kept."""
        self._user(name)
        key_id, key = new_api_key()
        _, secret = split_api_key(key)  # type: ignore[misc]
        self.records.add_key(key_id, name, label[:80], hash_api_secret(secret))
        return key_id, key

    def revoke_key(self, key_id: str) -> None:
        rec = self.records.key(key_id)
        if rec is None:
            raise NotFound(f"no API key {key_id!r} (albireo users list shows key ids)")
        self.records.revoke_key(key_id)
        self._forget(lambda p: p.key_id == key_id)

    def authenticate(self, key: str) -> Principal | None:
        """The principal a presented API key proves, or None (malformed, unknown, revoked or wrong)."""
        parts = split_api_key(key or "")
        if parts is None:
            return None
        key_id, secret = parts
        rec = self.records.key(key_id)
        if rec is None or not rec.active:
            return None
        fingerprint = hashlib.sha256(key.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(fingerprint)
        if hit is not None and hit[1] > now:
            return hit[0]
        user = self.records.get(rec.user)
        if user is None or not verify_api_secret(secret, rec.hash):
            return None
        principal = Principal(user.name, user.role, key_id)
        with self._lock:
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[fingerprint] = (principal, now + KEY_CACHE_S)
        return principal

    def session_principal(self, name: str, key_id: str) -> Principal | None:
        """The principal of a portal session made with ``key_id``, while that key stays active."""
        rec = self.records.key(key_id)
        if rec is None or not rec.active or rec.user != name:
            return None
        user = self.records.get(name)
        return Principal(user.name, user.role, key_id) if user is not None else None

    def _forget(self, pred) -> None:
        with self._lock:
            for fp in [fp for fp, (p, _) in self._cache.items() if pred(p)]:
                del self._cache[fp]
