"""Write access: one shared token from ``[web] token`` / ``ALBIREO_WEB__TOKEN``.

Deliberately simple (a broker run by a small team): the token is sent as
``Authorization: Bearer <token>`` by scripts, or typed into the portal's form field ``token``.
With no token configured every write is refused (403), so a fresh install is read-only.
"""

from __future__ import annotations

import hmac

from flask import request

from web.backend import backend
from web.errors import ApiError


def require_token() -> str:
    """Return the caller's name (``author`` form field or ``X-Albireo-User``), or raise 401/403."""
    expected = backend().cfg.web.token
    if not expected:
        raise ApiError("writes are disabled: no [web] token configured (set ALBIREO_WEB__TOKEN)", 403)
    header = request.headers.get("Authorization", "")
    given = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else request.form.get("token", "")
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError("missing or wrong token (Authorization: Bearer <token>)", 401)
    author = request.form.get("author") or request.headers.get("X-Albireo-User") or "anonymous"
    return author[:80]
