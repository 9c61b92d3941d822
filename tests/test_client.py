"""The Client against the emulator on loopback: runs, pages, errors and the session's life cycle."""

from __future__ import annotations

import asyncio
import gc
import pickle
import socket
import warnings
from collections.abc import AsyncIterator
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web
from conftest import FAST_RETRY

from asyncclient import (
    AuthenticationError,
    Client,
    EventType,
    NotFoundError,
    PollPolicy,
    RunStatus,
    TaskStatus,
)
from asyncclient.testing import Emulator, EmulatorServer, ManualClock, serve

pytestmark = pytest.mark.anyio

ROUTE_PREFIX = {"legacy": "/browser-agent/", "v1": "/api/v1/browser-agents/"}
LIST_PATH = {"legacy": "/list-browser-agents", "v1": "/api/v1/browser-agents"}


@pytest.fixture(params=[pytest.param("legacy", id="legacy"), pytest.param("v1", id="v1")])
async def routed(server: EmulatorServer, request: pytest.FixtureRequest) -> AsyncIterator[Client]:
    """A client on the emulator for each documented path style."""
    async with Client(
        server.api_key, base_url=server.base_url, routes=request.param, retry=FAST_RETRY
    ) as api:
        yield api


@pytest.fixture
def seen(emulator: Emulator) -> list[web.Request]:
    """Every request the emulator receives, as the server saw it."""
    requests: list[web.Request] = []
    emulator.before_request = lambda route, request: requests.append(request)
    return requests


# -- get_run ------------------------------------------------------------------------------------


async def test_get_run_processing(
    routed: Client, emulator: Emulator, clock: ManualClock, seen: list[web.Request]
) -> None:
    """A processing run shows finished tasks and PENDING stubs, and no events unless asked."""
    run_id = emulator.create_run(n_tasks=3, durations=[1.0, 2.0, 5.0])
    clock.advance(1.5)
    run = await routed.get_run(run_id)
    assert run.id == run_id
    assert run.status == RunStatus.PROCESSING
    assert run.is_processing
    assert (run.total, run.completed) == (3, 1)
    assert [task.status for task in run.tasks] == ["SUCCESS", "PENDING", "PENDING"]
    assert len(run.pending_tasks) == 2
    assert run.completed_at is None
    assert run.created_at is not None
    assert run.created_at.timestamp() == pytest.approx(clock() - 1.5)
    assert run.live_events is None
    assert all(task.events is None for task in run.tasks)
    assert run.total_credits_used > 0
    (request,) = seen
    assert request.path == ROUTE_PREFIX[routed.routes] + run_id
    assert "includeEvents" not in request.query


async def test_get_run_processing_with_events(
    routed: Client, emulator: Emulator, clock: ManualClock, seen: list[web.Request]
) -> None:
    """With ``include_events`` a processing run carries timelines and ``live_events`` per task."""
    run_id = emulator.create_run(n_tasks=3, durations=[1.0, 2.0, 5.0], event_bytes=20_000)
    clock.advance(1.5)
    run = await routed.get_run(run_id, include_events=True)
    assert seen[0].query["includeEvents"] == "true"
    assert run.status == RunStatus.PROCESSING
    finished, running, waiting = run.results
    assert finished is not None
    assert running is not None
    assert waiting is not None
    assert finished.events is not None
    assert finished.events[-1].type == EventType.DONE
    assert finished.events[-1].data == {"status": "SUCCESS"}
    assert running.events is None
    assert running.status == TaskStatus.PENDING
    assert run.live_events is not None
    assert len(run.live_events) == 3
    assert run.live_events[0] == []
    assert run.live_events[1]
    assert run.live_events[1][0].type == EventType.NAVIGATION
    assert all(event.type != "done" for stream in run.live_events for event in stream)
    assert {index for index, _ in run.events()} >= {0, 1}


