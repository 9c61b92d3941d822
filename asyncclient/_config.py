"""Options and their defaults: routes, retry and polling policies, frozen.

Every field is checked through ``_validation`` when a policy is built, and refused with a
``ValueError`` that names the field, before any request leaves.
"""

from __future__ import annotations

import functools
import random
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import backoff

from ._validation import check_int, check_number, check_seconds

__all__ = [
    "POLL_STRATEGIES",
    "PollPolicy",
    "PollStrategy",
    "RetryPolicy",
    "RouteStyle",
    "Routes",
    "exponential_schedule",
]

RouteStyle = Literal["legacy", "v1"]
PollStrategy = Literal["auto", "per-run", "list"]
POLL_STRATEGIES: tuple[PollStrategy, ...] = typing.get_args(PollStrategy)

_SCHEDULE_STEPS = 256
"""The most growing steps a schedule takes before it jumps to its cap (a multiplier near 1)."""


@dataclass(frozen=True)
class Routes:
    """The two path styles the API is documented under.

    Attributes:
        style: ``"legacy"`` or ``"v1"``.
        run_prefix: the path a run id is appended to.
        list_path: the list endpoint's path.
    """

    style: RouteStyle
    run_prefix: str
    list_path: str

    @classmethod
    def for_style(cls, style: str) -> Routes:
        """The routes for ``"legacy"`` (``/browser-agent/{id}``) or ``"v1"`` (``/api/v1/...``)."""
        if style == "legacy":
            return cls("legacy", "/browser-agent/", "/list-browser-agents")
        if style == "v1":
            return cls("v1", "/api/v1/browser-agents/", "/api/v1/browser-agents")
        raise ValueError(f"routes must be 'legacy' or 'v1', got {style!r}")

    def run_path(self, run_id: str) -> str:
        """The path of one run; ``run_id`` must already be validated."""
        return self.run_prefix + run_id

    @property
    def submit_path(self) -> str:
        """Where runs are submitted (POST): ``/browser-agent`` or ``/api/v1/browser-agents``."""
        return self.run_prefix.rstrip("/")


def exponential_schedule(initial: float, multiplier: float, cap: float) -> tuple[float, ...]:
    """The nominal delays ``initial, initial*multiplier, ...`` up to and ending at ``cap``.

    Each delay is ``min(cap, initial * multiplier**n)``; the last one repeats forever. Growth too
    slow to reach ``cap`` in :data:`_SCHEDULE_STEPS` steps jumps to it.
    """
    schedule: list[float] = []
    for step in range(_SCHEDULE_STEPS):
        try:
            delay = float(initial) * float(multiplier) ** step
        except OverflowError:
            delay = cap
        if delay >= cap:
            break
        schedule.append(delay)
    schedule.append(float(cap))
    return tuple(schedule)


@dataclass(frozen=True)
class RetryPolicy:
    """How the session layer retries transient failures of one request.

    Retried: connection errors, timeouts, truncated bodies, 408, 429, 500, 502, 503, 504.
    Never retried: 400, 401, 402, 404 and other 4xx.

    Attributes:
        max_retries: retries after the first attempt (0 disables retries).
        initial_delay: the first backoff delay in seconds (before jitter).
        multiplier: how much each delay grows.
        max_delay: the cap of a backoff delay.
        max_retry_after: the longest ``Retry-After`` honoured; longer values are cut to it, so an
            absurd header never means a sleep of hours.
        budget: the client-wide retry quota (in the style of AWS's): a retry costs
            ``retry_cost`` tokens (a timeout ``2 * retry_cost``), a request that succeeds at once
            gives one back, one that succeeds after retries gives their cost back. When the
            quota is spent, failures are not retried until successes refill it, so an outage
            does not turn into a retry storm. ``None`` disables the quota.
        retry_cost: tokens one retry takes from ``budget``.
    """

    max_retries: int = 2
    initial_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 8.0
    max_retry_after: float = 60.0
    budget: int | None = 500
    retry_cost: int = 5

    def __post_init__(self) -> None:
        check_int("max_retries", self.max_retries, ge=0, le=100)
        check_number("initial_delay", self.initial_delay, ge=0)
        check_number("multiplier", self.multiplier, ge=1.0)
        check_number("max_delay", self.max_delay, ge=0)
        check_number("max_retry_after", self.max_retry_after, ge=0)
        if self.budget is not None:
            check_int("budget", self.budget, ge=0)
        check_int("retry_cost", self.retry_cost, ge=0)
        if self.max_delay < self.initial_delay:
            raise ValueError("max_delay must be >= initial_delay")

    def delays(self) -> Callable[[], float]:
        """A fresh per-request delay source: the capped exponential schedule, with full jitter.

        The nominal delays are :func:`exponential_schedule`'s (``min(cap, initial *
        multiplier**n)``, so an absurd ``multiplier`` reaches the cap instead of overflowing);
        backoff's ``full_jitter`` draws each wait from ``[0, nominal]``.
        """
        schedule = iter(exponential_schedule(self.initial_delay, self.multiplier, self.max_delay))
        nominal = self.max_delay

        def next_delay() -> float:
            nonlocal nominal
            nominal = next(schedule, nominal)
            return float(backoff.full_jitter(nominal))

        return next_delay


