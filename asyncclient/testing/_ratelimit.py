"""The emulator's rate limits and latency: a token bucket per API key, and a delay on every answer.

Every emulator has a :class:`RateLimits` at :attr:`Emulator.rate_limits
<asyncclient.testing.Emulator>`. Nothing is limited or delayed until a test (or
``--rate-limit`` / ``--latency`` on the command line) asks::

    emu.rate_limits.set(200, burst=20)                # every key: 200 requests/s, bursts of 20
    emu.rate_limits.set(50, burst=5, api_key="k2")    # one key its own limit
    emu.rate_limits.retry_after = "ms"                # or "seconds" (the default), or "none"
    emu.rate_limits.set_latency(0.010, jitter=0.002)  # 10 ms (+0..2 ms) before every answer

A request over its key's limit is answered 429 ``RATE_LIMITED`` with ``Retry-After`` in whole
seconds (rounded up, as most APIs send it), or ``retry-after-ms`` in milliseconds, or no header
at all. Limits and latency can change while the emulator serves; they act on the event loop's
(monotonic) time, in front of the faults and the API, so a refused request never reaches either.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from collections.abc import Callable
from typing import Literal, get_args

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ._clock import loop_time
from ._responses import error_response

__all__ = ["RateLimits", "RetryAfterForm"]

RetryAfterForm = Literal["seconds", "ms", "none"]
"""How a 429 says when to retry: ``Retry-After: <whole seconds>``, ``retry-after-ms``, nothing."""

_FORMS: frozenset[str] = frozenset(get_args(RetryAfterForm))
_ALL = "*"


def _positive(name: str, value: object, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        raise ValueError(
            f"{name} must be finite and {'>= 0' if allow_zero else '> 0'}, got {value!r}"
        )
    return number


class _Bucket:
    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    def take(self, now: float) -> float:
        """Take a token: 0.0 if taken, else the seconds until one is free."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimits:
    """Per-key rate limits and a latency added to every answer, in front of the emulated API.

    Attributes:
        retry_after: How a 429 tells when to retry: ``"seconds"`` (``Retry-After``, whole
            seconds rounded up), ``"ms"`` (``retry-after-ms``) or ``"none"``.
        admitted: Requests let through, per key.
        limited: Requests answered 429 ``RATE_LIMITED``, per key.
    """

    def __init__(
        self,
        resolve_key: Callable[[str | None], str | None],
        *,
        seed: int | str = 0,
        clock: Callable[[], float] = loop_time,
    ) -> None:
        """Create limits that limit nothing yet.

        Args:
            resolve_key: Maps an ``Authorization`` header to its API key, or ``None``.
            seed: Seeds the latency jitter.
            clock: The monotonic clock the buckets refill on (the event loop's).
        """
        self._resolve = resolve_key
        self._clock = clock
        self._rng = random.Random(f"asyncclient.testing.ratelimit:{seed}")
        self._limits: dict[str, tuple[float, float]] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._latency = 0.0
        self._jitter = 0.0
        self.retry_after: RetryAfterForm = "seconds"
        self.admitted: Counter[str] = Counter()
        self.limited: Counter[str] = Counter()
        self.middleware: Middleware = _make_middleware(self)
        """The ``aiohttp.web`` middleware applying latency and limits (``build_app`` adds it)."""

    def __repr__(self) -> str:
        return (
            f"<RateLimits limits={len(self._limits)} latency={self._latency:g}s "
            f"limited={sum(self.limited.values())}>"
        )

    def set(
        self, rate: float | None, *, burst: float | None = None, api_key: str | None = None
    ) -> None:
        """Limit a key (or, without ``api_key``, every key) to ``rate`` requests per second.

        Changing a limit while serving keeps the bucket's tokens (up to the new burst).

        Args:
            rate: Requests per second; ``None`` removes the limit.
            burst: How many requests may come at once (default: ``max(1, rate / 10)``).
            api_key: The key; ``None`` sets the limit of every key without one of its own.

        Raises:
            ValueError: If ``rate`` or ``burst`` is not a positive number, or ``burst`` < 1.
        """
        scope = _ALL if api_key is None else api_key
        if rate is None:
            self._limits.pop(scope, None)
            self._buckets.clear()  # rebuilt, full, on the next request of each key
            return
        rate = _positive("rate", rate)
        size = max(1.0, rate / 10.0) if burst is None else _positive("burst", burst)
        if size < 1.0:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        self._limits[scope] = (rate, size)
        now = self._clock()
        for key, bucket in self._buckets.items():
            limit = self._limit_of(key)
            if limit is not None:
                bucket.tokens = min(
                    bucket.burst, bucket.tokens + (now - bucket.updated) * bucket.rate
                )
                bucket.updated = now
                bucket.rate, bucket.burst = limit
                bucket.tokens = min(bucket.tokens, bucket.burst)

    def limit(self, api_key: str | None = None) -> tuple[float, float] | None:
        """The ``(rate, burst)`` in force for ``api_key`` (``None``: the default), if any."""
        return self._limit_of(_ALL if api_key is None else api_key)

    def _limit_of(self, key: str) -> tuple[float, float] | None:
        return self._limits.get(key) or self._limits.get(_ALL)

    def set_latency(self, seconds: float, *, jitter: float = 0.0) -> None:
        """Delay every answer by ``seconds`` plus a uniform draw in ``[0, jitter)``.

        Args:
            seconds: The fixed part (0 for none).
            jitter: The random part's width.

        Raises:
            ValueError: If either is negative or not finite.
        """
        self._latency = _positive("seconds", seconds, allow_zero=True)
        self._jitter = _positive("jitter", jitter, allow_zero=True)

    @property
    def latency(self) -> tuple[float, float]:
        """``(fixed, jitter)`` seconds added to every answer."""
        return (self._latency, self._jitter)

    def _admit(self, key: str) -> float:
        """0.0 if ``key``'s request may go through, else seconds until it could."""
        bucket = self._buckets.get(key)
        if bucket is None:
            limit = self._limit_of(key)
            if limit is None:
                return 0.0
            bucket = self._buckets[key] = _Bucket(*limit, self._clock())
        return bucket.take(self._clock())

    def _refusal(self, wait: float) -> web.Response:
        headers: dict[str, str] = {}
        if self.retry_after == "seconds":
            headers["Retry-After"] = str(max(1, math.ceil(wait)))
        elif self.retry_after == "ms":
            headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
        elif self.retry_after not in _FORMS:
            raise ValueError(
                f"retry_after must be one of {sorted(_FORMS)}, got {self.retry_after!r}"
            )
        return error_response(
            429, "Too many requests: back off and retry", code="RATE_LIMITED", headers=headers
        )


def _make_middleware(limits: RateLimits) -> Middleware:
    @web.middleware
    async def limit_and_delay(request: web.Request, handler: Handler) -> web.StreamResponse:
        if limits._latency or limits._jitter:
            delay = limits._latency
            if limits._jitter:
                delay += limits._rng.random() * limits._jitter
            await asyncio.sleep(delay)
        if limits._limits:
            key = limits._resolve(request.headers.get("Authorization"))
            if key is not None:
                wait = limits._admit(key)
                if wait > 0.0:
                    limits.limited[key] += 1
                    return limits._refusal(wait)
                limits.admitted[key] += 1
        return await handler(request)

    return limit_and_delay
