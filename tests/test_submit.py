"""Submitting runs to the emulator: submit, run, stream, the queue, every error code, retries."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest
from _support import ticking
from aiohttp import web
from conftest import FAST_POLL

from asyncclient import (
    APIConnectionError,
    APIStatusError,
    BadRequestError,
    Client,
    DoneEvent,
    PaymentRequiredError,
    RateLimitError,
    RetryPolicy,
    RunStatus,
    ServerError,
    TaskEvent,
    TaskResultEvent,
    TaskSpec,
    WatchTimeoutError,
)
from asyncclient.testing import Emulator, EmulatorServer, ManualClock, TaskPlan, serve

# Virtual time (tests/_virtual_time.py): waits, ticks and deadlines come out the same however
# loaded the machine is.
pytestmark = [pytest.mark.anyio, pytest.mark.virtual_time]

SUBMIT_RETRY = RetryPolicy(
    max_retries=2, initial_delay=0.001, max_delay=0.005, max_retry_after=0.01
)
SUBMIT_PATH = {"legacy": "/browser-agent", "v1": "/api/v1/browser-agents"}
URL = "https://example.com"
JSON = "application/json"
SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "points": {"type": "integer"}},
}


def tasks(n: int) -> list[dict[str, Any]]:
    """``n`` simple tasks."""
    return [{"url": f"{URL}/{i}", "instruction": f"Task {i}."} for i in range(n)]


@pytest.fixture(params=[pytest.param("legacy", id="legacy"), pytest.param("v1", id="v1")])
async def routed(server: EmulatorServer, request: pytest.FixtureRequest) -> AsyncIterator[Client]:
    """A client for each documented path style, with millisecond retries and polls."""
    async with Client(
        server.api_key,
        base_url=server.base_url,
        routes=request.param,
        retry=SUBMIT_RETRY,
        poll_policy=FAST_POLL,
    ) as api:
        yield api


@pytest.fixture
async def client(server: EmulatorServer) -> AsyncIterator[Client]:
    """A legacy-routes client with millisecond retries and polls."""
    async with Client(
        server.api_key, base_url=server.base_url, retry=SUBMIT_RETRY, poll_policy=FAST_POLL
    ) as api:
        yield api


@pytest.fixture
def seen(emulator: Emulator) -> list[tuple[str, web.Request]]:
    """Every request to a routed endpoint, as the emulator saw it."""
    requests: list[tuple[str, web.Request]] = []
    emulator.before_request = lambda route, request: requests.append((route, request))
    return requests


@pytest.fixture
def durations(emulator: Emulator) -> None:
    """Submitted task ``i`` succeeds after ``i + 1`` seconds on its browser."""
    emulator.plan_task = lambda index, task: float(index + 1)


async def until(condition: Any, seconds: float = 2.0) -> None:
    """Wait (in real time) until ``condition()`` holds."""
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.002)


def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# -- submit ---------------------------------------------------------------------------------------


async def test_submit_returns_at_once(
    routed: Client,
    emulator: Emulator,
    seen: list[tuple[str, web.Request]],
    durations: None,
) -> None:
    """``submit`` posts the tasks in async mode and returns the processing run at once."""
    specs: list[TaskSpec | dict[str, Any]] = [
        TaskSpec(url=URL, instruction="Extract the heading.", output=SCHEMA),
        {"url": "http://example.org/search", "input": {"q": "asyncio"}},
    ]
    run = await routed.submit(specs, concurrency=3)
    assert run.status == RunStatus.PROCESSING
    assert (run.total, run.completed) == (2, 0)
    assert emulator.run_ids() == [run.id]
    ((route, request),) = seen
    assert route == "submit"
    assert request.method == "POST"
    assert request.path == SUBMIT_PATH[routed.routes]
    assert request.headers["Content-Type"] == "application/json"
    assert msgspec.json.decode(await request.read()) == {
        "tasks": [
            {"url": URL, "instruction": "Extract the heading.", "output": SCHEMA},
            {"url": "http://example.org/search", "input": {"q": "asyncio"}},
        ],
        "concurrency": 3,
        "async": True,
    }
    stored = await routed.get_run(run.id)
    assert [task.url for task in stored.tasks] == [URL, "http://example.org/search"]
    assert stored.tasks[1].input == {"q": "asyncio"}


async def test_submitted_run_follows_the_clock_and_the_schema(
    client: Client, emulator: Emulator, clock: ManualClock, durations: None
) -> None:
    """A submitted run progresses on the emulator's clock; ``output`` shapes the task's data."""
    run = await client.submit(
        [{"url": URL, "output": SCHEMA}, {"url": URL}, {"url": URL}], concurrency=2
    )
    clock.advance(1.0)
    assert (await client.get_run(run.id)).completed == 1
    clock.advance(3.0)  # task 2 waited for a browser until t=1, then ran 3 s
    done = await client.get_run(run.id)
    assert done.status == RunStatus.COMPLETED
    first, second, _ = done.tasks
    assert isinstance(first.data, dict)
    assert isinstance(first.data["title"], str)
    assert isinstance(first.data["points"], int)
    assert second.data is None  # no output schema, no data
    assert all(task.succeeded for task in done.tasks)


async def test_plan_task_sets_each_tasks_outcome(client: Client, emulator: Emulator) -> None:
    """A test plans submitted tasks with ``plan_task``: a duration, or a whole ``TaskPlan``."""

    def plan(index: int, task: Mapping[str, Any]) -> float | TaskPlan:
        if index == 1:
            return TaskPlan(task["url"], "", {}, finish_after=0.0, status="TIMEOUT")
        return 0.0

    emulator.plan_task = plan
    async with client.stream(tasks(2)) as events:
        results = {e.task_index: e.result async for e in events if isinstance(e, TaskResultEvent)}
    assert results[0].status == "SUCCESS"
    assert (results[1].status, results[1].credits_used) == ("TIMEOUT", 0)
    assert results[1].error


async def test_submit_without_concurrency_sends_none(
    client: Client, seen: list[tuple[str, web.Request]]
) -> None:
    """Without ``concurrency`` the body leaves it out, for the API's default."""
    await client.submit([TaskSpec(url=URL)])
    body = msgspec.json.decode(await seen[0][1].read())
    assert body == {"tasks": [{"url": URL}], "async": True}


