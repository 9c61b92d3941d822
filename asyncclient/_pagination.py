"""The async paginator over every run: ``async for run in client.iter_runs()``.

The list endpoint pages by ``limit``/``skip`` over a newest-first order that moves while it is
walked: new runs push everything down, and runs leaving a ``status`` filter pull everything up. A
plain ``skip += limit`` loop then yields some runs twice and silently skips others.

This walker anchors on the oldest run it has seen instead of trusting offsets. Each page is
requested so that it should start just before the anchor, and it is only accepted when it provably
continues the walk: it was read from offset 0, it contains the anchor, or its first row is newer
than the anchor. A page that starts past the anchor (runs vanished before it) is re-read from
further up, and a page made only of newer runs (runs arrived at the head) is followed further down.
Only rows older than the anchor are yielded (rows created in the same millisecond are
de-duplicated by id), so:

* every run that exists for the whole walk and matches the filter for the whole walk is yielded
  exactly once, in newest-first order;
* runs created during the walk (newer than the walk's position) are not yielded;
* a run that leaves or joins the filter during the walk may or may not be yielded (once at most).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, replace

import anyio
import anyio.abc

from ._constants import LIST_PAGE_MAX
from ._exceptions import WalkStalledError
from ._models import Run, RunPage
from ._validation import check_int, validate_status_filter

__all__ = ["FetchPage", "RunIterator", "Walk"]

FetchPage = Callable[[int, int, "str | None"], Awaitable[RunPage]]
"""``fetch_page(limit, skip, status) -> RunPage``."""

_MIN_TIME = -math.inf


def _created(run: Run) -> float:
    """The run's place in the newest-first order, as a number (cheap to compare)."""
    created = run.created_at
    return created.timestamp() if created is not None else _MIN_TIME


@dataclass(frozen=True)
class _Anchor:
    """Where the walk stands: the last run it yielded, and where in the list it expects it.

    A value, replaced whenever the walk moves (:meth:`moved_to`) or re-estimates where the anchor
    now sits (:meth:`expected_at`). Before the first page there is no anchor run (``id`` is
    ``None``) and ``position`` is where the first page is read.

    Attributes:
        id: the last run yielded (``None`` before the first page).
        time: that run's place in the newest-first order (:func:`_created`).
        position: the offset the walk expects it at.
        same_time_ids: the runs already yielded that share ``time`` (ties are told apart by id).
    """

    id: str | None
    time: float
    position: int
    same_time_ids: frozenset[str] = frozenset()

    def continues(self, rows: list[Run], skip: int) -> bool:
        """Whether a page read at ``skip`` provably continues the walk from this anchor.

        It does when it was read from the top, when its first row is newer than the anchor (the
        anchor is on it or below it), or when it holds the anchor itself.
        """
        if skip == 0:
            return True
        if not rows:
            return False
        if _created(rows[0]) > self.time:
            return True
        return any(row.id == self.id for row in rows)

    def is_before(self, row: Run) -> bool:
        """Whether ``row`` comes after the anchor in the walk (older, or a tie not yet seen)."""
        created = _created(row)
        return created < self.time or (created == self.time and row.id not in self.same_time_ids)

    def moved_to(self, last: Run, position: int, batch: list[Run]) -> _Anchor:
        """The anchor after yielding ``batch``, whose last row ``last`` sits at ``position``."""
        last_time = _created(last)
        same = self.same_time_ids if last_time == self.time else frozenset()
        same = same.union(run.id for run in batch if _created(run) == last_time)
        return _Anchor(last.id, last_time, position, same | {last.id})

    def expected_at(self, position: int) -> _Anchor:
        """The same anchor, expected at another offset."""
        return replace(self, position=position)