@pytest.mark.parametrize(
    "include_events", [pytest.param(False, id="plain"), pytest.param(True, id="with-events")]
)
async def test_get_run_completed(
    routed: Client, emulator: Emulator, clock: ManualClock, include_events: bool
) -> None:
    """A completed run has every result, ``completed_at``, no ``live_events``; events if asked."""
    run_id = emulator.create_run(
        n_tasks=3, durations=[1.0, 2.0, 5.0], statuses=["SUCCESS", "TIMEOUT", "SUCCESS"]
    )
    clock.advance(5.0)
    run = await routed.get_run(run_id, include_events=include_events)
    assert run.status == RunStatus.COMPLETED
    assert run.is_terminal
    assert run.completed == run.total == 3
    assert run.completed_at is not None
    assert run.created_at is not None
    assert (run.completed_at - run.created_at).total_seconds() == pytest.approx(5.0)
    assert run.live_events is None
    assert [task.status for task in run.tasks] == ["SUCCESS", "TIMEOUT", "SUCCESS"]
    assert len(run.succeeded_tasks) == 2
    (failed,) = run.failed_tasks
    assert failed.credits_used == 0
    assert failed.error
    assert failed.data is None
    assert run.total_credits_used == pytest.approx(sum(t.credits_used for t in run.tasks))
    if include_events:
        assert all(task.events for task in run.tasks)
        assert len(list(run.events())) == sum(len(task.events or []) for task in run.tasks)
    else:
        assert all(task.events is None for task in run.tasks)
        assert list(run.events()) == []


async def test_get_run_failed(routed: Client, emulator: Emulator, clock: ManualClock) -> None:
    """A failed run is terminal and says why; its aborted tasks end ``ERROR`` with that reason."""
    run_id = emulator.create_run(n_tasks=4, durations=[1.0, 2.0, 3.0, 4.0], fail_with="boom")
    clock.advance(10.0)
    run = await routed.get_run(run_id)
    assert run.status == RunStatus.FAILED
    assert run.is_terminal
    assert run.error == "boom"
    assert run.completed_at is not None
    assert [task.error for task in run.failed_tasks] == ["boom", "boom"]
    assert all(task.status == TaskStatus.ERROR for task in run.failed_tasks)


async def test_get_run_accepts_upper_case_id(client: Client, emulator: Emulator) -> None:
    """Run ids are hexadecimal: upper-case digits name the same run."""
    run_id = emulator.create_run(n_tasks=1, durations=[0.0])
    run = await client.get_run(run_id.upper())
    assert run.id == run_id


# -- list_runs ----------------------------------------------------------------------------------


async def test_list_runs_pages(
    routed: Client, emulator: Emulator, clock: ManualClock, seen: list[web.Request]
) -> None:
    """``list_runs`` returns one page, newest first, with ``total`` and ``has_more``."""
    now = clock()
    ids = [emulator.create_run(n_tasks=1, durations=[1.0], created_at=now - i) for i in range(5)]
    first = await routed.list_runs(limit=2)
    assert [run.id for run in first] == ids[:2]
    assert (first.total, first.has_more, len(first)) == (5, True, 2)
    middle = await routed.list_runs(limit=2, skip=2)
    assert [run.id for run in middle] == ids[2:4]
    assert middle.has_more is True
    last = await routed.list_runs(limit=2, skip=4)
    assert [run.id for run in last] == ids[4:]
    assert last.has_more is False
    beyond = await routed.list_runs(limit=100, skip=10)
    assert (beyond.runs, beyond.total, beyond.has_more) == ([], 5, False)
    assert {request.path for request in seen} == {LIST_PATH[routed.routes]}
    assert seen[1].query["limit"] == "2"
    assert seen[1].query["skip"] == "2"


async def test_list_runs_status_filter(
    routed: Client, emulator: Emulator, clock: ManualClock
) -> None:
    """``status`` narrows the page and its total; processing rows show a stub then ``None``."""
    now = clock()
    done = [
        emulator.create_run(n_tasks=2, durations=[1.0, 2.0], created_at=now - 100 - i)
        for i in range(3)
    ]
    busy = [
        emulator.create_run(n_tasks=3, durations=[50.0, 60.0, 70.0], created_at=now - i)
        for i in range(2)
    ]
    completed = await routed.list_runs(limit=10, status="completed")
    assert [run.id for run in completed] == done
    assert completed.total == 3
    assert all(run.status == "completed" and run.completed_at for run in completed)
    processing = await routed.list_runs(limit=1, status="processing")
    assert [run.id for run in processing] == busy[:1]
    assert (processing.total, processing.has_more) == (2, True)
    (row,) = processing
    assert row.results[1:] == [None, None]
    assert row.results[0] is not None
    assert row.results[0].url
    everything = await routed.list_runs(limit=100)
    assert everything.total == 5


