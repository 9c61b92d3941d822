"""The write side of the emulated API: submitting runs, and the queue snapshot (aiohttp.web).

``POST /browser-agent`` and ``POST /api/v1/browser-agents`` take
``{"tasks": [...], "concurrency"?, "async"?, "stream"?}`` and answer in one of three modes:

- ``"async": true``: at once, ``{"id", "status", "completed", "total"}``;
- ``"stream": true``: Server-Sent Events as the run progresses on the emulator's clock:
  ``task_event`` per timeline event (screenshots with ``data.base64`` inline), ``task_result``
  per finished task (with ``taskIndex``), then ``done`` with the run summary;
- neither: the request blocks until the run finishes on the emulator's clock, then answers the
  run summary (with a :class:`ManualClock`, the test moves the clock while the request waits).

Checks run in this order: credentials (401), the key's rate limit (429 ``RATE_LIMITED``), the
body (400), the batch size (400 ``BATCH_TOO_LARGE``), the account (402
``SUBSCRIPTION_REQUIRED`` / ``INSUFFICIENT_CREDITS`` with ``actionUrl``), then the queue cap:
1000 live tasks per key (429 ``QUEUE_FULL``). ``GET /browser-agent-status`` answers
``{userId, running, claimed, pending, total, cap}``.

The tasks of a submitted run run ``concurrency`` at a time (5 by default): each takes the first
free browser, in order. A task's events are spread over the time from the run's creation to the
task's finish, as in the rest of the emulator.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import math
import random
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec
from aiohttp import web

from ._samples import sample_status
from ._state import RunState, TaskPlan

if TYPE_CHECKING:
    from ._emulator import Emulator

__all__ = [
    "CREDITS_URL",
    "MAX_BATCH",
    "QUEUE_CAP",
    "STATUS_PATH",
    "SUBMIT_PATHS",
    "SUBSCRIBE_URL",
    "Account",
    "add_routes",
]

SUBMIT_PATHS = ("/browser-agent", "/api/v1/browser-agents")
STATUS_PATH = "/browser-agent-status"
QUEUE_CAP = 1000
"""Live (unfinished) tasks one key may have."""
MAX_BATCH = 100
"""Tasks one submission may hold."""
SUBSCRIBE_URL = "https://pre.dev/pricing"
CREDITS_URL = "https://pre.dev/settings/credits"

_JSON = "application/json"
_MAX_CONCURRENCY = 20
_DEFAULT_CONCURRENCY = 5
_MIN_TASK_CREDITS = 0.1
_EVENT_BYTES_PER_TASK = 4_000
_TICK = 0.005  # seconds between looks at the clock while a request follows a run
_HEARTBEAT = 5.0  # real seconds between comment lines on an idle stream
# A 1x1 PNG: what a screenshot event carries inline in a stream.
_SCREENSHOT_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
_WORDS = ("alpha", "browser", "cluster", "delta", "example", "python", "release", "schema")

_encode = msgspec.json.encode


@dataclass
class Account:
    """What :meth:`Emulator.set_account` set for one key."""

    subscribed: bool = True
    credits: float | None = None
    rate_limit: tuple[int, float] | None = None
    submits: deque[float] = field(default_factory=deque)


def _json_error(
    status: int,
    message: str,
    *,
    code: str | None = None,
    action_url: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body: dict[str, str] = {"error": message}
    if code is not None:
        body["code"] = code
    if action_url is not None:
        body["actionUrl"] = action_url
    return web.Response(status=status, body=_encode(body), content_type=_JSON, headers=headers)


def _unauthorized() -> web.Response:
    return _json_error(401, "Missing or invalid API key", headers={"WWW-Authenticate": "Bearer"})


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def user_id(api_key: str) -> str:
    """The account id the emulator shows for a key (derived from it, never the key itself)."""
    return "user_" + hashlib.sha256(f"asyncclient.testing:{api_key}".encode()).hexdigest()[:16]


# -- reading a submission -----------------------------------------------------------------


@dataclass(frozen=True)
class _Submission:
    tasks: list[dict[str, Any]]
    concurrency: int
    mode: str  # "async", "stream" or "block"


def _check_task(index: int, task: object) -> str | None:
    where = f"tasks[{index}]"
    if not isinstance(task, dict):
        return f"{where} must be an object"
    url = task.get("url")
    if not isinstance(url, str) or not url:
        return f"{where}.url is required"
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"{where}.url is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{where}.url must be an http(s) URL"
    instruction = task.get("instruction")
    if instruction is not None and not isinstance(instruction, str):
        return f"{where}.instruction must be a string"
    inputs = task.get("input")
    if inputs is not None and (
        not isinstance(inputs, dict) or not all(isinstance(v, str) for v in inputs.values())
    ):
        return f"{where}.input must be an object of strings"
    output = task.get("output")
    if output is not None and not isinstance(output, dict):
        return f"{where}.output must be a JSON Schema object"
    return None


def _read_submission(raw: bytes) -> _Submission | str:
    """The submission in ``raw``, or what is wrong with it."""
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return "The body must be JSON"
    if not isinstance(body, dict):
        return "The body must be a JSON object"
    tasks = body.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        return "tasks must be a non-empty array"
    for index, task in enumerate(tasks):
        problem = _check_task(index, task)
        if problem is not None:
            return problem
    concurrency = body.get("concurrency", _DEFAULT_CONCURRENCY)
    if (
        isinstance(concurrency, bool)
        or not isinstance(concurrency, int)
        or not 1 <= concurrency <= _MAX_CONCURRENCY
    ):
        return f"concurrency must be an integer from 1 to {_MAX_CONCURRENCY}"
    flags = {}
    for name in ("async", "stream"):
        value = body.get(name, False)
        if not isinstance(value, bool):
            return f"{name} must be a boolean"
        flags[name] = value
    if flags["async"] and flags["stream"]:
        return "async and stream cannot both be set"
    mode = "async" if flags["async"] else "stream" if flags["stream"] else "block"
    return _Submission(tasks, concurrency, mode)


# -- planning a submitted run -------------------------------------------------------------


def _sample_from_schema(schema: Any, rng: random.Random, depth: int = 0) -> Any:
    """A value shaped like a (simple) JSON Schema: what an agent would have extracted."""
    if not isinstance(schema, dict) or depth > 8:
        return None
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return rng.choice(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    properties = schema.get("properties")
    if kind == "object" or isinstance(properties, dict):
        if not isinstance(properties, dict):
            return {}
        return {name: _sample_from_schema(sub, rng, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        return [_sample_from_schema(schema.get("items"), rng, depth + 1) for _ in range(3)]
    if kind == "string":
        return f"{rng.choice(_WORDS)} {rng.choice(_WORDS)}"
    if kind == "integer":
        return rng.randrange(1000)
    if kind == "number":
        return round(rng.uniform(0, 1000), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    return None


def _plan(
    emulator: Emulator, tasks: list[dict[str, Any]], concurrency: int
) -> tuple[list[TaskPlan], list[float]]:
    """Plan each task and lay the tasks out on ``concurrency`` browsers: plans and start offsets."""
    rng = random.Random(f"asyncclient.testing:submit:{emulator.seed}:{len(emulator._starts)}")
    browsers = [0.0] * concurrency
    plans: list[TaskPlan] = []
    starts: list[float] = []
    for index, task in enumerate(tasks):
        url: str = task["url"]
        instruction: str = task.get("instruction") or ""
        inputs: dict[str, str] = task.get("input") or {}
        output = task.get("output")
        planned = emulator.plan_task(index, task) if emulator.plan_task is not None else None
        if isinstance(planned, TaskPlan):
            plan = planned
        else:
            duration = float(planned) if planned is not None else round(rng.uniform(2.0, 20.0), 3)
            status = "SUCCESS" if planned is not None else sample_status(rng)
            data = _sample_from_schema(output, rng) if status == "SUCCESS" and output else None
            plan = TaskPlan(url, instruction, inputs, duration, status, data)
        start = heapq.heappop(browsers)
        finish = start + plan.finish_after
        heapq.heappush(browsers, finish)
        plans.append(replace(plan, finish_after=finish))
        starts.append(start)
    return plans, starts


def live_tasks(emulator: Emulator, api_key: str, now: float) -> tuple[int, int]:
    """Count a key's unfinished tasks at ``now``: ``(running, pending)``."""
    running = pending = 0
    for run in emulator._by_key[api_key]:
        elapsed = now - run.created_at
        if elapsed >= run.end_offset:
            continue
        starts = emulator._starts.get(run.id)
        for task in run.tasks:
            if task.finish > elapsed:
                if starts is not None and starts[task.index] > elapsed:
                    pending += 1
                else:
                    running += 1
    return running, pending


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
            timeline = run._events(task)
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
        beat = time.monotonic()
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
            if _gone(request):
                break
            if frames:
                await response.write(frames)
                beat = time.monotonic()
            elif time.monotonic() - beat >= _HEARTBEAT:
                await response.write(b": keep-alive\n\n")
                beat = time.monotonic()
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


