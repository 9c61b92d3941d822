"""List scans: one walk of the ``processing`` list instead of a GET per watched run.

In the list-assisted strategies a watch reads every processing run of the key, a hundred a
request, on the polling cadence. A watched run the scan lists is still processing and needs no
GET; one it does not list has most likely finished and gets one confirming GET. :class:`Scanner`
holds what the scans know (when the next is due, the list's size, how they fared) and the cost
rule that decides whether a scan is worth its pages; the poller applies what a scan saw to its
runs. The scanner knows nothing of the poller.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Container, Iterable

import anyio
import anyio.lowlevel

from ._config import PollPolicy
from ._constants import LIST_PAGE_MAX
from ._exceptions import PredevError
from ._models import Run
from ._pagination import FetchPage, Walk
from ._scheduling import Watched, timer_wait
from ._testing_switch import scaled

__all__ = ["SCAN_FAILURES_BEFORE_GETS", "Scanner"]

SCAN_FAILURES_BEFORE_GETS = 3
"""Failed list scans in a row, while GETs work, before a watch polls runs one by one."""


class Scanner:
    """The list-scan state of one watch, and the reads it makes of the list.

    Args:
        fetch_page: reads one list page.
        policy: the watch's polling policy (its strategy and cadence).
        now: the clock (the event loop's).

    Attributes:
        watching: True while scans watch the runs (they stay parked until a scan misses them).
        total: how many runs the last scan found processing (``None`` before the first).
        next_at: when the next scan is due (``math.inf``: only :meth:`wake` starts one).
        attempt: scans started since the cadence last restarted.
        consecutive_failures: scans failed in a row since the last that worked.
        failures: scans failed in all.
        scans: scans made in all.
        requests: list pages read, by scans and by outage probes.
        page_seconds: how long the last scan took per page (``None`` before one worked).
        get_seconds: how long a GET of the watch takes, start to answer (a running mean; ``None``
            until one answered): what bounds how fast the workers clear a backlog.
    """

    __slots__ = (
        "_fetch_page",
        "_now",
        "_policy",
        "_wakeup",
        "attempt",
        "consecutive_failures",
        "failures",
        "get_seconds",
        "next_at",
        "page_seconds",
        "requests",
        "scans",
        "total",
        "watching",
    )

    def __init__(self, fetch_page: FetchPage, policy: PollPolicy, now: Callable[[], float]) -> None:
        self._fetch_page = fetch_page
        self._policy = policy
        self._now = now
        self._wakeup = anyio.Event()
        self.watching = False
        self.total: int | None = None
        self.next_at = math.inf
        self.attempt = 0
        self.consecutive_failures = 0
        self.failures = 0
        self.scans = 0
        self.requests = 0
        self.page_seconds: float | None = None
        self.get_seconds: float | None = None

    def __repr__(self) -> str:
        return f"<Scanner watching={self.watching} scans={self.scans} failures={self.failures}>"

    @property
    def failing(self) -> bool:
        """True when enough scans failed in a row that runs should be polled by GET instead."""
        return self.consecutive_failures >= SCAN_FAILURES_BEFORE_GETS

    def pages(self, watched_runs: int) -> int:
        """Pages one scan reads: the last scan's total, or (before one) the watched runs."""
        known = self.total if self.total is not None else watched_runs
        return max(1, -(-known // LIST_PAGE_MAX))

    def is_cheaper(self, due_gets: float, watched_runs: int) -> bool:
        """True when a scan costs fewer requests than the ``due_gets`` GETs it would replace.

        ``due_gets`` counts the GETs due before the next tick of runs likely processing (each
        weighted by its odds): a finished run needs its GET whatever a scan says.
        """
        if self._policy.strategy == "list":
            return True
        return self.pages(watched_runs) < due_gets

    def record_get(self, seconds: float) -> None:
        """A GET of the watch was answered after ``seconds``."""
        mean = self.get_seconds
        self.get_seconds = seconds if mean is None else mean + (seconds - mean) / 8

    def replaceable_gets(
        self, runs: Iterable[Watched], until: float, *, now: float | None = None
    ) -> float:
        """The GETs due by ``until`` that a scan would replace, each weighted by its run's odds
        of still processing: a GET in flight, or owed to confirm a finish, is not one of them.

        With ``now``, runs already queued for a GET that the workers take at once are left out
        too: those GETs go out before a scan could answer.
        """
        replaceable = 0.0
        queued = 0
        for w in runs:
            if w.needs_confirming_get or w.in_flight:
                continue
            if w.natural_due <= until:
                replaceable += w.likely_processing
            if now is not None and w.due <= now:
                queued += 1
        return max(0.0, replaceable - min(self._policy.max_in_flight, queued))

    def backlog_seconds(self, runs: Iterable[Watched], now: float) -> float:
        """Seconds the workers need for the GETs due already that a scan cannot replace (0 when
        there are none, or before any request was timed).

        The GETs a scan would replace go out only after those: GET-per-run would poll a run due
        behind the backlog once, after it, so a scan before then only guesses what that GET will
        find. Scans wait for the backlog (just in time).
        """
        # A confirming GET is owed whatever a scan says; a run due that may be processing is one
        # a scan would replace (as much as it is likely processing), not one to wait for.
        backlog = sum(
            1.0 if w.needs_confirming_get else 1.0 - w.likely_processing
            for w in runs
            if w.due <= now and not w.in_flight
        )
        # No GET answered yet: a list page, no lighter than a GET, stands in for one.
        seconds = self.get_seconds if self.get_seconds is not None else self.page_seconds
        if backlog < 1 or seconds is None:
            return 0.0
        return backlog * seconds / self._policy.max_in_flight

    def wake(self, at: float | None = None) -> None:
        """Make a scan due now, or by ``at`` (new runs to watch, or the API answers again)."""
        self.next_at = min(self.next_at, self._now() if at is None else at)
        self._wakeup.set()

    def start(self) -> None:
        """Scans watch the runs from now on, starting the cadence afresh."""
        self.watching = True
        self.attempt = 0

    async def wait_until_due(self) -> None:
        """Return once the next scan is due: at :attr:`next_at`, or earlier through :meth:`wake`."""
        while True:
            delay = self.next_at - self._now()
            if delay <= 0:
                await anyio.lowlevel.checkpoint()  # due already: still let the workers run
                return
            if self._wakeup.is_set():
                self._wakeup = anyio.Event()
            with anyio.move_on_after(timer_wait(delay)):
                await self._wakeup.wait()

    def tick(self, now: float) -> None:
        """A scan is due: set the one after it a polling interval from ``now``."""
        interval = scaled(self._policy.delay(self.attempt, random.random))
        self.attempt += 1
        self.next_at = now + interval

    def back_off(self, started: float) -> None:
        """After a failed scan begun at ``started``: stretch the interval, doubling per failure.

        A scan and a probing GET per tick must not outpace a healthy scan per tick.
        """
        interval = self.next_at - started
        self.next_at = started + interval * 2 ** min(self.consecutive_failures, 4)

    async def read(self, wanted: Container[str]) -> dict[str, Run]:
        """Walk the whole processing list once.

        Args:
            wanted: the run ids to keep rows for (the key's other runs only cost their page).

        Returns:
            The listed rows of the wanted runs, by id.

        Raises:
            PredevError: a page could not be read (counted in :attr:`failures`).
        """
        walk = Walk(self._fetch_page, status="processing", page_size=LIST_PAGE_MAX)
        seen: dict[str, Run] = {}
        started = self._now()
        try:
            while not walk.done:
                for row in await walk.next_batch():
                    if row.id in wanted:
                        seen[row.id] = row
        except PredevError:
            self.consecutive_failures += 1
            self.failures += 1
            raise
        finally:
            self.scans += 1
            self.requests += walk.requests
        self.total = walk.total
        self.consecutive_failures = 0
        self.page_seconds = (self._now() - started) / max(1, walk.requests)
        return seen

    async def probe(self) -> None:
        """Read one row of the processing list: it answers when the API is up, whatever any
        one run does.

        Raises:
            PredevError: the request failed.
        """
        self.requests += 1
        await self._fetch_page(1, 0, "processing")
