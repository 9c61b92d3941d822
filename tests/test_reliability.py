"""Reliability and security under fire: the client against the emulator's fault mode.

Each test states the figure it must meet. The figures are printed (run with ``-s`` to see them);
``SOAK_RUNS=20000`` makes the soak bigger than its quick default.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import gc
import logging
import math
import os
import pickle
import random
import socket
import time
import traceback
import tracemalloc
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Callable

import aiohttp
import anyio
import pytest
from _support import serve_handler, ticking
from aiohttp import web

from asyncclient import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    Client,
    NotFoundError,
    PaymentRequiredError,
    PollPolicy,
    PredevError,
    RateController,
    RateLimitError,
    ResponseDecodeError,
    RetryPolicy,
    RunUpdate,
    ServerError,
    Watcher,
    WatchTimeoutError,
)
from asyncclient.testing import Emulator, EmulatorServer, Fault, ManualClock, serve

pytestmark = pytest.mark.anyio

KEY = "sk-live-RELIAB-9d3e41c2"
WRONG_KEY = "sk-live-WRONGK-0b7a55e1"
SECRETS = (KEY, WRONG_KEY, "RELIAB-9d3e41c2", "WRONGK-0b7a55e1")
MISSING_ID = "0123456789abcdef01234567"
SOAK_RUNS = int(os.environ.get("SOAK_RUNS", "2000"))


def fast_retry(**changes: object) -> RetryPolicy:
    """The production retry logic on a millisecond schedule."""
    base = RetryPolicy(max_retries=2, initial_delay=0.001, max_delay=0.005, max_retry_after=0.05)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def fast_poll(**changes: object) -> PollPolicy:
    """The production polling logic on a shrunk schedule."""
    base = PollPolicy(initial_delay=0.002, max_delay=0.02, max_in_flight=16, not_found_grace=0.0)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> ManualClock:
    """A clock the test moves."""
    return ManualClock()


@pytest.fixture
def emulator(clock: ManualClock) -> Emulator:
    """An emulator that knows the distinctive key."""
    return Emulator(api_keys=(KEY,), clock=clock, seed=6)


@pytest.fixture
async def server(emulator: Emulator) -> AsyncIterator[EmulatorServer]:
    """The emulator on loopback."""
    async with serve(emulator) as running:
        yield running


def logical_requests(watcher: Watcher) -> int:
    """What the watch asked for: one per poll and one per list page of a scan."""
    return watcher.polls + watcher.scan_requests


def assert_each_delivered_once_with_its_run(updates: list[RunUpdate], ids: list[str]) -> None:
    """Exactly one final update per id, none extra, each carrying its finished run."""
    finals = [update for update in updates if update.final]
    assert Counter(update.run_id for update in finals) == Counter(ids)
    for update in finals:
        assert update.error is None, (update.run_id, update.error)
        assert update.run is not None and update.run.id == update.run_id
        assert update.run.is_terminal


async def rate_over(count: Callable[[], int], seconds: float) -> float:
    """How fast ``count()`` grows over the next ``seconds``, per second."""
    before, started = count(), anyio.current_time()
    await anyio.sleep(seconds)
    return (count() - before) / (anyio.current_time() - started)


def report(name: str, **figures: object) -> None:
    """Print a test's figures on one line."""
    shown = " ".join(
        f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}"
        for key, value in figures.items()
    )
    print(f"\n[{name}] {shown}")


# -- soak --------------------------------------------------------------------------------------

SOAK_RATIO_BOUND = 1.5
"""Requests sent per logical request (a poll, or a list page of a scan; with ``per-run`` that is
``requests_sent / polls``). With a share p of answers failing and two retries the expected ratio
is 1 + p + p², 1.26 at p ≈ 0.21 (20 % 5xx, 5 % resets of which aiohttp silently retries most);
1.5 leaves room for noise and none for a retry storm."""