async def test_list_runs_only_shows_own_runs(client: Client, emulator: Emulator) -> None:
    """A key never sees another key's runs in its list."""
    emulator.create_run("other-key", n_tasks=1)
    mine = emulator.create_run(n_tasks=1)
    page = await client.list_runs(limit=100)
    assert [run.id for run in page] == [mine]
    assert page.total == 1


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "owner", [pytest.param("other-key", id="another-key"), pytest.param(None, id="no-such-run")]
)
async def test_get_run_not_found(routed: Client, emulator: Emulator, owner: str | None) -> None:
    """Another key's run, or no run at all, is a ``NotFoundError`` naming the path."""
    run_id = emulator.create_run(owner, n_tasks=1) if owner else "0123456789abcdef01234567"
    with pytest.raises(NotFoundError) as info:
        await routed.get_run(run_id)
    error = info.value
    path = ROUTE_PREFIX[routed.routes] + run_id
    assert error.status == 404
    assert error.method == "GET"
    assert error.path == path
    assert path in str(error)
    assert error.message == "Run not found"
    assert routed.requests_sent == 1  # a 404 is never retried


async def test_bad_key_is_authentication_error(server: EmulatorServer, emulator: Emulator) -> None:
    """A key the API does not know is an ``AuthenticationError`` (401), not retried."""
    run_id = emulator.create_run(n_tasks=1)
    async with Client("wrong-key", base_url=server.base_url, retry=FAST_RETRY) as api:
        with pytest.raises(AuthenticationError) as info:
            await api.get_run(run_id)
        assert info.value.status == 401
        with pytest.raises(AuthenticationError):
            await api.list_runs()
        assert api.requests_sent == 2
    assert emulator.request_count == 2


