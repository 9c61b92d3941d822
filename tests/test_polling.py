"""The fan-out poller: watch many runs, deliver each exactly once, isolate failures."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, cast

import aiohttp
import anyio
import pytest
from _support import ticking
from aiohttp import web

from asyncclient import (
    AuthenticationError,
    Client,
    NotFoundError,
    PollPolicy,
    RunUpdate,
    ServerError,
    WatchTimeoutError,
)
from asyncclient._config import PollStrategy
from asyncclient._polling import HARVEST_PARALLEL
from asyncclient.testing import Emulator, EmulatorServer, ManualClock, set_testing

# Virtual time (tests/_virtual_time.py): the races between scans, GETs, ticks and deadlines
# come out the same however loaded the machine is.
pytestmark = [pytest.mark.anyio, pytest.mark.virtual_time]

STRATEGY: PollStrategy = "per-run"


@pytest.fixture(autouse=True, params=["per-run", "list", "auto"])
def strategy(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every poller behaviour holds in every polling strategy."""
    global STRATEGY
    STRATEGY = cast(PollStrategy, request.param)
    yield request.param
    STRATEGY = "per-run"


def policy(**kwargs: Any) -> PollPolicy:
    """A shrunk policy in the strategy under test."""
    options: dict[str, Any] = {
        "initial_delay": 0.002,
        "multiplier": 1.5,
        "max_delay": 0.01,
        "max_in_flight": 16,
        "not_found_grace": 0.0,
    }
    options.update(kwargs)
    return PollPolicy(strategy=STRATEGY, **options)


MISSING_ID = "0123456789abcdef01234567"
JSON = "application/json"


async def drain(client: Client, ids: list[str], **kwargs: object) -> list[RunUpdate]:
    """Every update of a watch over ``ids``."""
    async with client.watch(ids, **kwargs) as watcher:  # type: ignore[arg-type]
        return [update async for update in watcher]


def assert_exactly_once(updates: list[RunUpdate], ids: list[str]) -> None:
    """One final update per id, none for anything else."""
    finals = Counter(update.run_id for update in updates if update.final)
    assert finals == Counter(set(ids))


async def test_many_runs_finishing_in_random_order(
    client: Client, emulator: Emulator, clock: ManualClock
) -> None:
    """300 runs finishing in five waves: each delivered once, every wave before the next."""
    rng = random.Random(5)
    waves = [
        [
            emulator.create_run(
                n_tasks=2, durations=[rng.uniform(0, 50) + 100 * wave, 100 * wave + 60]
            )
            for _ in range(60)
        ]
        for wave in range(5)
    ]
    rng.shuffle(ids := [run_id for wave in waves for run_id in wave])
    wave_of = {run_id: index for index, wave in enumerate(waves) for run_id in wave}
    clock.advance(61)
    updates: list[RunUpdate] = []
    async with client.watch(ids, policy=policy()) as watcher:
        async for update in watcher:
            updates.append(update)
            if len(updates) % 60 == 0:
                clock.advance(100)  # the next wave finishes only once this one is all in
    assert_exactly_once(updates, ids)
    assert all(update.run is not None and update.run.is_terminal for update in updates)
    assert [wave_of[update.run_id] for update in updates] == sorted(wave_of.values())


async def test_every_terminal_status_is_delivered(
    client: Client, emulator: Emulator, clock: ManualClock
) -> None:
    """Completed runs with every task status, and failed runs, arrive with their results."""
    statuses = ["SUCCESS", "ERROR", "TIMEOUT", "BLOCKED", "CAPTCHA_FAILED", "LOOP", "NO_TARGET"]
    mixed = emulator.create_run(durations=[1.0] * len(statuses), statuses=statuses)
    failed = emulator.create_run(durations=[1.0, 2.0, 3.0, 4.0], fail_with="browser pool down")
    clock.advance(10)
    updates = await drain(client, [mixed, failed], policy=policy())
    by_id = {update.run_id: update for update in updates}
    mixed_run = by_id[mixed].run
    failed_run = by_id[failed].run
    assert mixed_run is not None and mixed_run.status == "completed"
    assert [task.status for task in mixed_run.results if task] == statuses
    assert failed_run is not None and failed_run.status == "failed"
    assert failed_run.error == "browser pool down"


