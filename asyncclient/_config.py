"""Options, defaults and argument checks: routes, retry and polling policies, frozen.

Everything a caller passes is checked here, before any request leaves, and refused with a
``ValueError`` that names the problem (never echoing the API key).
"""

from __future__ import annotations

import enum
import ipaddress
import itertools
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import backoff
from yarl import URL

__all__ = [
    "DEFAULT_BASE_URL",
    "LIST_PAGE_MAX",
    "PollPolicy",
    "RetryPolicy",
    "Routes",
]

DEFAULT_BASE_URL = "https://api.pre.dev"
API_KEY_ENV = "PREDEV_API_KEY"
BASE_URL_ENV = "PREDEV_BASE_URL"
LIST_PAGE_MAX = 100
"""The largest page the list endpoint serves."""
QUEUE_STATUS_PATH = "/browser-agent-status"
"""The queue snapshot: the only documented path, for both route styles."""

RUN_STATUS_FILTERS = ("processing", "completed")
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""Statuses worth another try: the server or something in between had a passing problem."""
RouteStyle = Literal["legacy", "v1"]

_RUN_ID = re.compile(r"[0-9a-fA-F]{24}")


@dataclass(frozen=True)
class Routes:
    """The two path styles the API is documented under.

    Attributes:
        style: ``"legacy"`` or ``"v1"``.
        run_prefix: the path a run id is appended to.
        list_path: the list endpoint's path.
    """

    style: str
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


def _check_number(name: str, value: object, *, minimum: float, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"{name} is too large, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if number < minimum or (number == minimum and not allow_zero and minimum == 0):
        bound = f">= {minimum}" if allow_zero or minimum != 0 else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return number


def _check_int(name: str, value: object, *, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum or (maximum is not None and value > maximum):
        upper = f"..{maximum}" if maximum is not None else " or more"
        raise ValueError(f"{name} must be in {minimum}{upper}, got {value!r}")
    return value


def _check_optional_positive(name: str, value: float | None) -> None:
    if value is not None:
        _check_number(name, value, minimum=0)


def exponential_schedule(initial: float, multiplier: float, cap: float) -> tuple[float, ...]:
    """The nominal delays ``initial, initial*multiplier, ...`` up to and ending at ``cap``.

    Built from backoff's ``expo`` wait generator; the last value repeats forever.
    """
    waits = backoff.expo(base=multiplier, factor=initial, max_value=cap)
    next(waits)  # backoff's generators are primed with one send(None)
    schedule: list[float] = []
    for wait in itertools.islice(waits, 256):
        schedule.append(float(wait))
        if wait >= cap:
            break
    else:
        schedule.append(float(cap))  # growth too slow to get there in 256 steps: jump to it
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
        _check_int("max_retries", self.max_retries, minimum=0, maximum=100)
        _check_number("initial_delay", self.initial_delay, minimum=0, allow_zero=True)
        _check_number("multiplier", self.multiplier, minimum=1.0, allow_zero=True)
        _check_number("max_delay", self.max_delay, minimum=0, allow_zero=True)
        _check_number("max_retry_after", self.max_retry_after, minimum=0, allow_zero=True)
        if self.budget is not None:
            _check_int("budget", self.budget, minimum=0)
        _check_int("retry_cost", self.retry_cost, minimum=0)
        if self.max_delay < self.initial_delay:
            raise ValueError("max_delay must be >= initial_delay")

    def delays(self) -> Callable[[], float]:
        """A fresh per-request delay source: exponential with full jitter, from backoff."""
        waits = backoff.expo(
            base=self.multiplier, factor=self.initial_delay, max_value=self.max_delay
        )
        next(waits)

        def next_delay() -> float:
            return float(backoff.full_jitter(next(waits)))

        return next_delay


PollStrategy = Literal["auto", "per-run", "list"]
POLL_STRATEGIES = ("auto", "per-run", "list")


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
    _schedule: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_number("initial_delay", self.initial_delay, minimum=0)
        _check_number("multiplier", self.multiplier, minimum=1.0, allow_zero=True)
        _check_number("max_delay", self.max_delay, minimum=0)
        _check_number("jitter", self.jitter, minimum=0, allow_zero=True)
        if self.jitter >= 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter!r}")
        if self.max_delay < self.initial_delay:
            raise ValueError("max_delay must be >= initial_delay")
        _check_int("max_in_flight", self.max_in_flight, minimum=1, maximum=10_000)
        _check_optional_positive("run_timeout", self.run_timeout)
        _check_optional_positive("timeout", self.timeout)
        _check_optional_positive("max_outage", self.max_outage)
        _check_number("not_found_grace", self.not_found_grace, minimum=0, allow_zero=True)
        _check_int("buffer_size", self.buffer_size, minimum=1, maximum=1_000_000)
        _check_int("max_failed_polls", self.max_failed_polls, minimum=1, maximum=1_000_000)
        if self.strategy not in POLL_STRATEGIES:
            raise ValueError(
                f"strategy must be one of {', '.join(POLL_STRATEGIES)}, got {self.strategy!r}"
            )
        object.__setattr__(
            self,
            "_schedule",
            exponential_schedule(self.initial_delay, self.multiplier, self.max_delay),
        )

    @property
    def schedule(self) -> tuple[float, ...]:
        """The nominal delays before jitter; the last one repeats forever."""
        return self._schedule

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """The jittered delay after poll number ``attempt`` (0-based) found the run processing."""
        schedule = self._schedule
        nominal = schedule[attempt] if attempt < len(schedule) else schedule[-1]
        return nominal * (1.0 - self.jitter * rand())


def validate_run_id(run_id: object) -> str:
    """Return ``run_id`` if it is exactly 24 hexadecimal ASCII characters, else ``ValueError``."""
    if not isinstance(run_id, str):
        raise ValueError(f"run_id must be a str, got {type(run_id).__name__}")
    if not _RUN_ID.fullmatch(run_id):
        shown = run_id if len(run_id) <= 64 else run_id[:64] + "..."
        raise ValueError(f"run_id must be 24 hexadecimal characters, got {shown!r}")
    return run_id


def validate_limit(limit: object) -> int:
    """A page size in 1..100."""
    return _check_int("limit", limit, minimum=1, maximum=LIST_PAGE_MAX)


def validate_skip(skip: object) -> int:
    """An offset of 0 or more."""
    return _check_int("skip", skip, minimum=0)


def validate_status_filter(status: object) -> str | None:
    """``None``, ``"processing"`` or ``"completed"`` (the API has no ``failed`` filter)."""
    if status is None:
        return None
    value = status.value if isinstance(status, enum.Enum) else status
    if value not in RUN_STATUS_FILTERS:
        raise ValueError(
            f"status must be None, 'processing' or 'completed' (the API cannot filter on "
            f"'failed'), got {status!r}"
        )
    return str(value)


def validate_api_key(api_key: object) -> str:
    """A non-empty key without whitespace or control characters. The message never shows it."""
    if not isinstance(api_key, str):
        raise ValueError(f"api_key must be a str, got {type(api_key).__name__}")
    if not api_key:
        raise ValueError("api_key is empty")
    if any(ch.isspace() or not ch.isprintable() for ch in api_key):
        raise ValueError("api_key contains whitespace or control characters")
    if not api_key.isascii():
        raise ValueError("api_key contains non-ASCII characters")
    return api_key


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, ``127.0.0.0/8`` and ``::1`` (exactly; not ``localhost.evil.com``).

    An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) is judged by its IPv4 address, so the
    answer is the same on every Python (3.13 changed ``is_loopback`` for those addresses).
    """
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def validate_base_url(base_url: object) -> URL:
    """An ``https://`` origin, or ``http://`` to a loopback host.

    No credentials, query or fragment; a trailing slash is dropped.
    """
    if not isinstance(base_url, str):
        raise ValueError(f"base_url must be a str, got {type(base_url).__name__}")
    if not base_url or any(ch.isspace() or not ch.isprintable() for ch in base_url):
        raise ValueError("base_url is empty or contains whitespace or control characters")
    try:
        url = URL(base_url)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"base_url is not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https"):
        raise ValueError(f"base_url must start with https:// (got scheme {url.scheme!r})")
    if not url.host:
        raise ValueError("base_url has no host")
    if url.user is not None or url.password is not None or "@" in (url.raw_authority or ""):
        raise ValueError("base_url must not contain credentials (user-info)")
    if url.query_string or url.fragment:
        raise ValueError("base_url must not have a query or a fragment")
    if url.scheme == "http" and not is_loopback_host(url.host):
        raise ValueError(
            "base_url uses plain http:// to a non-loopback host; the API key is only sent over "
            "https:// (or http:// to localhost, 127.0.0.0/8, ::1)"
        )
    return url.with_path(url.path.rstrip("/"))
