"""The paginator: every run exactly once, newest first, while the list changes under it."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

import anyio
import pytest
from aiohttp import web

from asyncclient import BadRequestError, Client, Run
from asyncclient.testing import Emulator, EmulatorServer, Fault, ManualClock

pytestmark = pytest.mark.anyio

LONG = 10_000_000.0  # a task that does not finish during the test


def make_history(emulator: Emulator, clock: ManualClock, count: int, *, seed: int = 7) -> None:
    """Create ``count`` runs one second apart in the past, about half still processing."""
    rng = random.Random(seed)
    now = clock()
    for index in range(count):
        processing = rng.random() < 0.5
        emulator.create_run(
            n_tasks=1,
            durations=[LONG if processing else 0.5],
            created_at=now - 10_000 + index,
        )


def statuses(emulator: Emulator, clock: ManualClock) -> dict[str, str]:
    """The status of every run of the default key right now, read through the list route."""
    return {run_id: emulator_status(emulator, run_id) for run_id in emulator.run_ids("test-key")}


def emulator_status(emulator: Emulator, run_id: str) -> str:
    """Ask the emulator's own renderer for a run's status (no HTTP, no client code)."""
    body = emulator.render_run("test-key", run_id, False)
    assert body is not None
    import json

    return str(json.loads(body)["status"])


def churn(
    emulator: Emulator, clock: ManualClock, *, created: int, finished: int, seed: int = 3
) -> Callable[[str, web.Request], None]:
    """A hook that, between list requests, adds new runs and finishes processing ones."""
    rng = random.Random(seed)
    calls = Counter[str]()

    def hook(route: str, request: web.Request) -> None:
        calls[route] += 1
        if route != "list" or calls[route] == 1:
            return
        clock.advance(0.01)
        for _ in range(created):
            emulator.create_run(n_tasks=1, durations=[LONG])
        processing = [
            run_id
            for run_id in emulator.run_ids("test-key")
            if emulator_status(emulator, run_id) == "processing"
        ]
        for run_id in rng.sample(processing, min(finished, len(processing))):
            emulator.finish_run(run_id)

    return hook


async def collect(client: Client, **kwargs: object) -> list[Run]:
    """Every run the paginator yields."""
    return [run async for run in client.iter_runs(**kwargs)]  # type: ignore[arg-type]


@pytest.mark.parametrize("count", [0, 1, 100, 250], ids=["empty", "one", "one-page", "many"])
async def test_walk_yields_every_run_once_newest_first(
    client: Client, emulator: Emulator, clock: ManualClock, count: int
) -> None:
    """Without churn, the walk yields every run exactly once, in the list's order."""
    make_history(emulator, clock, count)
    runs = await collect(client)
    assert [run.id for run in runs] == emulator.run_ids("test-key")


@pytest.mark.parametrize("status", ["processing", "completed", None])
async def test_status_filter(
    client: Client, emulator: Emulator, clock: ManualClock, status: str | None
) -> None:
    """A status filter yields exactly the runs in that state."""
    make_history(emulator, clock, 230)
    expected = [
        run_id
        for run_id, state in statuses(emulator, clock).items()
        if status is None or state == status
    ]
    runs = await collect(client, status=status)
    assert [run.id for run in runs] == expected
    assert all(status is None or run.status == status for run in runs)


@pytest.mark.parametrize("limit", [0, 1, 99, 150, 1000])
async def test_limit_caps_the_walk(
    client: Client, emulator: Emulator, clock: ManualClock, limit: int
) -> None:
    """``limit`` caps how many runs are yielded, and no page past it is fetched."""
    make_history(emulator, clock, 300)
    runs = await collect(client, limit=limit)
    assert [run.id for run in runs] == emulator.run_ids("test-key")[:limit]


