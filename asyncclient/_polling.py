"""The fan-out poller behind :meth:`Client.watch` and :meth:`Client.wait`.

One scheduler, not one sleeping task per run: every watched run is a small record in a heap keyed
by when it is next due. A fixed pool of workers (the in-flight limit) takes due runs straight from
the heap; when none is due they wait, and a timer task wakes one of them when the earliest run
falls due. Workers send updates into a bounded stream the consumer reads, so a slow consumer
blocks the workers: nothing is dropped and memory stays bounded. With list-assisted strategies a
scanner task reads the ``processing`` list, and the runs it sees stay parked in the heap until a
scan misses them. Runs that may have finished already are first looked for in the list pages
(see ``_harvest``): those pages settle what they can, and only the rest reach the heap. The
watch owns one task group; leaving it cancels everything.

Exactly once: a run's record is marked delivered before its terminal update is sent, and every
path that ends a run (finished, error, deadline) goes through that one step.

Outages: every outcome feeds an :class:`~._outage.OutageTracker`. While it says the API is down,
runs are held (only their deadlines wake them), no run is charged a failure, and a probe task
sends one request per capped interval, a GET of the run waiting longest or (every other time) a
one-row list page, so one run failing on its own cannot pass for an outage for long. The first
answer releases the runs, spread over one capped interval.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import anyio.abc
import anyio.lowlevel
from anyio import AsyncContextManagerMixin
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._concurrency import owned_task_group
from ._config import PollPolicy
from ._constants import LIST_PAGE_MAX
from ._exceptions import (
    APIUnavailableError,
    AuthenticationError,
    NotFoundError,
    PredevError,
    RateLimitError,
    WatchTimeoutError,
    is_outage,
)
from ._harvest import MIN_RUNS as HARVEST_MIN_RUNS
from ._harvest import Harvest
from ._models import Run
from ._outage import OutageTracker
from ._pagination import FetchPage, Walk
from ._testing_switch import scaled
from ._validation import validate_run_id

__all__ = ["RunUpdate", "Watcher"]

logger = logging.getLogger("asyncclient")

SCAN_FAILURES_BEFORE_GETS = 3
"""Failed list scans in a row, while GETs work, before a watch polls runs one by one."""

HARVEST_PARALLEL = 4
"""Stretches of the list a watch reads side by side when it reads finished runs from pages."""

_PARKED = math.inf
"""The due time of a run that list scans are watching: only a scan (or its deadline) moves it."""


FetchRun = Callable[[str, bool], Awaitable[Run]]
"""``fetch_run(run_id, include_events) -> Run``."""


@dataclass(frozen=True, slots=True)
class RunUpdate:
    """What a watch yields about one run.

    Attributes:
        run_id: the run this update is about.
        run: the run as last fetched (``None`` when ``error`` is set). In a final update it is
            ``completed`` or ``failed``; with ``include_events=True`` it carries the timelines.
        error: why the run could not be watched (``NotFoundError``, ``WatchTimeoutError``, or the
            error that outlived the retries); ``None`` otherwise.
        final: ``True`` for the one terminal update per run; ``False`` for progress updates.
    """

    run_id: str
    run: Run | None = None
    error: PredevError | None = None
    final: bool = True

    @property
    def ok(self) -> bool:
        """True when the run was fetched (``run`` is set) rather than failing to be watched."""
        return self.error is None


class _Watched:
    __slots__ = (
        "added_at",
        "attempt",
        "confirm",
        "deadline",
        "delivered",
        "due",
        "failures",
        "in_flight",
        "last_completed",
        "natural_due",
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
        # Absent from a list scan: the next poll is the confirming one.
        self.confirm = False
        self.in_flight = False


class Watcher(AsyncContextManagerMixin):
    """Watches many runs at once; use through :meth:`Client.watch`.

    ``async with client.watch(ids) as watcher: async for update in watcher: ...`` yields one
    final :class:`RunUpdate` per id, in the order runs finish (plus progress updates with
    ``progress=True``). Iteration ends when every id added so far has been delivered.

    Attributes:
        policy: the polling policy in force.
        polls: how many polls (GETs) the watch has made.
        scans: how many list scans the watch has made (list-assisted strategies).
        scan_failures: how many of them failed (their runs were polled by GET meanwhile).
        scan_requests: how many list pages those scans read.
        harvest_requests: list pages read to find runs that had already finished.
        harvested: runs those pages settled (delivered from their rows, or, with
            ``include_events=True``, seen finished and so fetched once instead of twice).
        outages: how many outages of the API (every recent request failing, whichever run it
            was for) the watch has met; see :attr:`unreachable_for`.
    """

    def __init__(
        self,
        fetch_run: FetchRun,
        run_ids: Iterable[str],
        *,
        fetch_page: FetchPage | None = None,
        include_events: bool = False,
        progress: bool = False,
        policy: PollPolicy | None = None,
    ) -> None:
        if not isinstance(include_events, bool):
            raise ValueError("include_events must be a bool")
        if not isinstance(progress, bool):
            raise ValueError("progress must be a bool")
        if policy is not None and not isinstance(policy, PollPolicy):
            raise ValueError(f"policy must be a PollPolicy, got {type(policy).__name__}")
        self.policy = policy or PollPolicy()
        self._fetch_run = fetch_run
        self._fetch_page = fetch_page
        if self.policy.strategy != "per-run" and fetch_page is None:
            raise ValueError(f"strategy {self.policy.strategy!r} needs a list endpoint")
        self._include_events = include_events
        self._progress = progress
        self._initial = self._validated(run_ids)
        self._seen: set[str] = set()
        self._heap: list[tuple[float, int, _Watched]] = []
        self._counter = itertools.count()
        self._undelivered = 0
        self._wakeup = anyio.Event()
        self._idle: deque[anyio.Event] = deque()
        # The event loop's clock (what anyio.current_time() reads), without the backend lookup on
        # every call: it is read several times per poll. aiohttp runs on asyncio only.
        self._now: Callable[[], float] = anyio.current_time
        self._task_group: anyio.abc.TaskGroup | None = None
        self._send: MemoryObjectSendStream[RunUpdate] | None = None
        self._receive: MemoryObjectReceiveStream[RunUpdate] | None = None
        self._finished = False
        self._watch_deadline = math.inf
        self._fatal: PredevError | None = None
        self._active: dict[str, _Watched] = {}
        self._scan_wakeup = anyio.Event()
        self._scan_attempt = 0
        self._scan_total: int | None = None
        self._next_scan_at = math.inf
        self._scanning = False
        self._scan_failures = 0
        self._harvests = fetch_page is not None and self.policy.strategy != "per-run"
        self._harvesting = False
        self.harvest_requests = 0
        self.harvested = 0
        self.polls = 0
        self.scans = 0
        self.scan_failures = 0
        self.scan_requests = 0
        self._outage = OutageTracker(
            interval=scaled(self.policy.max_delay), now=lambda: self._now()
        )
        self._outage_began_event = anyio.Event()

    def __repr__(self) -> str:
        return f"<Watcher pending={self._undelivered} polls={self.polls}>"

    @staticmethod
    def _validated(run_ids: Iterable[str]) -> list[str]:
        if isinstance(run_ids, (str, bytes)):
            raise ValueError("run_ids must be an iterable of run ids, not a single string")
        return [validate_run_id(run_id) for run_id in run_ids]

    @property
    def outages(self) -> int:
        """How many outages of the API the watch has met (ridden out, or riding out now)."""
        return self._outage.outages

    @property
    def unreachable_for(self) -> float | None:
        """Seconds the API has been unreachable so far, or ``None`` while it answers."""
        return self._outage.down_for()

    @property
    def pending(self) -> int:
        """Ids added whose final update the consumer has not received yet."""
        return self._undelivered

    def add(self, run_ids: Iterable[str]) -> int:
        """Watch more runs; ids already watched (or delivered) are ignored.

        Returns:
            How many ids were new.

        Raises:
            ValueError: an id is not 24 hexadecimal characters (nothing is added then).
            RuntimeError: the watch is not running (not entered, or already finished).
        """
        ids = self._validated(run_ids)
        if self._task_group is None or self._finished:
            raise RuntimeError("add() needs a running watch: use it inside `async with watch(...)`")
        return self._add(ids)

    def discard(self, run_ids: Iterable[str]) -> int:
        """Stop watching runs and forget them: no final update is owed for them any more, and
        a later ``add()`` watches them afresh (a long-lived watch shared by many consumers
        calls it as each one leaves, or takes its runs).

        Returns:
            How many of them were still pending (a run being read from list pages when it is
            discarded may still be delivered once).
        """
        dropped = 0
        for run_id in run_ids:
            self._seen.discard(run_id)
            watched = self._active.pop(run_id, None)
            if watched is not None and not watched.delivered:
                watched.delivered = True
                self._undelivered -= 1
                dropped += 1
        return dropped

    def _add(self, ids: list[str]) -> int:
        now = self._now()
        run_timeout = self.policy.run_timeout
        deadline = self._watch_deadline
        if run_timeout is not None:
            deadline = min(deadline, now + run_timeout)
        fresh = [run_id for run_id in dict.fromkeys(ids) if run_id not in self._seen]
        if not fresh:
            return 0
        self._seen.update(fresh)
        self._undelivered += len(fresh)
        batch = [_Watched(run_id, now, deadline) for run_id in fresh]
        if self._harvests and not self._harvesting and len(batch) >= HARVEST_MIN_RUNS:
            # Finished runs may be read from list pages, a hundred a request (see _harvest).
            self._harvesting = True
            assert self._task_group is not None
            self._task_group.start_soon(self._harvest, batch)
        else:
            self._admit(batch)
        return len(fresh)

    def _admit(self, batch: list[_Watched]) -> None:
        """Hand runs to the pollers (and to list scans, in the list-assisted strategies)."""
        now = self._now()
        fresh = [watched for watched in batch if not watched.delivered]
        first_look = now
        # A run a list page showed finished needs one GET, never a scan.
        if self.policy.strategy != "per-run" and any(not w.confirm for w in fresh):
            if self._scanning:
                # Scans are under way: the next one takes the new runs in (one missing from it
                # gets its confirming GET). Scanning again for every add() would read the whole
                # list per submitted run.
                first_look = _PARKED
            else:
                pending_gets = sum(1 for w in fresh if not w.confirm) + sum(
                    1
                    for w in self._active.values()
                    if w.natural_due <= now + self.policy.initial_delay
                )
                if self._scan_is_cheaper(pending_gets):
                    # A scan starts now: new runs wait for it instead of a GET each.
                    self._scanning = True
                    self._scan_attempt = 0
                    first_look = _PARKED
                self._next_scan_at = now
                self._scan_wakeup.set()
        for watched in fresh:
            self._active[watched.run_id] = watched
            # A run a list page showed finished is polled at once, whatever scans do.
            due = now if watched.confirm else first_look
            self._schedule(watched, min(due, watched.deadline))
        if fresh:
            self._wakeup.set()

    async def _harvest(self, batch: list[_Watched]) -> None:
        """Settle what list pages can of a batch; hand the rest to the pollers."""
        assert self._fetch_page is not None
        held = {watched.run_id: watched for watched in batch}
        harvest = Harvest(
            self._fetch_page,
            list(held),
            rows=not self._include_events,
            parallel=min(self.policy.max_in_flight, HARVEST_PARALLEL),
            deadline=min(watched.deadline for watched in batch),
        )

        async def found(row: Run) -> None:
            # Never under a deadline's scope: a cancelled send could not tell whether it went.
            watched = held.pop(row.id, None)
            if watched is not None:
                await self._deliver(watched, run=row)

        def release(run_id: str, finished: bool) -> None:
            watched = held.pop(run_id, None)
            if watched is not None:
                # Seen finished: the next poll is the last (with events, when asked for).
                watched.confirm = finished
                self._admit([watched])

        try:
            await harvest.run(found, release)
        except AuthenticationError as error:
            self._fail(error)
        except PredevError as error:
            logger.debug("reading finished runs from the list failed; polling them: %s", error)
        else:
            if harvest.requests:
                # The pages answered: whatever the tracker believed, the API is up.
                self._answered()
        finally:
            self._harvesting = False
            self.harvest_requests += harvest.requests
            self.harvested += harvest.settled
            self._admit(list(held.values()))

    def _scan_pages(self) -> int:
        known = self._scan_total if self._scan_total is not None else len(self._active)
        return max(1, -(-known // LIST_PAGE_MAX))

    def _schedule(self, watched: _Watched, due: float) -> None:
        watched.due = due
        heapq.heappush(self._heap, (due, next(self._counter), watched))
        if due <= self._heap[0][0]:
            self._wakeup.set()

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[Watcher]:
        """``async with client.watch(...) as watcher``: owns the pollers' task group."""
        if self._task_group is not None:
            raise RuntimeError("a watch can be entered once")
        self._send, self._receive = anyio.create_memory_object_stream[RunUpdate](
            self.policy.buffer_size
        )
        self._now = asyncio.get_running_loop().time
        try:
            # Our own cancellation is absorbed on leaving; a failure of the watch is raised below.
            async with owned_task_group() as task_group:
                self._task_group = task_group
                for _ in range(self.policy.max_in_flight):
                    task_group.start_soon(self._work)
                task_group.start_soon(self._dispatch)
                if self.policy.strategy != "per-run":
                    task_group.start_soon(self._scan_loop)
                task_group.start_soon(self._probe_loop)
                if self.policy.max_outage is not None:
                    task_group.start_soon(self._give_up_after, self.policy.max_outage)
                timeout = self.policy.timeout
                self._watch_deadline = self._now() + timeout if timeout is not None else math.inf
                self._add(self._initial)
                self._initial = []
                try:
                    yield self
                finally:
                    self._finished = True
        finally:
            self._send.close()
            self._receive.close()
        if self._fatal is not None:
            raise self._fatal

    def __aiter__(self) -> AsyncIterator[RunUpdate]:
        return self

    async def __anext__(self) -> RunUpdate:
        if self._receive is None:
            raise RuntimeError("iterate a watch inside `async with client.watch(...)`")
        if self._undelivered == 0:
            raise StopAsyncIteration
        update = await self._receive.receive()
        if update.final:
            self._undelivered -= 1
        return update

    async def _dispatch(self) -> None:
        """The timer: when the earliest run falls due, wake one idle worker to take it."""
        heap = self._heap
        idle = self._idle
        while True:
            delay: float | None = None
            if heap and idle:
                delay = heap[0][0] - self._now()
                if delay <= 0:
                    idle.popleft().set()
                    await anyio.lowlevel.checkpoint()  # let it take the run before looking again
                    continue
            if self._wakeup.is_set():
                self._wakeup = anyio.Event()
            if delay is None:
                await self._wakeup.wait()  # nothing to time: wait for a run or an idle worker
            else:
                with anyio.move_on_after(_timer_wait(delay)):
                    await self._wakeup.wait()

    def _pop_due(self) -> _Watched | None:
        heap = self._heap
        now = self._now()
        while heap and heap[0][0] <= now:
            due, _, watched = heapq.heappop(heap)
            # Stale entries: delivered, re-scheduled since, or being polled right now (the
            # poll under way schedules it again when it ends).
            if not watched.delivered and due == watched.due and not watched.in_flight:
                return watched
        return None

    async def _work(self) -> None:
        """One of ``max_in_flight`` workers: poll due runs; when none is due, wait to be woken."""
        heap = self._heap
        idle = self._idle
        while True:
            watched = self._pop_due()
            if watched is None:
                woken = anyio.Event()
                idle.append(woken)
                self._wakeup.set()  # the timer may now have a worker to hand the next run to
                await woken.wait()
                continue
            if idle and heap and heap[0][0] <= self._now():
                idle.popleft().set()  # more is due than this worker can take: wake another
            watched.in_flight = True
            try:
                await self._poll(watched)
            finally:
                watched.in_flight = False

    async def _poll(self, watched: _Watched, *, probe: bool = False) -> None:
        outage = self._outage
        if outage.down and not probe:
            if self._now() >= watched.deadline:
                error = WatchTimeoutError(watched.run_id, "still processing at its deadline")
                await self._deliver(watched, error=error)
            else:
                self._hold(watched)  # the API is down: only the probe task sends requests
            return
        self.polls += 1
        run: Run | None = None
        sent_at = self._now()
        try:
            if watched.deadline == math.inf and not (watched.confirm or self._include_events):
                run = await self._fetch_run(watched.run_id, False)  # _fetch's common case, inline
            elif watched.deadline == math.inf:
                run = await self._fetch(watched)
            else:
                with anyio.move_on_after(watched.deadline - self._now()):
                    run = await self._fetch(watched)
        except AuthenticationError as error:
            self._fail(error)  # the key is wrong for every run: stop the whole watch
            return
        except NotFoundError as error:
            self._answered()
            now = self._now()
            if now - watched.added_at < self.policy.not_found_grace and now < watched.deadline:
                self._reschedule(watched, now)
            else:
                await self._deliver(watched, error=error)
            return
        except PredevError as error:
            if isinstance(error, RateLimitError):
                # The API answered, asking to slow down: a rate limit slows a run (the client's
                # rate controller paces it), never fails it, and is no sign of an outage.
                self._answered()
                self._reschedule(watched, self._now())
                return
            if not is_outage(error):
                self._answered()
                await self._deliver(watched, error=error)
                return
            charged, began = outage.failed(error, sent_at)
            if charged:  # the request before it was answered: this run fails on its own
                watched.failures += 1
            if watched.failures >= self.policy.max_failed_polls:
                await self._deliver(watched, error=error)
            elif began:
                self._outage_began(error)
                self._hold(watched)
            elif outage.down:
                self._hold(watched)
            else:
                self._reschedule(watched, self._now())
            return
        watched.failures = 0
        if run is not None:
            self._answered()
        if self._scan_failures >= SCAN_FAILURES_BEFORE_GETS and self._scanning:
            # GETs work while list scans fail: poll runs one by one until a scan works again.
            self._scanning = False
            self._release_postponed()
        if run is not None and run.is_terminal:
            await self._deliver(watched, run=run)
            return
        now = self._now()
        if run is None or now >= watched.deadline:
            await self._deliver(
                watched,
                error=WatchTimeoutError(watched.run_id, "still processing at its deadline"),
            )
            return
        if self._progress and run.completed != watched.last_completed:
            watched.last_completed = run.completed
            if not watched.delivered:
                await self._put(RunUpdate(watched.run_id, run=run, final=False))
        self._reschedule(watched, now)

    async def _fetch(self, watched: _Watched) -> Run:
        run_id = watched.run_id
        if watched.confirm and self._include_events:
            # Absent from a scan: most likely finished, so one GET with events confirms it.
            watched.confirm = False
            return await self._fetch_run(run_id, True)
        watched.confirm = False
        run = await self._fetch_run(run_id, False)
        if run.is_terminal and self._include_events:
            # Events are large: fetch them once, when the run can no longer change.
            run = await self._fetch_run(run_id, True)
        return run

    def _fail(self, error: PredevError) -> None:
        if self._fatal is None:
            self._fatal = error
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()

    def _reschedule(self, watched: _Watched, now: float) -> None:
        if watched.delivered:
            return
        natural = now + scaled(self.policy.delay(watched.attempt, random.random))
        watched.attempt += 1
        watched.natural_due = natural
        due = natural
        if self._scanning:
            # Scans are watching it: no GET until a scan misses it, a scan fails, or scans stop
            # (each of those schedules it again). Only its deadline still wakes it.
            due = _PARKED
        self._schedule(watched, min(due, watched.deadline))

    async def _deliver(
        self, watched: _Watched, *, run: Run | None = None, error: PredevError | None = None
    ) -> None:
        if watched.delivered:
            return
        watched.delivered = True
        self._active.pop(watched.run_id, None)
        await self._put(RunUpdate(watched.run_id, run=run, error=error))

    async def _put(self, update: RunUpdate) -> None:
        assert self._send is not None
        await self._send.send(update)

    async def _scan_loop(self) -> None:
        """Decide, tick by tick, whether a list scan beats per-run GETs, and scan when it does."""
        self._next_scan_at = self._now()
        while True:
            delay = self._next_scan_at - self._now()
            if delay > 0:
                if self._scan_wakeup.is_set():
                    self._scan_wakeup = anyio.Event()
                with anyio.move_on_after(_timer_wait(delay)):
                    await self._scan_wakeup.wait()
                continue
            now = self._now()
            interval = scaled(self.policy.delay(self._scan_attempt, random.random))
            self._scan_attempt += 1
            self._next_scan_at = now + interval
            if not self._active:
                self._scanning = False
                self._next_scan_at = math.inf  # add() wakes us up
                continue
            due_gets = sum(
                1
                for w in self._active.values()
                if w.natural_due <= self._next_scan_at and not w.confirm
            )
            if self._scan_is_cheaper(due_gets):
                self._scanning = True
                if self._outage.down:
                    self._next_scan_at = math.inf  # the probe task probes; its answer wakes us
                    continue
                await self._scan(now)
            elif self._scanning:
                self._scanning = False
                self._release_postponed()

    def _scan_is_cheaper(self, due_gets: int) -> bool:
        if self.policy.strategy == "list":
            return True
        return self._scan_pages() < due_gets

    def _park_all(self) -> None:
        for watched in self._active.values():
            if watched.due != _PARKED and not watched.in_flight and not watched.confirm:
                self._schedule(watched, min(_PARKED, watched.deadline))

    def _release_postponed(self) -> None:
        for watched in self._active.values():
            if watched.due > watched.natural_due:
                self._schedule(watched, min(watched.natural_due, watched.deadline))

    async def _scan(self, started: float) -> None:
        """Read every processing run; runs seen need no GET, runs missing get a confirming one."""
        assert self._fetch_page is not None
        walk = Walk(self._fetch_page, status="processing", page_size=LIST_PAGE_MAX)
        seen: dict[str, Run] = {}
        active = self._active
        try:
            while not walk.done:
                for row in await walk.next_batch():
                    if row.id in active:  # the key's other runs only cost their page
                        seen[row.id] = row
        except AuthenticationError as error:
            self._fail(error)
            return
        except PredevError as error:
            # Most likely an outage that GETs would hit too: keep runs parked until the next
            # scan rather than turning one failed request into a GET per run, and let one run
            # probe with a GET. If the GET works while the list does not, polling turns to
            # GETs (see _poll).
            logger.debug("list scan failed, probing with one GET: %s", error)
            self._scan_failures += 1
            self.scan_failures += 1
            now = self._now()
            if is_outage(error):
                if self._outage.failed(error, started)[1]:
                    self._outage_began(error)
            else:
                self._answered()
            if self._outage.down:
                self._next_scan_at = math.inf  # the probe task probes; its answer wakes us
                self._park_all()
                return
            # Back off: a scan and a probe per tick must not outpace a healthy scan per tick.
            interval = self._next_scan_at - started
            self._next_scan_at = started + interval * 2 ** min(self._scan_failures, 4)
            self._park_all()
            probe = next((w for w in self._active.values() if not w.in_flight), None)
            if probe is not None:
                self._schedule(probe, now)
            return
        finally:
            self.scans += 1
            self.scan_requests += walk.requests
        self._scan_total = walk.total
        self._scan_failures = 0
        self._answered()
        now = self._now()
        for watched in list(self._active.values()):
            if watched.delivered or watched.added_at > started:
                continue  # added during the scan: it may not be listed yet
            if watched.confirm or watched.in_flight:
                continue  # a GET of its own is already on its way
            listed = seen.get(watched.run_id)
            if listed is None:
                watched.confirm = True
                self._schedule(watched, now)
                continue
            if self._progress and listed.completed != watched.last_completed:
                watched.last_completed = listed.completed
                await self._put(RunUpdate(watched.run_id, run=listed, final=False))
            self._reschedule(watched, now)

    # -- outages ---------------------------------------------------------------------------

    def _answered(self) -> None:
        seconds = self._outage.answered()
        if seconds is not None:
            self._outage_ended(seconds)

    def _outage_began(self, error: PredevError) -> None:
        """Every recent request failed: hold every run; from now on one probe per interval."""
        logger.warning(
            "the API is unreachable (%s); probing every %g s until it answers",
            error,
            self.policy.max_delay,
        )
        for watched in self._active.values():
            if not watched.in_flight:
                self._schedule(watched, min(_PARKED, watched.deadline))
        self._outage_began_event.set()

    def _hold(self, watched: _Watched) -> None:
        """Park a run for the outage: only its deadline (or the outage's end) wakes it."""
        if watched.delivered:
            return
        # To the back of the probe order, so that probes go round the runs.
        watched.natural_due = self._now() + self.policy.max_delay
        self._schedule(watched, min(_PARKED, watched.deadline))

    async def _probe_loop(self) -> None:
        """While the API is down, send one request per interval and nothing else."""
        outage = self._outage
        while True:
            if not outage.down:
                if self._outage_began_event.is_set():
                    self._outage_began_event = anyio.Event()
                await self._outage_began_event.wait()
                continue
            delay = outage.next_probe_at - self._now()
            if delay > 0:
                await anyio.sleep(delay)
                continue  # the outage may have ended meanwhile
            probes = outage.claim_probe()
            waiting = [w for w in self._active.values() if not w.in_flight]
            if self._fetch_page is not None and (probes % 2 == 0 or not waiting):
                await self._probe_list()
            elif waiting:
                watched = min(waiting, key=lambda w: w.natural_due)
                watched.in_flight = True
                try:
                    await self._poll(watched, probe=True)
                finally:
                    watched.in_flight = False

    async def _probe_list(self) -> None:
        """One row of the list: answers when the API is up, whatever any one run does."""
        assert self._fetch_page is not None
        self.scan_requests += 1
        sent_at = self._now()
        try:
            await self._fetch_page(1, 0, "processing")
        except AuthenticationError as error:
            self._fail(error)
        except PredevError as error:
            if is_outage(error):
                self._outage.failed(error, sent_at)
            else:
                self._answered()
        else:
            self._answered()

    def _outage_ended(self, seconds: float) -> None:
        """The API answers again: release the runs over one capped interval, not all at once."""
        logger.info("the API answers again, after %.1f s unreachable", seconds)
        now = self._now()
        spread = scaled(self.policy.max_delay)
        for watched in self._active.values():
            if watched.in_flight or watched.due <= now:
                continue
            # The healthy cadence: each run once per capped interval, so no storm.
            watched.natural_due = now + spread * random.random()
            if not self._scanning:
                self._schedule(watched, min(watched.natural_due, watched.deadline))
        if self.policy.strategy != "per-run":
            self._next_scan_at = now  # one scan finds what finished meanwhile
            self._scan_wakeup.set()

    async def _give_up_after(self, max_outage: float) -> None:
        """Stop the watch with APIUnavailableError once an outage outlasts ``max_outage``."""
        outage = self._outage
        while True:
            since = outage.down_since
            if since is None:
                if self._outage_began_event.is_set():
                    self._outage_began_event = anyio.Event()
                await self._outage_began_event.wait()
                continue
            remaining = since + max_outage - self._now()
            if remaining <= 0:
                last = outage.last_error
                error = APIUnavailableError(self._now() - since, last)
                error.__cause__ = last
                self._fail(error)
                return
            await anyio.sleep(remaining)


def _timer_wait(delay: float) -> float:
    """How long the timer waits for a run due in ``delay`` seconds: up to the next millisecond.

    uvloop's clock and timers count whole milliseconds. A wait that ends between two ticks may
    fire on the tick before its end, find its deadline not reached and re-arm at once, again and
    again until the clock ticks: a busy loop of up to a millisecond per wait. Rounded up to whole
    milliseconds (less a microsecond, so float rounding cannot push it past the tick), the wait
    ends on a tick at or after the due time; on asyncio's loop the run is polled under 1 ms late.
    """
    if delay == math.inf:
        return delay  # only parked runs: nothing to time
    return math.ceil(delay * 1000.0) / 1000.0 - 1e-6
