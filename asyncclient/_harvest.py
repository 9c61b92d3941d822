"""Finished runs read from list pages instead of one GET each (behind watches).

A finished run's row in the list is its whole summary (the list page's own example shows a
completed row with every task's result); only a processing row is a stub plus ``null`` entries.
So when many of the runs a watch wants have finished, walking the list delivers them a hundred a
request instead of one GET each. This module owns that walk; the poller hands it the ids and
gets back, through two callbacks, the runs the pages settled and the ids left to GET.

The cost model. GETs cost one request per unresolved run. The walk costs about ``total / 100``
pages, known from one list call (the first page, which is read anyway); narrowed by the time
hint below, it costs the pages of the window the wanted runs lie in. The walk goes on only while
its estimated remaining pages cost less than the runs they are expected to settle (the wanted
runs still unresolved, times the share of finished rows seen so far that were complete), and
while the list requests spent stay within the runs settled plus a small allowance
(``1 + n // 50`` for ``n`` wanted runs): whatever the pages hold, a watch never spends more than
that allowance over one GET per run. It stops as soon as every wanted run is settled, the walk
has passed the window, or the rest can only be found by GET.

The time hint. A run id is a Mongo ObjectId whose first four bytes are its creation time, and
the list is newest first, so the wanted ids tell where in the list they lie: the walk skips the
newer rows above the window (a binary search over offsets) and stops below it. The hint is only
trusted as far as the pages confirm it: each row read compares its id's time with its
``createdAt``, and one disagreement turns the hint off for the rest of the walk (the
documentation's own example id decodes to 2024 beside a ``createdAt`` in 2026). Without the hint
the walk covers the whole list, still under the cost model; ids never met are resolved by GET,
so a lying id costs a request, never a run.

Completeness. A row is taken as the final run only when it is terminal (``completed`` or
``failed``) and its ``results`` has ``total`` entries, none ``null`` and none ``PENDING``.
Anything else (a processing row, a stub, a row the API one day trims) is handed back to be
resolved by GET, so the result is the same either way; when the finished rows turn out to be
stubs, the model stops the walk after the first page. With ``include_events=True`` rows carry
no events: a row seen finished is handed back as finished, for one GET with events.

Churn. Each stretch of the list is read with the anchored walk of :mod:`._pagination`, so runs
created during the walk (at the head) neither hide rows nor repeat them; a long walk is cut into
a few stretches read side by side, each ending where the next one began.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable

import anyio

from ._constants import LIST_PAGE_MAX
from ._exceptions import PredevError
from ._models import Run
from ._pagination import FetchPage, Walk

__all__ = ["Harvest", "id_time", "is_complete", "minted_since"]

MIN_RUNS = 2
"""Fewer wanted runs than this are cheaper to GET than to look for."""

HINT_SLACK = 5.0
"""Seconds an id's time may differ from its ``createdAt`` and still confirm the hint."""

SEGMENT_PAGES = 4
"""The fewest pages a stretch read side by side with others covers."""

Found = Callable[[Run], Awaitable[None]]
"""``found(row)``: a wanted run's row is its final state."""

Release = Callable[[str, bool], None]
"""``release(run_id, finished)``: resolve this wanted run by GET (``finished``: seen finished)."""

Processing = Callable[[Run], None]
"""``processing(row)``: a wanted run's row shows it processing (its first GET can wait)."""


def id_time(run_id: str) -> int:
    """The creation time an ObjectId carries: its first four bytes, in seconds since the epoch.

    Args:
        run_id: a validated run id (24 hexadecimal characters).

    Returns:
        The seconds (a hint only: nothing guarantees the id was minted when the run was).
    """
    return int(run_id[:8], 16)


def minted_since(run_ids: Iterable[str], since: float) -> bool:
    """Whether every id says it was minted at ``since`` or later (wall-clock seconds).

    :data:`HINT_SLACK` allows for the server's clock running behind ours. The watch uses it to
    tell runs submitted during the watch (which list scans take in) from older ones (which may
    have finished and are worth a look in the list). A lying id only moves a run from one way of
    being found to the other.
    """
    earliest = since - HINT_SLACK
    return all(id_time(run_id) >= earliest for run_id in run_ids)


