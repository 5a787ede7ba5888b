"""Watch lists: named sets of sky cones a user wants to hear about.

Kept in one JSON file under ``web.data_dir`` (small, portal-owned; written atomically). The API
lists the loci inside each watch list's cones through the index, so a watch list works the same on
the embedded and the Elasticsearch backend.
"""

from __future__ import annotations

import json
import os
import re
import threading
import uuid
from pathlib import Path
from typing import Any

_lock = threading.Lock()
MAX_OBJECTS = 10_000


class WatchListError(ValueError):
    """A watch list body that cannot be stored (the message names the field)."""


def _path(data_dir: str) -> Path:
    return Path(data_dir) / "watchlists.json"


def load(data_dir: str) -> dict[str, dict[str, Any]]:
    p = _path(data_dir)
    if not p.exists():
        return {}
    with _lock:
        return json.loads(p.read_text())


def _save(data_dir: str, lists: dict[str, dict[str, Any]]) -> None:
    p = _path(data_dir)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(lists, indent=1))
    os.replace(tmp, p)


def validate(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise WatchListError("body must be a JSON object with 'name' and 'objects'")
    name = body.get("name")
    if not isinstance(name, str) or not re.match(r"^[\w .:\-]{1,80}$", name):
        raise WatchListError("name: 1-80 letters, digits, spaces, '_', '.', ':', '-'")
    objs = body.get("objects")
    if not isinstance(objs, list) or not 0 < len(objs) <= MAX_OBJECTS:
        raise WatchListError(f"objects: a list of 1..{MAX_OBJECTS} {{ra, dec, radius_arcsec, label}}")
    clean = []
    for i, o in enumerate(objs):
        try:
            ra, dec = float(o["ra"]), float(o["dec"])
            radius = float(o.get("radius_arcsec", 1.0))
        except (KeyError, TypeError, ValueError):
            raise WatchListError(f"objects[{i}]: needs numeric ra and dec (degrees)") from None
        if not (0 <= ra <= 360 and -90 <= dec <= 90 and 0 < radius <= 3600):
            raise WatchListError(f"objects[{i}]: ra in [0,360], dec in [-90,90], 0 < radius_arcsec ≤ 3600")
        clean.append({"ra": ra, "dec": dec, "radius_arcsec": radius, "label": str(o.get("label", ""))[:80]})
    return {"name": name, "description": str(body.get("description", ""))[:500], "objects": clean,
            "notify": validate_notify(body.get("notify"))}


_EMAIL = re.compile(r"^[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9.\-]{1,190}\.?[A-Za-z0-9\-]*$")


def validate_notify(notify: Any) -> dict[str, str]:
    """Where the owner hears about a locus entering the list's cones: a Slack-compatible webhook and/or an email."""
    if notify in (None, {}):
        return {}
    if not isinstance(notify, dict) or not set(notify) <= {"webhook", "email"}:
        raise WatchListError("notify: an object with 'webhook' (an http(s) URL) and/or 'email'")
    out = {}
    hook = notify.get("webhook")
    if hook is not None:
        if not isinstance(hook, str) or len(hook) > 2000 or not re.match(r"^https?://[^\s/]+(/\S*)?$", hook):
            raise WatchListError("notify.webhook: an http:// or https:// URL (at most 2000 characters)")
        out["webhook"] = hook
    mail = notify.get("email")
    if mail is not None:
        if not isinstance(mail, str) or not _EMAIL.match(mail) or "\n" in mail or "\r" in mail:
            raise WatchListError("notify.email: one email address")
        out["email"] = mail
    return out


def create(data_dir: str, body: Any, author: str) -> dict[str, Any]:
    wl = validate(body)
    wl["id"] = uuid.uuid4().hex[:12]
    wl["author"] = author
    with _lock:
        p = _path(data_dir)
        lists = json.loads(p.read_text()) if p.exists() else {}
        lists[wl["id"]] = wl
        _save(data_dir, lists)
    return wl


def delete(data_dir: str, wl_id: str) -> bool:
    with _lock:
        p = _path(data_dir)
        lists = json.loads(p.read_text()) if p.exists() else {}
        if wl_id not in lists:
            return False
        del lists[wl_id]
        _save(data_dir, lists)
    return True