# -- run ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"include_events": "yes"}, id="include-events"),
        pytest.param({"timeout": -1}, id="negative-timeout"),
        pytest.param({"timeout": float("nan")}, id="nan-timeout"),
    ],
)
async def test_run_checks_its_arguments_before_submitting(
    client: Client, emulator: Emulator, kwargs: dict[str, Any]
) -> None:
    """``run`` refuses a bad wait argument before the submission bills anything."""
    with pytest.raises(ValueError, match=r"include_events|timeout"):
        await client.run(tasks(1), **kwargs)
    assert emulator.request_count == 0


async def test_run_submits_then_polls(
    routed: Client,
    emulator: Emulator,
    clock: ManualClock,
    seen: list[tuple[str, web.Request]],
    durations: None,
) -> None:
    """``run`` submits in async mode and waits with the poller, not on an open connection."""
    async with ticking(clock, step=0.5, every=0.003):
        run = await routed.run(tasks(3), concurrency=2, include_events=True)
    assert run.status == RunStatus.COMPLETED
    assert run.completed == run.total == 3
    assert all(task.events for task in run.tasks)
    routes = [route for route, _ in seen]
    assert routes[0] == "submit"
    assert set(routes[1:]) == {"get"}
    assert len(routes) >= 3  # at least one poll while processing, one for the events
    body = msgspec.json.decode(await seen[0][1].read())
    assert body["async"] is True
    assert "stream" not in body


