"""Outages of the API: a watch rides them out, probes gently, recovers quickly, loses no run.

Every delay is production's scaled by ``SCALE``: the probe interval (``PollPolicy.max_delay``,
15 s) is 30 ms, a request timeout (60 s) 120 ms, and outages standing for 1, 2 and 10 minutes last
0.12, 0.24 and 1.2 s. Runs progress on the emulator's manual clock. Figures are printed (``-s``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

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
from asyncclient.testing import Emulator, EmulatorServer, Fault, Faults, ManualClock, serve
from asyncclient.testing import __main__ as entry

pytestmark = pytest.mark.anyio

KEY = "sk-live-OUTAGE-5c1e0a"
SCALE = 1 / 500
INTERVAL = 15.0 * SCALE
"""The capped poll interval, which is also the probe interval during an outage."""
TIMEOUT = 60.0 * SCALE
"""One request attempt's timeout (the client's default, scaled)."""
MINUTE = 60.0 * SCALE
RUNS = 20
"""What a loaded 2-core machine adds to the bound: scheduling lag, not design."""


def scaled_retry() -> RetryPolicy:
    """The default retry policy, every delay scaled."""
    base = RetryPolicy()
    return dataclasses.replace(
        base,
        initial_delay=base.initial_delay * SCALE,
        max_delay=base.max_delay * SCALE,
        max_retry_after=base.max_retry_after * SCALE,
    )


def scaled_poll(**changes: object) -> PollPolicy:
    """The default polling policy, every duration scaled."""
    base = PollPolicy()
    scaled = dataclasses.replace(
        base,
        initial_delay=base.initial_delay * SCALE,
        max_delay=base.max_delay * SCALE,
        not_found_grace=base.not_found_grace * SCALE,
    )
    return dataclasses.replace(scaled, **changes)  # type: ignore[arg-type]


def report(name: str, **figures: object) -> None:
    """Print a test's figures on one line."""
    shown = " ".join(
        f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}"
        for key, value in figures.items()
    )
    print(f"\n[{name}] {shown}")


@pytest.fixture
def clock() -> ManualClock:
    """The emulator's clock: runs finish when the test says."""
    return ManualClock()


@pytest.fixture
def emulator(clock: ManualClock) -> Emulator:
    """An emulator with one key."""
    return Emulator(api_keys=(KEY,), clock=clock, seed=16)


@pytest.fixture
async def server(emulator: Emulator) -> AsyncIterator[EmulatorServer]:
    """The emulator on loopback."""
    async with serve(emulator) as running:
        yield running


def client_for(server: EmulatorServer, *, timeout: float = TIMEOUT) -> Client:
    """A client with production's retry and timeout, scaled.

    A test that counts requests exactly passes a generous ``timeout``: at the scaled 120 ms, a
    loaded machine can time an attempt out before it reaches the server, and then it is not seen.
    """
    return Client(KEY, base_url=server.base_url, retry=scaled_retry(), timeout=timeout)


def make_runs(emulator: Emulator, count: int) -> list[str]:
    """Runs that take 100 emulated seconds: processing until the test moves the clock."""
    return [emulator.create_run(n_tasks=1, durations=[100.0], event_bytes=0) for _ in range(count)]


class Answers:
    """When the emulator answered requests for real (no fault), to time the recovery."""

    def __init__(self, faults: Faults) -> None:
        self.times: list[float] = []
        faults.on_request = self._seen

    def _seen(self, route: str, request: web.Request, fault: Fault | None) -> None:
        if fault is None:
            self.times.append(time.monotonic())

    def first_after(self, moment: float) -> float:
        return min(t for t in self.times if t >= moment)


def logical(watcher: Watcher) -> int:
    """What the watch asked for: GETs and list pages (the session layer's retries aside)."""
    return watcher.polls + watcher.scan_requests


# -- the matrix: 3 forms x 3 lengths x (3 strategies + wait) ----------------------------------