@pytest.mark.parametrize("strategy", [pytest.param("per-run"), pytest.param("auto")])
async def test_soak_every_run_delivered_once_under_5xx_and_resets(
    emulator: Emulator, server: EmulatorServer, clock: ManualClock, strategy: str
) -> None:
    """2,000 runs watched through 20 % random 5xx and 5 % resets: each delivered once, not lost."""
    rng = random.Random(2024)
    ids = [
        emulator.create_run(n_tasks=1, durations=[rng.uniform(1.0, 300.0)], event_bytes=0)
        for _ in range(SOAK_RUNS)
    ]
    faults = emulator.faults
    share = 0.05
    # Tried in order: each fault's rate is its share of what the earlier ones left over.
    for index, status in enumerate((500, 502, 503, 504)):
        faults.add(Fault("status", status=status, rate=share / (1 - index * share)))
    faults.add(Fault("reset", rate=share / (1 - 4 * share)))
    updates: list[RunUpdate] = []
    started = time.perf_counter()
    async with Client(KEY, base_url=server.base_url, retry=fast_retry()) as client:
        policy = fast_poll(max_in_flight=32, strategy=strategy)
        with anyio.fail_after(90):
            async with ticking(clock, step=1.0, every=0.005):
                async with client.watch(ids, policy=policy) as watcher:
                    updates = [update async for update in watcher]
        logical = logical_requests(watcher)
        ratio = client.requests_sent / logical
        retries = client.retries
        requests_sent = client.requests_sent
    elapsed = time.perf_counter() - started
    assert_each_delivered_once_with_its_run(updates, ids)
    assert len(updates) == len(ids)  # no duplicates, no progress updates asked for
    injected = sum(faults.injected.values()) / faults.requests
    report(
        f"soak/{strategy}",
        runs=len(ids),
        polls=watcher.polls,
        scan_pages=watcher.scan_requests,
        requests_sent=requests_sent,
        retries=retries,
        ratio=ratio,
        requests_per_poll=requests_sent / watcher.polls,
        bound=SOAK_RATIO_BOUND,
        server_requests=faults.requests,
        injected_share=injected,
        injected=dict(faults.injected),
        seconds=elapsed,
    )
    assert 0.22 <= injected <= 0.28  # the chaos was really there
    assert retries > 0
    assert ratio <= SOAK_RATIO_BOUND


# -- outage ------------------------------------------------------------------------------------


OUTAGE = 1.8
"""Seconds of 100 % 503s: long enough that the retry budget's first few retries are a detail."""


@pytest.mark.virtual_time  # the rates compared are exact: load cannot skew them
@pytest.mark.parametrize("strategy", [pytest.param("per-run"), pytest.param("auto")])
async def test_outage_causes_no_retry_storm(
    emulator: Emulator, server: EmulatorServer, clock: ManualClock, strategy: str
) -> None:
    """Over a total outage the server gets no more requests per second than when healthy."""
    ids = [emulator.create_run(n_tasks=1, durations=[1_000.0], event_bytes=0) for _ in range(40)]
    faults = emulator.faults
    retry = fast_retry(budget=50, retry_cost=5)
    # A pace the loop keeps easily, so the rate is set by the schedule, not by the CPU.
    policy = fast_poll(max_delay=0.08, max_failed_polls=100_000, strategy=strategy)
    updates: list[RunUpdate] = []

    def arrived() -> int:
        return faults.requests

    async with Client(KEY, base_url=server.base_url, retry=retry) as client:
        budget = client._transport.budget
        assert budget is not None
        with anyio.fail_after(30):
            async with client.watch(ids, policy=policy) as watcher:
                async with anyio.create_task_group() as task_group:

                    async def consume() -> None:
                        updates.extend([update async for update in watcher])

                    task_group.start_soon(consume)
                    await anyio.sleep(0.4)  # every run is at its longest delay by now
                    healthy = await rate_over(arrived, 0.6)
                    outage_fault = faults.outage(OUTAGE)
                    began, count, retries = anyio.current_time(), arrived(), client.retries
                    first_half_second = await rate_over(arrived, 0.5)
                    await anyio.sleep(OUTAGE - (anyio.current_time() - began))
                    elapsed = anyio.current_time() - began
                    during = (arrived() - count) / elapsed
                    retried = client.retries - retries
                    refused = budget.refused
                    await anyio.sleep(0.1)
                    # Over: real time passed.
                    assert all(fault is not outage_fault for fault in faults.active)
                    recovered_at = anyio.current_time()
                    clock.advance(2_000.0)  # every run finishes
    recovery = anyio.current_time() - recovered_at
    report(
        f"outage/{strategy}",
        healthy_rps=healthy,
        outage_rps=during,
        ratio=during / healthy,
        first_500ms_rps=first_half_second,
        budget_refused=refused,
        retries=retried,
        recovery_s=recovery,
        delivered=len(updates),
    )
    assert_each_delivered_once_with_its_run(updates, ids)
    assert refused > 0  # the budget is what stopped the retries
    assert retried <= retry.budget // retry.retry_cost  # type: ignore[operator]
    # A storm would be a multiple (up to 3x with two retries). The watch probes once per capped
    # interval; leaving out the few retries the budget paid for, that is at most the healthy
    # rate (15 % for 503s answered faster than runs are rendered).
    assert during - retried / elapsed <= healthy * 1.15


# -- 429 -------------------------------------------------------------------------------------

_FAR = email.utils.formatdate(time.time() + 300, usegmt=True)  # under max_pause
_PAST = email.utils.formatdate(time.time() - 3_600, usegmt=True)
_CAP = 0.3