async def test_run_timeout(client: Client, emulator: Emulator, durations: None) -> None:
    """A run still processing after ``timeout`` raises ``WatchTimeoutError`` with its id."""
    with pytest.raises(WatchTimeoutError) as info:
        await client.run(tasks(1), timeout=0.05)
    assert emulator.run_ids() == [info.value.run_id]
    assert emulator.requests_by_route["submit"] == 1


# -- stream ---------------------------------------------------------------------------------------


async def test_stream_follows_the_run_as_it_progresses(
    routed: Client,
    emulator: Emulator,
    clock: ManualClock,
    seen: list[tuple[str, web.Request]],
    durations: None,
) -> None:
    """Events arrive as the clock moves; screenshots carry base64; ``done`` holds the run."""
    started = clock()
    received: list[tuple[float, object]] = []
    async with routed.stream(tasks(2), concurrency=2) as events:
        assert emulator.streams_open == 1
        async with ticking(clock, step=0.1, every=0.01):
            async for event in events:
                received.append((clock() - started, event))
    assert emulator.streams_open == 0
    assert emulator.stream_disconnects == 0
    body = msgspec.json.decode(await seen[0][1].read())
    assert body["stream"] is True
    assert "async" not in body
    stream_events = [event for _, event in received]
    assert isinstance(stream_events[-1], DoneEvent)
    run = stream_events[-1].run
    assert run.status == RunStatus.COMPLETED
    assert events.run == run
    results = {e.task_index: (t, e) for t, e in received if isinstance(e, TaskResultEvent)}
    assert sorted(results) == [0, 1]
    # Task 0 finished at t=1 and was streamed before the clock reached t=2, when task 1 did.
    assert 1.0 <= results[0][0] < 2.0 <= results[1][0]
    assert results[0][1].result == run.tasks[0]
    # The stream carries each task's whole timeline, in order, before its result.
    final = await routed.get_run(run.id, include_events=True)
    for index in (0, 1):
        timeline = [
            e.event for e in stream_events if isinstance(e, TaskEvent) and e.task_index == index
        ]
        expected = final.tasks[index].events
        assert expected is not None
        assert [e.type for e in timeline] == [e.type for e in expected]
        assert timeline[-1].type == "done"
        position = stream_events.index(results[index][1])
        assert stream_events[position - 1] == TaskEvent(task_index=index, event=timeline[-1])
        shots = [e.data for e in timeline if e.type == "screenshot"]
        assert shots
        assert all(shot["base64"] and shot["url"] for shot in shots)


async def test_leaving_a_stream_early_closes_the_connection(
    client: Client, emulator: Emulator, clock: ManualClock, durations: None
) -> None:
    """A ``break`` closes the connection: the server's stream handler sees the client leave."""
    async with client.stream(tasks(3)) as events:
        clock.advance(1.5)
        async for event in events:
            assert isinstance(event, TaskEvent)
            break
        assert emulator.streams_open == 1
    await until(lambda: emulator.streams_open == 0)
    assert emulator.stream_disconnects == 1
    (run_id,) = emulator.run_ids()
    clock.advance(10)
    assert (await client.get_run(run_id)).is_terminal  # the run itself went on


async def test_an_exception_inside_the_block_closes_the_stream(
    client: Client, emulator: Emulator, durations: None
) -> None:
    """An error raised in the ``async with`` body propagates and closes the connection."""

    class Stop(Exception):
        pass

    with pytest.raises(Stop):
        async with client.stream(tasks(1)):
            raise Stop
    await until(lambda: emulator.streams_open == 0)
    assert emulator.stream_disconnects == 1


async def test_stream_refused_before_it_starts(client: Client, emulator: Emulator) -> None:
    """A submission refused with a status raises its typed error when the block is entered."""
    emulator.set_account(subscribed=False)
    with pytest.raises(PaymentRequiredError) as info:
        async with client.stream(tasks(1)):
            pass
    assert info.value.code == "SUBSCRIPTION_REQUIRED"
    assert emulator.streams_open == emulator.stream_disconnects == 0