FORMS = [pytest.param("status", id="503"), "refused", "blackhole"]
MINUTES = [pytest.param(1, id="1min"), pytest.param(2, id="2min"), pytest.param(10, id="10min")]


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
    strategy: str,
    form: str,
    minutes: int,
) -> None:
    """Through an outage every run is delivered once with its result; probes stay at the cadence."""
    ids = make_runs(emulator, RUNS)
    length = minutes * MINUTE
    answers = Answers(emulator.faults)
    updates: list[RunUpdate] = []
    delivered_at: list[float] = []
    policy = scaled_poll(strategy=strategy)
    async with client_for(server) as client:
        with anyio.fail_after(length + 10):
            async with client.watch(ids, policy=policy) as watcher:
                async with anyio.create_task_group() as task_group:

                    async def consume() -> None:
                        async for update in watcher:
                            updates.append(update)
                            delivered_at.append(time.monotonic())

                    task_group.start_soon(consume)
                    await anyio.sleep(8 * INTERVAL)  # every run at its capped cadence
                    assert not updates
                    sent, asked, retried = client.requests_sent, logical(watcher), client.retries
                    began = time.monotonic()
                    emulator.faults.outage(length, form=form)  # type: ignore[arg-type]
                    clock.advance(1_000.0)  # every run finishes while the API is down
                    await anyio.sleep(began + length - time.monotonic())
                    # The outage ends at began + length, however late this task wakes up.
                    ended = began + length
                    assert all(at >= ended for at in delivered_at)  # nothing during the outage
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
        recovered_in_intervals=recovered / INTERVAL,
        all_delivered_s=all_delivered,
        delivered=len(updates),
        outages=watcher.outages,
    )
    finals = [update for update in updates if update.final]
    assert Counter(update.run_id for update in finals) == Counter(ids)
    for update in finals:
        assert update.error is None, update.error
        assert update.run is not None and update.run.status == "completed"
    # A black hole shorter than a request's timeouts and retries ends before any request fails.
    assert watcher.outages == (0 if form == "blackhole" and minutes < 3 else 1)
    # Healthy, this watch would have sent length / INTERVAL * RUNS GETs (per-run) meanwhile.
    assert asks <= onset + OUTAGE_AFTER + probe_bound(length)
    assert requests <= (onset + OUTAGE_AFTER + probe_bound(length)) * 3  # each tried 3 times
    # How soon it recovered (recovered_s, all_delivered_s) is reported above, not asserted: at
    # this scale a loaded machine's scheduling alone moves it by several intervals.


@pytest.mark.parametrize("minutes", MINUTES)
@pytest.mark.parametrize("form", FORMS)
async def test_wait_rides_out_an_outage(
    emulator: Emulator, server: EmulatorServer, clock: ManualClock, form: str, minutes: int
) -> None:
    """``wait()`` returns the finished run after an outage instead of raising."""
    (run_id,) = make_runs(emulator, 1)
    length = minutes * MINUTE
    answers = Answers(emulator.faults)
    returned: list[float] = []
    async with client_for(server) as client:
        with anyio.fail_after(length + 10):
            async with anyio.create_task_group() as task_group:

                async def wait() -> None:
                    run = await client.wait(run_id, policy=scaled_poll())
                    assert run.id == run_id and run.status == "completed"
                    returned.append(time.monotonic())

                task_group.start_soon(wait)
                await anyio.sleep(8 * INTERVAL)
                sent, retried = client.requests_sent, client.retries
                began = time.monotonic()
                emulator.faults.outage(length, form=form)  # type: ignore[arg-type]
                clock.advance(1_000.0)
                await anyio.sleep(began + length - time.monotonic())
                # The outage ends at began + length, however late this task wakes up.
                ended = began + length
                requests = client.requests_sent - sent
                retries = client.retries - retried
                assert all(at >= ended for at in returned)  # nothing during the outage
    recovered = answers.first_after(ended) - ended
    report(
        f"outage/wait/{form}/{minutes}min",
        requests=requests,
        retries=retries,
        probe_slots=length / INTERVAL,
        recovered_s=recovered,
        returned_s=returned[0] - ended,
    )
    assert requests - retries <= 2 + OUTAGE_AFTER + probe_bound(length)
    # How soon it recovered is reported above, not asserted (see test_watch_rides_out_an_outage).


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
    policy = scaled_poll(strategy=strategy, max_failed_polls=4)
    retry = scaled_retry()
    async with client_for(server, timeout=10.0) as client:
        with anyio.fail_after(20):
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
        with anyio.fail_after(10), pytest.raises(ServerError):
            await client.wait(broken, policy=scaled_poll(max_failed_polls=3))
    # The first failure was charged (nothing had failed before it); each later one only after
    # a list-page probe had answered: the probes that told the run's failure from an outage.
    assert emulator.requests_by_route["list"] >= 3 - 1


# -- deadlines still rule --------------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
async def test_max_outage_ends_the_watch_with_one_typed_error(
    emulator: Emulator, server: EmulatorServer, form: str
) -> None:
    """Unreachable for longer than ``max_outage``: the watch stops with APIUnavailableError."""
    ids = make_runs(emulator, RUNS)
    max_outage = 2 * MINUTE
    policy = scaled_poll(max_outage=max_outage)
    began = math.inf

    async def watch(client: Client) -> None:
        nonlocal began
        async with client.watch(ids, policy=policy) as watcher:
            await anyio.sleep(4 * INTERVAL)
            began = time.monotonic()
            emulator.faults.outage(10 * MINUTE, form=form)  # type: ignore[arg-type]
            async for _ in watcher:
                raise AssertionError("nothing is delivered during the outage")

    async with client_for(server) as client:
        with anyio.fail_after(10), pytest.raises(APIUnavailableError) as info:
            await watch(client)
        stopped = time.monotonic() - began
    error = info.value
    report(f"max_outage/{form}", stopped_s=stopped, error_seconds=error.seconds)
    assert error.seconds > max_outage
    assert max_outage < stopped  # how much later it stopped is reported, not asserted
    assert isinstance(error.__cause__, (APIConnectionError, ServerError))
    assert error.last_error is error.__cause__
    assert KEY not in str(error)


