"""Avro framing: container files, Confluent wire format, single-object encoding, schemaless bodies.

Why our own container-header parser instead of ``fastavro.reader``: ZTF sends one container
file per Kafka message, each embedding the same ~20 KB schema JSON. ``fastavro.reader`` parses
that schema again for every message, which costs about as much as decoding the record. We
read the header ourselves, key the parsed schema by a SHA-256 of the schema bytes and hand
the block bodies to ``fastavro.schemaless_reader`` with the cached parse.

Every failure raises :class:`DecodeError` with a short machine-friendly ``reason`` so that a
worker can count it, dead-letter the message and keep going.
"""

from __future__ import annotations

import hashlib
import io
import json
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import fastavro
from fastavro.schema import to_parsing_canonical_form

CONTAINER_MAGIC = b"Obj\x01"


CONFLUENT_MAGIC = 0


SINGLE_OBJECT_MAGIC = b"\xc3\x01"


_SYNC_SIZE = 16


#: The errors fastavro raises when bytes do not match the schema they are read with.
_BODY_ERRORS = (EOFError, ValueError, UnicodeDecodeError, IndexError, KeyError, TypeError, OverflowError,
                StopIteration, MemoryError)


@dataclass(frozen=True, slots=True)
class IngestLimits:
    """Bounds a hostile message hits before it can exhaust memory or crash the decoder.

    Why before decoding: fastavro's C reader recurses on recursive schemas until the C stack
    overflows (a segfault no ``except`` catches), loops on array counts of 2**62 and trusts
    deflate blocks to be small. Each bound here is checked on bytes and counts we can see
    cheaply first; the defaults (``[ingest]`` in broker/config.py, docs/security.md) are an
    order of magnitude above the largest real ZTF/Rubin alert.
    """

    #: a whole message (ZTF alerts with three cutouts are ~60-120 KB; Rubin ~100 KB).
    max_message_bytes: int = 16 * 1024 * 1024
    #: the embedded writer schema's JSON (the ZTF schema is ~20 KB).
    max_schema_bytes: int = 256 * 1024
    #: nesting depth of the schema JSON (ZTF's is 6).
    max_schema_depth: int = 32
    #: a deflate block decompressed (a deflate bomb is refused at this many bytes).
    max_decompressed_bytes: int = 32 * 1024 * 1024
    #: one string/bytes value (a cutout is ~20-60 KB); anything longer would be copied into every output.
    max_field_bytes: int = 4 * 1024 * 1024
    #: distinct parsed writer schemas kept (least recently used dropped first).
    schema_cache_entries: int = 64
    #: a history row later than now by more than this many days is dropped (and counted).
    history_future_days: float = 1.0


#: the process-wide limits; :func:`configure_limits` replaces them from ``[ingest]``.
LIMITS = IngestLimits()


def configure_limits(limits: IngestLimits) -> None:
    """Install ``limits`` for every later decode in this process (called by broker/assemble.py)."""
    global LIMITS
    LIMITS = limits
    SCHEMA_CACHE.max_entries = limits.schema_cache_entries
    SCHEMA_CACHE.trim()


class DecodeError(Exception):
    """A message that cannot be decoded; ``reason`` is a short code (``bad_magic``, ``truncated`` ...)."""

    def __init__(self, reason: str, message: str = "") -> None:
        self.reason = reason
        # an error text quotes hostile bytes; lone surrogates (a JSON "\\ud800") cannot be stored as UTF-8
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        self.message = message
        super().__init__(f"{reason}: {message}" if message else reason)


@dataclass(frozen=True, slots=True)
class CachedSchema:
    """A parsed writer schema plus the facts the dispatcher needs about it."""

    parsed: dict[str, Any]
    #: full name of the top-level record, e.g. ``ztf.alert`` or ``lsst.v7_1.alert``.
    name: str
    fingerprint: bytes


