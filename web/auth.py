"""Who is asking: per-user API keys for scripts, login sessions for the portal, CSRF tokens on its forms.

* **API keys** (``albireo users add``/``key``): ``Authorization: Bearer alb_<id>_<secret>``. The key
  is checked against its scrypt hash (:mod:`broker.access.secrets`) and its revocation on every
  request. A bearer request carries no cookie, so it needs no CSRF token.
* **Sessions** (the portal): ``/login`` takes an API key once and keeps, in Flask's signed cookie,
  only the user name, the key's id, the login time and a CSRF token. Every request re-checks that
  the key is still active, so revoking a key ends its sessions; a session ends after
  ``web.session_hours``. The cookie is HttpOnly and SameSite=Lax (Secure with
  ``web.secure_cookies``).
* **CSRF**: every state-changing request made with a session must carry the session's token, as
  the form field ``csrf_token`` (templates call ``csrf_token()``) or the header ``X-CSRF-Token``.

Roles (:mod:`broker.access.service`): any ``user`` may submit and test filters and keep watch
lists; approvals (enabling/disabling filters), grants and user changes need ``admin``; a
``pipeline`` principal writes Kafka, never the API.
"""

from __future__ import annotations

import datetime
import hmac
import secrets
import time
from typing import Any

from flask import Blueprint, Flask, current_app, g, redirect, render_template, request, session, url_for

from broker.access.service import Principal
from web.errors import ApiError

bp = Blueprint("auth", __name__, template_folder="templates")

_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
_EXT = "albireo.users"


def install(app: Flask, users: Any) -> None:
    """Attach the users service, sign sessions, and give templates ``csrf_token()`` and ``current_user``."""
    cfg = app.extensions["albireo"].cfg
    app.extensions[_EXT] = users
    app.secret_key = cfg.web.secret_key or users.records.session_secret()
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_SECURE=bool(cfg.web.secure_cookies),
                      PERMANENT_SESSION_LIFETIME=datetime.timedelta(hours=cfg.web.session_hours))
    app.jinja_env.globals["csrf_token"] = csrf_token

    @app.context_processor
    def _user() -> dict[str, Any]:
        try:
            return {"current_user": current_principal()}
        except ApiError:  # a bad bearer key on an HTML page: render as logged out
            return {"current_user": None}

    app.register_blueprint(bp)


def users() -> Any:
    """The app's :class:`broker.access.service.Users`."""
    return current_app.extensions[_EXT]


def csrf_token() -> str:
    """This session's CSRF token (made on first use)."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def _check_csrf() -> None:
    expected = session.get("csrf", "")
    given = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token", "")
    if not expected or not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError("missing or wrong CSRF token: reload the page and submit again", 403)


def _session_principal() -> Principal | None:
    name, key_id, since = session.get("uid"), session.get("kid"), session.get("t", 0)
    if not name or not key_id:
        return None
    cfg = current_app.extensions["albireo"].cfg
    if time.time() - float(since) > cfg.web.session_hours * 3600:
        session.clear()
        return None
    principal = users().session_principal(name, key_id)
    if principal is None:  # the key was revoked or the user removed: the session ends
        session.clear()
    return principal


def current_principal() -> Principal | None:
    """The caller (bearer key first, then session), or None; a malformed or bad bearer key is a 401."""
    if "principal" in g:
        return g.principal
    header = request.headers.get("Authorization", "")
    if header:
        if not header.startswith("Bearer "):
            raise ApiError("Authorization must be 'Bearer <api key>'", 401)
        principal = users().authenticate(header.removeprefix("Bearer ").strip())
        if principal is None:
            raise ApiError("unknown, revoked or malformed API key", 401)
        g.via = "key"
    else:
        principal = _session_principal()
        g.via = "session"
    g.principal = principal
    return principal


def require_user(admin: bool = False) -> Principal:
    """The authenticated caller allowed to write, or raise 401 (nobody), 403 (bad CSRF, wrong role)."""
    principal = current_principal()
    if principal is None:
        raise ApiError("log in (portal: /login) or send Authorization: Bearer <api key> "
                       "(the operator makes keys with `albireo users key NAME`)", 401)
    if g.via == "session" and request.method not in _SAFE_METHODS:
        _check_csrf()
    if principal.role == "pipeline":
        raise ApiError(f"{principal.name} is a pipeline principal: it writes streams, not through the API", 403)
    if admin and not principal.is_admin:
        raise ApiError(f"{principal.name} may not do this: it needs the admin role", 403)
    return principal


def _safe_next(target: str | None) -> str:
    """Only a path on this site (no scheme, no ``//host``): never an open redirect."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("portal.home")


@bp.get("/login")
def login_page():
    return render_template("login.html", next=_safe_next(request.args.get("next")))


@bp.post("/login")
def login():
    _check_csrf()
    principal = users().authenticate(request.form.get("api_key", ""))
    target = _safe_next(request.form.get("next"))
    if principal is None or principal.role == "pipeline":
        return render_template("login.html", next=target, message="Unknown, revoked or malformed API key."), 401
    session.clear()  # a fresh session (and CSRF token) at every login: no fixation
    session.permanent = True
    session.update({"uid": principal.name, "kid": principal.key_id, "t": time.time(),
                    "csrf": secrets.token_urlsafe(32)})
    return redirect(target)


@bp.post("/logout")
def logout():
    _check_csrf()
    session.clear()
    return redirect(url_for("portal.home"))
