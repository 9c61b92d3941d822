"""Pacing under a rate limit: the CUBIC rule against AWS's published vectors, the token bucket and
its queue on a virtual clock, the QUEUE_FULL window, and whole watches against a rate-limited
emulator on loopback.

The vectors are copied from AWS's SDKs (aws-sdk-go-v2 ``aws/retry/adaptive_ratelimit_test.go``,
shared with the Java and Rust SDKs, and botocore ``tests/unit/retries/test_throttling.py`` /
``test_adaptive.py``), as gathered in the design notes of issue 15.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import anyio
import anyio.lowlevel
import pytest
from conftest import FAST_POLL, FAST_RETRY

from asyncclient import Client, PollPolicy, RateController, RateLimitError
from asyncclient._rate_estimates import BETA, BUCKET_SECONDS, SCALE, SMOOTHING, AnswerMeter, Cubic
from asyncclient._ratelimit import (
    BURST_SECONDS,
    DEFAULT_MAX_PAUSE,
    ESTIMATE_MARGIN,
    HOLD_PAUSES,
    MAX_HOLD_DOUBLINGS,
    MAX_RATE_SCALE,
    MIN_RATE,
    PROBE_SPAN,
    TRUST_SECONDS,
)
from asyncclient.testing import Emulator, EmulatorServer, RateLimits, serve
from asyncclient.testing.__main__ import _parser as emulator_parser

pytestmark = pytest.mark.anyio


class VirtualClock:
    """A clock that only moves when the controller sleeps: no real waiting at all."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self.sleeps = 0
        self.sleeping = 0
        self.most_sleeping = 0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.sleeping += 1
        self.most_sleeping = max(self.most_sleeping, self.sleeping)
        try:
            self.now += seconds
            await anyio.lowlevel.checkpoint()
        finally:
            self.sleeping -= 1


def _controller(clock: VirtualClock, **options: object) -> RateController:
    return RateController(clock=clock, sleep=clock.sleep, **options)  # type: ignore[arg-type]


def _throttle(
    code: str | None = "RATE_LIMITED", retry_after: float | None = None
) -> RateLimitError:
    return RateLimitError(
        status=429, method="GET", path="/x", message="slow down", code=code, retry_after=retry_after
    )


def _rate(controller: RateController) -> float | None:
    return controller.rate  # read through a call: it changes under mypy's narrowing


def _window(controller: RateController) -> int | None:
    return controller.submit_window


# -- the published vectors ----------------------------------------------------------------------


def test_cubic_time_window_matches_botocore() -> None:
    """K for W_max 10 is 1.9574338205844317; the rate is below W_max before K and at it at K."""
    cubic = Cubic(start=0.0)
    assert cubic.throttled(10.0, 0.0) == pytest.approx(7.0, abs=1e-12)
    assert cubic.k == pytest.approx(1.9574338205844317, abs=1e-12)
    assert cubic.success(cubic.k) == pytest.approx(10.0, abs=1e-12)
    assert cubic.success(cubic.k / 2) < 10.0 < cubic.success(cubic.k + 0.1)


def test_cubic_error_at_8_tps_matches_botocore() -> None:
    """A throttle at 8 tps gives 5.6, W_max 8, K 1.8171205928321397, last failure at t=1."""
    cubic = Cubic(start=0.0)
    assert cubic.throttled(8.0, 1.0) == pytest.approx(5.6, abs=1e-12)
    assert (cubic.w_max, cubic.last_fail) == (8.0, 1.0)
    assert cubic.k == pytest.approx(1.8171205928321397, abs=1e-12)