@pytest.mark.virtual_time  # the gaps are exact: load cannot stretch them
@pytest.mark.parametrize(
    ("fault", "low"),
    [
        pytest.param(Fault("status", status=429, retry_after="0.2"), 0.2, id="seconds"),
        pytest.param(Fault("status", status=429, retry_after="2"), _CAP, id="seconds-capped"),
        pytest.param(Fault("status", status=429, retry_after_ms="150"), 0.15, id="milliseconds"),
        pytest.param(
            Fault("status", status=429, retry_after_ms="100", retry_after="9"),
            0.1,
            id="milliseconds-win",
        ),
        pytest.param(Fault("status", status=429, retry_after=_FAR), _CAP, id="http-date"),
        pytest.param(Fault("status", status=429, retry_after=_PAST), 0.0, id="date-past"),
        pytest.param(Fault("status", status=429), 0.0, id="missing"),
        pytest.param(Fault("status", status=429, retry_after="garbage"), 0.0, id="garbage"),
        pytest.param(Fault("status", status=429, retry_after="-5"), 0.0, id="negative"),
        pytest.param(
            Fault("status", status=429, retry_after="0.2", code="QUEUE_FULL"),
            0.2,
            id="queue-full",
        ),
        pytest.param(Fault("status", status=503, retry_after="0.2"), 0.2, id="503"),
    ],
)
async def test_retry_after_in_every_form(
    emulator: Emulator, server: EmulatorServer, fault: Fault, low: float
) -> None:
    """The retry waits what Retry-After says (seconds, ms, date), capped; junk means backoff."""
    run_id = emulator.create_run(durations=[0.0])
    arrivals: list[float] = []
    emulator.faults.on_request = lambda route, request, chosen: arrivals.append(
        anyio.current_time()
    )
    emulator.faults.add(dataclasses.replace(fault, times=1))
    retry = fast_retry(max_retry_after=_CAP)
    async with Client(KEY, base_url=server.base_url, retry=retry) as client:
        with anyio.fail_after(5):
            run = await client.get_run(run_id)
    assert run.id == run_id
    assert len(arrivals) == 2
    gap = arrivals[1] - arrivals[0]
    report(
        "retry-after",
        status=fault.status,
        retry_after=fault.retry_after,
        retry_after_ms=fault.retry_after_ms,
        gap=gap,
        expected=f"[{low}, {low + retry.max_delay}]",
    )
    # Exactly the header's wait (capped at max_retry_after), or the backoff's draw when it is
    # junk or past: virtual time adds nothing to it.
    assert low <= gap <= low + retry.max_delay, gap


@pytest.mark.virtual_time  # the windows are exact: load cannot stretch them
async def test_rate_limit_pauses_the_whole_watch(
    emulator: Emulator, server: EmulatorServer
) -> None:
    """One 429 with Retry-After: 0.3 pauses every request of the watch, not just that run's."""
    ids = [emulator.create_run(n_tasks=1, durations=[1_000.0], event_bytes=0) for _ in range(20)]
    arrivals: list[tuple[float, bool]] = []
    faults = emulator.faults
    faults.on_request = lambda route, request, fault: arrivals.append(
        (anyio.current_time(), fault is not None)
    )
    retry = fast_retry(max_retry_after=1.0)
    policy = fast_poll(max_delay=0.01, max_in_flight=8, max_failed_polls=100, strategy="per-run")
    async with Client(KEY, base_url=server.base_url, retry=retry) as client:
        async with client.watch(ids, policy=policy):
            await anyio.sleep(0.15)
            faults.add(Fault("status", status=429, retry_after="0.3", times=1))
            await anyio.sleep(0.7)
    [limited_at] = [at for at, faulted in arrivals if faulted]

    def between(start: float, end: float) -> int:
        return sum(1 for at, _ in arrivals if limited_at + start < at < limited_at + end)

    before, during, after = between(-0.1, 0), between(0.03, 0.28), between(0.35, 0.55)
    report("429-pause", before_100ms=before, paused_250ms=during, after_200ms=after)
    assert before >= 10  # the watch was busy
    assert during == 0  # only requests already on the wire may land just after the 429
    assert after >= 10  # and it resumed


_ABSURD_429S = [
    pytest.param(Fault("status", status=429, retry_after="86400"), id="a-day"),
    pytest.param(Fault("status", status=429, retry_after_ms="86400000"), id="a-day-in-ms"),
    pytest.param(
        Fault("status", status=429, retry_after="Fri, 31 Dec 2100 23:59:59 GMT"), id="2100"
    ),
]


@pytest.mark.parametrize(
    ("fault", "max_pause"),
    [
        *(pytest.param(p.values[0], math.inf, id=f"{p.id}-no-max-pause") for p in _ABSURD_429S),
        pytest.param(Fault("status", status=503, retry_after="1e9"), 600.0, id="503-1e9"),
    ],
)
async def test_absurd_retry_after_is_capped(
    emulator: Emulator, server: EmulatorServer, fault: Fault, max_pause: float
) -> None:
    """An absurd ``Retry-After`` in any spelling waits ``max_retry_after``, never a day."""
    run_id = emulator.create_run(durations=[0.0])
    emulator.faults.add(dataclasses.replace(fault, times=1))
    retry = fast_retry(max_retry_after=0.1)
    started = time.monotonic()
    rate = RateController(max_pause=max_pause)
    async with Client(KEY, base_url=server.base_url, retry=retry, rate_controller=rate) as client:
        # The deadline only tells "capped" from "a day" (or a year); it is not a timing.
        with anyio.fail_after(30):
            run = await client.get_run(run_id)
        assert client.retries == 1
    assert run.id == run_id
    # The header was honoured up to the cap: the retry waited at least max_retry_after.
    assert time.monotonic() - started >= 0.1


