"""``/api/users``: users, stream grants and API keys over HTTP — what ``albireo users`` does, for admins.

Every route calls :class:`broker.access.service.Users` (the same methods as the CLI), so a grant made
here is an ACL on the broker at once. Admins may do everything; a user may read their own record
(``/api/users/me``) and make or revoke their own API keys. Secrets (a new user's Kafka password, a
new API key) are in the response that made them, and nowhere else ever after.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from broker.access import AccessError, NotFound
from broker.errors import UserError
from web.auth import require_user, users
from web.errors import ApiError, bad_request, not_found
from web.params import json_object_body

bp = Blueprint("users", __name__, url_prefix="/api/users")


def _body() -> dict[str, Any]:
    body = json_object_body(required=True) if request.is_json else request.form.to_dict()
    if not isinstance(body, dict):
        raise bad_request("send a JSON object")
    return body


def _call(fn, *args, **kwargs):
    """A users-service call with its errors as HTTP answers (unknown user 404, bad input 400, broker 502)."""
    try:
        return fn(*args, **kwargs)
    except AccessError as exc:
        raise ApiError(f"the stream broker refused: {exc}", 502) from exc
    except NotFound as exc:
        raise not_found(str(exc)) from exc
    except UserError as exc:
        raise bad_request(str(exc)) from exc


def _record(name: str) -> dict[str, Any]:
    for u in users().list():
        if u["name"] == name:
            return u
    raise not_found(f"no user {name!r}")


@bp.get("")
def user_list():
    require_user(admin=True)
    rows = users().list()
    return jsonify({"data": rows, "meta": {"count": len(rows)}})


@bp.post("")
def user_create():
    """Body: ``name``, ``role`` (user/admin/pipeline), ``groups`` (list). Returns the password and key once."""
    require_user(admin=True)
    p = _body()
    groups = p.get("groups") or []
    if not isinstance(groups, list):
        raise bad_request("groups must be a list of consumer group names")
    new = _call(users().add, p.get("name", ""), p.get("role") or "user", groups)
    svc = users()
    return jsonify({"data": {"name": new.name, "role": new.role, "kafka_username": new.name,
                             "kafka_password": new.password, "key_id": new.key_id, "api_key": new.api_key,
                             "bootstrap_servers": svc.consumer_bootstrap, "ca_file": svc.ca_file}}), 201


@bp.get("/me")
def user_me():
    return jsonify({"data": _record(require_user().name)})


@bp.get("/<name>")
def user_detail(name: str):
    require_user(admin=True)
    return jsonify({"data": _record(name)})


@bp.delete("/<name>")
def user_delete(name: str):
    require_user(admin=True)
    _call(users().remove, name)
    return "", 204


@bp.post("/<name>/grants")
def grant(name: str):
    """Body: ``streams`` (a list, or one ``stream``). The broker's ACLs change before the answer."""
    who = require_user(admin=True)
    p = _body()
    streams = p.get("streams") if "streams" in p else [p.get("stream")]
    if not isinstance(streams, list):
        raise bad_request("streams must be a list of stream names")
    new = _call(users().grant, name, streams, by=who.name)
    return jsonify({"data": {"name": name, "granted": new, "grants": _record(name)["grants"]}})


@bp.delete("/<name>/grants/<stream>")
def revoke(name: str, stream: str):
    require_user(admin=True)
    gone = _call(users().revoke, name, [stream])
    if not gone:
        raise not_found(f"{name} had no grant on {stream!r}")
    return "", 204


@bp.post("/<name>/keys")
def key_create(name: str):
    """A new API key for ``name`` (yourself, or anyone as admin), shown once."""
    who = require_user()
    if who.name != name and not who.is_admin:
        raise ApiError("you may make keys for yourself only", 403)
    key_id, key = _call(users().new_key, name, str(_body().get("label") or ""))
    return jsonify({"data": {"name": name, "key_id": key_id, "api_key": key}}), 201


@bp.delete("/<name>/keys/<key_id>")
def key_revoke(name: str, key_id: str):
    who = require_user()
    if who.name != name and not who.is_admin:
        raise ApiError("you may revoke your own keys only", 403)
    if key_id not in {k["key_id"] for k in _record(name)["keys"]}:
        raise not_found(f"{name} has no API key {key_id!r}")
    _call(users().revoke_key, key_id)
    return "", 204
