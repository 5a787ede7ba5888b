"""Errors every blueprint raises: JSON with a message for API paths, an HTML page for the portal.

Bad parameters are :class:`BadRequest` (400) — never an unhandled exception turning into a 500.
Query errors from the index (``QueryError``) are mapped to 400 as well.
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from broker.ports import QueryError

log = logging.getLogger("albireo.web")


class ApiError(Exception):
    status = 400

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


def bad_request(message: str) -> ApiError:
    return ApiError(message, 400)


def not_found(message: str) -> ApiError:
    return ApiError(message, 404)


def _wants_json() -> bool:
    p = request.path
    return p.startswith(("/v2", "/api", "/metrics")) or request.args.get("format") == "json"


def _respond(status: int, message: str):
    if _wants_json():
        return jsonify({"errors": [{"status": str(status), "detail": message}], "message": message}), status
    return render_template("error.html", status=status, message=message), status


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return _respond(exc.status, exc.message)

    @app.errorhandler(QueryError)
    def _query_error(exc: QueryError):
        return _respond(400, str(exc))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        return _respond(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unhandled(exc: Exception):
        log.exception("unhandled error on %s", request.path)
        return _respond(500, f"internal error: {type(exc).__name__}")
