"""Telling an outage of the API from a run's own failure, and pacing the watch through one.

A watch sends many requests for many runs. When every recent request failed with a transient
error (connection refused, timeout, 5xx, 429: each already retried by the session layer), whichever
run it was for, the API is down: that is the API's state, not the runs'. When one run's requests
fail while the others' succeed, that run fails on its own.

The rule, kept deliberately simple so that it can be stated in one sentence: a transient failure
is charged to its run only when the request that completed just before it (for any run) got an
answer. In an outage the first failure may be charged (nothing tells it from a run's own failure
yet); every failure after it follows a failure and is not. A run that fails among runs that
succeed follows answers and is charged every time, so it still ends after ``max_failed_polls``.

After :data:`OUTAGE_AFTER` transient failures in a row, spanning at least one ``interval`` from
when the first of them was sent (so a burst of unlucky failures among many answers is not an
outage, while a black hole, whose requests fail only at their timeout, is known at its third
failure), the watch is *down*: it stops polling
runs and sends one probe per ``interval`` (the polling policy's ``max_delay``), one after the
other, so a black hole holds one request, not one per run. The first answer ends the outage.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ._exceptions import PredevError

__all__ = ["OUTAGE_AFTER", "OutageTracker"]

OUTAGE_AFTER = 3
"""Transient failures in a row, whichever runs they were for, that make an outage (when they
span at least one probe interval)."""


class OutageTracker:
    """What one watch knows about the API as a whole: answering, or down since when.

    Args:
        interval: seconds between probes while the API is down.
        now: the clock (the event loop's).
    """

    __slots__ = (
        "_interval",
        "_next_probe_at",
        "_now",
        "_streak_began",
        "down_since",
        "last_error",
        "outages",
        "probes",
        "streak",
    )

    def __init__(self, *, interval: float, now: Callable[[], float]) -> None:
        self._interval = interval
        self._now = now
        self.streak = 0
        """Transient failures in a row since the last answer."""
        self._streak_began = math.inf
        self.down_since: float | None = None
        """When the first request of the failures that made the outage was sent; else ``None``."""
        self.last_error: PredevError | None = None
        """The latest transient failure of the current outage."""
        self.outages = 0
        """How many outages the watch has ridden out or is riding out."""
        self.probes = 0
        """Requests sent as probes while the API was down."""
        self._next_probe_at = 0.0

    def __repr__(self) -> str:
        return f"<OutageTracker down={self.down} streak={self.streak} probes={self.probes}>"

    @property
    def down(self) -> bool:
        """True while the API is taken to be down."""
        return self.down_since is not None

    @property
    def next_probe_at(self) -> float:
        """When the next probe may go (meaningful while :attr:`down`)."""
        return self._next_probe_at

    def down_for(self) -> float | None:
        """Seconds the API has been down, or ``None`` while it answers."""
        if self.down_since is None:
            return None
        return max(0.0, self._now() - self.down_since)

    def answered(self) -> float | None:
        """Record an answer (any HTTP answer that is not a transient failure).

        Returns:
            The seconds the API was down when this answer ended an outage, else ``None``.
        """
        self.streak = 0
        self._streak_began = math.inf
        if self.down_since is None:
            return None
        seconds = max(0.0, self._now() - self.down_since)
        self.down_since = None
        self.last_error = None
        return seconds

    def failed(self, error: PredevError, sent_at: float) -> tuple[bool, bool]:
        """Record a transient failure of a request sent at ``sent_at``.

        Returns:
            ``(charged, began)``: whether the failure counts against its run (the request before
            it got an answer), and whether it started an outage.
        """
        now = self._now()
        charged = self.streak == 0 and self.down_since is None
        if self.streak == 0:
            # From when the first failing request left: a black hole fails only at its timeout.
            self._streak_began = min(sent_at, now)
        self.streak += 1
        began = False
        if self.down_since is not None:
            self.last_error = error
        elif self.streak >= OUTAGE_AFTER and now - self._streak_began >= self._interval:
            self.down_since = self._streak_began
            self.last_error = error
            self.outages += 1
            self._next_probe_at = now + self._interval
            began = True
        return charged, began

    def claim_probe(self) -> int:
        """Take the probe slot (while down): the next one is an interval from now.

        Returns:
            How many probes have been claimed, this one included.
        """
        self._next_probe_at = self._now() + self._interval
        self.probes += 1
        return self.probes

    def overdue(self, max_outage: float | None) -> bool:
        """True when the API has been down for longer than ``max_outage`` seconds."""
        down_for = self.down_for()
        return max_outage is not None and down_for is not None and down_for > max_outage