@pytest.mark.parametrize(
    ("t", "expected", "tolerance"),
    [
        pytest.param(5.0, 7.0, 1e-12, id="t5"),
        pytest.param(6.0, 9.64893600966, 1e-9, id="t6"),
        pytest.param(7.0, 10.000030849917364, 1e-12, id="t7"),
        pytest.param(8.0, 10.453284520772092, 1e-12, id="t8"),
        pytest.param(9.0, 13.408697022224185, 1e-12, id="t9"),
        pytest.param(10.0, 21.266, 1e-3, id="t10"),
        pytest.param(11.0, 36.426, 1e-3, id="t11"),
    ],
)
def test_cubic_success_vector_of_the_aws_sdks(t: float, expected: float, tolerance: float) -> None:
    """Go/Java/Rust "all success": last max rate 10, last throttle at t=5, rate at time t."""
    cubic = Cubic(start=0.0)
    cubic.throttled(10.0, 5.0)
    assert cubic.success(t) == pytest.approx(expected, abs=tolerance)


# (t, throttled, measured rate, fill rate) from aws-sdk-go-v2 TestAdaptiveRateLimit (the rows at
# 1.2-2.0 s and 3.2 s are also quoted in the design notes).
_UPDATE_VECTOR = [
    (0.2, False, 0.0, 0.5),
    (0.4, False, 0.0, 0.5),
    (0.6, False, 4.8, 0.5),
    (0.8, False, 4.8, 0.5),
    (1.0, False, 4.16, 0.5),
    (1.2, False, 4.16, 0.6912),
    (1.4, False, 4.16, 1.0976),
    (1.6, False, 5.632, 1.6384),
    (1.8, False, 5.632, 2.3328),
    (2.0, True, 4.3264, 3.02848),
    (2.2, False, 4.3264, 3.486639),
    (2.4, False, 4.3264, 3.821874),
    (2.6, False, 5.66528, 4.053386),
    (2.8, False, 5.66528, 4.200373),
    (3.0, False, 4.333056, 4.282037),
    (3.2, True, 4.333056, 2.99742559084406),
    (3.4, False, 4.333056, 3.452226),
]


def test_update_vector_of_the_aws_sdks() -> None:
    """The meter (0.5 s buckets, EWMA 0.8) and CUBIC together reproduce AWS's Update() table."""
    meter = AnswerMeter(0.0)
    cubic = Cubic(start=0.0)
    fill = MIN_RATE
    enabled = False
    for t, throttled, measured, expected_fill in _UPDATE_VECTOR:
        rate = meter.record(t)
        if throttled:
            new = cubic.throttled(min(rate, fill) if enabled else rate, t)
            enabled = True
        else:
            new = cubic.success(t)
        fill = max(MIN_RATE, min(new, MAX_RATE_SCALE * rate))
        assert rate == pytest.approx(measured, abs=1e-6), t
        assert fill == pytest.approx(expected_fill, abs=1e-6), t


def test_meter_counts_answers_in_half_second_buckets() -> None:
    """1 answer/s for 20 s measures 1.0; answers within a bucket count only when it closes."""
    meter = AnswerMeter(0.0)
    for second in range(1, 21):
        rate = meter.record(float(second))
    assert rate == pytest.approx(1.0, abs=1e-3)
    meter = AnswerMeter(0.0)
    assert [meter.record(t) for t in (0.1, 0.2, 0.3, 0.4, 0.45)] == [0.0] * 5
    assert meter.record(0.5) == pytest.approx(12 * SMOOTHING)


def test_production_defaults_without_sleeping() -> None:
    """The constants are AWS's; a default controller paces nothing and waits for no one."""
    assert (BETA, SCALE, MIN_RATE, MAX_RATE_SCALE, BUCKET_SECONDS, SMOOTHING) == (
        0.7,
        0.4,
        0.5,
        2.0,
        0.5,
        0.8,
    )
    assert DEFAULT_MAX_PAUSE == 600.0
    # Where the rule departs from AWS (a measured throttle plateaus and holds): its constants.
    assert (TRUST_SECONDS, ESTIMATE_MARGIN, HOLD_PAUSES, PROBE_SPAN, MAX_HOLD_DOUBLINGS) == (
        0.5,
        0.95,
        5.0,
        1.1,
        3,
    )
    controller = RateController()
    assert controller.rate is None
    assert controller.max_requests_per_second is None
    assert controller.submit_window is None
    assert not controller.adaptive_pacing
    assert all(controller.try_acquire() for _ in range(10_000))
    assert (controller.waits, controller.waited, controller.cuts) == (0, 0.0, 0)


