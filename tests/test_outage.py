"""Outages of the API: a watch rides them out, probes gently, recovers quickly, loses no run.

Every test here runs on virtual time (``tests/_virtual_time.py``) with production's delays: the
probe interval (``PollPolicy.max_delay``) is 15 s, a request's timeout 60 s, and outages last 1,
2 and 10 real minutes of the loop's clock, in well under a second of wall time each. Waits take
no wall time and work takes no virtual time, so when things happened is exact, however loaded
the machine is: recovery bounds are asserted, not only reported. Runs progress on the
emulator's manual clock. Figures are printed (``-s``).

The emulator's outage forms and the command line, which need real time, are in
``tests/test_outage_forms.py``.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Iterator

import anyio
import pytest
from aiohttp import web

from asyncclient import (
    APIConnectionError,
    APIUnavailableError,
    Client,
    PollPolicy,
    RetryPolicy,
    RunUpdate,
    ServerError,
    Watcher,
    WatchTimeoutError,
)
from asyncclient._outage import OUTAGE_AFTER, OutageTracker
from asyncclient.testing import Emulator, EmulatorServer, Fault, Faults, ManualClock

pytestmark = [pytest.mark.anyio, pytest.mark.virtual_time]

INTERVAL = PollPolicy().max_delay
"""The capped poll interval, which is also the probe interval during an outage (15 s)."""
TIMEOUT = 60.0
"""One request attempt's timeout: the client's default."""
MINUTE = 60.0
RUNS = 20
FOREVER = 1e9
"""An outage that lasts until the test ends (the ``down`` fixture clears it)."""


def test_the_figures_are_production_defaults() -> None:
    """The constants this module runs on are the client's and the policy's defaults."""
    assert (INTERVAL, PollPolicy().strategy, RetryPolicy().max_retries) == (15.0, "auto", 2)
    assert inspect.signature(Client).parameters["timeout"].default == TIMEOUT


def report(name: str, **figures: object) -> None:
    """Print a test's figures on one line."""
    shown = " ".join(
        f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}"
        for key, value in figures.items()
    )
    print(f"\n[{name}] {shown}")


def client_for(server: EmulatorServer) -> Client:
    """A client with every production default."""
    return Client(server.api_key, base_url=server.base_url)


def make_runs(emulator: Emulator, count: int) -> list[str]:
    """Runs that take 100 emulated seconds: processing until the test moves the clock."""
    return [emulator.create_run(n_tasks=1, durations=[100.0], event_bytes=0) for _ in range(count)]


class Answers:
    """When (loop time) the emulator answered requests for real, with no fault."""

    def __init__(self, faults: Faults) -> None:
        self.times: list[float] = []
        faults.on_request = self._seen

    def _seen(self, route: str, request: web.Request, fault: Fault | None) -> None:
        if fault is None:
            self.times.append(anyio.current_time())

    def first_after(self, moment: float) -> float:
        return min(t for t in self.times if t >= moment)


async def outage(emulator: Emulator, seconds: float, form: str) -> None:
    """Take the API away for ``seconds``, then bring it back: removed then, not left to expire."""
    fault = emulator.faults.outage(FOREVER, form=form)  # type: ignore[arg-type]
    await anyio.sleep(seconds)
    assert emulator.faults.remove(fault)


@pytest.fixture
def down(emulator: Emulator) -> Iterator[None]:
    """Leave no outage behind (the server stops with it removed)."""
    yield
    emulator.faults.clear()


def logical(watcher: Watcher) -> int:
    """What the watch asked for: GETs and list pages (the session layer's retries aside)."""
    return watcher.polls + watcher.scan_requests


# -- the matrix: 3 forms x 3 lengths x (3 strategies + wait) ----------------------------------

FORMS = [pytest.param("status", id="503"), "refused", "blackhole"]
MINUTES = [pytest.param(1, id="1min"), pytest.param(2, id="2min"), pytest.param(10, id="10min")]
ATTEMPTS_TIMEOUT = (1 + RetryPolicy().max_retries) * TIMEOUT + 2 * RetryPolicy().max_delay
"""How long a request into a black hole takes to fail: every attempt times out (a bound)."""
RECOVERY = INTERVAL + TIMEOUT
"""The bound on the first answer after the API is back: the probe due within one capped
interval, after a probe that may have gone into a black hole just before it ended."""


def probe_bound(length: float) -> float:
    """Probes an outage of ``length`` seconds may cost: one per interval, plus the first."""
    return length / INTERVAL + 2