# -- blocking mode (the emulator) -----------------------------------------------------------------


async def test_blocking_submission_answers_when_the_run_ends(
    server: EmulatorServer, emulator: Emulator, clock: ManualClock, durations: None
) -> None:
    """Without ``async`` or ``stream`` the emulator answers once the run is over on its clock."""
    body = msgspec.json.encode({"tasks": tasks(2), "concurrency": 1})
    headers = {"Authorization": f"Bearer {server.api_key}", "Content-Type": JSON}
    url = f"{server.base_url}/browser-agent"
    with anyio.fail_after(5):
        async with (
            ticking(clock, step=0.5, every=0.01),
            aiohttp.ClientSession() as http,
            http.post(url, data=body, headers=headers) as response,
        ):
            assert response.status == 200
            answer = msgspec.json.decode(await response.read())
    assert answer["status"] == "completed"
    assert answer["completed"] == answer["total"] == 2
    assert answer["completedAt"]
    created = datetime.fromisoformat(answer["createdAt"].replace("Z", "+00:00")).timestamp()
    assert clock() - 3.0 >= created  # 1 s, then 2 s on one browser


# -- the queue ------------------------------------------------------------------------------------


async def test_queue_status(
    routed: Client, emulator: Emulator, clock: ManualClock, seen: list[tuple[str, web.Request]]
) -> None:
    """The snapshot counts running and pending tasks per key, on one path for both styles."""
    emulator.plan_task = lambda index, task: 10.0
    empty = await routed.queue_status()
    assert (empty.running, empty.pending, empty.total, empty.cap) == (0, 0, 0, 1000)
    assert empty.available == 1000
    assert empty.user_id
    await routed.submit(tasks(7), concurrency=3)
    emulator.create_run("other-key", n_tasks=4, durations=[50.0] * 4)
    busy = await routed.queue_status()
    assert (busy.running, busy.claimed, busy.pending, busy.total) == (3, 0, 4, 7)
    assert busy.available == 993
    clock.advance(10.0)
    later = await routed.queue_status()
    assert (later.running, later.pending) == (3, 1)
    clock.advance(20.0)
    assert (await routed.queue_status()).total == 0
    assert {request.path for route, request in seen if route == "status"} == {
        "/browser-agent-status"
    }
    assert "test-key" not in empty.user_id


# -- every error code -----------------------------------------------------------------------------


async def test_queue_full(
    client: Client, emulator: Emulator, clock: ManualClock, durations: None
) -> None:
    """Past 1000 live tasks a submission is 429 ``QUEUE_FULL`` (retried, then raised)."""
    for _ in range(10):
        await client.submit(tasks(100), concurrency=20)
    assert (await client.queue_status()).total == 1000
    sent = client.requests_sent
    with pytest.raises(RateLimitError) as info:
        await client.submit(tasks(1))
    error = info.value
    assert (error.status, error.code) == (429, "QUEUE_FULL")
    assert client.requests_sent - sent == 3  # a 429 is retried: it was refused, not billed
    clock.advance(100.0)  # the queue drains
    assert (await client.submit(tasks(1))).total == 1


async def test_batch_too_large(client: Client, emulator: Emulator) -> None:
    """More tasks than the per-batch maximum is 400 ``BATCH_TOO_LARGE``, never retried."""
    with pytest.raises(BadRequestError) as info:
        await client.submit(tasks(101))
    assert (info.value.status, info.value.code) == (400, "BATCH_TOO_LARGE")
    assert client.requests_sent == 1
    emulator.max_batch = 200
    assert (await client.submit(tasks(101))).total == 101


