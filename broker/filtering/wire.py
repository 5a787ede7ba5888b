"""The data-only wire between the worker and a sandboxed filter: length-prefixed msgpack frames.

Nothing that crosses this wire is ever unpickled or evaluated: a frame is 4 bytes of big-endian
length followed by one msgpack document, decoded into plain ``dict``/``list``/``str``/``int``/
``float``/``bool``/``None``/``bytes`` values. What a child sends is untrusted, so the parent decodes
it with :func:`decode_untrusted` (bounded lengths, no extension types) and reads it through a
:class:`FrameReader` that never blocks: every read has a deadline set by the caller.

Loci travel the other way (parent → child, trusted data) with :func:`encode_locus_static` and
:func:`encode_locus_dynamic`: the part no filter changes (alerts, catalog matches, internal
properties) is encoded once per batch and reused for every filter's child (through the sandbox's
shared memory, or in the frame where there is none); only the tags and properties earlier filters
set are encoded per filter. Tuples arrive as lists; ``datetime`` and
``set`` values keep their type (extension types the child, and only the child, decodes).
"""

from __future__ import annotations

import datetime
import errno
import socket
import struct
from typing import Any

import msgpack

from broker.alert import Alert
from broker.locus import Locus

#: the largest frame a child may send (one locus's result); the parent refuses longer ones.
MAX_RESULT_FRAME = 1 << 20
#: the largest frame the parent sends (a locus with every alert and catalog match).
MAX_LOCUS_FRAME = 512 << 20
_HEAD = struct.Struct(">I")

_EXT_DATETIME = 1
_EXT_SET = 2


class WireError(Exception):
    """A frame that is too long, truncated or not the data it should be: a protocol violation."""


# ---- encoding ------------------------------------------------------------------------------------
def _default(obj: Any) -> Any:
    if isinstance(obj, datetime.datetime):
        return msgpack.ExtType(_EXT_DATETIME, obj.isoformat().encode())
    if isinstance(obj, (set, frozenset)):
        return msgpack.ExtType(_EXT_SET, msgpack.packb(list(obj), default=_default, use_bin_type=True))
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy arrays
        return obj.tolist()
    return str(obj)


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _EXT_DATETIME:
        return datetime.datetime.fromisoformat(data.decode())
    if code == _EXT_SET:
        return set(msgpack.unpackb(data, raw=False, ext_hook=_ext_hook, strict_map_key=False))
    raise WireError(f"unknown extension type {code}")


def pack(obj: Any) -> bytes:
    """One frame: length prefix and the msgpack document."""
    body = msgpack.packb(obj, default=_default, use_bin_type=True)
    return _HEAD.pack(len(body)) + body


def _plain(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"a {type(obj).__name__} is not plain data")


def pack_plain(obj: Any) -> bytes:
    """A frame of plain data only (what a child sends back): anything else raises ``TypeError``.

    No ``str()`` of unknown objects: a value's own methods must not decide what the parent receives.
    """
    body = msgpack.packb(obj, default=_plain, use_bin_type=True)
    return _HEAD.pack(len(body)) + body


def decode_trusted(body: bytes) -> Any:
    """Decode a frame from the parent (the child's side): extension types allowed."""
    return msgpack.unpackb(body, raw=False, ext_hook=_ext_hook, strict_map_key=False)


def decode_untrusted(body: bytes) -> Any:
    """Decode a frame from a child: plain data only, every length bounded, no extension types."""

    def no_ext(code: int, data: bytes) -> Any:
        raise WireError(f"extension type {code} refused")

    n = len(body)
    try:
        return msgpack.unpackb(body, raw=False, ext_hook=no_ext, strict_map_key=True,
                               max_str_len=n, max_bin_len=n, max_array_len=n, max_map_len=n, max_ext_len=0)
    except WireError:
        raise
    except Exception as exc:  # msgpack raises several types for malformed input
        raise WireError(f"malformed frame: {type(exc).__name__}: {exc}") from None


# ---- loci ----------------------------------------------------------------------------------------
def encode_locus_static(x: Locus) -> bytes:
    """What no filter changes: position, alerts, catalog matches, internal properties, GW and neutrino events."""
    # alerts of one survey share their property names: each set of names is sent once, then values only.
    # Each alert's values travel as their own msgpack document (bytes inside the frame), which a child
    # unpacks only when its filter reads that alert's properties: see WireAlert.
    key_sets: dict[tuple, int] = {}
    alerts = []
    packb = msgpack.Packer(default=_default, use_bin_type=True).pack
    for a in x.alerts:
        keys = tuple(a.properties)
        k = key_sets.setdefault(keys, len(key_sets))
        alerts.append((a.alert_id, a.survey, a.mjd, a.ra, a.dec, a.passband, a.mag, a.magerr, a.maglim, k,
                       packb(list(a.properties.values())), a.object_id, a.is_history, a.grav_wave_events,
                       a.neutrino_events))
    return msgpack.packb((x.locus_id, x.ra, x.dec, list(key_sets), alerts, x.internal_properties,
                          x.catalog_objects, x.grav_wave_events_metadata, x.neutrino_events_metadata),
                         default=_default, use_bin_type=True)


def encode_locus_dynamic(x: Locus) -> tuple:
    """What earlier filters may have changed: the user properties and tags."""
    return (x.user_properties, sorted(x.user_tags))


#: the dataclass slot that holds an :class:`Alert`'s properties.
_PROPERTIES_SLOT = Alert.__dict__["properties"]


