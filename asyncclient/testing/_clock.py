"""Clocks that drive the emulator's runs, and the one clock its timing reads.

A run's state is a pure function of "now" read from a clock, so tests move time forward
with :class:`ManualClock` instead of sleeping, and demos speed real time up with
:class:`RealClock`.

Everything the emulator times itself (outages, stalls, rate-limit buckets, heartbeats) reads
:func:`loop_time`: the running event loop's clock, as the client's own waits and timeouts do.
For asyncio's loops that is ``time.monotonic()``; a test loop on virtual time moves both sides
of a test together.
"""

from __future__ import annotations

import time
from typing import Protocol

from .._clock import loop_time

__all__ = ["Clock", "ManualClock", "RealClock", "loop_time"]


class Clock(Protocol):
    """Anything called with no arguments that returns the time in seconds since the epoch.

    ``time.time`` is a clock; so are :class:`ManualClock` and :class:`RealClock`.
    """

    def __call__(self) -> float:
        """Return the current time in seconds since the Unix epoch."""
        ...


_DEFAULT_START = 1_776_000_000.0  # 2026-04-12T13:20:00Z: fixed so test output is stable


class ManualClock:
    """A clock that only moves when told to.

    Example:
        >>> clock = ManualClock(start=100.0)
        >>> clock.advance(2.5)
        >>> clock()
        102.5
    """

    __slots__ = ("_now",)

    def __init__(self, start: float = _DEFAULT_START) -> None:
        """Create the clock.

        Args:
            start: The initial time, in seconds since the Unix epoch.
        """
        self._now = float(start)

    def __call__(self) -> float:
        """Return the current time in seconds since the Unix epoch."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward.

        Args:
            seconds: How far to move; must not be negative.

        Raises:
            ValueError: If ``seconds`` is negative.
        """
        if seconds < 0:
            raise ValueError(f"cannot advance a clock by a negative amount ({seconds!r})")
        self._now += seconds

    def set(self, t: float) -> None:
        """Jump to an absolute time (backwards too, for tests of odd clocks).

        Args:
            t: The new time, in seconds since the Unix epoch.
        """
        self._now = float(t)

    def __repr__(self) -> str:
        return f"ManualClock(start={self._now!r})"


class RealClock:
    """Wall-clock time, optionally running faster (or slower) than real time.

    With ``speed=10`` a run planned to take 60 s finishes after 6 real seconds. Time starts
    at the real time when the clock is created and runs at ``speed`` from there.
    """

    __slots__ = ("_origin", "_speed")

    def __init__(self, speed: float = 1.0) -> None:
        """Create the clock.

        Args:
            speed: How many emulated seconds pass per real second; must be positive.

        Raises:
            ValueError: If ``speed`` is not positive.
        """
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed!r}")
        self._speed = float(speed)
        self._origin = time.time()

    @property
    def speed(self) -> float:
        """Emulated seconds per real second."""
        return self._speed

    @property
    def origin(self) -> float:
        """The real time (seconds since the Unix epoch) the clock was created at.

        Emulated and real time agree there; ``origin + (t - origin) / speed`` is the real
        time of emulated time ``t``.
        """
        return self._origin

    def __call__(self) -> float:
        """Return the current emulated time in seconds since the Unix epoch."""
        if self._speed == 1.0:
            return time.time()
        return self._origin + (time.time() - self._origin) * self._speed

    def __repr__(self) -> str:
        return f"RealClock(speed={self._speed!r})"