async def test_not_found_is_isolated(
    client: Client, emulator: Emulator, clock: ManualClock
) -> None:
    """An id that does not exist yields its NotFoundError; the other runs are delivered."""
    good = emulator.create_run(durations=[1.0])
    others_run = emulator.create_run(api_key="other-key", durations=[1.0])
    clock.advance(5)
    updates = await drain(client, [good, MISSING_ID, others_run], policy=policy())
    assert_exactly_once(updates, [good, MISSING_ID, others_run])
    by_id = {update.run_id: update for update in updates}
    assert by_id[good].run is not None
    assert isinstance(by_id[MISSING_ID].error, NotFoundError)
    assert isinstance(by_id[others_run].error, NotFoundError)


async def test_fresh_id_may_answer_404_during_the_grace_period(
    client: Client, emulator: Emulator, clock: ManualClock
) -> None:
    """A just-submitted id that answers 404 for a while is still watched to the end."""
    run_id = emulator.create_run(durations=[1.0])
    clock.advance(5)
    hidden_for = 4

    def not_visible_yet(route: str, request: web.Request) -> None:
        nonlocal hidden_for
        if route == "get" and hidden_for > 0:
            hidden_for -= 1
            raise web.HTTPNotFound(
                text='{"error": "Run not found"}', content_type="application/json"
            )

    emulator.before_request = not_visible_yet
    policy_ = policy(initial_delay=0.002, max_delay=0.01, not_found_grace=5.0)
    updates = await drain(client, [run_id], policy=policy_)
    assert len(updates) == 1 and updates[0].run is not None
    assert hidden_for == 0


async def test_not_found_after_the_grace_period(client: Client, emulator: Emulator) -> None:
    """An id still 404 once the grace period is over is delivered as NotFoundError."""
    policy_ = policy(initial_delay=0.002, max_delay=0.005, not_found_grace=0.05)
    started = anyio.current_time()
    updates = await drain(client, [MISSING_ID], policy=policy_)
    assert isinstance(updates[0].error, NotFoundError)
    assert anyio.current_time() - started >= 0.05
    assert emulator.requests_by_route["get"] >= 3


async def test_run_deadline(client: Client, emulator: Emulator) -> None:
    """A run still processing at its deadline yields WatchTimeoutError; others are unaffected."""
    slow = emulator.create_run(durations=[10_000.0])
    done = emulator.create_run(durations=[0.0])
    policy_ = policy(initial_delay=0.002, max_delay=0.01, run_timeout=0.1)
    updates = await drain(client, [slow, done], policy=policy_)
    by_id = {update.run_id: update for update in updates}
    error = by_id[slow].error
    assert isinstance(error, WatchTimeoutError)
    assert error.run_id == slow
    assert by_id[done].run is not None


async def test_watch_deadline_delivers_every_remaining_run(
    client: Client, emulator: Emulator
) -> None:
    """When the whole watch's timeout passes, every undelivered run gets WatchTimeoutError."""
    slow = [emulator.create_run(durations=[10_000.0]) for _ in range(20)]
    policy_ = policy(initial_delay=0.002, max_delay=0.01, timeout=0.1)
    updates = await drain(client, slow, policy=policy_)
    assert_exactly_once(updates, slow)
    assert all(isinstance(update.error, WatchTimeoutError) for update in updates)


async def test_add_while_watching_and_duplicates(
    client: Client, emulator: Emulator, clock: ManualClock
) -> None:
    """``add()`` watches new ids during the watch; an id given twice is watched once."""
    first = [emulator.create_run(durations=[1.0]) for _ in range(5)]
    later = [emulator.create_run(durations=[1.0]) for _ in range(5)]
    clock.advance(5)
    updates: list[RunUpdate] = []
    async with client.watch(first + first[:2], policy=policy()) as watcher:
        assert watcher.pending == 5
        async for update in watcher:
            updates.append(update)
            if len(updates) == 1:
                assert watcher.add(later + first) == 5
    assert_exactly_once(updates, first + later)
    with pytest.raises(RuntimeError):
        watcher.add(later)


async def test_bad_ids_are_refused_before_any_request(client: Client, emulator: Emulator) -> None:
    """A malformed id refuses the whole watch with ValueError and sends nothing."""
    with pytest.raises(ValueError, match="24 hexadecimal"):
        client.watch([MISSING_ID, "../list-browser-agents"])
    with pytest.raises(ValueError, match="not a single string"):
        client.watch(MISSING_ID)
    assert emulator.request_count == 0