class SchemaCache:
    """Parsed schemas keyed by the SHA-256 of their JSON bytes, with hit/miss counters.

    The counters exist so tests (and ``/metrics``) can prove the cache is used without timing.
    Bounded (LRU, ``max_entries``): a survey has a handful of schema versions, but every hostile
    message can embed a new one, and an unbounded cache is then a memory leak an attacker drives.
    A schema is admitted (:func:`admit_schema`) before fastavro parses it.
    """

    def __init__(self, max_entries: int | None = None) -> None:
        self._by_fp: OrderedDict[bytes, CachedSchema] = OrderedDict()
        self.max_entries = max_entries if max_entries is not None else LIMITS.schema_cache_entries
        self._last_json: bytes | None = None
        self._last_entry: CachedSchema | None = None
        self.hits = 0
        self.misses = 0

    def get(self, schema_json: bytes) -> CachedSchema:
        # Fast path: consecutive messages of one stream embed byte-identical schemas, and a
        # memcmp of 20 KB is ~20x cheaper than hashing it.
        if schema_json == self._last_json:
            self.hits += 1
            return self._last_entry
        fp = hashlib.sha256(schema_json).digest()
        entry = self._by_fp.get(fp)
        if entry is not None:
            self.hits += 1
            self._by_fp.move_to_end(fp)
            self._last_json, self._last_entry = schema_json, entry
            return entry
        self.misses += 1
        limits = LIMITS
        if len(schema_json) > limits.max_schema_bytes:
            raise DecodeError("schema_too_large", f"embedded schema is {len(schema_json)} bytes "
                              f"(limit ingest.max_schema_bytes = {limits.max_schema_bytes})")
        try:
            doc = json.loads(schema_json)
        except (ValueError, RecursionError) as exc:  # malformed or absurdly nested JSON is the message's fault
            raise DecodeError("bad_schema", f"embedded schema is not JSON: {type(exc).__name__}: {exc}") from exc
        admit_schema(doc, limits.max_schema_depth)
        try:
            parsed = fastavro.parse_schema(doc)
        except Exception as exc:  # any malformed schema definition is the message's fault
            raise DecodeError("bad_schema", f"embedded schema does not parse: {exc}") from exc
        entry = CachedSchema(parsed, schema_full_name(parsed), fp)
        self._by_fp[fp] = entry
        self.trim()
        self._last_json, self._last_entry = schema_json, entry
        return entry

    def trim(self) -> None:
        """Drop least recently used schemas beyond ``max_entries``."""
        while len(self._by_fp) > max(1, self.max_entries):
            self._by_fp.popitem(last=False)

    def __len__(self) -> int:
        return len(self._by_fp)

    def clear(self) -> None:
        self._by_fp.clear()
        self._last_json = self._last_entry = None
        self.hits = self.misses = 0


#: process-wide default cache used by :func:`read_container`.
SCHEMA_CACHE = SchemaCache()


_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})


def admit_schema(doc: Any, max_depth: int) -> None:
    """Refuse a writer schema fastavro must not parse or read with: recursive, too deep, zero-width items.

    * **recursive** (a named type used inside its own definition): fastavro's C reader recurses
      once per nesting level of the *data*, so 10 KB of union indexes overflow the C stack and
      kill the process. No ZTF or Rubin schema is recursive.
    * **too deep** (``max_depth``): the same stack, through the schema instead of the data.
    * **arrays/maps of zero-byte items** (``null``, a record without fields): a count of 2**62
      then costs no input bytes per item, and the reader appends ``None`` until memory runs out.
    Raises DecodeError('bad_schema'|'schema_too_deep'|'recursive_schema').
    """
    # an explicit stack, not recursion: the document itself may be deep.
    stack: list[tuple[Any, int, str, frozenset[str]]] = [(doc, 1, "", frozenset())]
    while stack:
        node, depth, ns, enclosing = stack.pop()
        if depth > max_depth:
            raise DecodeError("schema_too_deep", f"embedded schema nests deeper than {max_depth} "
                              "(limit ingest.max_schema_depth)")
        if isinstance(node, str):
            full = node if "." in node or node in _PRIMITIVES or not ns else f"{ns}.{node}"
            if full in enclosing or node in enclosing:
                raise DecodeError("recursive_schema", f"embedded schema uses type {node!r} inside its own "
                                  "definition (recursive schemas crash the C decoder)")
            continue
        if isinstance(node, list):
            stack.extend((b, depth + 1, ns, enclosing) for b in node)
            continue
        if not isinstance(node, dict):
            raise DecodeError("bad_schema", f"schema node of type {type(node).__name__}")
        kind = node.get("type")
        if kind in ("record", "error", "enum", "fixed"):
            name = str(node.get("name", ""))
            ns = str(node.get("namespace") or (name.rpartition(".")[0] if "." in name else ns))
            full = name if "." in name else (f"{ns}.{name}" if ns else name)
            if kind in ("record", "error"):
                inner = enclosing | {full, name}
                fields = node.get("fields")
                if not isinstance(fields, list):
                    raise DecodeError("bad_schema", f"record {name!r} has no list of fields")
                for f in fields:
                    if not isinstance(f, dict):
                        raise DecodeError("bad_schema", f"record {name!r} has a field that is no object")
                    stack.append((f.get("type"), depth + 1, ns, inner))
        elif kind in ("array", "map"):
            items = node.get("items" if kind == "array" else "values")
            if _zero_width(items):
                raise DecodeError("bad_schema", f"{kind} of zero-byte items ({items!r}): a huge count would "
                                  "cost no input bytes")
            stack.append((items, depth + 1, ns, enclosing))
        elif isinstance(kind, (dict, list)):
            stack.append((kind, depth + 1, ns, enclosing))
        elif kind is None:
            raise DecodeError("bad_schema", "schema object has no type")