@pytest.mark.parametrize("fault", _ABSURD_429S)
async def test_retry_after_over_max_pause_fails_calls_without_sending(
    emulator: Emulator, server: EmulatorServer, fault: Fault
) -> None:
    """A Retry-After over ``max_pause`` fails that call and the next at once, sending nothing."""
    run_id = emulator.create_run(durations=[0.0])
    emulator.faults.add(dataclasses.replace(fault, times=1))
    async with Client(KEY, base_url=server.base_url, retry=fast_retry()) as client:
        with anyio.fail_after(3):
            with pytest.raises(RateLimitError) as first:
                await client.get_run(run_id)
            sent = emulator.faults.requests
            with pytest.raises(RateLimitError) as second:
                await client.get_run(run_id)
    assert emulator.faults.requests == sent == 1
    assert first.value.retry_after is not None and first.value.retry_after > 600
    assert second.value.retry_after is not None and second.value.retry_after > 600
    assert client.rate_controller.throttles["RATE_LIMITED"] == 1


# -- bodies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "times", "seconds", "error"),
    [
        pytest.param(Fault("truncate"), 1, 5.0, APIConnectionError, id="truncated"),
        pytest.param(Fault("reset"), 2, 5.0, APIConnectionError, id="reset"),
        pytest.param(
            Fault("trickle", delay=0.05, chunk_size=16), 1, 0.2, APITimeoutError, id="trickle"
        ),
        pytest.param(Fault("stall", delay=5.0), 1, 0.1, APITimeoutError, id="stalled"),
        pytest.param(Fault("html", status=502), 1, 5.0, ServerError, id="proxy-html"),
        pytest.param(Fault("status", status=504), 1, 5.0, ServerError, id="json-504"),
    ],
)
async def test_broken_answers_are_retried_never_half_decoded(
    emulator: Emulator,
    server: EmulatorServer,
    fault: Fault,
    times: int,
    seconds: float,
    error: type[PredevError],
) -> None:
    """A broken answer is retried into the real run; if it persists, it is the right error."""
    run_id = emulator.create_run(durations=[0.0, 0.0], event_bytes=1_000)
    async with Client(KEY, base_url=server.base_url, retry=fast_retry(), timeout=seconds) as api:
        clean = await api.get_run(run_id)
        emulator.faults.add(dataclasses.replace(fault, times=times))
        with anyio.fail_after(10):
            again = await api.get_run(run_id)
        assert again == clean
        assert api.retries >= 1
        emulator.faults.add(fault)
        with anyio.fail_after(10), pytest.raises(PredevError) as info:
            await api.get_run(run_id)
    assert isinstance(info.value, error), repr(info.value)
    assert not isinstance(info.value, ResponseDecodeError)
    assert info.value.__cause__ is not None or isinstance(info.value, APIStatusError)


async def test_trickling_body_arrives_whole(emulator: Emulator, server: EmulatorServer) -> None:
    """A body that trickles in 7-byte chunks decodes to exactly the run sent at once."""
    run_id = emulator.create_run(durations=[0.0, 0.0, 0.0], event_bytes=2_000)
    async with Client(KEY, base_url=server.base_url, retry=fast_retry(max_retries=0)) as api:
        clean = await api.get_run(run_id, include_events=True)
        emulator.faults.add(Fault("trickle", delay=0.0005, chunk_size=7))
        slow = await api.get_run(run_id, include_events=True)
    assert slow == clean
    assert emulator.faults.injected["trickle"] == 1


async def test_truncated_list_page_without_retries_is_a_connection_error(
    emulator: Emulator, server: EmulatorServer
) -> None:
    """Half a list page is an APIConnectionError from aiohttp's payload error, never a page."""
    emulator.create_run(durations=[0.0])
    emulator.faults.add(Fault("truncate", route="list"))
    async with Client(KEY, base_url=server.base_url, retry=fast_retry(max_retries=0)) as api:
        with pytest.raises(APIConnectionError, match="cut short") as info:
            await api.list_runs(limit=5)
    assert isinstance(info.value.__cause__, aiohttp.ClientPayloadError)
    assert emulator.faults.injected["truncate"] == 1