async def test_consumer_breaks_early(server: EmulatorServer, emulator: Emulator) -> None:
    """Leaving the block after one update cancels every poller; nothing keeps polling."""
    ids = [emulator.create_run(durations=[10_000.0]) for _ in range(50)] + [
        emulator.create_run(durations=[0.0])
    ]
    async with Client(server.api_key, base_url=server.base_url, poll_policy=policy()) as client:
        async with client.watch(ids) as watcher:
            async for update in watcher:
                assert update.run_id == ids[-1]
                break
        await anyio.sleep(0.02)  # requests already on the wire may still land
        count = emulator.request_count
        await anyio.sleep(0.05)
        assert emulator.request_count == count
        names = [task.get_name() for task in asyncio.all_tasks()]
        assert not [name for name in names if "Watcher" in name]


async def test_cancelled_consumer_stops_polling(client: Client, emulator: Emulator) -> None:
    """Cancelling the consumer mid-watch leaves nothing polling and raises nothing."""
    ids = [emulator.create_run(durations=[10_000.0]) for _ in range(30)]
    with anyio.move_on_after(0.05) as scope:
        await drain(client, ids, policy=policy())
    assert scope.cancelled_caught
    await anyio.sleep(0.02)  # requests already on the wire may still land
    count = emulator.request_count
    await anyio.sleep(0.03)
    assert emulator.request_count == count


async def test_slow_consumer_backpressure(
    client: Client, emulator: Emulator, clock: ManualClock
) -> None:
    """A slow consumer makes pollers wait: the buffer never overflows and nothing is dropped."""
    ids = [emulator.create_run(durations=[1.0]) for _ in range(40)]
    clock.advance(5)
    policy_ = policy(initial_delay=0.002, max_delay=0.01, buffer_size=2, max_in_flight=4)
    updates: list[RunUpdate] = []
    async with client.watch(ids, policy=policy_) as watcher:
        async for update in watcher:
            updates.append(update)
            await anyio.sleep(0.002)
            # Updates waiting for us: the buffer plus one blocked sender per worker at most.
            assert emulator.requests_by_route["get"] <= len(updates) + 2 + 4
    assert_exactly_once(updates, ids)


async def test_server_errors_are_retried_then_isolated(
    client: Client, emulator: Emulator, clock: ManualClock
) -> None:
    """Transient 503s are retried by the session layer; a run whose retries run out is isolated."""
    ids = [emulator.create_run(durations=[1.0]) for _ in range(30)]
    broken = emulator.create_run(durations=[1.0])
    clock.advance(5)
    rng = random.Random(1)

    def flaky(route: str, request: web.Request) -> None:
        if broken in request.path or rng.random() < 0.2:
            raise web.HTTPServiceUnavailable(text="upstream busy")

    emulator.before_request = flaky
    # Finished rows would settle these runs from list pages; as stubs, every run needs its GET.
    emulator.list_rows = "stub"
    updates = await drain(client, [*ids, broken], policy=policy())
    assert_exactly_once(updates, [*ids, broken])
    by_id = {update.run_id: update for update in updates}
    assert isinstance(by_id[broken].error, ServerError)
    assert sum(1 for update in updates if update.ok) >= 25


async def test_authentication_failure_stops_the_watch(
    client: Client, emulator: Emulator, clock: ManualClock
) -> None:
    """A 401 mid-watch stops the whole watch with AuthenticationError (not a group)."""
    ids = [emulator.create_run(durations=[10_000.0]) for _ in range(10)]
    calls = 0

    def revoke_after_20(route: str, request: web.Request) -> None:
        nonlocal calls
        calls += 1
        if calls > 20:
            raise web.HTTPUnauthorized(
                text='{"error": "Invalid API key"}', content_type="application/json"
            )

    emulator.before_request = revoke_after_20
    with pytest.raises(AuthenticationError, match="Invalid API key"):
        await drain(client, ids, policy=policy())


async def test_events_are_fetched_once_when_terminal(
    client: Client, emulator: Emulator, clock: ManualClock
) -> None:
    """With include_events, polls skip events while processing; one fetch with them at the end."""
    run_id = emulator.create_run(durations=[5.0, 9.0], event_bytes=3_000_000)
    asked: list[str] = []
    emulator.before_request = lambda route, request: (
        asked.append(request.query.get("includeEvents", "false")) if route == "get" else None
    )
    async with ticking(clock, step=1.0, every=0.005):
        updates = await drain(client, [run_id], include_events=True, policy=policy())
    run = updates[0].run
    assert run is not None and run.status == "completed"
    assert all(task.events for task in run.tasks)
    assert sum(len(task.events or []) for task in run.tasks) > 100
    assert asked.count("true") == 1
    assert asked[-1] == "true"


