"""When a watch polls each run: one heap of due runs and one timer, not a sleeping task per run.

Every watched run is a small :class:`Watched` record in a heap keyed by when it is next due. A
fixed pool of workers (the in-flight limit) takes due runs straight from the heap
(:meth:`RunSchedule.take_due`, or :meth:`RunSchedule.next_due` to wait for one); when none is due
they wait, and a timer task (:meth:`RunSchedule.timer`) wakes one of them when the earliest run
falls due. What a poll does with its run is the poller's business (``_polling``); this module
only knows when.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable, Iterable

import anyio
import anyio.lowlevel

__all__ = ["PARKED", "RunSchedule", "Watched", "timer_wait"]

PARKED = math.inf
"""The due time of a run that list scans are watching: only a scan (or its deadline) moves it."""


class Watched:
    """One watched run: when it is due, how its polls went, whether it was delivered."""

    __slots__ = (
        "added_at",
        "attempt",
        "deadline",
        "delivered",
        "due",
        "failures",
        "in_flight",
        "last_completed",
        "likely_processing",
        "natural_due",
        "needs_confirming_get",
        "run_id",
    )

    def __init__(self, run_id: str, added_at: float, deadline: float) -> None:
        self.run_id = run_id
        self.added_at = added_at
        self.deadline = deadline
        self.attempt = 0
        self.last_completed = -1
        self.failures = 0
        self.delivered = False
        # When the run is next polled; heap entries with another time are stale.
        self.due = added_at
        # When per-run polling alone would poll it; list scans push ``due`` past this.
        self.natural_due = added_at
        # Missing from a list scan, or seen finished: the next poll is the last one.
        self.needs_confirming_get = False
        self.in_flight = False
        # The odds that it is processing, as far as the watch can tell: 1 once seen processing
        # (and for runs just added); for runs list pages did not meet, the share of their rows
        # that were processing. A scan replaces a GET only if the run is still processing.
        self.likely_processing = 1.0


def timer_wait(delay: float) -> float:
    """How long a timer waits for something due in ``delay`` seconds: up to the next millisecond.

    uvloop's clock and timers count whole milliseconds. A wait that ends between two ticks may
    fire on the tick before its end, find its deadline not reached and re-arm at once, again and
    again until the clock ticks: a busy loop of up to a millisecond per wait. Rounded up to whole
    milliseconds (less a microsecond, so float rounding cannot push it past the tick), the wait
    ends on a tick at or after the due time; on asyncio's loop the run is polled under 1 ms late.
    """
    if delay == math.inf:
        return delay  # only parked runs: nothing to time
    return math.ceil(delay * 1000.0) / 1000.0 - 1e-6


class RunSchedule:
    """The heap of watched runs by due time, and the wake-ups of the workers that poll them.

    Args:
        now: the clock (the event loop's); the watch may swap in a cheaper reading of it.
    """

    __slots__ = ("_counter", "_heap", "_idle", "_wakeup", "now")

    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now
        self._heap: list[tuple[float, int, Watched]] = []
        self._counter = itertools.count()
        self._wakeup = anyio.Event()
        self._idle: deque[anyio.Event] = deque()

    def __repr__(self) -> str:
        return f"<RunSchedule entries={len(self._heap)} idle={len(self._idle)}>"

    def put(self, watched: Watched, due: float) -> None:
        """Make ``watched`` due at ``due`` (any earlier entry of it goes stale)."""
        watched.due = due
        heapq.heappush(self._heap, (due, next(self._counter), watched))
        if due <= self._heap[0][0]:
            self._wakeup.set()

    def park(self, watched: Watched) -> None:
        """Leave ``watched`` to the list scans (or the outage's end): only its deadline wakes it."""
        self.put(watched, min(PARKED, watched.deadline))

    def park_all(self, runs: Iterable[Watched]) -> None:
        """Park every run that is neither being polled nor owed its confirming GET."""
        for watched in runs:
            if watched.due != PARKED and not watched.in_flight and not watched.needs_confirming_get:
                self.park(watched)

    def release_postponed(self, runs: Iterable[Watched]) -> None:
        """Runs that list scans held back fall due when per-run polling alone would poll them."""
        for watched in runs:
            if watched.due > watched.natural_due:
                self.put(watched, min(watched.natural_due, watched.deadline))

    def nudge(self) -> None:
        """Wake the timer: new runs may be due."""
        self._wakeup.set()

    def _pop_due(self) -> Watched | None:
        heap = self._heap
        now = self.now()
        while heap and heap[0][0] <= now:
            due, _, watched = heapq.heappop(heap)
            # Stale entries: delivered, re-scheduled since, or being polled right now (the
            # poll under way schedules it again when it ends).
            if not watched.delivered and due == watched.due and not watched.in_flight:
                return watched
        return None

    def take_due(self) -> Watched | None:
        """The next due run if one is due now, else ``None``: a worker's fast path, no await.

        When more is due than this worker can take, it wakes an idle one.
        """
        watched = self._pop_due()
        if watched is not None:
            heap = self._heap
            if self._idle and heap and heap[0][0] <= self.now():
                self._idle.popleft().set()
        return watched

    async def next_due(self) -> Watched:
        """A worker's wait: the next due run, once one is due."""
        while True:
            watched = self.take_due()
            if watched is not None:
                return watched
            woken = anyio.Event()
            self._idle.append(woken)
            self._wakeup.set()  # the timer may now have a worker to hand the next run to
            await woken.wait()

    async def timer(self) -> None:
        """The timer task: when the earliest run falls due, wake one idle worker to take it."""
        heap = self._heap
        idle = self._idle
        while True:
            delay: float | None = None
            if heap and idle:
                delay = heap[0][0] - self.now()
                if delay <= 0:
                    idle.popleft().set()
                    await anyio.lowlevel.checkpoint()  # let it take the run before looking again
                    continue
            if self._wakeup.is_set():
                self._wakeup = anyio.Event()
            if delay is None:
                await self._wakeup.wait()  # nothing to time: wait for a run or an idle worker
            else:
                with anyio.move_on_after(timer_wait(delay)):
                    await self._wakeup.wait()