@pytest.mark.parametrize(
    ("account", "code", "action_url"),
    [
        pytest.param(
            {"subscribed": False},
            "SUBSCRIPTION_REQUIRED",
            "https://pre.dev/pricing",
            id="subscription",
        ),
        pytest.param(
            {"credits": 0.25},
            "INSUFFICIENT_CREDITS",
            "https://pre.dev/settings/credits",
            id="credits",
        ),
    ],
)
async def test_payment_required(
    client: Client, emulator: Emulator, account: dict[str, Any], code: str, action_url: str
) -> None:
    """A 402 carries its ``code`` and ``action_url``, and is never retried."""
    emulator.set_account("test-key", **account)
    with pytest.raises(PaymentRequiredError) as info:
        await client.submit(tasks(3))
    error = info.value
    assert (error.status, error.code, error.action_url) == (402, code, action_url)
    assert code in str(error)
    assert client.requests_sent == 1
    assert emulator.run_ids() == []


async def test_credits_cover_a_smaller_batch(client: Client, emulator: Emulator) -> None:
    """A balance is checked against the batch: 0.25 credits cover two tasks, not three."""
    emulator.set_account(credits=0.25)
    assert (await client.submit(tasks(2))).total == 2
    emulator.set_account(credits=None)
    assert (await client.submit(tasks(50))).total == 50


async def test_rate_limited(client: Client, emulator: Emulator, clock: ManualClock) -> None:
    """Too many submissions is 429 ``RATE_LIMITED`` with ``Retry-After``, retried then raised."""
    emulator.set_account(rate_limit=(1, 60.0))
    await client.submit(tasks(1))
    with pytest.raises(RateLimitError) as info:
        await client.submit(tasks(1))
    error = info.value
    assert (error.status, error.code, error.retry_after) == (429, "RATE_LIMITED", 60.0)
    assert client.requests_sent == 4
    assert emulator.requests_by_route["submit"] == 4
    clock.advance(60.0)
    assert (await client.submit(tasks(1))).total == 1


def test_set_account_checks_its_arguments(emulator: Emulator) -> None:
    """Unknown keys and impossible values are refused."""
    with pytest.raises(ValueError, match="unknown API key"):
        emulator.set_account("nobody")
    with pytest.raises(ValueError, match="credits"):
        emulator.set_account(credits=-1)
    with pytest.raises(ValueError, match="rate_limit"):
        emulator.set_account(rate_limit=(0, 1.0))


async def test_other_keys_are_not_affected(server: EmulatorServer, emulator: Emulator) -> None:
    """Account states and the queue are per key."""
    emulator.set_account("test-key", subscribed=False)
    async with Client("other-key", base_url=server.base_url, retry=SUBMIT_RETRY) as other:
        run = await other.submit(tasks(2))
        status = await other.queue_status()
    assert emulator.run_ids("other-key") == [run.id]
    assert status.total == 2


# -- the server checks bodies too -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b"not json", "JSON", id="not-json"),
        pytest.param(b"[]", "JSON object", id="not-an-object"),
        pytest.param(b"{}", "tasks", id="no-tasks"),
        pytest.param(b'{"tasks": []}', "tasks", id="empty-tasks"),
        pytest.param(b'{"tasks": [1]}', "tasks[0]", id="task-not-object"),
        pytest.param(b'{"tasks": [{"instruction": "x"}]}', "tasks[0].url", id="no-url"),
        pytest.param(b'{"tasks": [{"url": "ftp://x"}]}', "tasks[0].url", id="bad-url"),
        pytest.param(b'{"tasks": [{"url": "https://"}]}', "tasks[0].url", id="no-host"),
        pytest.param(b'{"tasks": [{"url": "https://x", "output": 1}]}', "output", id="output"),
        pytest.param(b'{"tasks": [{"url": "https://x", "input": {"a": 1}}]}', "input", id="input"),
        pytest.param(
            b'{"tasks": [{"url": "https://x"}], "concurrency": 0}', "concurrency", id="c0"
        ),
        pytest.param(
            b'{"tasks": [{"url": "https://x"}], "concurrency": 21}', "concurrency", id="c21"
        ),
        pytest.param(
            b'{"tasks": [{"url": "https://x"}], "concurrency": true}', "concurrency", id="cbool"
        ),
        pytest.param(
            b'{"tasks": [{"url": "https://x"}], "async": true, "stream": true}',
            "both",
            id="async-and-stream",
        ),
        pytest.param(b'{"tasks": [{"url": "https://x"}], "async": "yes"}', "async", id="flag"),
    ],
)
@pytest.mark.parametrize("path", ["/browser-agent", "/api/v1/browser-agents"])
async def test_server_refuses_bad_bodies(
    server: EmulatorServer, emulator: Emulator, path: str, body: bytes, message: str
) -> None:
    """The emulator answers 400 with a JSON error to a body the API would refuse."""
    headers = {"Authorization": f"Bearer {server.api_key}", "Content-Type": JSON}
    async with (
        aiohttp.ClientSession() as http,
        http.post(server.base_url + path, data=body, headers=headers) as response,
    ):
        assert response.status == 400
        answer = await response.json()
    assert message in answer["error"]
    assert emulator.run_ids() == []