async def test_max_outage_ends_wait_too(emulator: Emulator, server: EmulatorServer) -> None:
    """``wait()`` with ``max_outage`` raises APIUnavailableError when the API stays away."""
    (run_id,) = make_runs(emulator, 1)
    emulator.faults.outage(10 * MINUTE, form="refused")
    async with client_for(server) as client:
        with anyio.fail_after(10), pytest.raises(APIUnavailableError):
            await client.wait(run_id, policy=scaled_poll(max_outage=MINUTE))


async def test_watch_gives_up_with_max_outage_when_entered_during_one(
    emulator: Emulator, server: EmulatorServer
) -> None:
    """A watch that never reached the API still stops after ``max_outage``, not before."""
    ids = make_runs(emulator, 3)
    emulator.faults.outage(10 * MINUTE)
    started = time.monotonic()

    async def watch(client: Client) -> None:
        async with client.watch(ids, policy=scaled_poll(max_outage=MINUTE)) as watcher:
            async for _ in watcher:
                raise AssertionError("nothing can be delivered")

    async with client_for(server) as client:
        with anyio.fail_after(10), pytest.raises(APIUnavailableError):
            await watch(client)
    assert time.monotonic() - started > MINUTE


@pytest.mark.parametrize(
    "deadline",
    [pytest.param({"run_timeout": 2 * MINUTE}, id="run_timeout"), {"timeout": 2 * MINUTE}],
)
async def test_deadlines_end_runs_during_an_outage(
    emulator: Emulator, server: EmulatorServer, deadline: dict[str, float]
) -> None:
    """``run_timeout`` and ``timeout`` deliver WatchTimeoutError on time while the API is down."""
    ids = make_runs(emulator, RUNS)
    emulator.faults.outage(10 * MINUTE, form="blackhole")
    started = time.monotonic()
    async with client_for(server) as client:
        with anyio.fail_after(10):
            async with client.watch(ids, policy=scaled_poll(**deadline)) as watcher:
                updates = [update async for update in watcher]
    took = time.monotonic() - started
    assert Counter(update.run_id for update in updates) == Counter(ids)
    assert all(isinstance(update.error, WatchTimeoutError) for update in updates)
    assert took >= 2 * MINUTE  # the deadline ruled; how soon after it is not for a test to time


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


# -- the emulator's outage forms ---------------------------------------------------------------


def connect(port: int) -> bool:
    """Whether a TCP connection to the port is accepted."""
    with socket.socket() as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return False
        return True


async def test_refused_outage_closes_the_port_then_reopens_it(
    emulator: Emulator, server: EmulatorServer
) -> None:
    """A refused outage refuses connections and cuts open ones; the same port serves after it."""
    run_id = emulator.create_run(durations=[1.0])
    async with Client(KEY, base_url=server.base_url, retry=RetryPolicy(max_retries=0)) as client:
        await client.get_run(run_id)  # a pooled keep-alive connection now exists
        fault = emulator.faults.outage(0.3, form="refused")
        await anyio.sleep(0.05)
        assert emulator.faults.refusing
        assert not await anyio.to_thread.run_sync(connect, server.port)
        with pytest.raises(APIConnectionError):
            await client.get_run(run_id)
        assert emulator.faults.remove(fault)
        await anyio.sleep(0.05)
        assert await anyio.to_thread.run_sync(connect, server.port)
        assert (await client.get_run(run_id)).id == run_id


async def test_scheduled_outage_begins_and_ends_on_time(
    emulator: Emulator, server: EmulatorServer
) -> None:
    """An outage with ``start`` leaves the API alone until then, and ends after its length."""
    run_id = emulator.create_run(durations=[1.0])
    emulator.faults.outage(0.2, form="refused", start=0.2)
    async with Client(KEY, base_url=server.base_url, retry=RetryPolicy(max_retries=0)) as client:
        await client.get_run(run_id)
        assert not emulator.faults.active
        await anyio.sleep(0.3)
        with pytest.raises(APIConnectionError):
            await client.get_run(run_id)
        await anyio.sleep(0.2)
        assert (await client.get_run(run_id)).id == run_id