async def test_malformed_id_is_400_on_server_and_refused_by_client(
    server: EmulatorServer, client: Client
) -> None:
    """The API answers 400 to a malformed id; the client refuses one without sending it."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{server.base_url}/browser-agent/zz",
            headers={"Authorization": f"Bearer {server.api_key}"},
        ) as response,
    ):
        assert response.status == 400
        assert await response.json() == {"error": "Malformed run id"}
    count = server.emulator.request_count
    assert count == 1
    with pytest.raises(ValueError, match="run_id"):
        await client.get_run("zz")
    assert server.emulator.request_count == count
    assert client.requests_sent == 0


# -- the session's life cycle -------------------------------------------------------------------


async def test_caller_session_is_used_and_left_open(
    server: EmulatorServer, emulator: Emulator
) -> None:
    """A session passed in carries the requests and stays open after the client closes."""
    run_id = emulator.create_run(n_tasks=1)
    started: list[str] = []

    async def on_request_start(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        started.append(params.url.path)

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_request_start)
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        async with Client(server.api_key, base_url=server.base_url, session=session) as api:
            await api.get_run(run_id)
            await api.list_runs(limit=1)
        await api.aclose()
        assert started == [f"/browser-agent/{run_id}", "/list-browser-agents"]
        assert not session.closed
        async with session.get(f"{server.base_url}/list-browser-agents") as response:
            assert response.status == 401  # still usable; our key is not on it
    assert emulator.request_count == 3


async def test_errors_leave_the_context_manager_unchanged(
    server: EmulatorServer, emulator: Emulator
) -> None:
    """An error inside ``async with Client()`` comes out as itself, not wrapped in a group."""

    class Mine(Exception):
        pass

    with pytest.raises(NotFoundError, match="Run not found"):
        async with Client(server.api_key, base_url=server.base_url) as api:
            await api.get_run("0123456789abcdef01234567")
    api = Client(server.api_key, base_url=server.base_url)

    async def list_then_fail() -> None:
        async with api:
            await api.list_runs(limit=1)
            raise Mine

    with pytest.raises(Mine):
        await list_then_fail()
    with pytest.raises(RuntimeError, match="closed"):
        await api.list_runs(limit=1)
    assert emulator.request_count == 2


async def test_aclose_twice_is_safe(client: Client, emulator: Emulator) -> None:
    """``aclose()`` may be called again, also after ``async with`` closed the client."""
    await client.list_runs(limit=1)
    await client.aclose()
    await client.aclose()
    async with Client("test-key", base_url="http://127.0.0.1:1") as api:
        pass
    await api.aclose()
    assert emulator.request_count == 1


async def test_closed_client_raises_runtime_error(
    server: EmulatorServer, emulator: Emulator
) -> None:
    """Using a client after it is closed is a ``RuntimeError``, and nothing is sent."""
    run_id = emulator.create_run(n_tasks=1)
    async with Client(server.api_key, base_url=server.base_url) as api:
        await api.get_run(run_id)
    with pytest.raises(RuntimeError, match="closed"):
        await api.get_run(run_id)
    with pytest.raises(RuntimeError, match="closed"):
        await api.list_runs()
    unused = Client(server.api_key, base_url=server.base_url)
    await unused.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await unused.get_run(run_id)
    assert emulator.request_count == 1
    assert api.requests_sent == 1


def test_session_is_created_lazily_inside_the_loop() -> None:
    """A client built outside any event loop opens its session in the loop that first uses it."""
    emulator = Emulator(api_keys=("test-key",), clock=ManualClock(), seed=0)
    run_id = emulator.create_run(n_tasks=1, durations=[0.0])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        api = Client("test-key", base_url=f"http://127.0.0.1:{port}")
        never_used = Client("test-key", base_url=f"http://127.0.0.1:{port}")

        async def main() -> str:
            async with serve(emulator, port=port):
                run = await api.get_run(run_id)
                await api.aclose()
                return run.id

        assert asyncio.run(main()) == run_id
        del never_used
        gc.collect()
    assert api.requests_sent == 1
    assert [str(w.message) for w in caught] == []


async def test_aclose_without_context_manager_leaves_no_warning(
    server: EmulatorServer, emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A client used without ``async with`` and closed by ``aclose()`` leaks nothing."""
    run_id = emulator.create_run(n_tasks=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        api = Client(server.api_key, base_url=server.base_url)
        await api.get_run(run_id)
        await api.list_runs(limit=5)
        await api.aclose()
        del api
        gc.collect()
        await asyncio.sleep(0)
    assert [str(w.message) for w in caught] == []
    assert not [r for r in caplog.records if "nclosed" in r.getMessage()]


async def test_requests_sent_counts_every_request(client: Client, emulator: Emulator) -> None:
    """``requests_sent`` counts the HTTP requests made, failed ones included."""
    run_id = emulator.create_run(n_tasks=1)
    assert client.requests_sent == 0
    await client.get_run(run_id)
    await client.get_run(run_id, include_events=True)
    await client.list_runs(limit=3)
    with pytest.raises(NotFoundError):
        await client.get_run("0123456789abcdef01234567")
    assert client.requests_sent == emulator.request_count == 4
    assert client.retries == 0


def test_repr_shows_base_url_not_key() -> None:
    """``repr(client)`` shows where it talks to, never the key."""
    api = Client("sk-test-SECRET-5f2b9c", base_url="http://127.0.0.1:8080", routes="v1")
    text = repr(api)
    assert "http://127.0.0.1:8080" in text
    assert "v1" in text
    assert "SECRET" not in text
    assert "SECRET" not in str(api)


def test_poll_policy_is_the_one_given_or_the_default() -> None:
    """``client.poll_policy`` is what ``watch()`` and ``wait()`` use without one."""
    given = PollPolicy(max_delay=30.0)
    assert Client("k", base_url="http://127.0.0.1:8080", poll_policy=given).poll_policy is given
    assert Client("k", base_url="http://127.0.0.1:8080").poll_policy == PollPolicy()


def test_client_cannot_be_pickled() -> None:
    """A client holds a key and a session: pickling it is a ``TypeError``."""
    api = Client("sk-test-SECRET-5f2b9c", base_url="https://api.pre.dev")
    with pytest.raises(TypeError, match="pickle"):
        pickle.dumps(api)
