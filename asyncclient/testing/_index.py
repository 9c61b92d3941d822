"""A key's runs by status, kept warm so that a page of a long list costs its rows.

List pages read a key's runs oldest first from the end (:func:`order_key`). A status filter
would cost the whole account on every page, so :class:`ProcessingRuns` keeps the runs still
processing with a heap of when each ends, and :class:`FilteredRuns` keeps any other filtered
list until a run changes status. No HTTP, no emulator: the emulator owns one of each per key.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, insort

from ._state import RunState

__all__ = ["FilteredRuns", "ProcessingRuns", "order_key"]


def order_key(run: RunState) -> tuple[int, str]:
    """How list pages order runs: creation time in milliseconds, then id (ascending).

    Args:
        run: The run.

    Returns:
        Its sort key.
    """
    return (run.created_ms, run.id)


def _ends(run: RunState) -> float:
    """When the run stops processing, in seconds since the epoch."""
    return run.created_at + run.end_offset


class FilteredRuns:
    """One key's runs matching one status filter, valid while no run changes status.

    Attributes:
        runs: The matching runs, oldest first.
        version: The emulator's run version they were filtered at.
        valid_from: The list holds from this time...
        valid_until: ...until this one (a run starts or stops processing there).
    """

    __slots__ = ("runs", "valid_from", "valid_until", "version")

    def __init__(
        self, runs: list[RunState], version: int, valid_from: float, valid_until: float
    ) -> None:
        """Keep a filtered list (see :meth:`filter`, which builds one)."""
        self.runs = runs
        self.version = version
        self.valid_from = valid_from
        self.valid_until = valid_until

    @classmethod
    def filter(cls, runs: list[RunState], status: str, now: float, version: int) -> FilteredRuns:
        """Filter a key's runs on ``status`` at ``now``, with the times the result holds.

        Args:
            runs: The key's runs, oldest first.
            status: The status to keep.
            now: The time, in seconds since the epoch.
            version: The emulator's run version (a new or finished run invalidates the list).

        Returns:
            The filtered list.
        """
        valid_from, valid_until = -math.inf, math.inf
        matching = []
        for run in runs:
            state = run.status_at(now)
            # A float rounding that disagrees with status_at leaves a bound on the wrong side
            # of ``now``, which only turns the cache off.
            if state == "processing":
                valid_until = min(valid_until, _ends(run))
            else:
                valid_from = max(valid_from, _ends(run))
            if state == status:
                matching.append(run)
        return cls(matching, version, valid_from, valid_until)

    def holds(self, now: float, version: int) -> bool:
        """Whether the list is still the filter's answer at ``now`` and ``version``.

        Args:
            now: The time, in seconds since the epoch.
            version: The emulator's run version.

        Returns:
            True if no run was created or finished early since, and no run changed status.
        """
        return self.version == version and self.valid_from <= now < self.valid_until


class ProcessingRuns:
    """One key's runs still processing, oldest first, with a heap of when each ends.

    A look at ``now`` drops the runs that ended since the last look: a page of the processing
    list costs its rows and the runs that finished meanwhile, not the whole account. Only a
    clock that goes back rebuilds it from every run.

    Attributes:
        examined: Runs looked at so far (the work the index saves is counted in tests).
    """

    __slots__ = ("ends", "examined", "last", "runs")

    def __init__(self) -> None:
        """Start with no runs."""
        self.runs: list[RunState] = []
        self.ends: list[tuple[float, int, str, RunState]] = []
        self.last = -math.inf
        self.examined = 0

    def add(self, run: RunState) -> None:
        """Index a new run.

        Args:
            run: The run.
        """
        insort(self.runs, run, key=order_key)
        self.moved(run)

    def moved(self, run: RunState) -> None:
        """The run's end changed (or it is new): its older heap entry goes stale.

        Args:
            run: The run.
        """
        heapq.heappush(self.ends, (_ends(run), run.created_ms, run.id, run))

    def at(self, now: float, every: list[RunState]) -> list[RunState]:
        """The runs processing at ``now``, oldest first.

        Args:
            now: The time, in seconds since the epoch.
            every: All the key's runs, oldest first (read only if the clock went back).

        Returns:
            The runs (the index's own list: read it, do not change it).
        """
        if now < self.last:
            self.examined += len(every)
            self.runs = [run for run in every if run.status_at(now) == "processing"]
            self.ends = [(_ends(r), r.created_ms, r.id, r) for r in self.runs]
            heapq.heapify(self.ends)
        self.last = now
        later = []
        ends = self.ends
        while ends and ends[0][0] <= now:
            entry = heapq.heappop(ends)
            run = entry[3]
            self.examined += 1
            if entry[0] != _ends(run):
                continue  # stale: the run's end moved, a newer entry stands for it
            if run.status_at(now) == "processing":
                later.append(entry)  # a float rounding: look again next time
                continue
            index = bisect_left(self.runs, order_key(run), key=order_key)
            if index < len(self.runs) and self.runs[index] is run:
                del self.runs[index]
        for entry in later:
            heapq.heappush(ends, entry)
        return self.runs