@pytest.mark.parametrize("minutes", MINUTES)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("strategy", ["per-run", "list", "auto"])
async def test_watch_rides_out_an_outage(
    emulator: Emulator,
    server: EmulatorServer,
    clock: ManualClock,
    down: None,
    strategy: str,
    form: str,
    minutes: int,
) -> None:
    """Through an outage every run is delivered once with its result, soon after the API is back."""
    ids = make_runs(emulator, RUNS)
    length = minutes * MINUTE
    answers = Answers(emulator.faults)
    updates: list[RunUpdate] = []
    delivered_at: list[float] = []
    policy = PollPolicy(strategy=strategy)  # type: ignore[arg-type]
    async with client_for(server) as client:
        with anyio.fail_after(length + 3_600):
            async with client.watch(ids, policy=policy) as watcher:
                async with anyio.create_task_group() as task_group:

                    async def consume() -> None:
                        async for update in watcher:
                            updates.append(update)
                            delivered_at.append(anyio.current_time())

                    task_group.start_soon(consume)
                    await anyio.sleep(8 * INTERVAL)  # every run at its capped cadence
                    assert not updates
                    sent, asked, retried = client.requests_sent, logical(watcher), client.retries
                    clock.advance(1_000.0)  # every run finishes while the API is down
                    await outage(emulator, length, form)
                    ended = anyio.current_time()
                    assert not updates  # nothing during the outage
                    requests = client.requests_sent - sent
                    asks = logical(watcher) - asked
                    retries = client.retries - retried
    recovered = answers.first_after(ended) - ended
    all_delivered = max(delivered_at) - ended
    # Requests under way when it began, and one more round of polls in the capped interval it
    # takes to be sure that it is an outage, not a few unlucky failures.
    onset = 2 * min(RUNS, policy.max_in_flight)
    report(
        f"outage/{strategy}/{form}/{minutes}min",
        requests=requests,
        watch_requests=asks,
        retries=retries,
        probe_slots=length / INTERVAL,
        recovered_s=recovered,
        all_delivered_s=all_delivered,
        delivered=len(updates),
        outages=watcher.outages,
    )
    finals = [update for update in updates if update.final]
    assert Counter(update.run_id for update in finals) == Counter(ids)
    for update in finals:
        assert update.error is None, update.error
        assert update.run is not None and update.run.status == "completed"
    # A black hole is known only as its requests fail, each after three 60 s timeouts: one
    # shorter than that ends before any request fails.
    assert watcher.outages == (0 if form == "blackhole" and length < ATTEMPTS_TIMEOUT else 1)
    # Healthy, this watch would have sent length / INTERVAL * RUNS GETs (per-run) meanwhile.
    assert asks <= onset + OUTAGE_AFTER + probe_bound(length)
    assert requests <= (onset + OUTAGE_AFTER + probe_bound(length)) * 3  # each tried 3 times
    # Back within one capped interval (plus a black-holed probe's timeout), every run with it
    # or within one more interval, over which the watch spreads its runs so as not to storm.
    assert recovered <= RECOVERY
    assert all_delivered <= recovered + INTERVAL


@pytest.mark.parametrize("minutes", MINUTES)
@pytest.mark.parametrize("form", FORMS)
async def test_wait_rides_out_an_outage(
    emulator: Emulator,
    server: EmulatorServer,
    clock: ManualClock,
    down: None,
    form: str,
    minutes: int,
) -> None:
    """``wait()`` returns the finished run after an outage instead of raising."""
    (run_id,) = make_runs(emulator, 1)
    length = minutes * MINUTE
    answers = Answers(emulator.faults)
    returned: list[float] = []
    async with client_for(server) as client:
        with anyio.fail_after(length + 3_600):
            async with anyio.create_task_group() as task_group:

                async def wait() -> None:
                    run = await client.wait(run_id)
                    assert run.id == run_id and run.status == "completed"
                    returned.append(anyio.current_time())

                task_group.start_soon(wait)
                await anyio.sleep(8 * INTERVAL)
                sent, retried = client.requests_sent, client.retries
                clock.advance(1_000.0)
                await outage(emulator, length, form)
                ended = anyio.current_time()
                requests = client.requests_sent - sent
                retries = client.retries - retried
                assert not returned  # nothing during the outage
    recovered = answers.first_after(ended) - ended
    report(
        f"outage/wait/{form}/{minutes}min",
        requests=requests,
        retries=retries,
        probe_slots=length / INTERVAL,
        recovered_s=recovered,
        returned_s=returned[0] - ended,
    )
    # One run: a GET per capped interval (two probe kinds alternate), each tried 3 times.
    assert requests <= (OUTAGE_AFTER + probe_bound(length)) * 3
    assert recovered <= RECOVERY
    assert returned[0] - ended <= RECOVERY


