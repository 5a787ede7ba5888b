"""File adapters: Avro packets from files or folders in, one file per output topic out.

The embedded default (``albireo demo``) reads alert packets from disk — a
folder of ZTF ``.avro`` files (one packet per file, as ZTF ships them in its
tarballs), Rubin sample packets, or a ``.jsonl``/stream file written by
``albireo replay --out`` — and writes each output topic to
``<out_dir>/<topic>.avro-stream`` as length-prefixed messages.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

from broker.streams.base import Message, Sink, Source

#: files we read as one message each.
PACKET_SUFFIXES = (".avro", ".avro.gz")
#: length-prefixed multi-message files (written by FileSink and ``albireo replay --out``).
STREAM_SUFFIX = ".avro-stream"


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


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files named directly, and every packet/stream file below named folders, sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(
                sorted(f for f in p.rglob("*") if f.is_file() and (f.name.endswith(PACKET_SUFFIXES) or f.suffix == STREAM_SUFFIX))
            )
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"no such alert file or folder: {p}")
    return out


class FileSource(Source):
    """Every packet under the given paths, in order; one message per ``.avro`` file."""

    def __init__(self, paths: Iterable[str | Path], loop: int = 1):
        self.files = expand_paths(paths)
        self._iter = self._messages(loop)
        self._done = False

    def _messages(self, loop: int) -> Iterator[Message]:
        for _ in range(max(1, loop)):
            for path in self.files:
                if path.suffix == STREAM_SUFFIX:
                    for i, body in enumerate(iter_stream_file(path)):
                        yield Message(body, str(path), 0, i)
                else:
                    yield Message(path.read_bytes(), str(path), 0, 0)

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


class FileSink(Sink):
    """Appends each topic's messages to ``<out_dir>/<topic>.avro-stream``."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._pending: dict[str, list[bytes]] = {}
        self.counts: dict[str, int] = {}

    def publish(self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str] | None = None) -> None:
        self._pending.setdefault(topic, []).append(value)

    def flush(self, timeout_s: float = 30.0) -> None:
        for topic, values in self._pending.items():
            with open(self.out_dir / f"{topic}{STREAM_SUFFIX}", "ab") as fh:
                for v in values:
                    fh.write(struct.pack(">I", len(v)))
                    fh.write(v)
            self.counts[topic] = self.counts.get(topic, 0) + len(values)
        self._pending.clear()

    def read_topic(self, topic: str) -> list[bytes]:
        path = self.out_dir / f"{topic}{STREAM_SUFFIX}"
        return list(iter_stream_file(path)) if path.exists() else []
