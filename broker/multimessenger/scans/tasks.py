"""The messages of a scan on the queue: pixel tasks out, pixel results back (JSON, checked on read).

The task and result topics are a trust boundary (anyone who may write them could send anything),
so both decoders bound the size, check every field's type and raise :class:`MessageError`; a
worker or the server that meets one logs it and moves on, it never crashes.

* task — ``{"v": 1, "scan": id, "nside": n, "pixels": [...], "reconstruction": name, "params": {...},
  "event": {...}}``: everything a worker needs, so it reads the store only to see aborts;
* result — ``{"v": 1, "scan": id, "nside": n, "rows": [[pixel, llh, E_in, E_tot], ...], "worker": w,
  "seconds": s}``, or with ``"error"`` when the reconstruction raised. Non-finite numbers travel as null.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from broker.multimessenger.scans.model import ScanEvent

MAX_MESSAGE_BYTES = 1024 * 1024
MAX_PIXELS_PER_MESSAGE = 4096


class MessageError(ValueError):
    """A task or result message that is not one."""


@dataclass(frozen=True)
class Task:
    scan_id: str
    nside: int
    pixels: np.ndarray
    reconstruction: str
    params: dict[str, float]
    event: ScanEvent


@dataclass(frozen=True)
class Result:
    scan_id: str
    nside: int
    #: (n, 4): pixel, llh, E_in, E_tot (NaN where the reconstruction gave no finite number).
    rows: np.ndarray
    worker: str = ""
    seconds: float = 0.0
    error: str = ""


def encode_task(scan_id: str, nside: int, pixels: np.ndarray, reconstruction: str, params: dict[str, float],
                event: ScanEvent) -> bytes:
    return json.dumps({"v": 1, "scan": scan_id, "nside": int(nside), "pixels": [int(p) for p in pixels],
                       "reconstruction": reconstruction, "params": params, "event": event.to_dict()},
                      allow_nan=False).encode()


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def encode_result(scan_id: str, nside: int, pixels: np.ndarray, values: np.ndarray, worker: str = "",
                  seconds: float = 0.0, error: str = "") -> bytes:
    rows = [[int(p), *(_finite(float(v)) for v in vals)] for p, vals in zip(pixels, values, strict=True)]
    return json.dumps({"v": 1, "scan": scan_id, "nside": int(nside), "rows": rows, "worker": worker,
                       "seconds": round(float(seconds), 6), "error": error[:2000]}, allow_nan=False).encode()


def _load(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_MESSAGE_BYTES:
        raise MessageError(f"message of {len(raw)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MessageError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("v") != 1:
        raise MessageError("not a version-1 scan message")
    sid, nside = doc.get("scan"), doc.get("nside")
    if not isinstance(sid, str) or not 0 < len(sid) <= 64 or not sid.isalnum():
        raise MessageError("bad scan id")
    if isinstance(nside, bool) or not isinstance(nside, int) or nside < 1 or nside > 8192 or nside & (nside - 1):
        raise MessageError("bad nside")
    return doc


def _pixels(values: Any, nside: int) -> np.ndarray:
    if not isinstance(values, list) or len(values) > MAX_PIXELS_PER_MESSAGE or \
            not all(isinstance(p, int) and not isinstance(p, bool) for p in values):
        raise MessageError("pixels must be a list of integers")
    pix = np.array(values, dtype=np.int64)
    if len(pix) and (pix.min() < 0 or pix.max() >= 12 * nside * nside):
        raise MessageError(f"pixel outside nside {nside}")
    return pix


def decode_task(raw: bytes) -> Task:
    doc = _load(raw)
    pix = _pixels(doc.get("pixels"), doc["nside"])
    name, params, ev = doc.get("reconstruction"), doc.get("params"), doc.get("event")
    if not isinstance(name, str) or not isinstance(params, dict) or not isinstance(ev, dict):
        raise MessageError("a task names a reconstruction, its params and the event")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in params.values()):
        raise MessageError("params must be numbers")
    try:
        event = ScanEvent.from_dict(ev)
        float(event.ra), float(event.dec), float(event.mjd)  # noqa: B018 - type check
    except (TypeError, ValueError) as exc:
        raise MessageError(f"bad event: {exc}") from None
    return Task(doc["scan"], doc["nside"], pix, name, {str(k): float(v) for k, v in params.items()}, event)


def decode_result(raw: bytes) -> Result:
    doc = _load(raw)
    rows = doc.get("rows")
    if not isinstance(rows, list) or len(rows) > MAX_PIXELS_PER_MESSAGE:
        raise MessageError("rows must be a list")
    out = np.full((len(rows), 4), np.nan)
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != 4 or isinstance(row[0], bool) or not isinstance(row[0], int):
            raise MessageError("each row is [pixel, llh, E_in, E_tot]")
        out[i, 0] = row[0]
        for j in (1, 2, 3):
            v = row[j]
            if v is not None:
                if isinstance(v, bool) or not isinstance(v, int | float):
                    raise MessageError("row values are numbers or null")
                out[i, j] = float(v)
    if len(out) and (out[:, 0].min() < 0 or out[:, 0].max() >= 12 * doc["nside"] ** 2):
        raise MessageError(f"pixel outside nside {doc['nside']}")
    err = doc.get("error") or ""
    worker = doc.get("worker") or ""
    seconds = doc.get("seconds") or 0.0
    if not isinstance(err, str) or not isinstance(worker, str) or not isinstance(seconds, int | float):
        raise MessageError("bad error/worker/seconds")
    return Result(doc["scan"], doc["nside"], out, worker[:200], float(seconds), err[:2000])
