"""File adapters: Avro packets from files or folders in, one file per output topic out.

The embedded default (``albireo demo``) reads alert packets from disk — a
folder of ZTF ``.avro`` files (one packet per file, as ZTF ships them in its
tarballs), Rubin sample packets, or a ``.jsonl``/stream file written by
``albireo replay --out`` — and writes each output topic to
``<out_dir>/<topic>.avro-stream`` as length-prefixed messages.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from broker.ports import Message, Sink, Source

#: files we read as one message each.
PACKET_SUFFIXES = (".avro", ".avro.gz")
#: length-prefixed multi-message files (written by StreamFileSink and ``albireo replay --out``).
STREAM_SUFFIX = ".avro-stream"
#: multi-messenger notice files read as one message each (GCN/LVK JSON, VOEvent XML, LVK Avro).
NOTICE_SUFFIXES = (".json", ".xml", ".avro")


def iter_stream_file(path: Path) -> Iterator[bytes]:
    """Messages of a length-prefixed stream file (4-byte big-endian length, then bytes)."""
    with open(path, "rb") as fh:
        while True:
            head = fh.read(4)
            if not head:
                return
            if len(head) < 4:
                raise ValueError(f"{path}: truncated length prefix")
            (n,) = struct.unpack(">I", head)
            body = fh.read(n)
            if len(body) < n:
                raise ValueError(f"{path}: truncated message ({len(body)} of {n} bytes)")
            yield body


def expand_paths(paths: Iterable[str | Path], suffixes: tuple[str, ...] = PACKET_SUFFIXES) -> list[Path]:
    """Files named directly, and every file below named folders ending in ``suffixes`` (or a stream file), sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(
                sorted(f for f in p.rglob("*") if f.is_file() and (f.name.endswith(suffixes) or f.suffix == STREAM_SUFFIX))
            )
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"no such alert file or folder: {p}")
    return out


class FileSource(Source):
    """Every packet under the given paths, in order; one message per ``.avro`` file."""

    def __init__(self, paths: Iterable[str | Path], loop: int = 1, suffixes: tuple[str, ...] = PACKET_SUFFIXES):
        self.files = expand_paths(paths, suffixes)
        self.loop = max(1, loop)
        self._iter = self._messages(self.loop)
        self._done = False

    def _messages(self, loop: int) -> Iterator[Message]:
        for _ in range(max(1, loop)):
            for path in self.files:
                if path.suffix == STREAM_SUFFIX:
                    for i, body in enumerate(iter_stream_file(path)):
                        yield Message(body, str(path), 0, i)
                elif path.name.endswith(".gz"):
                    import gzip

                    yield Message(gzip.decompress(path.read_bytes()), str(path), 0, 0)
                else:
                    yield Message(path.read_bytes(), str(path), 0, 0)

    def count(self) -> int:
        """How many messages the inputs hold (one pass), read from the frames' length prefixes only."""
        n = 0
        for path in self.files:
            if path.suffix != STREAM_SUFFIX:
                n += 1
                continue
            with open(path, "rb") as fh:
                while (head := fh.read(4)) and len(head) == 4:
                    fh.seek(struct.unpack(">I", head)[0], 1)
                    n += 1
        return n * self.loop

    def __iter__(self) -> Iterator[Message]:
        """Every remaining message, without batching (what the load generator replays)."""
        return self._iter

    def poll_batch(self, max_messages: int, timeout_s: float) -> list[Message]:
        batch = []
        for msg in self._iter:
            batch.append(msg)
            if len(batch) >= max_messages:
                break
        else:
            self._done = True
        return batch

    @property
    def exhausted(self) -> bool:
        return self._done


def write_framed(fh: BinaryIO, messages: Iterable[bytes]) -> int:
    """Append messages to an open binary file in the stream-file format (4-byte big-endian length, bytes).

    The one writer of the format :func:`iter_stream_file` reads; returns how many were written.
    """
    n = 0
    for m in messages:
        fh.write(struct.pack(">I", len(m)))
        fh.write(m)
        n += 1
    return n


def write_stream_file(packets: Iterable[bytes], path: str | Path) -> int:
    """Write packets as a new ``.avro-stream`` file (what :class:`FileSource` reads); returns the count."""
    with open(path, "wb") as fh:
        return write_framed(fh, packets)


#: what Kafka accepts as a topic name, and so what a stream file may be named after (no "/", bounded).
TOPIC_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,249}")


class InvalidTopic(ValueError):
    """A topic name Kafka would refuse (and no file may carry): a permanent error, never retried."""


def check_topic(topic: str) -> str:
    if not isinstance(topic, str) or not TOPIC_PATTERN.fullmatch(topic) or topic in (".", ".."):
        raise InvalidTopic(f"invalid topic name {str(topic)[:80]!r}: 1-249 letters, digits, '.', '_' or '-'")
    return topic


class StreamFileSink(Sink):
    """Output streams as files: one ``<dir>/<topic>.avro-stream`` per topic, or every topic in one file.

    ``target`` is a folder (created; each topic gets its own file, as ``albireo demo`` writes its
    tagged streams) or a path ending in ``.avro-stream`` (every message appended to it, whatever
    its topic, as ``albireo replay --out FILE`` writes a stream to replay later). Messages are
    buffered until :meth:`flush`, which is when they are durable (the sink's acknowledgement).
    """

    def __init__(self, target: str | Path):
        target = Path(target)
        self.single_file: Path | None = target if target.suffix == STREAM_SUFFIX else None
        self.out_dir = target.parent if self.single_file is not None else target
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._pending: dict[str, list[bytes]] = {}
        self._pending_bytes = 0
        #: messages written per topic.
        self.counts: dict[str, int] = {}

    def path_for(self, topic: str) -> Path:
        return self.single_file or self.out_dir / f"{check_topic(topic)}{STREAM_SUFFIX}"

    #: buffered bytes after which messages are written before the next flush (bounded memory on long replays).
    WRITE_THROUGH_BYTES = 16 * 1024 * 1024

    def publish(self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str] | None = None) -> None:
        check_topic(topic)  # here, not at flush: a bad name must not look like a full disk (retried forever)
        self._pending.setdefault(topic, []).append(value)
        self._pending_bytes += len(value)
        if self._pending_bytes >= self.WRITE_THROUGH_BYTES:
            self.flush()

    def flush(self, timeout_s: float = 30.0) -> None:
        for topic, values in self._pending.items():
            with open(self.path_for(topic), "ab") as fh:
                write_framed(fh, values)
            self.counts[topic] = self.counts.get(topic, 0) + len(values)
        self._pending.clear()
        self._pending_bytes = 0

    @property
    def count(self) -> int:
        """Messages written so far, all topics."""
        return sum(self.counts.values())

    def read_topic(self, topic: str) -> list[bytes]:
        """What was written for ``topic`` (in single-file mode: every message of the file)."""
        path = self.path_for(topic)
        return list(iter_stream_file(path)) if path.exists() else []

    def close(self) -> None:
        self.flush()