@pytest.mark.parametrize(
    ("options", "name"),
    [
        pytest.param({"max_requests_per_second": 0}, "max_requests_per_second", id="zero"),
        pytest.param({"max_requests_per_second": -1.0}, "max_requests_per_second", id="negative"),
        pytest.param({"max_requests_per_second": math.nan}, "max_requests_per_second", id="nan"),
        pytest.param({"max_requests_per_second": "10"}, "max_requests_per_second", id="str"),
        pytest.param({"max_pause": -1.0}, "max_pause", id="max-pause"),
        pytest.param({"adaptive": 1}, "adaptive", id="adaptive-int"),
    ],
)
def test_bad_options_are_refused_by_name(options: dict[str, object], name: str) -> None:
    """A bad option is a ValueError that names it."""
    with pytest.raises(ValueError, match=name):
        RateController(**options)  # type: ignore[arg-type]


def test_client_refuses_a_ceiling_and_a_controller_together() -> None:
    """``max_requests_per_second`` and ``rate_controller`` exclude each other."""
    with pytest.raises(ValueError, match="not both"):
        Client("k", max_requests_per_second=5, rate_controller=RateController())
    with pytest.raises(ValueError, match="rate_controller"):
        Client("k", rate_controller=object())  # type: ignore[arg-type]


# -- the controller on a virtual clock ------------------------------------------------------------


async def test_fixed_ceiling_paces_on_one_timer() -> None:
    """At a 10/s ceiling 101 attempts take 10 s (one token to start), with one sleeper at a time."""
    clock = VirtualClock()
    controller = _controller(clock, max_requests_per_second=10)
    started = clock.now
    order: list[int] = []

    async def attempt(n: int) -> None:
        if not controller.try_acquire():
            await controller.acquire()
        order.append(n)

    async with anyio.create_task_group() as group:
        for n in range(101):
            group.start_soon(attempt, n)
    assert clock.now - started == pytest.approx(10.0, abs=1e-6)
    assert order == list(range(101))  # FIFO
    assert clock.most_sleeping == 1
    assert controller.waits == 100


async def test_ten_thousand_waiters_wake_one_per_token() -> None:
    """10,000 queued attempts cost one sleep per token, never a stampede."""
    clock = VirtualClock()
    controller = _controller(clock, max_requests_per_second=1_000)
    served = 0

    async def attempt() -> None:
        nonlocal served
        if not controller.try_acquire():
            await controller.acquire()
        served += 1

    async with anyio.create_task_group() as group:
        for _ in range(10_000):
            group.start_soon(attempt)
    assert served == 10_000
    assert clock.most_sleeping == 1
    assert clock.sleeps <= 10_000  # a token (or a burst's worth) per sleep
    burst = 1_000 * BURST_SECONDS  # the bucket starts full
    assert clock.now - 1_000.0 == pytest.approx((10_000 - burst) / 1_000, abs=1e-6)


async def test_cancelled_waiters_lose_no_token_and_block_nobody() -> None:
    """Cancelling the head and a waiter behind it lets the rest through on the same schedule."""
    clock = VirtualClock()
    controller = _controller(clock, max_requests_per_second=2)
    assert controller.try_acquire()  # the one token of the bucket
    served: list[int] = []
    scopes: dict[int, anyio.CancelScope] = {}

    async def attempt(n: int) -> None:
        with anyio.CancelScope() as scope:
            scopes[n] = scope
            await controller.acquire()
            served.append(n)

    async with anyio.create_task_group() as group:
        for n in range(5):
            group.start_soon(attempt, n)
        await anyio.lowlevel.checkpoint()
        scopes[0].cancel()  # the head, asleep for its token
        scopes[2].cancel()  # one in the middle of the queue
    assert served == [1, 3, 4]
    # Three tokens at 2/s, from the moment the bucket was empty.
    assert clock.now - 1_000.0 == pytest.approx(1.5, abs=0.5 + 1e-6)
    assert controller._queue.live == 0
    assert not controller._queue.waiters