def _zero_width(items: Any, depth: int = 0) -> bool:
    """Whether an array/map item type can encode in zero bytes (null, fixed(0), records of such)."""
    if depth > 32:
        return False
    if items == "null":
        return True
    if not isinstance(items, dict):
        return False
    kind = items.get("type")
    if kind == "null" or (kind == "fixed" and items.get("size") == 0):
        return True
    if kind in ("record", "error"):
        fields = items.get("fields") or []
        return all(isinstance(f, dict) and _zero_width(f.get("type"), depth + 1) for f in fields)
    return False


def schema_full_name(parsed: Any) -> str:
    """Full name of a parsed schema's top-level named type ('' for unnamed schemas)."""
    if isinstance(parsed, dict):
        name = parsed.get("name", "")
        ns = parsed.get("namespace")
        if ns and "." not in name:
            return f"{ns}.{name}"
        return name
    return ""


def _read_long(buf: bytes, pos: int) -> tuple[int, int]:
    """Zig-zag varint at ``pos``; returns (value, new position)."""
    shift = 0
    acc = 0
    n = len(buf)
    while True:
        if pos >= n:
            raise DecodeError("truncated", "varint runs past the end of the message")
        b = buf[pos]
        pos += 1
        acc |= (b & 0x7F) << shift
        if not b & 0x80:
            return (acc >> 1) ^ -(acc & 1), pos
        shift += 7
        if shift > 63:
            raise DecodeError("bad_varint", "varint longer than 10 bytes")


def _read_bytes(buf: bytes, pos: int) -> tuple[bytes, int]:
    size, pos = _read_long(buf, pos)
    end = pos + size
    if size < 0 or end > len(buf):
        raise DecodeError("truncated", "header string runs past the end of the message")
    return buf[pos:end], end


@dataclass(frozen=True, slots=True)
class ContainerHeader:
    schema: CachedSchema
    codec: str
    sync: bytes
    #: offset of the first data block.
    data_start: int
    meta: dict[str, bytes]


def read_container_header(raw: bytes, cache: SchemaCache = SCHEMA_CACHE) -> ContainerHeader:
    """Parse an object-container header: magic, metadata map, 16-byte sync marker."""
    if raw[:4] != CONTAINER_MAGIC:
        if len(raw) < 4 and CONTAINER_MAGIC.startswith(raw):
            raise DecodeError("truncated", f"{len(raw)} bytes: shorter than the container magic")
        raise DecodeError("bad_magic", f"not an Avro container file (starts {raw[:4]!r}, expected b'Obj\\x01')")
    meta: dict[str, bytes] = {}
    pos = 4
    while True:
        count, pos = _read_long(raw, pos)
        if count == 0:
            break
        if count < 0:  # a negative count is followed by the block's byte size
            count = -count
            _, pos = _read_long(raw, pos)
        for _ in range(count):
            key, pos = _read_bytes(raw, pos)
            value, pos = _read_bytes(raw, pos)
            meta[key.decode("utf-8", "replace")] = value
    sync = raw[pos : pos + _SYNC_SIZE]
    if len(sync) != _SYNC_SIZE:
        raise DecodeError("truncated", "container header ends before its sync marker")
    schema_json = meta.get("avro.schema")
    if schema_json is None:
        raise DecodeError("bad_header", "container metadata has no avro.schema")
    codec = meta.get("avro.codec", b"null").decode("ascii", "replace")
    if codec not in ("null", "deflate"):
        raise DecodeError("unsupported_codec", f"container codec {codec!r} (supported: null, deflate)")
    return ContainerHeader(cache.get(schema_json), codec, sync, pos + _SYNC_SIZE, meta)


