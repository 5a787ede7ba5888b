"""The stream ports: a ``Source`` of raw messages and a ``Sink`` for outputs.

Kafka (``streams.kafka``) and plain files (``streams.files``) are adapters; the
pipeline never sees a client library. A source hands out batches of
:class:`Message`; the worker calls :meth:`Source.commit` only after the batch's
outputs were acknowledged by the sink and written to the store (at-least-once,
with idempotent store writes making replays harmless).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field


@dataclass
class Message:
    """One raw input message and where it came from (for commits and dead letters)."""

    value: bytes
    source: str  # topic or file path
    partition: int = 0
    offset: int = 0
    key: bytes | None = None
    timestamp_ms: int | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        return f"{self.source}[{self.partition}]@{self.offset}"


class Source(abc.ABC):
    @abc.abstractmethod
    def poll_batch(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Up to ``max_messages`` messages; an empty list means nothing arrived in time."""

    def commit(self, messages: list[Message]) -> None:  # noqa: B027 - files need no commit
        """Mark ``messages`` processed (the next start resumes after them)."""

    @property
    def ready(self) -> bool:
        """False while the source is still joining (a consumer group rebalance)."""
        return True

    @property
    def exhausted(self) -> bool:
        """True when a finite source has nothing left (files); never for Kafka."""
        return False

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


class Sink(abc.ABC):
    @abc.abstractmethod
    def publish(self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str] | None = None) -> None:
        """Queue one message for ``topic``."""

    @abc.abstractmethod
    def flush(self, timeout_s: float = 30.0) -> None:
        """Block until every queued message is acknowledged; raise if any failed."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


class DeliveryError(RuntimeError):
    """Some output messages were not acknowledged; the batch must not be committed."""