async def test_black_hole_accepts_and_never_answers(
    emulator: Emulator, server: EmulatorServer
) -> None:
    """A black hole holds requests past the client's timeout; when it ends the API answers."""
    run_id = emulator.create_run(durations=[1.0])
    retry = RetryPolicy(max_retries=0)
    async with Client(KEY, base_url=server.base_url, retry=retry, timeout=0.1) as client:
        fault = emulator.faults.outage(60.0, form="blackhole")
        assert await anyio.to_thread.run_sync(connect, server.port)
        with anyio.fail_after(5), pytest.raises(APIConnectionError, match="timed out"):
            await client.get_run(run_id)
        assert emulator.faults.injected["blackhole"] == 1
        emulator.faults.remove(fault)
        assert (await client.get_run(run_id)).id == run_id


def test_refused_is_an_outage_form_only() -> None:
    """A refused fault closes the whole listener, so it is refused as a per-request fault."""
    with pytest.raises(ValueError, match="form='refused'"):
        Faults().add(Fault("refused"))
    with pytest.raises(ValueError, match="form"):
        Faults().outage(1.0, form="gone")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="start"):
        Faults().outage(1.0, start=-1.0)
    (hole,) = Faults().add_spec("get/blackhole:0.5")
    assert (hole.kind, hole.route, hole.rate) == ("blackhole", "get", 0.5)


# -- the command line --------------------------------------------------------------------------

PYTHON = (sys.executable, "-W", "error", "-m", "asyncclient")


async def test_cli_watch_rides_out_a_refused_outage(
    emulator: Emulator, server: EmulatorServer, clock: ManualClock, tmp_path: Path
) -> None:
    """`runs watch` through a 2-minute refused outage exits 0 with every run in the file once."""
    ids = make_runs(emulator, RUNS)
    out = tmp_path / "results.jsonl"
    scale = 0.01  # the CLI's testing delay scale: probes every 0.15 s, --max-outage 6 s
    length = 2 * 60.0 * scale
    argv = [*PYTHON, "runs", "watch", *ids, "--out", str(out)]
    argv += ["--base-url", server.base_url, "--api-key", KEY]
    with anyio.fail_after(30):
        env = os.environ | {"ASYNCCLIENT_TESTING_DELAY_SCALE": str(scale)}
        async with await anyio.open_process(argv, stderr=subprocess.PIPE, env=env) as process:
            while emulator.request_count < 3:  # it is watching (a scan or GETs, then more)
                await anyio.sleep(0.02)
            emulator.faults.outage(length, form="refused")
            clock.advance(1_000.0)
            code = await process.wait()
            assert process.stderr is not None
            stderr = (await process.stderr.receive()).decode()
    assert code == 0, stderr
    lines = [json.loads(line) for line in out.read_bytes().splitlines()]
    assert Counter(line["runId"] for line in lines) == Counter(ids)
    assert all(line["status"] == "completed" for line in lines)
    logged = stderr.splitlines()
    assert "Traceback" not in stderr
    assert logged[0].startswith("asyncclient: the API is unreachable (")
    assert logged[1].startswith("asyncclient: the API answers again, after ")
    assert logged[2].startswith(f"watched {RUNS} runs: {RUNS} completed")


async def test_emulator_command_line_schedules_outages() -> None:
    """`asyncclient emulator --outage refused:START:SECONDS` closes its port on that schedule."""
    argv = [*PYTHON, "emulator", "--port", "0", "--runs", "1", "--outage", "refused:0.5:0.5"]
    async with await anyio.open_process(argv) as process:
        assert process.stdout is not None
        seen = b""
        with anyio.fail_after(15):
            while b"\n" not in seen:
                seen += await process.stdout.receive()
        port = int(seen.split(b"\n", 1)[0].decode().rsplit(":", 1)[1])
        assert await anyio.to_thread.run_sync(connect, port)
        await anyio.sleep(0.7)
        assert not await anyio.to_thread.run_sync(connect, port)
        await anyio.sleep(0.6)
        assert await anyio.to_thread.run_sync(connect, port)
        process.terminate()
        with anyio.fail_after(10):
            assert await process.wait() == 0


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param("gone:1:2", id="unknown-form"),
        pytest.param("refused:1", id="two-parts"),
        pytest.param("refused:soon:2", id="not-a-number"),
        pytest.param("refused:1:-2", id="negative"),
        pytest.param("200:1:2", id="not-an-error-status"),
    ],
)
def test_emulator_command_line_refuses_malformed_outages(
    spec: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A malformed ``--outage`` is a usage error (exit 2) naming the option."""
    with pytest.raises(SystemExit) as info:
        entry.main(["--outage", spec])
    assert info.value.code == 2
    assert "--outage" in capsys.readouterr().err
