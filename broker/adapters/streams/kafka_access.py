"""Stream access on Kafka: SCRAM-SHA-512 and PLAIN credentials kept in step, rules as ACLs.

One password per user serves both SASL mechanisms of the consumer listener:

* SCRAM-SHA-512 (our clients, confluent-kafka): the credential is set through the admin API
  (``AlterUserScramCredentials``) and lives, salted, in the KRaft metadata;
* PLAIN (antares-client, which hard-codes it): the broker's ``PlainCredentialsFile`` handler checks
  logins against a PBKDF2 line per user in ``plain_file`` (:mod:`broker.access.plainfile`).

:meth:`set_password` writes both, SCRAM first: if the broker refuses, the PLAIN line is left as it
was, so a user never ends with two different passwords. Rules become ALLOW ACLs for
``User:<name>`` from any host; the broker runs the StandardAuthorizer with
``allow.everyone.if.no.acl.found=false``, so what no rule allows is refused.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from broker.access import AccessError, plainfile
from broker.access.secrets import plain_verifier
from broker.ports import AccessRule, StreamAccess

#: SCRAM iterations (Kafka's minimum for SCRAM-SHA-512 is 4096).
SCRAM_ITERATIONS = 8192
_TIMEOUT_S = 30


class KafkaStreamAccess(StreamAccess):
    def __init__(self, bootstrap: str, plain_file: str | Path, extra: dict[str, str] | None = None):
        from confluent_kafka.admin import AdminClient

        self.admin = AdminClient({"bootstrap.servers": bootstrap, **(extra or {})})
        self.plain_file = Path(plain_file)
        self.bootstrap = bootstrap

    # ---- credentials ---------------------------------------------------------------------------
    def set_password(self, user: str, password: str) -> None:
        from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

        upsert = UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS),
                                              password.encode(), os.urandom(32))
        self._wait(self.admin.alter_user_scram_credentials([upsert], request_timeout=_TIMEOUT_S), "set SCRAM credential")
        plainfile.set_user(self.plain_file, user, plain_verifier(password))

    def delete_user(self, user: str) -> None:
        from confluent_kafka import KafkaError
        from confluent_kafka.admin import ScramMechanism, UserScramCredentialDeletion

        plainfile.remove_user(self.plain_file, user)
        futures = self.admin.alter_user_scram_credentials(
            [UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512)], request_timeout=_TIMEOUT_S)
        for fut in futures.values():
            try:
                fut.result(_TIMEOUT_S)
            except Exception as exc:
                err = exc.args[0] if exc.args else None
                if getattr(err, "code", lambda: None)() != KafkaError.RESOURCE_NOT_FOUND:
                    raise AccessError(f"cannot delete the SCRAM credential of {user}: {exc}") from exc
        self._delete(self._filter(user))

    # ---- rules ---------------------------------------------------------------------------------
    def allow(self, user: str, rules: Sequence[AccessRule]) -> None:
        if rules:
            self._wait(self.admin.create_acls([self._binding(user, r) for r in rules], request_timeout=_TIMEOUT_S),
                       "create ACLs")

    def disallow(self, user: str, rules: Sequence[AccessRule]) -> None:
        if rules:
            self._delete([self._binding(user, r, as_filter=True) for r in rules])

    def rules(self, user: str) -> list[AccessRule]:
        fut = self.admin.describe_acls(self._filter(user)[0], request_timeout=_TIMEOUT_S)
        try:
            bindings = fut.result(_TIMEOUT_S)
        except Exception as exc:
            raise AccessError(f"cannot read the ACLs of {user}: {exc}") from exc
        out = []
        for b in bindings:
            if b.permission_type.name != "ALLOW":
                continue
            out.append(AccessRule(_RESOURCES_BACK.get(b.restype.name, b.restype.name.lower()), b.name,
                                  b.resource_pattern_type.name.lower(), b.operation.name.lower()))
        return sorted(out)

    def has_scram(self, user: str) -> bool:
        """True when the broker holds a SCRAM-SHA-512 credential for ``user``."""
        from confluent_kafka import KafkaError

        fut = self.admin.describe_user_scram_credentials([user], request_timeout=_TIMEOUT_S)[user]
        try:
            desc = fut.result(_TIMEOUT_S)
        except Exception as exc:
            err = exc.args[0] if exc.args else None
            if getattr(err, "code", lambda: None)() == KafkaError.RESOURCE_NOT_FOUND:
                return False
            raise AccessError(f"cannot read the SCRAM credentials of {user}: {exc}") from exc
        return any(i.mechanism.name == "SCRAM_SHA_512" for i in desc.scram_credential_infos)

    # ---- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _binding(user: str, rule: AccessRule, as_filter: bool = False) -> Any:
        """The ACL for ``rule`` (or the filter matching exactly it, which is what deleting takes)."""
        from confluent_kafka.admin import (
            AclBinding,
            AclBindingFilter,
            AclOperation,
            AclPermissionType,
            ResourcePatternType,
            ResourceType,
        )

        cls = AclBindingFilter if as_filter else AclBinding
        return cls(getattr(ResourceType, _RESOURCES[rule.resource]), rule.name,
                   getattr(ResourcePatternType, rule.pattern.upper()), f"User:{user}", "*",
                   getattr(AclOperation, rule.operation.upper()), AclPermissionType.ALLOW)

    @staticmethod
    def _filter(user: str) -> list[Any]:
        from confluent_kafka.admin import (
            AclBindingFilter,
            AclOperation,
            AclPermissionType,
            ResourcePatternType,
            ResourceType,
        )

        return [AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, f"User:{user}", None,
                                 AclOperation.ANY, AclPermissionType.ANY)]

    def _delete(self, filters: list[Any]) -> None:
        if filters:
            self._wait(self.admin.delete_acls(filters, request_timeout=_TIMEOUT_S), "delete ACLs")

    @staticmethod
    def _wait(futures: dict, what: str) -> None:
        for key, fut in futures.items():
            try:
                fut.result(_TIMEOUT_S)
            except Exception as exc:
                raise AccessError(f"Kafka refused to {what} ({key}): {exc}") from exc


_RESOURCES = {"topic": "TOPIC", "group": "GROUP", "transactional_id": "TRANSACTIONAL_ID"}
_RESOURCES_BACK = {v: k for k, v in _RESOURCES.items()}
