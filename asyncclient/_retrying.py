"""The retry decisions: whether a failed attempt may be made again, and when.

In the shape of openai's ``_should_retry`` / ``_calculate_retry_timeout`` /
``_parse_retry_after_header``: small named rules that :mod:`._transport`'s loop asks, so the loop
itself only sends, asks and waits. Nothing here imports aiohttp or the transport: what the
transport knows of its own errors (whether a request provably never left) comes in as an
argument.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Mapping
from datetime import datetime, timezone

from ._exceptions import (
    APIConnectionError,
    APITimeoutError,
    PredevError,
    RateLimitError,
    is_transient,
)

__all__ = ["RetryBudget", "parse_retry_after", "retry_delay", "should_retry"]


def should_retry(error: PredevError, *, unsent_only: bool, never_sent: bool) -> bool:
    """Whether a failed attempt may be made again (the budget and the count aside).

    Every transient failure may, unless the request must not happen twice (``unsent_only``):
    then only one that provably never left and a 429, which the server refused without acting on.

    Args:
        error: the attempt's failure, already one of ours.
        unsent_only: the request must not happen twice (a submission, which bills).
        never_sent: the transport knows the request never left (the connection could not be
            made).

    Returns:
        ``True`` if the rule allows another attempt.
    """
    if not unsent_only:
        return is_transient(error)
    if isinstance(error, RateLimitError):
        return True
    return never_sent and isinstance(error, APIConnectionError)


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, or ``Retry-After`` as seconds or an HTTP date.

    Args:
        headers: the answer's headers (looked up in lower case: pass a case-insensitive mapping).
        now: the current POSIX time, for an HTTP date (default: the clock).

    Returns:
        The seconds, never negative; ``None`` when no header is present or it cannot be read.
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            value = float(raw_ms) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return max(0.0, value)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        return max(0.0, value) if math.isfinite(value) else None
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = datetime.now(timezone.utc).timestamp() if now is None else now
    return max(0.0, when.timestamp() - current)


def retry_delay(
    backoff_delay: float, retry_after: float | None, *, max_retry_after: float
) -> float:
    """Seconds before the next attempt: the backoff's draw, or longer if the server asked.

    A ``Retry-After`` (any retried status may carry one) is honoured up to ``max_retry_after``
    (``RetryPolicy.max_retry_after``), never below the backoff's draw.

    Args:
        backoff_delay: the backoff schedule's next (jittered) delay.
        retry_after: what the answer's ``Retry-After`` asked for, if anything.
        max_retry_after: the longest ``Retry-After`` honoured.

    Returns:
        The delay in seconds (before the testing switch scales it).
    """
    if retry_after is None:
        return backoff_delay
    return max(backoff_delay, min(retry_after, max_retry_after))


class RetryBudget:
    """A token bucket shared by every request of a client; retries spend it, successes refill it.

    Args:
        capacity: the most tokens it holds (and starts with).
        retry_cost: tokens one retry takes.
    """

    def __init__(self, capacity: int, retry_cost: int) -> None:
        self.capacity = capacity
        self.tokens = capacity
        self.retry_cost = retry_cost
        self.refused = 0
        """Retries not made because the budget was spent."""

    def try_spend(self, cost: int) -> bool:
        """Take ``cost`` tokens if there are that many.

        Args:
            cost: the tokens to take.

        Returns:
            ``True`` if they were taken; ``False`` (and one more refusal counted) if not.
        """
        if cost > self.tokens:
            self.refused += 1
            return False
        self.tokens -= cost
        return True

    def refund(self, amount: int) -> None:
        """Give ``amount`` tokens back, up to the capacity.

        Args:
            amount: the tokens to give back.
        """
        self.tokens = min(self.capacity, self.tokens + amount)

    def charge(self, error: PredevError) -> int | None:
        """Take one retry's tokens for a failure: what it cost, or ``None`` when it is spent.

        A retry after a timeout costs twice (it held a connection the whole time).

        Args:
            error: the failure the retry follows.

        Returns:
            The tokens taken, or ``None`` if the budget could not pay for the retry.
        """
        cost = self.retry_cost * (2 if isinstance(error, APITimeoutError) else 1)
        return cost if self.try_spend(cost) else None
