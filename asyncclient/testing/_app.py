"""The HTTP face of the emulator: routes, parameter checks and error bodies (aiohttp.web).

Both path styles are served: ``/browser-agent/{id}`` and ``/list-browser-agents`` (legacy)
and ``/api/v1/browser-agents/{id}`` and ``/api/v1/browser-agents`` (v1). Every body,
errors included, is ``application/json``.

Checks run in the service's order: credentials (401), then the run id's shape (400), then
ownership (404: another key's run looks like no run at all). On the list, ``limit`` defaults
to 20 and is clamped into 1..100, while a negative or non-integer ``limit``/``skip`` is a
400. ``status`` filters on the run's status field exactly, so ``completed`` leaves out
``failed`` runs, which only an unfiltered list shows (the API has no ``failed`` filter).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import msgspec
from aiohttp import web

from ._submit import add_routes as add_submit_routes

if TYPE_CHECKING:
    from ._emulator import Emulator

__all__ = ["build_app"]

GET_PATHS = ("/browser-agent/{id}", "/api/v1/browser-agents/{id}")
LIST_PATHS = ("/list-browser-agents", "/api/v1/browser-agents")

_RUN_ID = re.compile(r"[0-9a-fA-F]{24}")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_JSON = "application/json"
_DEFAULT_LIMIT = 20
_MAX_LIMIT = 100
_STATUSES = frozenset({"processing", "completed"})
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0", ""})


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = msgspec.json.encode({"error": message})
    return web.Response(status=status, body=body, content_type=_JSON, headers=headers)


def _unauthorized() -> web.Response:
    return _error(401, "Missing or invalid API key", {"WWW-Authenticate": "Bearer"})


def _not_allowed() -> web.Response:
    return _error(405, "Method not allowed", {"Allow": "GET"})


def _integer(request: web.Request, name: str) -> int | str | None:
    """Parse an integer query parameter: the value, ``None`` if absent, or an error message."""
    raw = request.query.get(name)
    if raw is None:
        return None
    if not _INTEGER.fullmatch(raw):
        return f"{name} must be an integer, got {raw!r}"
    value = int(raw)
    if value < 0:
        return f"{name} must not be negative, got {value}"
    return value


def build_app(emulator: Emulator) -> web.Application:
    """Build the ``aiohttp.web`` application answering for ``emulator``.

    Args:
        emulator: The state to serve.

    Returns:
        The application, with both path styles routed.
    """
    by_route = emulator.requests_by_route

    async def get_run(request: web.Request) -> web.Response:
        emulator.request_count += 1
        by_route["get"] += 1
        if emulator.before_request is not None:
            emulator.before_request("get", request)
        if request.method != "GET":
            return _not_allowed()
        api_key = emulator._authorize(request.headers.get("Authorization"))
        if api_key is None:
            return _unauthorized()
        run_id = request.match_info["id"]
        if not _RUN_ID.fullmatch(run_id):
            return _error(400, "Malformed run id")
        include_events = False
        if request.query_string:
            raw = request.query.get("includeEvents")
            if raw is not None:
                flag = raw.lower()
                if flag in _TRUE:
                    include_events = True
                elif flag not in _FALSE:
                    return _error(400, f"includeEvents must be true or false, got {raw!r}")
        body = emulator._render_run(api_key, run_id, include_events)
        if body is None:
            return _error(404, "Run not found")
        return web.Response(body=body, content_type=_JSON)

    async def list_runs(request: web.Request) -> web.Response:
        emulator.request_count += 1
        by_route["list"] += 1
        if emulator.before_request is not None:
            emulator.before_request("list", request)
        if request.method != "GET":
            return _not_allowed()
        api_key = emulator._authorize(request.headers.get("Authorization"))
        if api_key is None:
            return _unauthorized()
        limit = _integer(request, "limit")
        if isinstance(limit, str):
            return _error(400, limit)
        skip = _integer(request, "skip")
        if isinstance(skip, str):
            return _error(400, skip)
        status = request.query.get("status")
        if status is not None and status not in _STATUSES:
            return _error(400, f"status must be 'processing' or 'completed', got {status!r}")
        limit = _DEFAULT_LIMIT if limit is None else min(max(limit, 1), _MAX_LIMIT)
        body = emulator._render_list(api_key, limit, skip or 0, status)
        return web.Response(body=body, content_type=_JSON)

    async def not_found(request: web.Request) -> web.Response:
        emulator.request_count += 1
        return _error(404, "Not found")

    # Latency and rate limits, then faults (none unless a test or the command line sets some),
    # act in front of every route.
    app = web.Application(
        middlewares=[emulator.rate_limits._middleware, emulator.faults._middleware]
    )
    add_submit_routes(app, emulator)  # first: the v1 submit path is also the v1 list path
    for path in GET_PATHS:
        app.router.add_route("*", path, get_run)
    for path in LIST_PATHS:
        app.router.add_route("*", path, list_runs)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app