async def test_stalled_answer_times_out_and_is_retried(
    emulator: Emulator, server: EmulatorServer
) -> None:
    """An answer stalled past the timeout is abandoned after ``timeout`` and retried."""
    run_id = emulator.create_run(durations=[0.0])
    emulator.faults.add(Fault("stall", delay=30.0, times=1))
    started = time.monotonic()
    async with Client(KEY, base_url=server.base_url, retry=fast_retry(), timeout=0.15) as api:
        # Well short of the 30 s stall: the deadline tells "abandoned" from "waited it out".
        with anyio.fail_after(15):
            run = await api.get_run(run_id)
        assert api.retries == 1
    assert run.id == run_id
    # The first attempt was given its whole timeout before it was abandoned.
    assert time.monotonic() - started >= 0.15


@pytest.mark.parametrize("call", [pytest.param("get"), pytest.param("list")])
async def test_non_json_200_is_a_decode_error_and_not_retried(
    emulator: Emulator, server: EmulatorServer, call: str
) -> None:
    """A 200 that is not JSON raises ResponseDecodeError after one request: no partial model."""
    run_id = emulator.create_run(durations=[0.0])
    emulator.faults.add(Fault("not_json"))
    async with Client(KEY, base_url=server.base_url, retry=fast_retry()) as api:
        request = api.get_run(run_id) if call == "get" else api.list_runs(limit=5)
        with pytest.raises(ResponseDecodeError) as info:
            await request
    assert emulator.faults.requests == 1
    assert "not JSON" in info.value.body


OVERSIZED = 200 * 1024 * 1024
LIMIT = 1024 * 1024