# -- a run's own failure is still its own ------------------------------------------------------


@pytest.mark.parametrize("strategy", ["per-run", "list", "auto"])
async def test_a_run_failing_on_its_own_still_ends_after_max_failed_polls(
    emulator: Emulator, server: EmulatorServer, clock: ManualClock, strategy: str
) -> None:
    """A run whose GETs keep failing while the others' succeed ends with its error."""
    # Finished, so that list scans miss it and GET it too; the others go on processing.
    broken = emulator.create_run(n_tasks=1, durations=[0.0], event_bytes=0)
    ids = [broken, *make_runs(emulator, 40)]
    polls_of_broken = 0

    def fail_broken(route: str, request: web.Request) -> None:
        nonlocal polls_of_broken
        if broken in request.path:
            polls_of_broken += 1
            raise web.HTTPServiceUnavailable(text="this run's shard is down")

    emulator.before_request = fail_broken
    # List rows as stubs: no list page can settle the finished run, only its (failing) GETs.
    emulator.list_rows = "stub"
    policy = PollPolicy(strategy=strategy, max_failed_polls=4)  # type: ignore[arg-type]
    retry = RetryPolicy()
    async with client_for(server) as client:
        with anyio.fail_after(3_600):
            async with client.watch(ids, policy=policy) as watcher:
                first = await watcher.__anext__()
                clock.advance(1_000.0)
                rest = [update async for update in watcher]
    assert first.run_id == broken
    assert isinstance(first.error, ServerError) and first.error.status == 503
    assert all(update.ok for update in rest)
    assert {update.run_id for update in rest} == set(ids[1:])
    # Every poll of it was charged: exactly max_failed_polls of them, each retried twice.
    assert polls_of_broken == policy.max_failed_polls * (1 + retry.max_retries)
    assert watcher.outages == 0


async def test_wait_on_a_run_failing_on_its_own_still_raises(
    emulator: Emulator, server: EmulatorServer
) -> None:
    """Alone, a failing run looks like an outage until a list-page probe answers; then it ends."""
    (broken,) = make_runs(emulator, 1)

    def fail_broken(route: str, request: web.Request) -> None:
        if route == "get":
            raise web.HTTPServiceUnavailable(text="this run's shard is down")

    emulator.before_request = fail_broken
    async with client_for(server) as client:
        with anyio.fail_after(3_600), pytest.raises(ServerError):
            await client.wait(broken, policy=PollPolicy(max_failed_polls=3))
    # The first failure was charged (nothing had failed before it); each later one only after
    # a list-page probe had answered: the probes that told the run's failure from an outage.
    assert emulator.requests_by_route["list"] >= 3 - 1


# -- deadlines still rule --------------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
async def test_max_outage_ends_the_watch_with_one_typed_error(
    emulator: Emulator, server: EmulatorServer, down: None, form: str
) -> None:
    """Unreachable for longer than ``max_outage``: the watch stops with APIUnavailableError."""
    ids = make_runs(emulator, RUNS)
    max_outage = 2 * MINUTE
    policy = PollPolicy(max_outage=max_outage)
    began = 0.0

    async def watch(client: Client) -> None:
        nonlocal began
        async with client.watch(ids, policy=policy) as watcher:
            await anyio.sleep(4 * INTERVAL)
            began = anyio.current_time()
            emulator.faults.outage(FOREVER, form=form)  # type: ignore[arg-type]
            async for _ in watcher:
                raise AssertionError("nothing is delivered during the outage")

    async with client_for(server) as client:
        with anyio.fail_after(3_600), pytest.raises(APIUnavailableError) as info:
            await watch(client)
        stopped = anyio.current_time() - began
    error = info.value
    report(f"max_outage/{form}", stopped_s=stopped, error_seconds=error.seconds)
    assert error.seconds >= max_outage - 1e-9  # float rounding of since + max_outage - now
    # Counted from the first failed request, sent when it began, and reported once the outage is
    # certain: at once for 503s and refusals; for a black hole only after two rounds of
    # requests have each failed at their timeouts.
    detect = 2 * ATTEMPTS_TIMEOUT if form == "blackhole" else 0.0
    assert max_outage <= stopped <= max(max_outage, detect) + INTERVAL
    assert isinstance(error.__cause__, (APIConnectionError, ServerError))
    assert error.last_error is error.__cause__
    assert server.api_key not in str(error)