async def test_first_rate_limited_starts_pacing_and_one_cut_per_bucket() -> None:
    """Nothing is paced before a 429; thirty 429s of one moment cut the rate once, not thirty."""
    clock = VirtualClock()
    controller = _controller(clock)
    for _ in range(100):  # 100 answers in 0.5 s: 200/s
        assert controller.try_acquire()
        controller.answered()
        clock.now += 0.005
    assert _rate(controller) is None
    for _ in range(30):
        assert controller.answered(_throttle())
    assert controller.adaptive_pacing
    assert controller.cuts == 1
    assert controller.throttles["RATE_LIMITED"] == 30
    first = controller.rate
    # A cut starts from the admitted rate: 100 answers over the 0.5 s since the first one.
    assert first == pytest.approx(BETA * 100 / 0.5)
    clock.now += BUCKET_SECONDS
    controller.answered(_throttle(code=None))  # a 429 without a code is a rate limit too
    assert controller.cuts == 2
    second = controller.rate
    assert first is not None and second is not None and second < first


def _answers(controller: RateController, clock: VirtualClock, rate: float, seconds: float) -> None:
    """``rate`` successful answers per second for ``seconds`` of the virtual clock."""
    for _ in range(round(rate * seconds)):
        clock.now += 1.0 / rate
        controller.answered()


def _throttled(controller: RateController, pause: float = 1.0) -> float:
    """A 429 with a ``pause`` s Retry-After, the pause taken; returns the rate it left."""
    error = _throttle(retry_after=pause)
    assert controller.answered(error)
    assert controller.pause(error, pause)
    rate = _rate(controller)
    assert rate is not None
    return rate


def _measured(clock: VirtualClock) -> tuple[RateController, float]:
    """A controller past its first throttle and one measured at 180/s: (it, its plateau)."""
    controller = _controller(clock)
    _answers(controller, clock, 200.0, 0.1)
    assert _throttled(controller) == pytest.approx(BETA * 200.0)  # AWS's cut: nothing known
    clock.now += 1.0
    _answers(controller, clock, 180.0, 2 * TRUST_SECONDS)
    return controller, _throttled(controller)


async def test_a_measured_throttle_plateaus_under_the_admitted_rate_and_holds() -> None:
    """After paced sending meets the limit, the rate sits just under it and holds, then probes."""
    clock = VirtualClock()
    controller, plateau = _measured(clock)
    assert plateau == pytest.approx(ESTIMATE_MARGIN * 180.0, rel=0.02)  # no β cut
    assert controller.cuts == 2
    clock.now += 1.0  # the pause
    _answers(controller, clock, plateau, HOLD_PAUSES * 1.0 - 0.1)
    assert _rate(controller) == pytest.approx(plateau)  # held for HOLD_PAUSES pauses
    _answers(controller, clock, plateau, 2.0)
    probe = _rate(controller)
    assert probe is not None and probe > plateau  # then CUBIC's convex probe above it
    assert probe == pytest.approx(plateau + SCALE * 2.0**3, rel=0.05)


async def test_a_probe_refused_near_its_plateau_returns_to_it_and_holds_twice_as_long() -> None:
    """A probe that finds the limit where the plateau was goes back to it and probes later."""
    clock = VirtualClock()
    controller, plateau = _measured(clock)
    for doubling in range(MAX_HOLD_DOUBLINGS + 2):
        clock.now += 1.0  # the pause
        hold = HOLD_PAUSES * 2.0 ** min(doubling, MAX_HOLD_DOUBLINGS)
        _answers(controller, clock, plateau, hold - 0.1)
        assert _rate(controller) == pytest.approx(plateau)  # held, each time twice as long
        _answers(controller, clock, plateau, 1.1)
        assert (_rate(controller) or 0.0) > plateau  # then probing
        assert _throttled(controller) == pytest.approx(plateau)  # refused: back to the plateau