async def test_server_requires_a_key_to_submit(server: EmulatorServer, emulator: Emulator) -> None:
    """A submission without a valid key is 401 and creates nothing."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{server.base_url}/browser-agent", data=b'{"tasks": [{"url": "https://x"}]}'
        ) as response,
    ):
        assert response.status == 401
    async with http_status(server, "wrong-key") as status:
        assert status == 401
    assert emulator.run_ids() == []


@asynccontextmanager
async def http_status(server: EmulatorServer, key: str) -> AsyncIterator[int]:
    """The status of ``GET /browser-agent-status`` with ``key``."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{server.base_url}/browser-agent-status", headers={"Authorization": f"Bearer {key}"}
        ) as response,
    ):
        yield response.status


# -- a submission is never retried blindly --------------------------------------------------------


def fail_submissions(emulator: Emulator, *answers: web.HTTPException) -> None:
    """Answer the next submissions with ``answers``, one each, then let them through."""
    pending = list(answers)

    def hook(route: str, request: web.Request) -> None:
        if route == "submit" and pending:
            raise pending.pop(0)

    emulator.before_request = hook


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(web.HTTPInternalServerError, id="500"),
        pytest.param(web.HTTPBadGateway, id="502"),
        pytest.param(web.HTTPServiceUnavailable, id="503"),
        pytest.param(web.HTTPGatewayTimeout, id="504"),
        pytest.param(web.HTTPRequestTimeout, id="408"),
    ],
)
async def test_a_failed_submission_is_not_retried(
    client: Client, emulator: Emulator, answer: type[web.HTTPException]
) -> None:
    """A 5xx or 408 on submit may hide a created run: it is raised at once, sent exactly once."""
    fail_submissions(emulator, answer(text='{"error": "try later"}', content_type=JSON))
    with pytest.raises(APIStatusError) as info:
        await client.submit(tasks(1))
    assert info.value.status == answer.status_code
    assert info.value.message == "try later"
    assert isinstance(info.value, ServerError) == (answer.status_code >= 500)
    assert emulator.requests_by_route["submit"] == 1
    assert (client.requests_sent, client.retries) == (1, 0)


async def test_a_503_on_submit_is_not_retried(client: Client, emulator: Emulator) -> None:
    """The server counts exactly one POST when a submission is answered 503."""
    fail_submissions(emulator, web.HTTPServiceUnavailable(headers={"Retry-After": "0"}))
    with pytest.raises(ServerError) as info:
        await client.submit(tasks(1))
    assert info.value.status == 503
    assert emulator.requests_by_route["submit"] == 1
    assert client.retries == 0


async def test_a_429_on_submit_is_retried(client: Client, emulator: Emulator) -> None:
    """A 429 means the server refused the submission: it is retried, and the retry lands."""
    fail_submissions(emulator, web.HTTPTooManyRequests(headers={"Retry-After": "0"}))
    run = await client.submit(tasks(2))
    assert emulator.requests_by_route["submit"] == 2
    assert client.retries == 1
    assert emulator.run_ids() == [run.id]