def read_container(raw: bytes, cache: SchemaCache = SCHEMA_CACHE) -> tuple[CachedSchema, list[dict]]:
    """Decode every record of an in-memory Avro container file, with the cached writer schema."""
    header = read_container_header(raw, cache)
    return header.schema, list(_iter_blocks(raw, header))


def iter_container(raw: bytes, cache: SchemaCache = SCHEMA_CACHE) -> Iterator[dict]:
    """Yield every record of an in-memory Avro container file."""
    header = read_container_header(raw, cache)
    yield from _iter_blocks(raw, header)


def _iter_blocks(raw: bytes, header: ContainerHeader) -> Iterator[dict]:
    parsed = header.schema.parsed
    pos = header.data_start
    n = len(raw)
    reader = fastavro.schemaless_reader
    while pos < n:
        count, pos = _read_long(raw, pos)
        size, pos = _read_long(raw, pos)
        end = pos + size
        if count < 0 or size < 0:
            raise DecodeError("bad_block", f"negative block count/size at byte {pos}")
        if end + _SYNC_SIZE > n:
            raise DecodeError("truncated", f"block of {size} bytes at {pos} runs past the end ({n} bytes)")
        if raw[end : end + _SYNC_SIZE] != header.sync:
            raise DecodeError("bad_sync", f"sync marker mismatch after the block ending at byte {end}")
        if header.codec == "deflate":
            limit = LIMITS.max_decompressed_bytes
            try:
                inflater = zlib.decompressobj(-15)
                block = inflater.decompress(raw[pos:end], limit)
            except zlib.error as exc:
                raise DecodeError("bad_compression", f"deflate block at byte {pos}: {exc}") from exc
            if inflater.unconsumed_tail:  # stopped at the limit with input left: a deflate bomb
                raise DecodeError("decompressed_too_large", f"deflate block at byte {pos} inflates past {limit} "
                                  "bytes (limit ingest.max_decompressed_bytes)")
            fo = io.BytesIO(block)
            block_end = len(block)
        else:
            fo = io.BytesIO(raw)
            fo.seek(pos)
            block_end = end
        # no string/bytes value can be longer than its block: only a big block needs its fields checked.
        check_fields = block_end - fo.tell() > LIMITS.max_field_bytes
        for i in range(count):
            try:
                rec = reader(fo, parsed)
            except _BODY_ERRORS as exc:
                raise DecodeError(
                    "schema_mismatch",
                    f"record {i} of block at byte {pos} does not decode with the writer schema "
                    f"{header.schema.name!r}: {type(exc).__name__}: {exc}",
                ) from exc
            if check_fields:
                check_field_sizes(rec)
            yield rec
        if fo.tell() != block_end:
            raise DecodeError("schema_mismatch", f"block at byte {pos} has {block_end - fo.tell()} bytes "
                              f"left over after {count} records")
        pos = end + _SYNC_SIZE


def check_field_sizes(record: Any, limit: int | None = None) -> None:
    """Refuse a record holding a string/bytes value over ``ingest.max_field_bytes`` (iterative walk).

    Called only when the encoded record is larger than the limit, so normal alerts skip the walk.
    """
    limit = LIMITS.max_field_bytes if limit is None else limit
    stack = [record]
    while stack:
        node = stack.pop()
        pairs = node.items() if isinstance(node, dict) else ((None, v) for v in node)
        for k, v in pairs:
            if isinstance(v, (str, bytes)):
                if len(v) > limit:
                    where = "an array item" if k is None else f"field {k!r}"
                    raise DecodeError("field_too_large", f"{where} holds {len(v)} bytes/characters "
                                      f"(limit ingest.max_field_bytes = {limit})")
            elif isinstance(v, (dict, list)):
                stack.append(v)


def write_container(records: Iterable[dict], schema: Any, codec: str = "null") -> bytes:
    """Encode records as one Avro container file (used by replay to re-encode ZTF packets)."""
    parsed = schema if isinstance(schema, dict) and "__fastavro_parsed" in schema else fastavro.parse_schema(schema)
    out = io.BytesIO()
    fastavro.writer(out, parsed, records, codec=codec)
    return out.getvalue()