@pytest.mark.parametrize(
    "declared", [pytest.param(True, id="content-length"), pytest.param(False, id="chunked")]
)
async def test_oversized_body_is_refused_without_being_read(declared: bool) -> None:
    """A 200 MB body against a 1 MB cap: refused; the server sent a sliver; memory stays small."""
    sent = 0
    finished = anyio.Event()
    block = b"a" * (64 * 1024)

    async def huge(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if declared:
            response.content_length = OVERSIZED
        try:
            await response.prepare(request)
            await response.write(b'{"id": "')
            while sent < OVERSIZED:
                await response.write(block)
                sent += len(block)
        except ConnectionError:
            pass  # the client hung up, as it should
        finally:
            finished.set()
        return response

    async with serve_handler(huge) as base_url:
        tracemalloc.start()
        try:
            async with Client(
                KEY, base_url=base_url, retry=fast_retry(max_retries=0), max_response_bytes=LIMIT
            ) as api:
                with anyio.fail_after(10), pytest.raises(ResponseDecodeError) as info:
                    await api.get_run(MISSING_ID)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        with anyio.fail_after(5):
            await finished.wait()
    report("oversized", declared=declared, server_sent_mb=sent / 2**20, client_peak_mb=peak / 2**20)
    assert "max_response_bytes" in str(info.value)
    assert sent < OVERSIZED // 20  # under 10 MB of 200 MB left the server
    assert peak < 8 * LIMIT


# -- the retry budget --------------------------------------------------------------------------


@pytest.mark.virtual_time  # the rates compared are exact: load cannot skew them
async def test_spent_retry_budget_stops_retries_and_keeps_the_poll_cadence(
    emulator: Emulator, server: EmulatorServer, clock: ManualClock
) -> None:
    """With the budget spent, each poll is one request at the usual pace; no run is lost."""
    ids = [emulator.create_run(n_tasks=1, durations=[1_000.0], event_bytes=0) for _ in range(20)]
    # Half the runs fail every time: the other half keeps answering, so it is not an outage
    # (every request failing is one, and the watch probes instead: tests/test_outage.py), but
    # the budget stays spent. A retry costs all forty tokens and an answer gives one back: one
    # retry per eighty polls is all the answers pay for.
    broken = set(ids[::2])

    def fail_half(route: str, request: web.Request) -> None:
        if request.path.rsplit("/", 1)[-1] in broken:
            raise web.HTTPServiceUnavailable(text="this half is down")

    retry = fast_retry(budget=40, retry_cost=40)
    policy = fast_poll(max_in_flight=8, max_failed_polls=1_000_000, strategy="per-run")
    updates: list[RunUpdate] = []
    async with Client(KEY, base_url=server.base_url, retry=retry) as client:
        budget = client._transport.budget
        assert budget is not None
        with anyio.fail_after(30):
            async with client.watch(ids, policy=policy) as watcher:
                async with anyio.create_task_group() as task_group:

                    async def consume() -> None:
                        updates.extend([update async for update in watcher])

                    task_group.start_soon(consume)
                    await anyio.sleep(0.2)
                    healthy = await rate_over(lambda: watcher.polls, 0.4)
                    emulator.before_request = fail_half
                    while budget.refused == 0:
                        await anyio.sleep(0.005)
                    await anyio.sleep(0.02)
                    sent, polled = client.requests_sent, watcher.polls
                    spent = await rate_over(lambda: watcher.polls, 0.4)
                    per_poll = (client.requests_sent - sent) / (watcher.polls - polled)
                    tokens = budget.tokens
                    emulator.before_request = None
                    clock.advance(2_000.0)
        refused = budget.refused
    report(
        "budget",
        healthy_polls_per_s=healthy,
        spent_polls_per_s=spent,
        requests_per_poll_spent=per_poll,
        refused=refused,
        tokens_left=tokens,
    )
    assert refused > 0
    assert per_poll <= 1.05  # no retries but the odd one the answers paid for
    assert 0.5 * healthy <= spent <= 1.5 * healthy  # the normal cadence, neither storm nor stall
    assert_each_delivered_once_with_its_run(updates, ids)


# -- clean shutdown ----------------------------------------------------------------------------


def _is_server_task(task: asyncio.Task[object]) -> bool:
    coro = task.get_coro()
    return getattr(coro, "__qualname__", "").startswith("RequestHandler.")


async def test_clean_shutdown_after_random_cancellations(
    emulator: Emulator, clock: ManualClock
) -> None:
    """After 1,000+ requests cut by random deadlines: 0 open connections, tasks or warnings."""
    baseline = set(asyncio.all_tasks())
    rng = random.Random(31)
    ids = [
        emulator.create_run(durations=[rng.uniform(0, 40) for _ in range(3)], event_bytes=3_000)
        for _ in range(150)
    ]
    faults = emulator.faults
    faults.add(Fault("status", status=503, rate=0.05))
    faults.add(Fault("reset", rate=0.02))
    faults.add(Fault("trickle", delay=0.002, chunk_size=256, rate=0.05))
    faults.add(Fault("stall", delay=0.05, rate=0.02))

    in_flight = 0

    async def started(*_: object) -> None:
        nonlocal in_flight
        in_flight += 1

    async def ended(*_: object) -> None:
        nonlocal in_flight
        in_flight -= 1

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(started)
    trace.on_request_end.append(ended)
    trace.on_request_exception.append(ended)
    runner = web.AppRunner(emulator.app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    cancelled = errors = done = 0
    try:
        session = aiohttp.ClientSession(trace_configs=[trace])
        async with session:
            async with Client(
                KEY,
                base_url=f"http://{host}:{port}",
                session=session,
                retry=fast_retry(),
                timeout=0.5,
                poll_policy=fast_poll(),
            ) as client:
                async with ticking(clock, step=1.0, every=0.005):
                    while client.requests_sent < 1_000:
                        op = rng.choice(("watch", "iter", "get", "list"))
                        with anyio.move_on_after(rng.uniform(0.0, 0.04)) as scope:
                            try:
                                if op == "watch":
                                    async with client.watch(rng.sample(ids, 10)) as watcher:
                                        async for _ in watcher:
                                            pass
                                elif op == "iter":
                                    async for _ in client.iter_runs(page_size=rng.randint(2, 30)):
                                        pass
                                elif op == "get":
                                    await client.get_run(
                                        rng.choice(ids), include_events=rng.random() < 0.3
                                    )
                                else:
                                    await client.list_runs(limit=rng.randint(1, 100))
                                done += 1
                            except PredevError:
                                errors += 1
                        cancelled += scope.cancelled_caught
                requests_sent = client.requests_sent
            connector = session.connector
            assert connector is not None
            acquired = len(connector._acquired)
        assert session.closed and connector.closed
        open_server_side = len(runner.server.connections) if runner.server else -1
        with anyio.fail_after(2):
            while runner.server is not None and runner.server.connections:
                await anyio.sleep(0.01)
        with anyio.fail_after(2):
            while leftover := [
                task
                for task in asyncio.all_tasks()
                if task not in baseline
                and task is not asyncio.current_task()
                and not _is_server_task(task)
            ]:
                await anyio.sleep(0.01)
    finally:
        await runner.cleanup()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    resource_warnings = [w for w in caught if issubclass(w.category, ResourceWarning)]
    report(
        "shutdown",
        requests=requests_sent,
        cancelled=cancelled,
        completed=done,
        errors=errors,
        in_flight=in_flight,
        acquired=acquired,
        server_open_at_close=open_server_side,
        leftover_tasks=len(leftover),
        resource_warnings=len(resource_warnings),
    )
    assert requests_sent >= 1_000
    assert cancelled >= 20  # the deadlines really cut things short
    assert in_flight == 0
    assert acquired == 0
    assert leftover == []
    assert resource_warnings == []


# -- slow consumer -----------------------------------------------------------------------------


async def test_slow_consumer_keeps_memory_and_queue_bounded(
    emulator: Emulator, server: EmulatorServer, clock: ManualClock
) -> None:
    """A slow consumer: at most buffer_size + max_in_flight updates wait; none is dropped."""
    ids = [
        emulator.create_run(n_tasks=2, durations=[1.0, 2.0], event_bytes=20_000) for _ in range(300)
    ]
    clock.advance(5.0)
    fetched = 0

    def count_final_fetches(route: str, request: web.Request) -> None:
        nonlocal fetched
        fetched += request.query.get("includeEvents") == "true"

    emulator.before_request = count_final_fetches
    buffer_size, max_in_flight = 8, 4
    policy = fast_poll(buffer_size=buffer_size, max_in_flight=max_in_flight, max_delay=0.01)
    delivered: Counter[str] = Counter()
    failed = peak_queued = peak_ahead = peak_memory = 0
    # Only what the client holds: the emulator's own caches grow with every run it serves.
    client_side = [tracemalloc.Filter(False, "*/asyncclient/testing/*")]
    tracemalloc.start()
    try:
        async with Client(KEY, base_url=server.base_url, retry=fast_retry()) as client:
            async with client.watch(ids, include_events=True, policy=policy) as watcher:
                base_memory = 0
                async for update in watcher:
                    delivered[update.run_id] += 1
                    failed += not update.ok
                    assert watcher._receive is not None
                    stats = watcher._receive.statistics()
                    queued = stats.current_buffer_used + stats.tasks_waiting_send
                    peak_queued = max(peak_queued, queued)
                    peak_ahead = max(peak_ahead, fetched - delivered.total())
                    if delivered.total() % 20 == 1:
                        snapshot = tracemalloc.take_snapshot().filter_traces(client_side)
                        held = sum(stat.size for stat in snapshot.statistics("filename"))
                        base_memory = base_memory or held
                        peak_memory = max(peak_memory, held - base_memory)
                    del update  # a consumer that keeps nothing
                    await anyio.sleep(0.002)
    finally:
        tracemalloc.stop()
    report(
        "slow-consumer",
        bound=buffer_size + max_in_flight,
        peak_queued=peak_queued,
        peak_fetched_not_consumed=peak_ahead,
        peak_memory_growth_kb=peak_memory / 1024,
        all_updates_held_kb=300 * 20_000 / 1024,
        delivered=delivered.total(),
    )
    assert delivered == Counter(ids)
    assert failed == 0
    assert peak_queued <= buffer_size + max_in_flight
    assert peak_ahead <= buffer_size + max_in_flight
    assert peak_memory < 2 * 1024 * 1024  # 300 runs of 20 KB held at once would be 6 MB


# -- secret hygiene ----------------------------------------------------------------------------


def assert_no_secret(text: str) -> None:
    """None of the keys, nor a recognisable part of one, is in ``text``."""
    for secret in SECRETS:
        assert secret not in text


ERROR_PATHS = [
    pytest.param("status-503", ServerError, id="503"),
    pytest.param("status-429", RateLimitError, id="429"),
    pytest.param("status-402", PaymentRequiredError, id="402"),
    pytest.param("reset", APIConnectionError, id="reset"),
    pytest.param("truncate", APIConnectionError, id="truncate"),
    pytest.param("trickle", APITimeoutError, id="trickle"),
    pytest.param("stall", APITimeoutError, id="stall"),
    pytest.param("not_json", ResponseDecodeError, id="not-json"),
    pytest.param("html", ServerError, id="html"),
    pytest.param("400", BadRequestError, id="400"),
    pytest.param("401", AuthenticationError, id="401"),
    pytest.param("404", NotFoundError, id="404"),
    pytest.param("refused", APIConnectionError, id="connection-refused"),
    pytest.param("list-503", ServerError, id="list-503"),
    pytest.param("wait", WatchTimeoutError, id="wait-timeout"),
]


async def provoke(case: str, emulator: Emulator, server: EmulatorServer) -> PredevError:
    """Make the client fail along one error path and return the error it raised."""
    run_id = emulator.create_run(durations=[0.0], event_bytes=2_000)
    faults = emulator.faults
    key, base_url, timeout = KEY, server.base_url, 5.0
    kind, _, status = case.partition("-")
    if kind == "status":
        faults.add(Fault("status", status=int(status), retry_after="0", code="SOME_CODE"))
    elif kind == "list":
        faults.add(Fault("status", status=503, route="list"))
    elif kind == "trickle":
        faults.add(Fault("trickle", delay=0.05, chunk_size=8))
        timeout = 0.1
    elif kind == "stall":
        faults.add(Fault("stall", delay=5.0))
        timeout = 0.1
    elif kind in ("reset", "truncate", "not_json", "html"):
        faults.add(Fault(kind))  # type: ignore[arg-type]
    elif kind == "400":
        base_url += "/browser-agent"  # the list path becomes a malformed run id
    elif kind == "401":
        key = WRONG_KEY
    elif kind == "404":
        run_id = MISSING_ID
    elif kind == "refused":
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base_url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    async with Client(key, base_url=base_url, retry=fast_retry(), timeout=timeout) as api:
        assert_no_secret(repr(api))
        try:
            if kind in ("list", "400"):
                await api.list_runs(limit=5)
            elif kind == "wait":
                await api.wait(emulator.create_run(durations=[1_000.0]), timeout=0.05)
            else:
                await api.get_run(run_id)
        except PredevError as error:
            return error
    raise AssertionError(f"{case}: no error")


@pytest.mark.parametrize(("case", "expected"), ERROR_PATHS)
async def test_no_error_path_leaks_the_key(
    emulator: Emulator,
    server: EmulatorServer,
    caplog: pytest.LogCaptureFixture,
    case: str,
    expected: type[PredevError],
) -> None:
    """The key is in no repr, str, traceback, pickle or DEBUG log line, whatever went wrong."""
    caplog.set_level(logging.DEBUG)
    error = await provoke(case, emulator, server)
    assert isinstance(error, expected)
    assert_no_secret("".join(traceback.format_exception(error)))
    seen: BaseException | None = error
    while seen is not None:
        assert_no_secret(str(seen))
        assert_no_secret(repr(seen))
        assert_no_secret(repr(vars(seen)))
        assert_no_secret(pickle.dumps(seen).decode("latin-1"))
        seen = seen.__cause__ or seen.__context__
    for record in caplog.records:
        assert_no_secret(record.getMessage())
        assert_no_secret(repr(record.args))
        assert_no_secret(record.exc_text or "")
    assert_no_secret(caplog.text)


async def test_errors_survive_a_pickle_round_trip(
    emulator: Emulator, server: EmulatorServer
) -> None:
    """Every error type can cross a process boundary: unpickled, same type, same text."""
    broken: list[str] = []
    for param in ERROR_PATHS:
        case = str(param.values[0])
        emulator.faults.clear()
        emulator.before_request = None
        error = await provoke(case, emulator, server)
        try:
            copy = pickle.loads(pickle.dumps(error))
        except Exception as exc:
            broken.append(f"{case}: {type(error).__name__}: {type(exc).__name__}: {exc}")
            continue
        if type(copy) is not type(error) or str(copy) != str(error) or vars(copy) != vars(error):
            broken.append(f"{case}: {type(error).__name__}: changed by the round trip")
    assert broken == []


# -- transport ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "base_url",
    [
        pytest.param("http://api.pre.dev", id="plain-http"),
        pytest.param("http://10.0.0.8:8080", id="plain-http-private-ip"),
        pytest.param("http://localhost.evil.com", id="localhost-prefix"),
        pytest.param("http://127.0.0.1.evil.com:8080", id="loopback-prefix"),
        pytest.param("http://localhost@evil.com", id="userinfo-localhost"),
        pytest.param(f"https://{KEY}@api.pre.dev", id="key-as-user"),
        pytest.param("https://user:pw@api.pre.dev", id="user-and-password"),
        pytest.param("http://user:pw@127.0.0.1:8080", id="userinfo-loopback"),
        pytest.param("ftp://api.pre.dev", id="ftp"),
        pytest.param("https://api.pre.dev/?next=http://evil.com", id="query"),
        pytest.param("https://api.pre.dev/#frag", id="fragment"),
        pytest.param("//api.pre.dev", id="scheme-relative"),
    ],
)
async def test_unsafe_base_urls_are_refused_before_any_request(base_url: str) -> None:
    """A base URL that could carry the key in clear or to someone else is refused at once."""
    with pytest.raises(ValueError, match="base_url") as info:
        Client(KEY, base_url=base_url)
    assert_no_secret(str(info.value))


async def test_unsafe_base_url_from_the_environment_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``PREDEV_BASE_URL`` goes through the same check as the argument."""
    monkeypatch.setenv("PREDEV_BASE_URL", "http://localhost.evil.com")
    with pytest.raises(ValueError, match="base_url"):
        Client(KEY)


REDIRECTS: dict[int, type[web.HTTPMove]] = {
    301: web.HTTPMovedPermanently,
    302: web.HTTPFound,
    303: web.HTTPSeeOther,
    307: web.HTTPTemporaryRedirect,
    308: web.HTTPPermanentRedirect,
}


@pytest.mark.parametrize("status", sorted(REDIRECTS))
async def test_redirect_to_another_origin_gets_no_request(
    emulator: Emulator, server: EmulatorServer, status: int
) -> None:
    """A redirect to another origin is never followed: that origin sees 0 requests."""
    stolen: list[str | None] = []

    async def thief(request: web.Request) -> web.Response:
        stolen.append(request.headers.get("Authorization"))
        return web.json_response({"batches": [], "total": 0, "hasMore": False})

    async with serve_handler(thief) as elsewhere:

        def redirect(route: str, request: web.Request) -> None:
            raise REDIRECTS[status](f"{elsewhere}{request.path_qs}")

        emulator.before_request = redirect
        async with Client(KEY, base_url=server.base_url, retry=fast_retry()) as api:
            with pytest.raises(APIStatusError) as info:
                await api.list_runs(limit=5)
    assert info.value.status == status
    assert stolen == []
    assert_no_secret(str(info.value))