class Walk:
    """The anchor-following page walk; one batch of never-seen runs per call.

    Used by :class:`RunIterator`, and by the poller and the harvest for their list scans. Its
    state is the :class:`_Anchor` and two estimates of how the list moves under it: ``_drift``
    (how far the list's total moved between the last two reads, which pushes the anchor down by
    as much) and ``_margin`` (how many rows above the anchor a read starts, widened each time the
    anchor turns up further from where it was expected).
    """

    # Re-reads in a row that may find nothing new before the walk gives up.
    MAX_STALLED_REQUESTS = 50

    def __init__(
        self, fetch_page: FetchPage, *, status: str | None, page_size: int, start: int = 0
    ) -> None:
        self._fetch_page = fetch_page
        self._status = status
        self._page_size = page_size
        # A walk that starts further down reads its first page there.
        self._anchor = _Anchor(None, _MIN_TIME, start)
        self._margin = 1
        self._last_total: int | None = None
        self._drift = 0
        self.done = False
        self.requests = 0

    async def _fetch(self, skip: int) -> RunPage:
        self.requests += 1
        page = await self._fetch_page(self._page_size, skip, self._status)
        if self._last_total is not None:
            # Runs arrive at the head and push the anchor down; runs that leave the filter may
            # pull it up. Expect the next read to see the same drift again.
            self._drift = page.total - self._last_total
        self._last_total = page.total
        return page

    @property
    def total(self) -> int | None:
        """The list's ``total`` as of the last page read."""
        return self._last_total

    @property
    def position(self) -> int:
        """The offset of the last run yielded, as of the last page read (the start before)."""
        return self._anchor.position

    async def next_batch(self) -> list[Run]:
        """The next runs of the walk (empty only when the walk is over)."""
        stalled = 0
        while not self.done:
            if stalled >= self.MAX_STALLED_REQUESTS:
                raise WalkStalledError(
                    f"the run list changed faster than it could be walked "
                    f"({stalled} reads in a row found nothing new)"
                )
            stalled += 1
            anchor = self._anchor
            if anchor.id is None:
                skip = anchor.position
                page = await self._fetch(skip)
                rows = page.runs
                batch = list(rows)
            else:
                skip = max(0, anchor.position + self._drift - self._margin)
                page = await self._fetch(skip)
                rows = page.runs
                if not anchor.continues(rows, skip):
                    # Runs vanished above the anchor: read again from further up.
                    back = max(self._margin * 2, self._page_size // 2, -self._drift)
                    self._anchor = anchor.expected_at(max(0, skip - back))
                    self._drift = 0
                    self._margin = min(self._page_size // 2, max(1, self._margin * 2))
                    continue
                batch = self._after_anchor(rows, skip)
            if not rows:
                self.done = True
                return batch
            # Reaching the end of the list: every run after the anchor is on this page.
            if len(rows) < self._page_size or not page.has_more:
                self.done = True
            if batch or anchor.id is None:
                self._anchor = anchor.moved_to(rows[-1], skip + len(rows) - 1, batch)
            elif _created(rows[-1]) >= anchor.time:
                # The whole page is newer than the anchor: runs arrived at the head; go down.
                self._anchor = anchor.expected_at(skip + len(rows) - 1 + self._margin)
                self._drift = max(self._drift, 0)
            if batch or self.done:
                return batch
        return []

    def _after_anchor(self, rows: list[Run], skip: int) -> list[Run]:
        """The rows of a page read at ``skip`` that come after the anchor; widens the margin."""
        anchor = self._anchor
        batch: list[Run] = []
        for index, row in enumerate(rows):
            if anchor.is_before(row):
                batch.append(row)
            elif row.id == anchor.id:
                # Where the anchor really was tells how far the list moved; widen the overlap.
                shift = (anchor.position + self._drift - skip) - index
                self._margin = min(self._page_size // 2, max(1, abs(shift) + 1))
        return batch


class _Prefetch:
    """One batch of the walk fetched in the background: a task and a one-slot stream.

    :meth:`run` (the task, started in the client's task group) sends the batch, or the error it
    met, into a stream of one slot; :meth:`result` receives it. :meth:`cancel` cancels the task,
    whether it has started or not, and closes the receiving end, so nothing waits on it.
    """

    def __init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[list[Run] | Exception](1)
        self._scope = anyio.CancelScope()

    async def run(self, walk: Walk) -> None:
        """The background task: one batch of ``walk`` (or its error) into the stream."""
        with self._send, self._scope:
            try:
                outcome: list[Run] | Exception = await walk.next_batch()
            except Exception as exc:  # handed to the consumer, which re-raises it
                outcome = exc
            with suppress(anyio.BrokenResourceError):  # the consumer left (cancel)
                self._send.send_nowait(outcome)

    async def result(self) -> list[Run]:
        """Wait for the batch; raise the error the fetch met, if it met one."""
        with self._receive:
            try:
                outcome = await self._receive.receive()
            except anyio.EndOfStream:  # cancelled from outside before it fetched anything
                return []
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def cancel(self) -> None:
        """Cancel the fetch (started or not) and stop listening for it."""
        self._scope.cancel()
        self._receive.close()

    def close(self) -> None:
        """Release both ends when the task was never started."""
        self._send.close()
        self._receive.close()


class RunIterator:
    """Every run of the key, newest first, as an async iterator (see :meth:`Client.iter_runs`).

    ``async for run in iterator`` yields :class:`Run` list rows; ``async for batch in
    iterator.pages()`` yields them a page at a time (as lists). When the client was entered with
    ``async with``, the next page is fetched while the current one is consumed (one page ahead at
    most). Breaking out of the loop cancels that fetch; :meth:`aclose` (or ``async with``) does so
    at once and deterministically.

    Attributes:
        requests: list requests made so far.
    """

    def __init__(
        self,
        fetch_page: FetchPage,
        *,
        status: str | None = None,
        page_size: int = LIST_PAGE_MAX,
        limit: int | None = None,
        task_group: anyio.abc.TaskGroup | None = None,
    ) -> None:
        self._prefetch: _Prefetch | None = None
        self._status = validate_status_filter(status)
        check_int("page_size", page_size, ge=2, le=LIST_PAGE_MAX)
        if limit is not None:
            check_int("limit", limit, ge=0)
        self._walk = Walk(fetch_page, status=self._status, page_size=page_size)
        self._remaining = limit
        self._task_group = task_group
        self._buffer: list[Run] = []
        self._index = 0
        self._closed = False
        self._iterating_pages = False

    @property
    def requests(self) -> int:
        """How many list requests the walk has made."""
        return self._walk.requests

    def __repr__(self) -> str:
        return f"<RunIterator status={self._status!r} requests={self.requests}>"

    def __aiter__(self) -> RunIterator:
        return self

    async def __anext__(self) -> Run:
        while self._index >= len(self._buffer):
            batch = await self._next_batch()
            if batch is None:
                raise StopAsyncIteration
            self._buffer, self._index = batch, 0
        run = self._buffer[self._index]
        self._index += 1
        return run

    async def pages(self) -> AsyncIterator[list[Run]]:
        """Yield the walk page by page: each list holds the runs not yielded before."""
        while True:
            batch = await self._next_batch()
            if batch is None:
                return
            yield batch

    async def _next_batch(self) -> list[Run] | None:
        if self._closed or self._remaining == 0:
            await self.aclose()
            return None
        if self._prefetch is not None:
            prefetch, self._prefetch = self._prefetch, None
            batch = await prefetch.result()
        elif self._walk.done:
            batch = []
        else:
            batch = await self._walk.next_batch()
        if self._remaining is not None:
            batch = batch[: self._remaining]
            self._remaining -= len(batch)
        if not batch and self._walk.done:
            await self.aclose()
            return None
        if not self._walk.done and self._remaining != 0 and self._task_group is not None:
            prefetch = _Prefetch()
            try:
                self._task_group.start_soon(prefetch.run, self._walk)
            except RuntimeError:  # the client's task group has ended: read the next page inline
                prefetch.close()
            else:
                self._prefetch = prefetch
        return batch

    async def aclose(self) -> None:
        """Stop the walk and cancel a page fetch that is under way."""
        self._closed = True
        self._cancel_prefetch()

    def _cancel_prefetch(self) -> None:
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is not None:
            prefetch.cancel()

    def __del__(self) -> None:
        # ``break`` out of ``async for`` drops the iterator without closing it.
        self._cancel_prefetch()

    async def __aenter__(self) -> RunIterator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