def zigzag(n: int) -> bytes:
    """Avro's zig-zag varint encoding of a long."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def container_from_bodies(header: bytes, sync: bytes, bodies: list[bytes], codec: str = "null") -> bytes:
    """A container file from a ready header (schema, sync marker) and pre-encoded record bodies: one block."""
    data = b"".join(bodies)
    if codec == "deflate":
        comp = zlib.compressobj(6, zlib.DEFLATED, -15)
        data = comp.compress(data) + comp.flush()
    return b"".join((header, zigzag(len(bodies)), zigzag(len(data)), data, sync))


def decode_schemaless(raw: bytes | memoryview, parsed: dict, *, offset: int = 0, name: str = "") -> dict:
    """Decode one record body written with ``parsed``; the whole buffer must be consumed."""
    fo = io.BytesIO(raw)
    if offset:
        fo.seek(offset)
    try:
        rec = fastavro.schemaless_reader(fo, parsed)
    except _BODY_ERRORS as exc:
        reason = "truncated" if isinstance(exc, EOFError) else "schema_mismatch"
        raise DecodeError(reason, f"body does not decode with schema {name or schema_full_name(parsed)!r}: "
                          f"{type(exc).__name__}: {exc}") from exc
    left = len(raw) - fo.tell()
    if left:
        raise DecodeError("schema_mismatch", f"{left} bytes left over after the record "
                          f"(schema {name or schema_full_name(parsed)!r})")
    if len(raw) - offset > LIMITS.max_field_bytes:
        check_field_sizes(rec)
    return rec


def encode_schemaless(record: dict, parsed: dict) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, record)
    return out.getvalue()


#: ``(schema_id) -> parsed schema``; raises DecodeError('unknown_schema_id') when it has none.
SchemaLookup = Callable[[int], dict]


def decode_confluent(raw: bytes, lookup: SchemaLookup) -> tuple[int, dict, dict]:
    """Decode magic 0 + 4-byte big-endian schema id + body; returns (schema id, parsed, record)."""
    if len(raw) < 5:
        raise DecodeError("truncated", f"{len(raw)} bytes: shorter than the 5-byte Confluent frame header")
    if raw[0] != CONFLUENT_MAGIC:
        raise DecodeError("bad_magic", f"Confluent frame must start with 0x00, got 0x{raw[0]:02x}")
    schema_id = int.from_bytes(raw[1:5], "big")
    parsed = lookup(schema_id)
    return schema_id, parsed, decode_schemaless(raw, parsed, offset=5)


def encode_confluent(record: dict, schema_id: int, parsed: dict) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + encode_schemaless(record, parsed)


_CRC64_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_CRC64_EMPTY & -(fp & 1))
        table.append(fp)
    return table


_CRC64_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """The Avro spec's Rabin fingerprint (CRC-64-AVRO) of ``data``."""
    fp = _CRC64_EMPTY
    for b in data:
        fp = (fp >> 8) ^ _CRC64_TABLE[(fp ^ b) & 0xFF]
    return fp


def schema_fingerprint(parsed: dict) -> int:
    """CRC-64-AVRO of the schema's Parsing Canonical Form (what single-object frames carry)."""
    return crc64_avro(to_parsing_canonical_form(parsed).encode("utf-8"))


#: id(parsed) -> (parsed, 10-byte frame header); keeps ``parsed`` alive so its id stays unique.
_SO_HEADERS: dict[int, tuple[dict, bytes]] = {}


def encode_single_object(record: dict, parsed_schema: dict) -> bytes:
    """C3 01 + little-endian CRC-64-AVRO fingerprint + schemaless body (Albireo's outgoing loci)."""
    hit = _SO_HEADERS.get(id(parsed_schema))
    if hit is None or hit[0] is not parsed_schema:
        header = SINGLE_OBJECT_MAGIC + schema_fingerprint(parsed_schema).to_bytes(8, "little")
        _SO_HEADERS[id(parsed_schema)] = (parsed_schema, header)
    else:
        header = hit[1]
    return header + encode_schemaless(record, parsed_schema)


def decode_single_object(raw: bytes, registry: Callable[[int], dict]) -> tuple[dict, dict]:
    """Decode a single-object frame; returns (parsed writer schema, record)."""
    if len(raw) < 10:
        raise DecodeError("truncated", f"{len(raw)} bytes: shorter than the 10-byte single-object header")
    if raw[:2] != SINGLE_OBJECT_MAGIC:
        raise DecodeError("bad_magic", f"single-object frame must start with C3 01, got {raw[:2].hex()}")
    parsed = registry(int.from_bytes(raw[2:10], "little"))
    return parsed, decode_schemaless(raw, parsed, offset=10)