class WireAlert(Alert):
    """An :class:`Alert` decoded in a filter child, whose ``properties`` dict is built on first use.

    A filter usually reads the trigger's properties and a few of the others' (or none: a position
    cut); building every alert's dict of ~100 entries up front was half the cost of decoding a
    locus, paid again in every filter's child, and unpacking every alert's values was most of the
    rest (0.31 of 0.39 ms for a 74-alert ZTF locus): the values stay packed (``_values``, bytes)
    until the dict is first read. The dict, once built, is an ordinary one.
    """

    __slots__ = ("_keys", "_values")

    @property
    def properties(self) -> dict[str, Any]:
        try:
            return _PROPERTIES_SLOT.__get__(self, Alert)
        except AttributeError:
            values = msgpack.unpackb(self._values, raw=False, ext_hook=_ext_hook, strict_map_key=False)
            props = dict(zip(self._keys, values, strict=True))
            _PROPERTIES_SLOT.__set__(self, props)
            return props

    @properties.setter
    def properties(self, value: dict[str, Any]) -> None:
        _PROPERTIES_SLOT.__set__(self, value)


def decode_locus(static: bytes, dynamic: Any) -> Locus:
    lid, ra, dec, key_sets, rows, internal, catalogs, gw, nu = decode_trusted(static)
    user, tags = dynamic
    alerts = []
    new = WireAlert.__new__
    for aid, survey, mjd, ara, adec, pb, mag, magerr, maglim, k, values, oid, hist, gwe, nue in rows:
        a = new(WireAlert)  # the fields as the parent holds them (no defaults added by __post_init__)
        a.alert_id, a.survey, a.mjd, a.ra, a.dec, a.passband = aid, survey, mjd, ara, adec, pb
        a.mag, a.magerr, a.maglim, a.object_id, a.is_history, a.locus_id = mag, magerr, maglim, oid, hist, lid
        a._keys, a._values = key_sets[k], values
        a.grav_wave_events, a.neutrino_events = gwe, nue
        alerts.append(a)
    return Locus(locus_id=lid, ra=ra, dec=dec, alerts=alerts, internal_properties=internal,
                 user_properties=dict(user), user_tags=set(tags), catalog_objects=catalogs,
                 grav_wave_events_metadata=gw, neutrino_events_metadata=nu)


# ---- non-blocking framed I/O ---------------------------------------------------------------------
class FrameReader:
    """Frames from a non-blocking socket, as they arrive; never blocks, never reads past ``limit``."""

    def __init__(self, sock: socket.socket, limit: int = MAX_RESULT_FRAME):
        self.sock = sock
        self.limit = limit
        self.buf = bytearray()
        self.eof = False

    def fill(self) -> None:
        """Read what is available now (EOF sets :attr:`eof`)."""
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.EBADF):
                    self.eof = True
                    return
                raise
            if not chunk:
                self.eof = True
                return
            self.buf += chunk
            if len(self.buf) > self.limit + _HEAD.size:
                return  # enough to judge the next frame; the rest waits

    def frames(self) -> list[bytes]:
        """Every complete frame in the buffer; :class:`WireError` for one longer than the limit."""
        out = []
        while len(self.buf) >= _HEAD.size:
            (n,) = _HEAD.unpack_from(self.buf)
            if n > self.limit:
                raise WireError(f"frame of {n} bytes exceeds the limit of {self.limit}")
            if len(self.buf) < _HEAD.size + n:
                break
            out.append(bytes(self.buf[_HEAD.size:_HEAD.size + n]))
            del self.buf[:_HEAD.size + n]
        return out


class FrameWriter:
    """Bytes queued for a non-blocking socket and sent as the peer reads them (a child that stops
    reading can never block the parent)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = bytearray()
        self.broken = False

    def queue(self, frame: bytes) -> None:
        self.buf += frame
        self.flush()

    def flush(self) -> None:
        while self.buf and not self.broken:
            try:
                n = self.sock.send(self.buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.broken = True
                return
            del self.buf[:n]

    @property
    def pending(self) -> bool:
        return bool(self.buf) and not self.broken


def read_frame_blocking(sock: socket.socket, limit: int = MAX_LOCUS_FRAME) -> bytes | None:
    """One frame from a blocking socket (the child reading its parent); None at EOF."""
    head = _recv_exactly(sock, _HEAD.size)
    if head is None:
        return None
    return _read_body(sock, head, limit)


def _read_body(sock: socket.socket, head: bytes, limit: int) -> bytes:
    """The body a frame's ``head`` (its length prefix) announces, read to the end."""
    (n,) = _HEAD.unpack(head)
    if n > limit:
        raise WireError(f"frame of {n} bytes exceeds the limit of {limit}")
    body = _recv_exactly(sock, n)
    if body is None:
        raise WireError("truncated frame")
    return body


def read_frame_and_fds(sock: socket.socket, max_fds: int = 1, limit: int = MAX_LOCUS_FRAME) -> tuple[bytes | None, list[int]]:
    """One frame from a blocking socket and the descriptors sent with its first bytes (``socket.send_fds``).

    Descriptors travel with the bytes they were sent with: read with plain ``recv`` they would be
    closed by the kernel, so a frame that may carry one is read here.
    """
    head, fds, _, _ = socket.recv_fds(sock, _HEAD.size, max_fds)
    if not head:
        return None, fds
    if len(head) < _HEAD.size:
        rest = _recv_exactly(sock, _HEAD.size - len(head))
        if rest is None:
            raise WireError("truncated frame")
        head += rest
    return _read_body(sock, head, limit), fds


def _recv_exactly(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 22))
        if not chunk:
            if buf:
                raise WireError("truncated frame")
            return None
        buf += chunk
    return bytes(buf)