async def test_progress_updates(client: Client, emulator: Emulator, clock: ManualClock) -> None:
    """With progress=True, a non-final update arrives whenever the completed count moves."""
    run_id = emulator.create_run(durations=[1.0, 2.0, 3.0])
    updates: list[RunUpdate] = []
    async with client.watch([run_id], progress=True, policy=policy()) as watcher:
        async for update in watcher:
            updates.append(update)
            clock.advance(1.0)
    progress = [update.run.completed for update in updates if not update.final and update.run]
    assert progress == sorted(set(progress))
    assert len(progress) >= 2
    assert updates[-1].final and updates[-1].run is not None
    assert sum(1 for update in updates if update.final) == 1


async def test_wait_returns_the_finished_run(
    client: Client, emulator: Emulator, clock: ManualClock
) -> None:
    """``wait`` returns the run once it is terminal."""
    run_id = emulator.create_run(durations=[3.0])
    async with ticking(clock, step=1.0, every=0.002):
        run = await client.wait(run_id, timeout=5, policy=policy())
    assert run.id == run_id and run.is_terminal


@pytest.mark.parametrize(
    ("make_id", "error"),
    [
        pytest.param(lambda emulator: MISSING_ID, NotFoundError, id="missing"),
        pytest.param(
            lambda emulator: emulator.create_run(durations=[10_000.0]),
            WatchTimeoutError,
            id="too-slow",
        ),
    ],
)
async def test_wait_raises_the_error(
    client: Client,
    emulator: Emulator,
    make_id: Callable[[Emulator], str],
    error: type[Exception],
) -> None:
    """``wait`` raises what kept the run from being delivered."""
    with pytest.raises(error):
        await client.wait(make_id(emulator), timeout=0.05, policy=policy())


async def test_watch_must_be_entered(client: Client) -> None:
    """Iterating or adding outside ``async with`` is a clear RuntimeError."""
    watcher = client.watch([MISSING_ID])
    with pytest.raises(RuntimeError, match="async with"):
        await watcher.__anext__()
    with pytest.raises(RuntimeError, match="async with"):
        watcher.add([MISSING_ID])


async def test_many_runs_bounded_in_flight(
    server: EmulatorServer, emulator: Emulator, clock: ManualClock
) -> None:
    """2,000 runs with at most 8 requests in flight: every run delivered once."""
    ids = [emulator.create_run(n_tasks=1, durations=[float(i % 7)]) for i in range(2000)]
    in_flight = peak = 0

    async def started(*_: object) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)

    async def ended(*_: object) -> None:
        nonlocal in_flight
        in_flight -= 1

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(started)
    trace.on_request_end.append(ended)
    trace.on_request_exception.append(ended)
    policy_ = policy(initial_delay=0.002, max_delay=0.01, max_in_flight=8)
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        async with Client(server.api_key, base_url=server.base_url, session=session) as client:
            async with ticking(clock, step=1.0, every=0.01):
                async with client.watch(ids, policy=policy_) as watcher:
                    updates = [update async for update in watcher]
    assert_exactly_once(updates, ids)
    # Eight GETs; a list scan reads its pages one at a time beside them, and the look for
    # finished runs in the list (at the start of the watch) up to HARVEST_PARALLEL at once.
    assert peak in ((8,) if STRATEGY == "per-run" else range(8, 8 + 1 + HARVEST_PARALLEL + 1))
    assert in_flight == 0
    # Each run was got at least once, unless a list page already showed it finished.
    assert emulator.requests_by_route["get"] + watcher.harvested >= 2000


def processing_rows(emulator: Emulator) -> list[str]:
    """Ids the emulator lists as processing right now (its own view, no client code)."""
    return [
        run_id
        for run_id in emulator.run_ids("test-key")
        if b'"status":"processing"' in (emulator.render_run("test-key", run_id, False) or b"")
    ]


async def test_list_scans_replace_gets_for_processing_runs(
    client: Client, emulator: Emulator, clock: ManualClock, strategy: str
) -> None:
    """List-assisted watching costs about one GET per finished run, plus the scan pages."""
    rng = random.Random(11)
    ids = [emulator.create_run(n_tasks=1, durations=[rng.uniform(5, 300)]) for _ in range(500)]
    async with ticking(clock, step=2.0, every=0.004):
        async with client.watch(ids, policy=policy(max_delay=0.02)) as watcher:
            updates = [update async for update in watcher]
    assert_exactly_once(updates, ids)
    assert all(update.ok for update in updates)
    gets = emulator.requests_by_route["get"]
    if strategy == "per-run":
        assert watcher.scans == 0
        assert gets > 2 * len(ids)
    else:
        assert watcher.scans > 0
        # About one GET per run (the confirming one); a loaded machine may add a few.
        assert gets <= len(ids) * 1.5, f"{watcher.scans} scans, {watcher.scan_failures} failed"
        assert (gets + emulator.requests_by_route["list"]) / len(ids) < 2