@dataclass(frozen=True)
class PollPolicy:
    """How :meth:`Client.watch` and :meth:`Client.wait` poll runs.

    Each run is polled at once, then after ``initial_delay``, growing by ``multiplier`` up to
    ``max_delay`` (by default 1 s, 1.5 s, 2.25 s, ... 15 s, 15 s, ...). Each delay is drawn
    uniformly from ``[delay * (1 - jitter), delay]`` so that thousands of runs do not poll in waves
    and the schedule never runs slower than its nominal shape.

    Attributes:
        initial_delay: seconds before the second poll of a run.
        multiplier: growth of the delay after each poll that finds the run processing.
        max_delay: the cap of the delay.
        jitter: the fraction (0..1) of each delay that is randomised away.
        max_in_flight: how many GETs the watch has open at once (a list scan, in the
            list-assisted strategies, reads its pages one at a time beside them).
        run_timeout: seconds a run may take, from when it is added, before it is delivered with
            a :class:`WatchTimeoutError`; ``None`` for no limit.
        timeout: seconds the whole watch may take; when it passes, every run not yet delivered is
            delivered with a :class:`WatchTimeoutError`. ``None`` for no limit.
        not_found_grace: seconds a freshly added id may answer 404 (the run may not be visible
            yet) before it is delivered with the :class:`NotFoundError`.
        buffer_size: how many updates may wait for a slow consumer before pollers pause.
        strategy: ``"per-run"`` polls every run with its own GET; ``"list"`` reads the whole
            ``status=processing`` list on the same schedule (a hundred runs a request), needs no
            GET for a run seen processing there, and confirms a run missing from it with one
            GET; ``"auto"`` (the default) decides at every scan tick: it scans when the pages of
            a scan cost fewer requests than the GETs due before the next tick.
        max_failed_polls: how many polls of one run in a row may fail with a transient error
            (connection error, timeout, 408, 429, 5xx: each already retried by the session
            layer) before that run is delivered with the error. Failed polls keep the run's
            normal cadence, so a spent retry budget never loses a run. Only a run's own failures
            count: during an outage of the API (every recent request failing, whichever run it
            was for) no run is charged, and the watch probes with one request per ``max_delay``.
        max_outage: seconds the API may stay unreachable (every request failing transiently)
            before the watch stops with :class:`APIUnavailableError`; ``None`` (the default)
            rides out an outage of any length, bounded only by ``run_timeout`` and ``timeout``.
    """

    initial_delay: float = 1.0
    multiplier: float = 1.5
    max_delay: float = 15.0
    jitter: float = 0.2
    max_in_flight: int = 32
    run_timeout: float | None = None
    timeout: float | None = None
    not_found_grace: float = 10.0
    buffer_size: int = 256
    max_failed_polls: int = 5
    strategy: PollStrategy = "auto"
    max_outage: float | None = None

    def __post_init__(self) -> None:
        check_number("initial_delay", self.initial_delay, gt=0)
        check_number("multiplier", self.multiplier, ge=1.0)
        check_number("max_delay", self.max_delay, gt=0)
        check_number("jitter", self.jitter, ge=0)
        if self.jitter >= 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter!r}")
        if self.max_delay < self.initial_delay:
            raise ValueError("max_delay must be >= initial_delay")
        check_int("max_in_flight", self.max_in_flight, ge=1, le=10_000)
        check_seconds("run_timeout", self.run_timeout, optional=True)
        check_seconds("timeout", self.timeout, optional=True)
        check_seconds("max_outage", self.max_outage, optional=True)
        check_number("not_found_grace", self.not_found_grace, ge=0)
        check_int("buffer_size", self.buffer_size, ge=1, le=1_000_000)
        check_int("max_failed_polls", self.max_failed_polls, ge=1, le=1_000_000)
        if self.strategy not in POLL_STRATEGIES:
            raise ValueError(
                f"strategy must be one of {', '.join(POLL_STRATEGIES)}, got {self.strategy!r}"
            )

    @functools.cached_property
    def schedule(self) -> tuple[float, ...]:
        """The nominal delays before jitter; the last one repeats forever."""
        # cached_property writes the instance __dict__ directly, so it works on a frozen class.
        return exponential_schedule(self.initial_delay, self.multiplier, self.max_delay)

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """The jittered delay after poll number ``attempt`` (0-based) found the run processing."""
        schedule = self.schedule
        nominal = schedule[attempt] if attempt < len(schedule) else schedule[-1]
        return nominal * (1.0 - self.jitter * rand())