async def test_pages_yield_batches(client: Client, emulator: Emulator, clock: ManualClock) -> None:
    """``.pages()`` yields the same runs a page at a time, each page at most page_size."""
    make_history(emulator, clock, 120)
    pages = [page async for page in client.iter_runs(page_size=50).pages()]
    assert all(0 < len(page) <= 50 for page in pages)
    assert [run.id for page in pages for run in page] == emulator.run_ids("test-key")


async def test_uses_the_largest_page_by_default(
    client: Client, emulator: Emulator, clock: ManualClock
) -> None:
    """By default a walk asks for 100 runs a page: about one request per 100 runs."""
    make_history(emulator, clock, 1000)
    seen: list[str] = []
    emulator.before_request = lambda route, request: seen.append(request.query.get("limit", ""))
    iterator = client.iter_runs()
    runs = [run async for run in iterator]
    assert len(runs) == 1000
    assert set(seen) == {"100"}
    assert iterator.requests <= 12


@pytest.mark.parametrize(
    ("status", "created", "finished"),
    [
        pytest.param(None, 3, 0, id="all-new-runs"),
        pytest.param(None, 150, 0, id="all-more-new-than-a-page"),
        pytest.param("processing", 0, 5, id="processing-finishing"),
        pytest.param("processing", 2, 30, id="processing-heavy"),
        pytest.param("processing", 5, 140, id="processing-more-than-a-page"),
        pytest.param("completed", 4, 20, id="completed-joining"),
        pytest.param(None, 120, 120, id="all-both-heavy"),
    ],
)
async def test_churn_loses_nothing_and_repeats_nothing(
    client: Client,
    emulator: Emulator,
    clock: ManualClock,
    status: str | None,
    created: int,
    finished: int,
) -> None:
    """Runs created and finished between page requests: no stable run missed, none twice."""
    make_history(emulator, clock, 600)
    before = statuses(emulator, clock)
    emulator.before_request = churn(emulator, clock, created=created, finished=finished)
    runs = await collect(client, status=status, page_size=50)
    emulator.before_request = None
    after = statuses(emulator, clock)
    yielded = Counter(run.id for run in runs)
    assert max(yielded.values(), default=1) == 1, "a run was yielded twice"
    stable = {
        run_id
        for run_id, state in before.items()
        if status is None or (state == status and after[run_id] == status)
    }
    missing = stable - set(yielded)
    assert not missing, f"{len(missing)} stable runs were skipped"
    assert all(run_id in before for run_id in yielded), "a run created mid-walk was yielded"
    order = [run_id for run_id in emulator.run_ids("test-key") if run_id in yielded]
    assert [run.id for run in runs] == order, "not newest first"


async def test_naive_skip_loop_breaks_under_the_same_churn(
    client: Client, emulator: Emulator, clock: ManualClock
) -> None:
    """The churn in these tests is real: a plain skip loop skips runs under it."""
    make_history(emulator, clock, 600)
    before = statuses(emulator, clock)
    emulator.before_request = churn(emulator, clock, created=0, finished=30)
    naive: list[str] = []
    skip = 0
    while True:
        page = await client.list_runs(limit=50, skip=skip, status="processing")
        naive.extend(run.id for run in page.runs)
        if not page.has_more:
            break
        skip += 50
    after = statuses(emulator, clock)
    stable = {r for r, s in before.items() if s == "processing" and after[r] == "processing"}
    assert stable - set(naive), "expected the naive loop to miss runs"


async def test_break_early_leaves_nothing_running(
    server: EmulatorServer, emulator: Emulator, clock: ManualClock
) -> None:
    """Breaking out of the loop cancels the prefetch: no task left, no warning."""
    import asyncio

    make_history(emulator, clock, 500)
    async with Client(server.api_key, base_url=server.base_url) as client:

        def client_tasks() -> list[str]:
            # The emulator shares this loop: leave its connection handlers out.
            names = [f"{task.get_name()} {task.get_coro()!r}" for task in asyncio.all_tasks()]
            return [name for name in names if "RequestHandler" not in name]

        baseline = client_tasks()
        async for run in client.iter_runs(page_size=10):
            assert run.id
            assert any("_Prefetch.run" in name for name in client_tasks())
            break
        # The abandoned prefetch is cancelled at once; give its request a moment to unwind.
        with anyio.fail_after(2):
            while client_tasks() != baseline:
                await anyio.sleep(0.001)
        assert client_tasks() == baseline
        # The client still works after the abandoned walk.
        assert (await client.list_runs(limit=1)).total == 500


