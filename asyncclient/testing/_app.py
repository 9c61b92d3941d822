"""The HTTP face of the emulator: routes, parameter checks and error bodies (aiohttp.web).

One middleware counts each request, calls :attr:`Emulator.before_request` and authenticates
it (401 otherwise), so the handlers only read parameters and map the emulator's answers to
HTTP. Latency, rate limits and faults (``_ratelimit``, ``_faults``) act in front of it.

Both path styles are served: ``/browser-agent/{id}`` and ``/list-browser-agents`` (legacy)
and ``/api/v1/browser-agents/{id}`` and ``/api/v1/browser-agents`` (v1). Every body,
errors included, is ``application/json``.

Checks run in the service's order: credentials (401), then the run id's shape (400), then
ownership (404: another key's run looks like no run at all). On the list, ``limit`` defaults
to 20 and is clamped into 1..100, while a negative or non-integer ``limit``/``skip`` is a
400. ``status`` filters on the run's status field exactly, so ``completed`` leaves out
``failed`` runs, which only an unfiltered list shows (the API has no ``failed`` filter).

``POST /browser-agent`` and ``POST /api/v1/browser-agents`` submit a run
(:meth:`Emulator.submit` checks and plans it) and answer in one of three modes:

- ``"async": true``: at once, ``{"id", "status", "completed", "total"}``;
- ``"stream": true``: Server-Sent Events as the run progresses on the emulator's clock:
  ``task_event`` per timeline event (screenshots with ``data.base64`` inline), ``task_result``
  per finished task (with ``taskIndex``), then ``done`` with the run summary;
- neither: the request blocks until the run finishes on the emulator's clock, then answers the
  run summary (with a :class:`ManualClock`, the test moves the clock while the request waits).

``GET /browser-agent-status`` answers ``{userId, running, claimed, pending, total, cap}``.
Bodies are camelCase dicts written by hand, independent of the client's Structs: the
emulator is the oracle the client is tested against.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

from ._accounts import user_id
from ._clock import loop_time
from ._responses import JSON, client_gone, error_response
from ._routes import GET_PATHS, LIST_PATHS, STATUS_PATH, SUBMIT_PATHS, request_route
from ._state import RunState
from ._submission import Refusal

if TYPE_CHECKING:
    from ._emulator import Emulator

__all__ = ["build_app"]

_RUN_ID = re.compile(r"[0-9a-fA-F]{24}")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DEFAULT_LIMIT = 20
_MAX_LIMIT = 100
_STATUSES = frozenset({"processing", "completed"})
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0", ""})
_TICK = 0.005  # seconds between looks at the clock while a request follows a run
_HEARTBEAT = 5.0  # real seconds between comment lines on an idle stream
# A 1x1 PNG: what a screenshot event carries inline in a stream.
_SCREENSHOT_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)

_API_KEY = web.RequestKey("api_key", str)
"""The key the front middleware authenticated the request as."""

_encode = msgspec.json.encode


def _unauthorized() -> web.Response:
    return error_response(401, "Missing or invalid API key", headers={"WWW-Authenticate": "Bearer"})


def _not_allowed() -> web.Response:
    return error_response(405, "Method not allowed", headers={"Allow": "GET"})


def _refused(refusal: Refusal) -> web.Response:
    headers = None if refusal.retry_after is None else {"Retry-After": str(refusal.retry_after)}
    return error_response(
        refusal.status,
        refusal.message,
        code=refusal.code,
        action_url=refusal.action_url,
        headers=headers,
    )


def _json(body: Mapping[str, Any] | bytes) -> web.Response:
    return web.Response(body=body if isinstance(body, bytes) else _encode(body), content_type=JSON)


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


# -- streaming a run ----------------------------------------------------------------------


def _frame(name: str, seq: int, payload: Mapping[str, Any]) -> bytes:
    return b"event: %s\nid: %d\ndata: %s\n\n" % (name.encode(), seq, _encode(payload))


def _stream_event(index: int, encoded: bytes) -> dict[str, Any]:
    event: dict[str, Any] = msgspec.json.decode(encoded)
    if event.get("type") == "screenshot" and isinstance(event.get("data"), dict):
        event["data"]["base64"] = _SCREENSHOT_BASE64
    return {"taskIndex": index, **event}


class _Follower:
    """What of a run has been streamed, and the frames that became due since."""

    def __init__(self, run: RunState) -> None:
        self.run = run
        self.sent = [0] * run.total
        self.reported = [False] * run.total
        self.seq = 0

    @property
    def finished(self) -> bool:
        return all(self.reported)

    def due(self, now: float) -> bytes:
        run = self.run
        elapsed = now - run.created_at
        items: list[tuple[float, int, int, str, dict[str, Any]]] = []
        for task in run.tasks:
            index = task.index
            if self.reported[index]:
                continue
            timeline = run.timeline(task)
            n = len(timeline)
            done = elapsed >= task.finish
            if done:
                seen = n
            elif elapsed > 0:
                # The same rule as liveEvents: event j at finish * (j + 1) / n, "done" last.
                seen = min(n - 1, int(n * elapsed / task.finish))
            else:
                seen = 0
            for j in range(self.sent[index], seen):
                at = task.finish * (j + 1) / n
                items.append((at, index, j, "task_event", _stream_event(index, timeline[j])))
            self.sent[index] = max(self.sent[index], seen)
            if done:
                result = {"taskIndex": index, **task.result(None)}
                items.append((task.finish, index, n, "task_result", result))
                self.reported[index] = True
        items.sort(key=lambda item: item[:3])
        frames = []
        for _, _, _, name, payload in items:
            self.seq += 1
            frames.append(_frame(name, self.seq, payload))
        return b"".join(frames)


async def _stream(emulator: Emulator, request: web.Request, run: RunState) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Cache-Control": "no-cache"})
    response.content_type = "text/event-stream"
    await response.prepare(request)
    follower = _Follower(run)
    emulator.streams_open += 1
    finished = False
    try:
        await response.write(b": stream open\nretry: 5000\n\n")
        beat = loop_time()
        while True:
            now = emulator.clock()
            frames = follower.due(now)
            if follower.finished:
                summary = msgspec.Raw(run.render_get(now, False))
                follower.seq += 1
                frames += b"event: done\nid: %d\ndata: %s\n\n" % (follower.seq, summary)
                await response.write(frames)
                finished = True
                break
            if client_gone(request):
                break
            if frames:
                await response.write(frames)
                beat = loop_time()
            elif loop_time() - beat >= _HEARTBEAT:
                await response.write(b": keep-alive\n\n")
                beat = loop_time()
            await asyncio.sleep(_TICK)
    except ConnectionResetError:
        pass  # the client went away mid-write
    finally:
        emulator.streams_open -= 1
        if not finished:
            emulator.stream_disconnects += 1
    if finished:
        await response.write_eof()
    return response


async def _answer_when_finished(
    emulator: Emulator, request: web.Request, run: RunState
) -> web.Response:
    """Hold the request until the run is over on the emulator's clock, then answer it."""
    while True:
        if run.status_at(emulator.clock()) != "processing" or client_gone(request):
            break
        await asyncio.sleep(_TICK)
    return _json(run.render_get(emulator.clock(), False))


