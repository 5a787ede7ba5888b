"""Downloading a notice's sky map (``healpix_url``): the one network call of the multi-messenger stage.

Why an adapter: a stage does no I/O of its own, and a download can hang, be huge or return an
HTML error page. :class:`HttpSkymapFetcher` bounds all three — a timeout per connection and read,
a byte cap read incrementally (a lying ``Content-Length`` does not help), and a check that the
body is a FITS file (plain or gzipped) — and raises ``OSError`` with the reason, which the stage
records. Only ``http``/``https`` URLs are fetched (no ``file:``, no FTP), and a ``mirror_dir``
(``multimessenger.skymap_dir``) is looked into first, so a site that keeps its own copies, or a
test, never needs the network.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from broker.ports import SkymapFetcher


class HttpSkymapFetcher(SkymapFetcher):
    def __init__(self, timeout_s: float = 30.0, max_bytes: int = 256 * 1024 * 1024, mirror_dir: str = ""):
        self.timeout_s = float(timeout_s)
        self.max_bytes = int(max_bytes)
        self.mirror_dir = Path(mirror_dir) if mirror_dir else None

    def fetch(self, url: str) -> bytes:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise OSError(f"sky map URL {url!r}: only http(s) URLs are fetched")
        name = Path(parts.path).name
        if self.mirror_dir is not None and name:
            local = self.mirror_dir / name
            if local.is_file():
                return self._check(local.read_bytes()[: self.max_bytes + 1], url)
        req = urllib.request.Request(url, headers={"User-Agent": "albireo-broker (sky map fetch)"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 - scheme checked above
                chunks, size = [], 0
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise OSError(f"sky map {url}: larger than {self.max_bytes} bytes")
                    chunks.append(chunk)
        except urllib.error.HTTPError as exc:
            raise OSError(f"sky map {url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise OSError(f"sky map {url}: unreachable ({getattr(exc, 'reason', exc)})") from None
        return self._check(b"".join(chunks), url)

    def _check(self, data: bytes, url: str) -> bytes:
        if len(data) > self.max_bytes:
            raise OSError(f"sky map {url}: larger than {self.max_bytes} bytes")
        if not (data.startswith(b"SIMPLE") or data[:2] == b"\x1f\x8b"):
            raise OSError(f"sky map {url}: not a FITS file (starts {data[:16]!r})")
        return data