# -- the routes ---------------------------------------------------------------------------


def add_routes(app: web.Application, emulator: Emulator) -> None:
    """Route the submit and queue-status endpoints of ``emulator`` on ``app``.

    Call it before the read routes are added: ``/api/v1/browser-agents`` is both the v1 list
    (GET) and the v1 submit (POST) path, and the POST route must be found first.
    """
    by_route = emulator.requests_by_route

    async def submit(request: web.Request) -> web.StreamResponse:
        emulator.request_count += 1
        by_route["submit"] += 1
        if emulator.before_request is not None:
            emulator.before_request("submit", request)
        api_key = emulator._authorize(request.headers.get("Authorization"))
        if api_key is None:
            return _unauthorized()
        account = emulator._accounts.get(api_key)
        now = emulator.clock()
        if account is not None and account.rate_limit is not None:
            limit, window = account.rate_limit
            while account.submits and account.submits[0] <= now - window:
                account.submits.popleft()
            if len(account.submits) >= limit:
                wait = max(1, math.ceil(account.submits[0] + window - now))
                return _json_error(
                    429,
                    "Too many requests: back off and retry",
                    code="RATE_LIMITED",
                    headers={"Retry-After": str(wait)},
                )
            account.submits.append(now)
        submission = _read_submission(await request.read())
        if isinstance(submission, str):
            return _json_error(400, submission)
        count = len(submission.tasks)
        if count > emulator.max_batch:
            return _json_error(
                400,
                f"A batch holds at most {emulator.max_batch} tasks, got {count}",
                code="BATCH_TOO_LARGE",
            )
        if account is not None and not account.subscribed:
            return _json_error(
                402,
                "Trial limit reached: subscribe to run more tasks",
                code="SUBSCRIPTION_REQUIRED",
                action_url=SUBSCRIBE_URL,
            )
        if account is not None and account.credits is not None:
            needed = round(count * _MIN_TASK_CREDITS, 2)
            if account.credits < needed:
                return _json_error(
                    402,
                    f"Insufficient credits: {count} tasks need at least {needed}, "
                    f"the balance is {account.credits}",
                    code="INSUFFICIENT_CREDITS",
                    action_url=CREDITS_URL,
                )
        running, pending = live_tasks(emulator, api_key, now)
        if running + pending + count > emulator.queue_cap:
            return _json_error(
                429,
                f"Too many live tasks: {running + pending} of {emulator.queue_cap} in use; "
                "wait for in-flight tasks to drain",
                code="QUEUE_FULL",
            )
        plans, starts = _plan(emulator, submission.tasks, submission.concurrency)
        run_id = emulator.create_run(
            api_key, tasks=plans, event_bytes=_EVENT_BYTES_PER_TASK * count, created_at=now
        )
        emulator._starts[run_id] = starts
        run = emulator._runs[run_id]
        if submission.mode == "stream":
            return await _stream(emulator, request, run)
        if submission.mode == "block":
            while True:  # the blocking mode: answer once the run is over
                if run.status_at(emulator.clock()) != "processing" or _gone(request):
                    break
                await asyncio.sleep(_TICK)
            return web.Response(body=run.render_get(emulator.clock(), False), content_type=_JSON)
        now = emulator.clock()
        body = {
            "id": run_id,
            "status": run.status_at(now),
            "completed": sum(1 for task in run.tasks if task.finish <= now - run.created_at),
            "total": count,
        }
        return web.Response(body=_encode(body), content_type=_JSON)

    async def queue_status(request: web.Request) -> web.Response:
        emulator.request_count += 1
        by_route["status"] += 1
        if emulator.before_request is not None:
            emulator.before_request("status", request)
        if request.method != "GET":
            return _json_error(405, "Method not allowed", headers={"Allow": "GET"})
        api_key = emulator._authorize(request.headers.get("Authorization"))
        if api_key is None:
            return _unauthorized()
        running, pending = live_tasks(emulator, api_key, emulator.clock())
        body = {
            "userId": user_id(api_key),
            "running": running,
            "claimed": 0,
            "pending": pending,
            "total": running + pending,
            "cap": emulator.queue_cap,
        }
        return web.Response(body=_encode(body), content_type=_JSON)

    for path in SUBMIT_PATHS:
        app.router.add_route("POST", path, submit)
    app.router.add_route("*", STATUS_PATH, queue_status)