async def test_max_outage_ends_wait_too(
    emulator: Emulator, server: EmulatorServer, down: None
) -> None:
    """``wait()`` with ``max_outage`` raises APIUnavailableError when the API stays away."""
    (run_id,) = make_runs(emulator, 1)
    emulator.faults.outage(FOREVER, form="refused")
    async with client_for(server) as client:
        started = anyio.current_time()
        with anyio.fail_after(3_600), pytest.raises(APIUnavailableError):
            await client.wait(run_id, policy=PollPolicy(max_outage=MINUTE))
        assert MINUTE <= anyio.current_time() - started <= MINUTE + 2 * INTERVAL


async def test_watch_gives_up_with_max_outage_when_entered_during_one(
    emulator: Emulator, server: EmulatorServer, down: None
) -> None:
    """A watch that never reached the API still stops after ``max_outage``, not before."""
    ids = make_runs(emulator, 3)
    emulator.faults.outage(FOREVER)

    async def watch(client: Client) -> None:
        async with client.watch(ids, policy=PollPolicy(max_outage=MINUTE)) as watcher:
            async for _ in watcher:
                raise AssertionError("nothing can be delivered")

    async with client_for(server) as client:
        started = anyio.current_time()
        with anyio.fail_after(3_600), pytest.raises(APIUnavailableError):
            await watch(client)
        assert MINUTE <= anyio.current_time() - started <= MINUTE + 2 * INTERVAL


@pytest.mark.parametrize(
    "deadline",
    [pytest.param({"run_timeout": 2 * MINUTE}, id="run_timeout"), {"timeout": 2 * MINUTE}],
)
async def test_deadlines_end_runs_during_an_outage(
    emulator: Emulator, server: EmulatorServer, down: None, deadline: dict[str, float]
) -> None:
    """``run_timeout`` and ``timeout`` deliver WatchTimeoutError on time while the API is down."""
    ids = make_runs(emulator, RUNS)
    emulator.faults.outage(FOREVER, form="blackhole")
    async with client_for(server) as client:
        started = anyio.current_time()
        with anyio.fail_after(3_600):
            async with client.watch(ids, policy=PollPolicy(**deadline)) as watcher:  # type: ignore[arg-type]
                updates = [update async for update in watcher]
        took = anyio.current_time() - started
    assert Counter(update.run_id for update in updates) == Counter(ids)
    assert all(isinstance(update.error, WatchTimeoutError) for update in updates)
    # On time: the deadline, not the black-holed requests (each held for its 60 s timeout).
    assert 2 * MINUTE <= took <= 2 * MINUTE + 1.0


# -- the tracker, on production's numbers (no waiting) ----------------------------------------


def test_outage_tracker_on_production_defaults() -> None:
    """Production: an outage is 3 failures in a row over 15 s; then a probe per 15 s."""
    policy = PollPolicy()
    assert policy.max_outage is None
    now = [1_000.0]
    tracker = OutageTracker(interval=policy.max_delay, now=lambda: now[0])
    error = ServerError(status=503, method="GET", path="/x", message="down")
    assert tracker.failed(error, now[0]) == (True, False)  # the request before it answered
    assert tracker.answered() is None
    assert tracker.failed(error, now[0] - 1.0) == (True, False)  # sent a second ago
    now[0] += 1.0
    assert tracker.failed(error, now[0]) == (False, False)
    assert tracker.failed(error, now[0]) == (False, False)  # 3 in a row, but within 2 s
    now[0] += 13.0
    assert tracker.failed(error, now[0]) == (False, True)  # failing for 15 s: down
    assert tracker.down and tracker.down_for() == 15.0
    assert tracker.next_probe_at == now[0] + 15.0
    now[0] += 15.0
    assert tracker.claim_probe() == 1
    assert tracker.next_probe_at == now[0] + 15.0
    assert tracker.failed(error, now[0]) == (False, False)  # never charged while down
    assert not tracker.overdue(None)
    assert tracker.overdue(10.0) and not tracker.overdue(60.0)
    assert tracker.answered() == 30.0
    assert tracker.down_for() is None
    assert tracker.outages == 1


def test_max_outage_is_checked() -> None:
    """``max_outage`` must be a positive number of seconds or None."""
    for bad in (0, -1.0, float("inf"), "10"):
        with pytest.raises(ValueError, match="max_outage"):
            PollPolicy(max_outage=bad)  # type: ignore[arg-type]
    assert PollPolicy(max_outage=600.0).max_outage == 600.0