async def test_a_throttle_soon_after_a_pause_follows_aws_rule() -> None:
    """Refused within TRUST_SECONDS of a pause's end, nothing was measured: AWS's β cut."""
    clock = VirtualClock()
    controller = _controller(clock)
    _answers(controller, clock, 200.0, 0.1)
    first = _throttled(controller)
    clock.now += 1.0  # the pause
    _answers(controller, clock, first, TRUST_SECONDS / 2)
    assert controller.cuts == 1
    assert _throttled(controller) == pytest.approx(BETA * ESTIMATE_MARGIN * first, rel=0.05)
    assert controller.cuts == 2
    assert not controller._held


async def test_a_throttle_while_holding_cuts_the_plateau_by_the_margin() -> None:
    """Refused while holding, the plateau was over a limit that moved: it comes down."""
    clock = VirtualClock()
    controller, plateau = _measured(clock)
    clock.now += 1.0
    _answers(controller, clock, plateau, TRUST_SECONDS + 0.5)
    assert _throttled(controller) == pytest.approx(ESTIMATE_MARGIN * plateau, rel=0.02)


async def test_a_probe_refused_far_above_its_plateau_plateaus_at_the_new_limit() -> None:
    """When the limit rose, the probe goes far before a 429 and the plateau follows it up."""
    clock = VirtualClock()
    controller, plateau = _measured(clock)
    clock.now += 1.0 + HOLD_PAUSES
    _answers(controller, clock, plateau, 5.0)  # CUBIC: plateau + 0.4 * 5^3 = plateau + 50
    probe = _rate(controller)
    assert probe is not None and probe > plateau * PROBE_SPAN
    _answers(controller, clock, probe, 1.0)  # admitted at the probe's rate
    rate = _throttled(controller)
    assert rate > plateau * PROBE_SPAN
    assert rate == pytest.approx(min(probe, ESTIMATE_MARGIN * probe), rel=0.05)
    assert controller._holds == 0


async def test_rate_limited_without_adaptive_only_counts() -> None:
    """``adaptive=False`` with no ceiling never paces; the 429s are still counted."""
    clock = VirtualClock()
    controller = _controller(clock, adaptive=False)
    controller.answered(_throttle())
    assert controller.rate is None and controller.try_acquire()
    assert controller.throttles == {"RATE_LIMITED": 1}


async def test_retry_after_pauses_everyone_then_resumes_at_the_learned_rate() -> None:
    """A 1 s Retry-After holds every attempt 1 s; after it, attempts are paced, not a burst."""
    clock = VirtualClock()
    controller = _controller(clock)
    for _ in range(200):
        controller.answered()
        clock.now += 0.005
    error = _throttle(retry_after=1.0)
    assert controller.answered(error)
    assert controller.pause(error, 1.0)
    assert not controller.try_acquire()
    paused_at = clock.now
    rate = controller.rate
    assert rate is not None
    times: list[float] = []

    async def attempt() -> None:
        await controller.acquire()
        times.append(clock.now)

    async with anyio.create_task_group() as group:
        for _ in range(50):
            group.start_soon(attempt)
    assert times[0] >= paused_at + 1.0
    burst = max(1.0, rate * BURST_SECONDS)
    assert times[-1] - paused_at >= 1.0 + (50 - burst - 1) / rate - 1e-6
    assert clock.most_sleeping == 1


async def test_queue_full_and_missing_retry_after_do_not_pause() -> None:
    """QUEUE_FULL (capacity) and a 429 without Retry-After never pause the client."""
    clock = VirtualClock()
    controller = _controller(clock)
    assert not controller.pause(_throttle(code="QUEUE_FULL", retry_after=5.0), 5.0)
    assert not controller.pause(_throttle(retry_after=None), 5.0)
    assert controller.paused_for == 0.0


