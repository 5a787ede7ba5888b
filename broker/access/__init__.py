"""Who may read which stream, and who may write through the portal and API.

* :mod:`broker.access.records` — the user records (roles, hashed API keys, stream grants);
* :mod:`broker.access.secrets` — API keys and Kafka passwords, and the KDFs their hashes use;
* :mod:`broker.access.plainfile` — the broker's PLAIN credential file (one PBKDF2 line per user);
* :mod:`broker.access.service` — :class:`~broker.access.service.Users`, what ``albireo users`` and the
  web layer call: records and the broker (:class:`~broker.ports.StreamAccess`) changed together.
"""

from __future__ import annotations

from collections.abc import Sequence

from broker.errors import UserError
from broker.ports import AccessRule, StreamAccess


class AccessError(UserError):
    """The stream broker refused or did not answer an access change; the message says which."""

    exit_code = 3


class NoStreamAccess(StreamAccess):
    """``users.stream_access = none``: grants are recorded, nothing is enforced (embedded file streams)."""

    def set_password(self, user: str, password: str) -> None:
        pass

    def delete_user(self, user: str) -> None:
        pass

    def allow(self, user: str, rules: Sequence[AccessRule]) -> None:
        pass

    def disallow(self, user: str, rules: Sequence[AccessRule]) -> None:
        pass

    def rules(self, user: str) -> list[AccessRule]:
        return []