async def test_a_refused_connection_is_retried() -> None:
    """Nothing listening (the request never left): retried up to ``max_retries``, then raised."""
    async with Client(
        "test-key", base_url=f"http://127.0.0.1:{free_port()}", retry=SUBMIT_RETRY
    ) as api:
        with pytest.raises(APIConnectionError) as info:
            await api.submit(tasks(1))
        assert (api.requests_sent, api.retries) == (3, 2)
        assert isinstance(info.value.__cause__, aiohttp.ClientConnectorError)
        with pytest.raises(APIConnectionError):
            async with api.stream(tasks(1)):
                pass
        assert (api.requests_sent, api.retries) == (6, 4)


async def test_a_dropped_connection_is_not_retried(client: Client, emulator: Emulator) -> None:
    """The connection lost after the request arrived: raised at once, and the run does exist."""

    def drop(route: str, request: web.Request) -> None:
        if route == "submit":
            assert request.transport is not None
            request.transport.close()

    emulator.before_request = drop
    with pytest.raises(APIConnectionError) as info:
        await client.submit(tasks(1))
    assert not isinstance(info.value.__cause__, aiohttp.ClientConnectorError)
    assert emulator.requests_by_route["submit"] == 1
    assert client.retries == 0
    assert len(emulator.run_ids()) == 1  # which is why a blind retry would have billed twice


async def test_a_stream_follows_the_same_retry_rule(client: Client, emulator: Emulator) -> None:
    """Opening a stream retries a 429 but not a 503."""
    emulator.plan_task = lambda index, task: 0.0
    fail_submissions(emulator, web.HTTPTooManyRequests(headers={"Retry-After": "0"}))
    async with client.stream(tasks(1)) as events:
        assert [type(event) async for event in events][-1] is DoneEvent
    assert emulator.requests_by_route["submit"] == 2
    fail_submissions(emulator, web.HTTPServiceUnavailable())
    with pytest.raises(ServerError):
        async with client.stream(tasks(1)):
            pass
    assert emulator.requests_by_route["submit"] == 3


async def test_an_idempotent_post_may_retry_like_a_get(client: Client, emulator: Emulator) -> None:
    """``post(..., retry_unsent_only=False)`` retries a 503 as a GET would."""
    fail_submissions(emulator, web.HTTPServiceUnavailable())
    body = msgspec.json.encode({"tasks": tasks(1), "async": True})
    answer = await client._transport.post("/browser-agent", body, retry_unsent_only=False)
    assert msgspec.json.decode(answer)["total"] == 1
    assert emulator.requests_by_route["submit"] == 2
    assert client.retries == 1


async def test_the_key_never_shows(clock: ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    """Submissions, streams, their errors and their debug logs never show the API key."""
    secret = "sk-live-SECRET-0b1e"
    emulator = Emulator(api_keys=(secret,), clock=clock, seed=1)
    emulator.plan_task = lambda index, task: 0.0
    caplog.set_level("DEBUG", logger="asyncclient")
    texts: list[str] = []
    async with (
        serve(emulator) as server,
        Client(secret, base_url=server.base_url, retry=SUBMIT_RETRY) as api,
    ):
        run = await api.submit(tasks(1))
        async with api.stream(tasks(1)) as events:
            texts.extend([repr(event) async for event in events])
        texts.extend([repr(run), repr(events), repr(await api.queue_status())])
        emulator.set_account(secret, subscribed=False)
        with pytest.raises(PaymentRequiredError) as info:
            await api.submit(tasks(1))
        texts.extend([str(info.value), repr(info.value), info.value.body])
    texts.extend(record.getMessage() for record in caplog.records)
    assert any("POST /browser-agent" in text for text in texts)
    assert not [text for text in texts if "SECRET" in text]