async def test_retry_after_over_max_pause_fails_calls_until_it_passes() -> None:
    """Past ``max_pause`` the call fails, and so does every call until then, with retry_after."""
    clock = VirtualClock()
    controller = _controller(clock, max_pause=60.0)
    assert not controller.answered(_throttle(retry_after=3_600.0))
    assert not controller.try_acquire()
    with pytest.raises(RateLimitError) as info:
        await controller.acquire("GET", "/browser-agent/x")
    assert info.value.retry_after == pytest.approx(3_600.0)
    assert info.value.code == "RATE_LIMITED"
    assert "max_pause=60" in str(info.value)
    clock.now += 3_600.0
    assert controller.try_acquire()


async def test_queue_full_narrows_the_submission_window_and_successes_widen_it() -> None:
    """AIMD: a QUEUE_FULL with 8 submissions in flight halves the window to 4, once per bucket."""
    clock = VirtualClock()
    controller = _controller(clock)
    release = anyio.Event()
    entered = 0

    async def submit() -> None:
        nonlocal entered
        async with controller.submission():
            entered += 1
            await release.wait()

    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(submit)
        while entered < 8:
            await anyio.lowlevel.checkpoint()
        assert _window(controller) is None
        controller.answered(_throttle(code="QUEUE_FULL"))
        controller.answered(_throttle(code="QUEUE_FULL"))  # same bucket: no second cut
        assert controller.submit_window == 4
        assert controller.rate is None  # the rate is left alone
        for _ in range(3):
            group.start_soon(submit)
        for _ in range(10):
            await anyio.lowlevel.checkpoint()
        assert entered == 8  # the window is full (8 in flight > 4): the new ones wait
        release.set()
    assert entered == 11
    assert controller.submit_window is not None and controller.submit_window > 4
    assert controller.throttles["QUEUE_FULL"] == 2


async def test_a_cancelled_submission_waiter_frees_the_queue() -> None:
    """A submission cancelled while it waits for a slot takes none and blocks nobody."""
    clock = VirtualClock()
    controller = _controller(clock)
    controller._window = 1
    done: list[str] = []
    gate = anyio.Event()

    async def holder() -> None:
        async with controller.submission():
            await gate.wait()
        done.append("holder")

    async def waiter(name: str, scope_out: list[anyio.CancelScope]) -> None:
        with anyio.CancelScope() as scope:
            scope_out.append(scope)
            async with controller.submission():
                done.append(name)

    scopes: list[anyio.CancelScope] = []
    async with anyio.create_task_group() as group:
        group.start_soon(holder)
        await anyio.lowlevel.checkpoint()
        group.start_soon(waiter, "first", scopes)
        group.start_soon(waiter, "second", scopes)
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        scopes[0].cancel()
        gate.set()
    assert done == ["holder", "second"]
    assert controller._submitting == 0


# -- against the emulator ------------------------------------------------------------------------


@pytest.fixture
async def limited() -> AsyncIterator[tuple[Emulator, EmulatorServer]]:
    """An emulator on real time whose key may send 100 requests/s in bursts of 5."""
    emulator = Emulator(api_keys=("test-key",), seed=3)
    emulator.rate_limits.set(100, burst=5)
    emulator.rate_limits.retry_after = "ms"  # shrunk: integer seconds would make this slow
    async with serve(emulator) as server:
        yield emulator, server