async def test_scans_under_churn_deliver_exactly_once(
    client: Client, emulator: Emulator, clock: ManualClock, strategy: str
) -> None:
    """Runs finishing mid-scan and new runs at the head: every watched run delivered once."""
    rng = random.Random(12)
    ids = [emulator.create_run(n_tasks=1, durations=[rng.uniform(5, 100)]) for _ in range(350)]
    unwatched = [emulator.create_run(n_tasks=1, durations=[10_000.0]) for _ in range(50)]

    def churn(route: str, request: web.Request) -> None:
        if route == "list":
            emulator.create_run(n_tasks=1, durations=[10_000.0])  # a new run at the head
            clock.advance(1.0)  # runs finish between the pages of one scan

    emulator.before_request = churn
    async with ticking(clock, step=1.0, every=0.004):
        updates = await drain(client, ids, policy=policy(max_delay=0.02))
    assert_exactly_once(updates, ids)
    assert all(update.ok and update.run is not None for update in updates)
    assert not set(unwatched) & {update.run_id for update in updates}


async def test_auto_prefers_gets_when_the_key_has_many_unwatched_runs(
    client: Client, emulator: Emulator, clock: ManualClock, strategy: str
) -> None:
    """A few watched runs among 1,000 unwatched processing ones: auto polls them one by one."""
    for _ in range(1000):
        emulator.create_run(n_tasks=1, durations=[10_000.0])
    ids = [emulator.create_run(n_tasks=1, durations=[30.0]) for _ in range(5)]
    async with ticking(clock, step=1.0, every=0.004):
        async with client.watch(ids, policy=policy(max_delay=0.02)) as watcher:
            updates = [update async for update in watcher]
    assert_exactly_once(updates, ids)
    if strategy == "auto":
        # At most the first scan, made before the key's backlog was known.
        assert watcher.scans <= 1
    elif strategy == "list":
        # Every full scan reads the key's whole backlog (the last may be cut short at the end).
        assert watcher.scan_requests >= 10 * (watcher.scans - 1)


async def test_auto_switches_strategy_mid_watch(
    client: Client, emulator: Emulator, clock: ManualClock, strategy: str
) -> None:
    """Auto scans while many runs are watched and turns to GETs once one is left."""
    ids = [emulator.create_run(n_tasks=1, durations=[20.0]) for _ in range(300)]
    stragglers = [emulator.create_run(n_tasks=1, durations=[150.0])]
    scans_when_few_left = -1
    async with ticking(clock, step=1.0, every=0.004):
        async with client.watch(ids + stragglers, policy=policy(max_delay=0.02)) as watcher:
            async for update in watcher:
                assert update.ok
                if watcher.pending == 1:
                    scans_when_few_left = watcher.scans
        polls_at_end = watcher.polls
    if strategy == "auto":
        assert scans_when_few_left >= 1
        # With one run left, its GET costs no more than a scan page: scans stop.
        assert watcher.scans <= scans_when_few_left + 1
        assert polls_at_end > 300


async def test_the_testing_switch_shortens_the_poll_schedule_not_the_logic(
    client: Client, emulator: Emulator, clock: ManualClock
) -> None:
    """Under ``set_testing``, a 30 s poll schedule still polls once per step, in milliseconds."""
    run_id = emulator.create_run(durations=[1.0, 2.0, 3.0])
    slow = PollPolicy(initial_delay=30.0, max_delay=60.0, not_found_grace=0.0)
    completed: list[int] = []
    with set_testing(delay_scale=1e-5), anyio.fail_after(20):  # unscaled: minutes of polling
        async with client.watch([run_id], progress=True, policy=slow) as watcher:
            async for update in watcher:
                assert update.run is not None
                completed.append(update.run.completed)
                clock.advance(1.0)
    assert completed == [0, 1, 2, 3]


async def test_the_testing_switch_shortens_the_404_grace(client: Client) -> None:
    """Under ``set_testing``, the 10 s grace for a new id that answers 404 lasts 10 ms."""
    grace = PollPolicy().not_found_grace
    started = anyio.current_time()
    with set_testing(delay_scale=0.001):
        async with client.watch([MISSING_ID], policy=policy(not_found_grace=grace)) as watcher:
            (update,) = [update async for update in watcher]
    waited = anyio.current_time() - started
    assert isinstance(update.error, NotFoundError)
    assert grace * 0.001 <= waited < grace * 0.001 + 0.1
