"""What the rate controller learns from: AWS's CUBIC calculator and two measures of the answers.

:class:`Cubic` is the rate rule of AWS's adaptive retry mode (the rate after a throttle, and the
rate ``t`` seconds after it), with the plateau :mod:`._ratelimit` holds after a throttle that
measured the limit. :class:`AnswerMeter` is AWS's measured rate of answers (0.5 s buckets, an
EWMA); :class:`AdmittedRate` is the rate the server admitted over the last seconds of sending,
which is what a cut starts from. Pure arithmetic on the times it is given: no clock, no I/O.
"""

from __future__ import annotations

import bisect
import math
from collections import deque

__all__ = [
    "BETA",
    "BUCKET_SECONDS",
    "RECENT_SECONDS",
    "SCALE",
    "SMOOTHING",
    "AdmittedRate",
    "AnswerMeter",
    "Cubic",
]

BETA = 0.7
"""CUBIC's multiplicative decrease on a throttle (AWS: ``BETA``)."""
SCALE = 0.4
"""CUBIC's scale constant ``C`` (AWS: ``SCALE_CONSTANT``)."""
BUCKET_SECONDS = 0.5
"""The width of a measurement bucket; at most one cut per bucket."""
SMOOTHING = 0.8
"""The weight of the newest bucket in the measured rate (AWS: ``smooth``)."""
RECENT_SECONDS = 2.0
"""How far back the admitted rate a cut starts from is measured (a first or hasty throttle)."""
_MIN_WINDOW = 0.1


class Cubic:
    """AWS's CUBIC calculator: the rate after a throttle, and the rate at time ``t`` after it."""

    __slots__ = ("beta", "k", "last_fail", "scale", "w_max")

    def __init__(self, *, start: float = 0.0, beta: float = BETA, scale: float = SCALE) -> None:
        self.beta = beta
        self.scale = scale
        self.w_max = 0.0
        self.last_fail = start
        self.k = 0.0

    def throttled(self, rate: float, now: float) -> float:
        """Remember ``rate`` as the last good maximum; return the cut rate."""
        self.w_max = rate
        self.k = (rate * (1.0 - self.beta) / self.scale) ** (1.0 / 3.0)
        self.last_fail = now
        return rate * self.beta

    def hold(self, rate: float, until: float) -> float:
        """Plateau at ``rate`` until ``until``, then probe above it (CUBIC's convex part)."""
        self.w_max = rate
        self.k = 0.0
        self.last_fail = until
        return rate

    def success(self, now: float) -> float:
        """The rate CUBIC allows at ``now``: ``C * (t - K)^3 + W_max``."""
        return self.scale * (now - self.last_fail - self.k) ** 3 + self.w_max


class AnswerMeter:
    """The measured rate of answers: counted per 0.5 s bucket, smoothed (AWS's RateClocker)."""

    __slots__ = ("bucket", "count", "first", "rate")

    def __init__(self, start: float) -> None:
        self.bucket = math.floor(start * 2.0) / 2.0
        self.count = 0
        self.rate = 0.0
        self.first: float | None = None

    def record(self, now: float) -> float:
        if self.first is None:
            # Buckets start at the first answer, not when the client was made.
            self.first = now
            self.bucket = max(self.bucket, math.floor(now * 2.0) / 2.0)
        self.count += 1
        bucket = math.floor(now * 2.0) / 2.0
        if bucket > self.bucket:
            current = self.count / (bucket - self.bucket)
            self.rate = current * SMOOTHING + self.rate * (1.0 - SMOOTHING)
            self.count = 0
            self.bucket = bucket
        return self.rate


class AdmittedRate:
    """Admitted answers (not 429s) per second over the last ``RECENT_SECONDS`` of sending.

    What a throttle should cut from is the rate the server admitted while we were sending, not
    AWS's meter: that lags by a bucket, counts a fraction of its first bucket as a whole one (the
    first throttle usually comes within a fraction of a second), and counts the silence of a
    client-wide pause as a rate near zero. The window starts no earlier than the end of the last
    pause.
    """

    __slots__ = ("first", "times")

    def __init__(self) -> None:
        self.times: deque[float] = deque()
        self.first: float | None = None

    def record(self, now: float) -> None:
        if self.first is None:
            self.first = now
        times = self.times
        times.append(now)
        horizon = now - RECENT_SECONDS
        while times[0] < horizon:
            times.popleft()

    def rate(self, now: float, since: float) -> float:
        if self.first is None:
            return 0.0
        times = self.times
        start = max(now - RECENT_SECONDS, self.first, since)
        if now - start < _MIN_WINDOW:
            # Too short to tell a burst from a rate (the first throttle often comes within
            # milliseconds): count it as if spread over the shortest window.
            return (len(times) - bisect.bisect_left(times, start)) / _MIN_WINDOW
        # A token-bucket server admits its burst first, then its rate: the later half of the
        # time since sending (re)started says the rate without the burst.
        start = max(start + (now - start) / 2, now - RECENT_SECONDS / 2)
        count = len(times) - bisect.bisect_left(times, start)
        return count / max(now - start, _MIN_WINDOW)