def is_complete(row: Run) -> bool:
    """True when a list row is the final run: terminal, ``total`` results, none missing.

    Args:
        row: a run as a list page shows it.

    Returns:
        Whether the row can be delivered as the run (a ``GET`` would answer the same).
    """
    if not row.is_terminal or row.total < 1 or len(row.results) != row.total:
        return False
    return all(task is not None and not task.is_pending for task in row.results)


class _OutOfTime(Exception):
    """The deadline passed: stop reading, hand the rest back."""


def _created(row: Run) -> float:
    created = row.created_at
    return created.timestamp() if created is not None else -math.inf


class _Stretch:
    """One stretch of the list, walked from its start down to where the next one began."""

    __slots__ = ("end", "first", "last", "next", "ready", "stopped", "walk")

    def __init__(self, walk: Walk, end: int) -> None:
        self.walk = walk
        self.end = end  # the estimated offset where it stops
        self.last: list[Run] = []  # the rows of its last page
        self.stopped = False
        self.first: Run | None = None  # its first row, once read: where the one before stops
        self.ready = anyio.Event()  # set once ``first`` is known (or will never be)
        self.next: _Stretch | None = None


class Harvest:
    """One look for a set of runs in the list pages (see the module docstring).

    Args:
        fetch_page: reads one list page: ``fetch_page(limit, skip, status)``.
        run_ids: the wanted run ids (validated; duplicates are looked for once).
        rows: ``True`` to deliver complete rows as the runs; ``False`` (for
            ``include_events=True``) to only tell which runs are finished.
        parallel: how many stretches of the list may be read at once.
        page_size: runs per list request.
        deadline: when to stop reading, on anyio's clock (a read under way is cut; a delivery
            never is).

    Attributes:
        requests: list requests made.
        settled: wanted runs the pages settled (delivered, or seen finished when ``rows`` is
            ``False``).
        hint_trusted: whether the ids' times still agree with every ``createdAt`` read.
        hint_mismatches: rows read whose id's time disagreed with their ``createdAt``.
        total: the list's ``total`` as first read (``None`` before).
        rows_read: list rows read, wanted or not.
    """

    def __init__(
        self,
        fetch_page: FetchPage,
        run_ids: Iterable[str],
        *,
        rows: bool = True,
        parallel: int = 4,
        page_size: int = LIST_PAGE_MAX,
        deadline: float = math.inf,
    ) -> None:
        self._fetch_page = fetch_page
        self._deadline = deadline
        # Why a stretch stopped the walk; raised (a PredevError) once every stretch is back.
        self._error: Exception | None = None
        self._pending: dict[str, int] = {run_id: id_time(run_id) for run_id in run_ids}
        self._rows = rows
        self._parallel = max(1, parallel)
        self._page_size = page_size
        self._allowance = 1 + len(self._pending) // 50
        self._terminal_rows = 0
        self._useful_rows = 0
        self._stretches: list[_Stretch] = []
        self._knots: list[tuple[int, float]] = []  # (offset, createdAt) met while seeking
        self._found: Found | None = None
        self._release: Release | None = None
        self._processing: Processing | None = None
        self.requests = 0
        self.settled = 0
        self.hint_trusted = True
        self.hint_mismatches = 0
        self.total: int | None = None
        self.rows_read = 0
        # (createdAt, processing) of every row read: what the pages say of runs of that age.
        self._seen_rows: list[tuple[float, bool]] = []

    def __repr__(self) -> str:
        return (
            f"<Harvest pending={len(self._pending)} settled={self.settled} "
            f"requests={self.requests} hint_trusted={self.hint_trusted}>"
        )

    @property
    def processing_share(self) -> float:
        """How likely a run still :attr:`pending` is to be processing, as the pages tell.

        The evidence is the rows nearest in age to those runs: the rows read created no later
        than the newest of them (by their ids' times, while the hint holds), or, when fewer than
        half a page of rows is that old, the oldest half page read. Runs finish in about the
        order they started, so the newest rows (where runs still processing gather) say little
        about older runs. 1 when nothing was read: no evidence, every run may be processing.
        """
        rows = self._seen_rows
        if not rows:
            return 1.0
        if self.hint_trusted and self._pending:
            newest = max(self._pending.values()) + 1 + HINT_SLACK
            evidence = [processing for created, processing in rows if created <= newest]
        else:
            evidence = [processing for _, processing in rows]
        floor = max(1, self._page_size // 2)
        if len(evidence) < floor:
            evidence = [processing for _, processing in sorted(rows)[:floor]]
        return sum(evidence) / len(evidence)

    @property
    def pending(self) -> list[str]:
        """The wanted ids neither delivered nor handed back yet."""
        return list(self._pending)

    # -- the cost model ---------------------------------------------------------------------

    def _affordable(self) -> bool:
        """One more list request keeps the walk within its allowance over GET-per-run."""
        return self.requests + 1 <= self.settled + self._allowance

    def _yield_share(self) -> float:
        """The share of finished rows seen that settle a run (1 until one is seen)."""
        if self._terminal_rows == 0:
            return 1.0
        # No prior beyond "1 until one is seen": a page of stubs must not buy a search on hope.
        return self._useful_rows / self._terminal_rows

    def _worth(self, pages: float) -> bool:
        """Reading ``pages`` more costs less than the GETs it is expected to save."""
        return pages < self._yield_share() * len(self._pending)

    def _window(self) -> tuple[float, float] | None:
        """``(oldest, newest)`` createdAt the pending runs may have, while the hint holds."""
        if not self.hint_trusted or not self._pending:
            return None
        times = self._pending.values()
        return min(times) - HINT_SLACK, max(times) + 1 + HINT_SLACK

    # -- reading ----------------------------------------------------------------------------

    async def _read(self, walk: Walk) -> list[Run]:
        """The next batch of a walk, cut at the deadline."""
        self.requests += 1
        before = walk.requests
        try:
            with self._in_time():
                return await walk.next_batch()
        finally:
            # Re-reads of a page the list moved under count too.
            self.requests += walk.requests - before - 1
        raise _OutOfTime  # the deadline cut the read

    async def _probe(self, skip: int) -> list[Run]:
        """One page read outside any walk (a seek), then absorbed."""
        self.requests += 1
        rows: list[Run] | None = None
        with self._in_time():
            rows = (await self._fetch_page(self._page_size, skip, None)).runs
        if rows is None:
            raise _OutOfTime
        await self._absorb(rows)  # outside the scope: a delivery is never cut
        return rows

    def _in_time(self) -> anyio.CancelScope:
        """A scope that cuts a read at the deadline; it never holds a delivery."""
        if self._deadline == math.inf:
            return anyio.CancelScope()
        remaining = self._deadline - anyio.current_time()
        if remaining <= 0:
            raise _OutOfTime
        return anyio.move_on_after(remaining)

    async def _absorb(self, rows: list[Run]) -> None:
        assert self._found is not None
        assert self._release is not None
        for row in rows:
            created = row.created_at
            if created is not None:
                gap = created.timestamp() - id_time(row.id)
                if not -HINT_SLACK <= gap < 1 + HINT_SLACK:
                    self.hint_mismatches += 1
                    self.hint_trusted = False
            complete = is_complete(row)
            self.rows_read += 1
            self._seen_rows.append((_created(row), not row.is_terminal))
            if row.is_terminal:
                self._terminal_rows += 1
                if complete or not self._rows:
                    self._useful_rows += 1
            if self._pending.pop(row.id, None) is None:
                continue
            if not row.is_terminal:
                if self._processing is not None:
                    self._processing(row)
                else:
                    self._release(row.id, False)
            elif self._rows and complete:
                self.settled += 1
                await self._found(row)
            else:
                if not self._rows:
                    self.settled += 1  # one GET with events instead of two
                self._release(row.id, True)

    # -- the walk ---------------------------------------------------------------------------

    async def run(
        self, found: Found, release: Release, *, processing: Processing | None = None
    ) -> None:
        """Read the pages worth reading and report what they settle.

        Args:
            found: awaited with each wanted run whose row is complete (``rows=True``).
            release: called with each wanted run the pages cannot settle: seen processing
                (``finished=False``), or finished but incomplete or without events
                (``finished=True``).
            processing: called instead of ``release`` with each wanted run's row that shows it
                processing: the row says as much as a first GET would (the poller lets its
                first poll wait an interval).

        Ids in :attr:`pending` when it returns (or raises) were not met: resolve them by GET.
        At the deadline it returns: the rest is the caller's to resolve (or time out).

        Raises:
            PredevError: a list request failed (after the session layer's retries).
        """
        self._found, self._release, self._processing = found, release, processing
        try:
            await self._run()
        except _OutOfTime:
            return
        if isinstance(self._error, PredevError):
            raise self._error

    async def _run(self) -> None:
        if len(self._pending) < MIN_RUNS:
            return
        size = self._page_size
        head = Walk(self._fetch_page, status=None, page_size=size)
        first = await self._read(head)
        self.total = total = head.total or 0
        await self._absorb(first)
        if not first or not self._pending or head.done:
            return
        self._release_newer_than(_created(first[0]))
        window = self._window()
        start, reuse_head = len(first), True
        if window is not None and self._far_below(first, window[1]):
            # Every pending run is older than the first page, by pages: look for where they
            # begin rather than read down to them, if a search and the fewest pages that could
            # hold them cost less than their GETs.
            probes = math.ceil(math.log2(max(2.0, (total - len(first)) / size)))
            if self._worth(probes + math.ceil(len(self._pending) / size)):
                start, reuse_head = await self._seek(first, window[1], total), False
        if not self._pending:
            return
        window = self._window()
        end = total
        if window is not None:
            end = min(end, self._known_below(window[0], total))
        pages = math.ceil(max(0, end - start) / size)
        if pages == 0 or not self._worth(pages) or not self._affordable():
            return
        await self._walk(head if reuse_head else None, start, end)
        skipped_from = len(first) - 1
        if self._pending and not reuse_head and not self.hint_trusted and start > skipped_from:
            # The hint turned out wrong after the rows above the window were skipped: read them
            # too, down to where the walk began, if that still pays.
            top = math.ceil((start - skipped_from) / size)
            if self._worth(top) and self._affordable():
                await self._walk(None, skipped_from, start, below=self._stretches[0])

    def _release_newer_than(self, newest: float) -> None:
        """Ids newer than the head (created since, or lying) cannot be met below it: GET them."""
        if not self.hint_trusted:
            return
        assert self._release is not None
        late = [run_id for run_id, t in self._pending.items() if t > newest + HINT_SLACK]
        for run_id in late:
            del self._pending[run_id]
            self._release(run_id, False)

    def _rows_between(self, first: list[Run], newer: float, older: float) -> float:
        """How many rows lie between two times, at the pace the first page shows."""
        span = _created(first[0]) - _created(first[-1])
        if len(first) < 2 or not span > 0:
            return math.inf
        return (newer - older) * (len(first) - 1) / span

    def _far_below(self, first: list[Run], newest: float) -> bool:
        """The window starts more than two pages below the first page (or seems to)."""
        last = _created(first[-1])
        if last < newest:
            return False
        return self._rows_between(first, last, newest) > 2 * self._page_size

    async def _seek(self, first: list[Run], newest: float, total: int) -> int:
        """Search the offset just above the rows created before ``newest``.

        The first probe goes where the first page's pace puts ``newest``; the next ones halve
        the bracket (a binary search), so an uneven history costs a few more probes, no more.
        """
        size = self._page_size
        known_above = above = len(first) - 1
        below = total
        guess: float | None = above + self._rows_between(first, _created(first[-1]), newest)
        guess = guess - size / 2 if guess is not None else None
        while below - above > size and self.hint_trusted and self._pending:
            if not self._affordable():
                break
            if guess is not None and above < guess < below - 1:
                middle = int(guess)
            else:
                middle = (above + below) // 2
            guess = None
            rows = await self._probe(middle)
            if not rows:
                below = middle
                continue
            self._knots.append((middle + len(rows) - 1, _created(rows[-1])))
            if _created(rows[-1]) >= newest:
                above = middle + len(rows) - 1
            elif _created(rows[0]) < newest:
                below = middle
            else:
                above = middle
                break
        if not self.hint_trusted:
            return known_above
        return above

    def _known_below(self, oldest: float, total: int) -> int:
        """The first known offset whose row is older than ``oldest`` (``total`` if none)."""
        offsets = [offset for offset, t in self._knots if t < oldest]
        return min(offsets, default=total)

    async def _walk(
        self, head: Walk | None, start: int, end: int, *, below: _Stretch | None = None
    ) -> None:
        """Walk ``[start, end)`` (the estimate) as a few stretches read side by side.

        ``below`` is a stretch already walked that begins where this walk should stop.
        """
        size = self._page_size
        pages = math.ceil((end - start) / size)
        count = max(1, min(self._parallel, pages // SEGMENT_PAGES))
        length = math.ceil(pages / count) * size
        stretches: list[_Stretch] = []
        for index in range(count):
            begin = start + index * length
            if index == 0 and head is not None:
                walk = head
            else:
                walk = Walk(self._fetch_page, status=None, page_size=size, start=begin)
            stretch = _Stretch(walk, min(end, begin + length))
            if index == 0 and head is not None:
                stretch.ready.set()  # its first page is the one already read
            if stretches:
                stretches[-1].next = stretch
            stretches.append(stretch)
        stretches[-1].next = below
        self._stretches = stretches
        async with anyio.create_task_group() as task_group:
            for stretch in stretches:
                task_group.start_soon(self._run_stretch, stretch)

    def _remaining_pages(self) -> int:
        """The pages the stretches still walking are expected to read."""
        size = self._page_size
        window = self._window()
        pages = 0
        for stretch in self._stretches:
            if stretch.stopped or stretch.walk.done:
                continue
            rows: float = max(0, stretch.end - stretch.walk.position)
            last = stretch.last
            if window is not None and len(last) >= 2:
                # While the hint holds, the walk ends where the window does: at this page's pace.
                rows = min(rows, max(0, self._rows_between(last, _created(last[-1]), window[0])))
            pages += math.ceil(rows / size)
        return pages

    async def _run_stretch(self, stretch: _Stretch) -> None:
        walk = stretch.walk
        try:
            while self._pending and not walk.done and self._error is None:
                started = walk.requests > 0
                if started and stretch.next is not None:
                    await stretch.next.ready.wait()
                if not self._affordable() or (started and not self._worth(self._remaining_pages())):
                    return
                try:
                    rows = await self._read(walk)
                except (PredevError, _OutOfTime) as error:
                    # Kept, not raised: raising would cancel the other stretches, maybe in the
                    # middle of handing a run over.
                    self._error = self._error or error
                    return
                if stretch.first is None and not stretch.ready.is_set():
                    stretch.first = rows[0] if rows else None
                    stretch.ready.set()
                stretch.last = rows
                rows, reached = self._before_next(stretch, rows)
                await self._absorb(rows)
                window = self._window()
                if reached or (window is not None and rows and _created(rows[-1]) < window[0]):
                    return
        finally:
            stretch.stopped = True
            stretch.ready.set()  # never leave the stretch before waiting

    @staticmethod
    def _before_next(stretch: _Stretch, rows: list[Run]) -> tuple[list[Run], bool]:
        """The rows above where a later stretch began, and whether that point was reached."""
        following = stretch.next
        while following is not None and following.first is None:
            following = following.next
        if following is None or following.first is None:
            return rows, False
        bound = following.first
        bound_time = _created(bound)
        for index, row in enumerate(rows):
            if row.id == bound.id or _created(row) < bound_time:
                return rows[:index], True
        return rows, False