async def test_prefetch_fetches_the_next_page_while_consuming(
    client: Client, emulator: Emulator, clock: ManualClock
) -> None:
    """While the caller holds page one, page two is already requested, and no further."""
    make_history(emulator, clock, 300)
    iterator = client.iter_runs(page_size=100)
    first = await iterator.__anext__()
    assert first.id == emulator.run_ids("test-key")[0]
    for _ in range(50):
        await anyio.sleep(0.001)
    assert emulator.requests_by_route["list"] == 2
    await iterator.aclose()


async def test_cancelling_a_walk_leaves_nothing_running(
    client: Client, emulator: Emulator, clock: ManualClock
) -> None:
    """A walk cancelled mid-page stops cleanly and the client stays usable."""
    make_history(emulator, clock, 400)
    count = 0
    with anyio.move_on_after(10) as scope:
        async for _ in client.iter_runs(page_size=20):
            count += 1
            if count == 30:
                scope.cancel()
    assert scope.cancelled_caught
    assert (await client.list_runs(limit=1)).total == 400


async def test_a_failed_prefetch_raises_in_the_loop_that_awaits_it(
    client: Client, emulator: Emulator, clock: ManualClock
) -> None:
    """The error the background page fetch met is raised where the next page is awaited."""
    make_history(emulator, clock, 300)
    iterator = client.iter_runs(page_size=100)
    first_page = [await iterator.__anext__()]
    # The prefetch of page two is scheduled, not yet sent (nothing awaited since): it meets this.
    emulator.faults.add(Fault("status", status=400, code="BAD_REQUEST", route="list", times=1))
    first_page += [await iterator.__anext__() for _ in range(99)]
    with pytest.raises(BadRequestError):
        await iterator.__anext__()
    assert len({run.id for run in first_page}) == 100
    await iterator.aclose()


async def test_a_walk_that_outlives_its_client_ends_with_a_clear_error(
    server: EmulatorServer, emulator: Emulator, clock: ManualClock
) -> None:
    """Iterating on after ``async with Client()`` ended: the rows held, then "client is closed"."""
    make_history(emulator, clock, 300)
    async with Client(server.api_key, base_url=server.base_url) as client:
        iterator = client.iter_runs(page_size=100)
        first = await iterator.__anext__()  # the prefetch of page two is under way
    held = [first]

    async def drain() -> None:
        async for run in iterator:
            held.append(run)

    with anyio.fail_after(5), pytest.raises(RuntimeError, match="client is closed"):
        await drain()
    assert len(held) >= 100  # page one, and page two if its prefetch came back in time
    assert len({run.id for run in held}) == len(held)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"status": "failed"}, "status", id="failed-filter"),
        pytest.param({"page_size": 0}, "page_size", id="page-size-0"),
        pytest.param({"page_size": 101}, "page_size", id="page-size-101"),
        pytest.param({"page_size": 1.5}, "page_size", id="page-size-float"),
        pytest.param({"limit": -1}, "limit", id="negative-limit"),
        pytest.param({"limit": "5"}, "limit", id="str-limit"),
    ],
)
async def test_bad_arguments_are_refused_before_any_request(
    client: Client, emulator: Emulator, kwargs: dict[str, object], message: str
) -> None:
    """A bad argument raises ValueError at the call, and nothing is sent."""
    with pytest.raises(ValueError, match=message):
        client.iter_runs(**kwargs)  # type: ignore[arg-type]
    assert emulator.request_count == 0