async def test_a_rate_limit_far_below_the_load_fails_no_run(
    limited: tuple[Emulator, EmulatorServer],
) -> None:
    """Every run is delivered with its result, however often it was refused with a 429."""
    emulator, server = limited
    ids = [emulator.create_run(durations=[0.0], event_bytes=0) for _ in range(120)]
    # One failed poll would fail a run if 429s counted; 32 workers ask far more than 100/s.
    policy = PollPolicy(
        initial_delay=0.001, max_delay=0.002, max_in_flight=32, max_failed_polls=1,
        strategy="per-run",
    )  # fmt: skip
    async with Client(server.api_key, base_url=server.base_url, retry=FAST_RETRY) as client:
        with anyio.fail_after(30):
            async with client.watch(ids, policy=policy) as watcher:
                updates = [update async for update in watcher]
    assert sorted(u.run_id for u in updates) == sorted(ids)
    assert all(u.ok and u.run is not None and u.run.status == "completed" for u in updates)
    assert emulator.rate_limits.limited["test-key"] > 0  # the limit did bite
    assert client.rate_controller.throttles["RATE_LIMITED"] > 0
    assert client.rate_controller.adaptive_pacing


async def test_a_shared_controller_paces_every_client_of_the_key(
    limited: tuple[Emulator, EmulatorServer],
) -> None:
    """Two clients on one controller: a 429 seen by one paces the other."""
    emulator, server = limited
    run_id = emulator.create_run(durations=[0.0], event_bytes=0)
    shared = RateController()
    retry = dataclasses.replace(FAST_RETRY, max_retries=50, budget=None)  # no call may give up
    options = {"base_url": server.base_url, "retry": retry, "rate_controller": shared}
    async with (
        Client(server.api_key, **options) as first,  # type: ignore[arg-type]
        Client(server.api_key, **options) as second,  # type: ignore[arg-type]
    ):
        assert first.rate_controller is second.rate_controller is shared
        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:
                for _ in range(40):
                    group.start_soon(first.get_run, run_id)
            assert shared.adaptive_pacing  # the first client was throttled
            answers = shared.answers
            await second.get_run(run_id)
    assert shared.answers > answers  # the second client's request went through it too
    assert shared.rate is not None


async def test_fixed_ceiling_under_the_limit_is_never_refused(
    limited: tuple[Emulator, EmulatorServer],
) -> None:
    """A client whose ceiling is under the key's limit gets no 429 at all."""
    emulator, server = limited
    ids = [emulator.create_run(durations=[0.0], event_bytes=0) for _ in range(30)]
    emulator.list_rows = "stub"  # no list page settles a run: each takes its paced GET
    async with Client(
        server.api_key,
        base_url=server.base_url,
        retry=FAST_RETRY,
        poll_policy=FAST_POLL,
        max_requests_per_second=40,
    ) as client:
        with anyio.fail_after(20):
            async with client.watch(ids) as watcher:
                delivered = [update async for update in watcher if update.ok]
    assert len(delivered) == len(ids)
    assert emulator.rate_limits.limited["test-key"] == 0
    assert emulator.rate_limits.admitted["test-key"] >= len(ids)
    assert client.rate_controller.rate == 40


# -- the emulator's regime -----------------------------------------------------------------------


async def _statuses(
    server: EmulatorServer, run_id: str, count: int
) -> list[aiohttp.ClientResponse]:
    headers = {"Authorization": f"Bearer {server.api_key}"}
    answers = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            async with session.get(
                f"{server.base_url}/browser-agent/{run_id}", headers=headers
            ) as r:
                await r.read()
                answers.append(r)
    return answers


@pytest.mark.parametrize(
    ("form", "header", "pattern"),
    [
        pytest.param("seconds", "Retry-After", r"[1-9][0-9]*", id="seconds"),
        pytest.param("ms", "retry-after-ms", r"[1-9][0-9]*", id="milliseconds"),
        pytest.param("none", None, None, id="absent"),
    ],
)
async def test_emulator_limits_a_key_with_every_retry_after_form(
    form: str, header: str | None, pattern: str | None
) -> None:
    """Past its burst a key gets 429 RATE_LIMITED, with Retry-After as whole seconds, ms or none."""
    emulator = Emulator(api_keys=("test-key", "other-key"), seed=2)
    emulator.rate_limits.set(0.5, burst=3)  # a token every 2 s: the 4th request is refused
    emulator.rate_limits.retry_after = form  # type: ignore[assignment]
    run_id = emulator.create_run(durations=[0.0])
    async with serve(emulator) as server:
        answers = await _statuses(server, run_id, 4)
    assert [a.status for a in answers] == [200, 200, 200, 429]
    refused = answers[-1]
    for name in ("Retry-After", "retry-after-ms"):
        if name != header:
            assert name not in refused.headers
    if header is not None:
        assert pattern is not None and re.fullmatch(pattern, refused.headers[header])
    assert emulator.rate_limits.limited == {"test-key": 1}
    assert emulator.rate_limits.admitted == {"test-key": 3}
    assert emulator.request_count == 3  # a refused request never reaches the API