# -- the application ----------------------------------------------------------------------


def build_app(emulator: Emulator) -> web.Application:
    """Build the ``aiohttp.web`` application answering for ``emulator``.

    Args:
        emulator: The state to serve.

    Returns:
        The application, with both path styles routed.
    """

    @web.middleware
    async def front(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Count the request, call before_request, check the method, then authenticate."""
        emulator.request_count += 1
        name = request_route(request)
        if name is None:
            return await handler(request)  # no route: the 404 needs no key
        emulator.requests_by_route[name] += 1
        if emulator.before_request is not None:
            emulator.before_request(name, request)
        if name != "submit" and request.method != "GET":
            return _not_allowed()
        api_key = emulator.authorize(request.headers.get("Authorization"))
        if api_key is None:
            return _unauthorized()
        request[_API_KEY] = api_key
        return await handler(request)

    async def get_run(request: web.Request) -> web.Response:
        run_id = request.match_info["id"]
        if not _RUN_ID.fullmatch(run_id):
            return error_response(400, "Malformed run id")
        include_events = False
        if request.query_string:
            raw = request.query.get("includeEvents")
            if raw is not None:
                flag = raw.lower()
                if flag in _TRUE:
                    include_events = True
                elif flag not in _FALSE:
                    return error_response(400, f"includeEvents must be true or false, got {raw!r}")
        body = emulator.render_run(request[_API_KEY], run_id, include_events)
        if body is None:
            return error_response(404, "Run not found")
        return _json(body)

    async def list_runs(request: web.Request) -> web.Response:
        limit = _integer(request, "limit")
        if isinstance(limit, str):
            return error_response(400, limit)
        skip = _integer(request, "skip")
        if isinstance(skip, str):
            return error_response(400, skip)
        status = request.query.get("status")
        if status is not None and status not in _STATUSES:
            return error_response(
                400, f"status must be 'processing' or 'completed', got {status!r}"
            )
        limit = _DEFAULT_LIMIT if limit is None else min(max(limit, 1), _MAX_LIMIT)
        return _json(emulator.render_list(request[_API_KEY], limit, skip or 0, status))

    async def submit(request: web.Request) -> web.StreamResponse:
        answer = emulator.submit(request[_API_KEY], await request.read())
        if isinstance(answer, Refusal):
            return _refused(answer)
        run, mode = answer
        if mode == "stream":
            return await _stream(emulator, request, run)
        if mode == "block":
            return await _answer_when_finished(emulator, request, run)
        now = emulator.clock()
        completed = sum(1 for task in run.tasks if task.finish <= now - run.created_at)
        return _json(
            {"id": run.id, "status": run.status_at(now), "completed": completed, "total": run.total}
        )

    async def queue_status(request: web.Request) -> web.Response:
        api_key = request[_API_KEY]
        running, pending = emulator.live_tasks(api_key, emulator.clock())
        return _json(
            {
                "userId": user_id(api_key),
                "running": running,
                "claimed": 0,
                "pending": pending,
                "total": running + pending,
                "cap": emulator.queue_cap,
            }
        )

    async def not_found(request: web.Request) -> web.Response:
        return error_response(404, "Not found")

    # Latency and rate limits, then faults (none unless a test or the command line sets some),
    # act in front of every route; then the counting and authenticating front.
    app = web.Application(
        middlewares=[emulator.rate_limits.middleware, emulator.faults.middleware, front]
    )
    # The submit routes first: the v1 submit path is also the v1 list path.
    for path in SUBMIT_PATHS:
        app.router.add_route("POST", path, submit)
    app.router.add_route("*", STATUS_PATH, queue_status)
    for path in GET_PATHS:
        app.router.add_route("*", path, get_run)
    for path in LIST_PATHS:
        app.router.add_route("*", path, list_runs)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app
