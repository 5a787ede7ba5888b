"""Who may read which stream, and who may write through the portal and API.

* :mod:`broker.access.records` — the user records (roles, hashed API keys, stream grants);
* :mod:`broker.access.secrets` — API keys and Kafka passwords, and the KDFs their hashes use;
* :mod:`broker.access.plainfile` — the broker's PLAIN credential file (one PBKDF2 line per user);
* :mod:`broker.access.service` — :class:`~broker.access.service.Users`, what ``albireo users`` and the
  web layer call: records and the broker (:class:`~broker.ports.StreamAccess`) changed together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from broker.errors import UserError
from broker.ports import AccessRule, StreamAccess


class AccessError(UserError):
    """The stream broker refused or did not answer an access change; the message says which."""

    exit_code = 3


class NotFound(UserError):
    """No such user, or no such API key."""


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


class LazyStreamAccess(StreamAccess):
    """Builds the real adapter on first use: the portal starts without Kafka (or its client library)
    installed, and only a grant made over the API needs them."""

    def __init__(self, factory: Callable[[], StreamAccess]):
        self._factory = factory
        self._access: StreamAccess | None = None

    @property
    def target(self) -> StreamAccess:
        if self._access is None:
            self._access = self._factory()
        return self._access

    def set_password(self, user: str, password: str) -> None:
        self.target.set_password(user, password)

    def delete_user(self, user: str) -> None:
        self.target.delete_user(user)

    def allow(self, user: str, rules: Sequence[AccessRule]) -> None:
        self.target.allow(user, rules)

    def disallow(self, user: str, rules: Sequence[AccessRule]) -> None:
        self.target.disallow(user, rules)

    def rules(self, user: str) -> list[AccessRule]:
        return self.target.rules(user)