async def test_emulator_limit_changes_while_serving_and_per_key() -> None:
    """A limit set while serving applies at once; a key's own limit overrides the default."""
    emulator = Emulator(api_keys=("test-key", "other-key"), seed=2)
    run_id = emulator.create_run(durations=[0.0])
    async with serve(emulator) as server:
        assert [a.status for a in await _statuses(server, run_id, 3)] == [200] * 3
        emulator.rate_limits.set(0.1, burst=1)
        assert [a.status for a in await _statuses(server, run_id, 2)] == [200, 429]
        emulator.rate_limits.set(1_000, burst=50, api_key="test-key")
        await anyio.sleep(0.06)  # the bucket keeps its (no) tokens: let it fill at the new rate
        assert emulator.rate_limits.limit("test-key") == (1_000.0, 50.0)
        assert emulator.rate_limits.limit() == (0.1, 1.0)
        assert [a.status for a in await _statuses(server, run_id, 5)] == [200] * 5
        emulator.rate_limits.set(None, api_key="test-key")
        emulator.rate_limits.set(None)
        assert emulator.rate_limits.limit("test-key") is None


async def test_emulator_latency_delays_every_answer() -> None:
    """With 0.2 s of latency no answer comes sooner than that (errors included)."""
    emulator = Emulator(api_keys=("test-key",), seed=2)
    emulator.rate_limits.set_latency(0.2, jitter=0.01)
    assert emulator.rate_limits.latency == (0.2, 0.01)
    async with serve(emulator) as server, aiohttp.ClientSession() as session:
        started = time.monotonic()
        async with session.get(f"{server.base_url}/browser-agent/{'0' * 24}") as response:
            assert response.status == 401
        assert time.monotonic() - started >= 0.2


@pytest.mark.parametrize(
    ("call", "name"),
    [
        pytest.param(lambda r: r.set(0), "rate", id="rate-zero"),
        pytest.param(lambda r: r.set(math.inf), "rate", id="rate-inf"),
        pytest.param(lambda r: r.set(10, burst=0.5), "burst", id="burst-below-one"),
        pytest.param(lambda r: r.set_latency(-1), "seconds", id="latency-negative"),
        pytest.param(lambda r: r.set_latency(0, jitter=math.nan), "jitter", id="jitter-nan"),
    ],
)
def test_emulator_refuses_bad_limits_by_name(call: Callable[[RateLimits], None], name: str) -> None:
    """A bad rate, burst or latency is a ValueError naming it."""
    with pytest.raises(ValueError, match=name):
        call(Emulator().rate_limits)


def test_emulator_command_line_takes_the_regime() -> None:
    """``--rate-limit 200 --burst 20 --latency 10ms --retry-after ms`` parse as they read."""
    args = emulator_parser().parse_args(
        ["--rate-limit", "200", "--burst", "20", "--latency", "10ms", "--jitter", "0.002",
         "--retry-after", "ms"]
    )  # fmt: skip
    assert (args.rate_limit, args.burst, args.latency, args.jitter, args.retry_after) == (
        200.0,
        20.0,
        0.01,
        0.002,
        "ms",
    )
    assert emulator_parser().parse_args([]).latency == 0.0
    with pytest.raises(SystemExit):
        emulator_parser().parse_args(["--latency", "soon"])
