"""The fan-out poller behind :meth:`Client.watch` and :meth:`Client.wait`.

One scheduler, not one sleeping task per run: every watched run is a small record in a heap keyed
by when it is next due, and a fixed pool of workers (the in-flight limit) polls runs as they fall
due (see ``_scheduling``). Workers send updates into a bounded stream the consumer reads, so a
slow consumer blocks the workers: nothing is dropped and memory stays bounded. With list-assisted
strategies a scanner task reads the ``processing`` list (see ``_scanning``), and the runs it sees
stay parked in the heap until a scan misses them. Runs that may have finished already are first
looked for in the list pages (see ``_harvest``): those pages settle what they can, and only the
rest reach the heap. The watch owns one task group; leaving it cancels everything.

Exactly once: a run's record is marked delivered before its terminal update is sent, and every
path that ends a run (finished, error, deadline) goes through that one step.

Outages: every outcome feeds an :class:`~._outage.OutageTracker`; while it says the API is down,
an :class:`~._probing.OutageProber` holds the runs and probes (see ``_probing``).

Length: a little over the house's 600 lines, for one concern: the watch's own
bookkeeping (its records, the exactly-once delivery, and what the answer of a GET, a scan or a
page does to a run). What stands alone (timing, scans and their cost rule, outages, the page
harvest) lives in its own module; splitting the rest would hand the watcher's state to callbacks.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
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
from ._exceptions import (
    AuthenticationError,
    NotFoundError,
    PredevError,
    RateLimitError,
    WatchTimeoutError,
    is_outage,
)
from ._harvest import MIN_RUNS as HARVEST_MIN_RUNS
from ._harvest import Harvest, minted_since
from ._models import Run
from ._outage import OutageTracker
from ._pagination import FetchPage
from ._probing import OutageProber
from ._scanning import Scanner
from ._scheduling import PARKED, RunSchedule, Watched
from ._testing_switch import scaled
from ._validation import check_bool, validate_run_id

__all__ = ["RunUpdate", "Watcher"]

logger = logging.getLogger("asyncclient")

HARVEST_PARALLEL = 4
"""Stretches of the list a watch reads side by side when it reads finished runs from pages."""
_BACKLOG_RECHECK = 0.001
"""The shortest wait before the scan loop looks at a backlog of GETs again (seconds)."""

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


class Watcher(AsyncContextManagerMixin):
    """Watches many runs at once; use through :meth:`Client.watch`.

    ``async with client.watch(ids) as watcher: async for update in watcher: ...`` yields one
    final :class:`RunUpdate` per id, in the order runs finish (plus progress updates with
    ``progress=True``). Iteration ends when every id added so far has been delivered.

    Attributes:
        policy: the polling policy in force.
        polls: how many polls (GETs) the watch has made.
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
        check_bool("include_events", include_events)
        check_bool("progress", progress)
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
        self._undelivered = 0
        # The event loop's clock (what anyio.current_time() reads), without the backend lookup on
        # every call: it is read several times per poll. aiohttp runs on asyncio only.
        self._now: Callable[[], float] = anyio.current_time
        self._runs = RunSchedule(anyio.current_time)
        self._task_group: anyio.abc.TaskGroup | None = None
        self._send: MemoryObjectSendStream[RunUpdate] | None = None
        self._receive: MemoryObjectReceiveStream[RunUpdate] | None = None
        self._finished = False
        self._watch_deadline = math.inf
        self._fatal: PredevError | None = None
        self._active: dict[str, Watched] = {}
        self._scanner: Scanner | None = None
        if fetch_page is not None:
            self._scanner = Scanner(fetch_page, self.policy, lambda: self._now())
        self._harvests = fetch_page is not None and self.policy.strategy != "per-run"
        self._harvesting = False
        self._started_at = math.inf  # wall-clock seconds when the watch was entered
        self.harvest_requests = 0
        self.harvested = 0
        self.polls = 0
        self._outage = OutageTracker(
            interval=scaled(self.policy.max_delay), now=lambda: self._now()
        )
        self._prober = OutageProber(
            self._outage,
            self.policy,
            runs=self._active,
            schedule=self._runs,
            scanner=self._scanner,
            poll=lambda watched: self._poll(watched, probe=True),
            abort=self._abort,
        )

    def __repr__(self) -> str:
        return f"<Watcher pending={self._undelivered} polls={self.polls}>"

    @staticmethod
    def _validated(run_ids: Iterable[str]) -> list[str]:
        if isinstance(run_ids, (str, bytes)):
            raise ValueError("run_ids must be an iterable of run ids, not a single string")
        return [validate_run_id(run_id) for run_id in run_ids]

    @property
    def scans(self) -> int:
        """How many list scans the watch has made (list-assisted strategies)."""
        return self._scanner.scans if self._scanner is not None else 0

    @property
    def scan_failures(self) -> int:
        """How many list scans failed (their runs were polled by GET meanwhile)."""
        return self._scanner.failures if self._scanner is not None else 0

    @property
    def scan_requests(self) -> int:
        """How many list pages the scans (and the outage probes) read."""
        return self._scanner.requests if self._scanner is not None else 0

    @property
    def _scans_watching(self) -> bool:
        """True while list scans watch the runs (parked until a scan misses them)."""
        return self._scanner is not None and self._scanner.watching

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
        batch = [Watched(run_id, now, deadline) for run_id in fresh]
        if (
            self._harvests
            and not self._harvesting
            and len(batch) >= HARVEST_MIN_RUNS
            # While scans watch, runs just submitted are theirs (processing ones cost a scan
            # nothing): a look per add() would read a page per batch and settle next to nothing.
            and not (self._scans_watching and minted_since(fresh, self._started_at))
        ):
            # Finished runs may be read from list pages, a hundred a request (see _harvest).
            self._harvesting = True
            assert self._task_group is not None
            self._task_group.start_soon(self._harvest, batch)
        else:
            self._admit(batch)
        return len(fresh)

    def _admit(self, batch: list[Watched], *, processing_share: float = 1.0) -> None:
        """Hand runs to the pollers (and to list scans, in the list-assisted strategies).

        ``processing_share`` is the share of the new runs likely to be processing (what list
        pages just read showed): a scan replaces the GETs of those only, since a finished run
        needs its GET anyway.
        """
        now = self._now()
        fresh = [watched for watched in batch if not watched.delivered]
        for watched in fresh:
            watched.likely_processing = processing_share
        first_look = now
        # A run a list page showed finished needs one GET, never a scan.
        scanner = self._scanner
        if (
            scanner is not None
            and self.policy.strategy != "per-run"
            and any(not w.needs_confirming_get for w in fresh)
        ):
            if scanner.watching:
                # Scans are under way: the next one takes the new runs in (one missing from it
                # gets its confirming GET). Scanning again for every add() would read the whole
                # list per submitted run.
                first_look = PARKED
            else:
                runs = [*fresh, *self._active.values()]
                pending_gets = scanner.replaceable_gets(runs, now + self.policy.initial_delay)
                # Behind a backlog of GETs owed anyway, the scan loop times the scan instead.
                if scanner.backlog_seconds(runs, now) == 0 and scanner.is_cheaper(
                    pending_gets, len(self._active)
                ):
                    # A scan starts now: new runs wait for it instead of a GET each, and so do
                    # the runs already due (their GETs are the ones it replaces).
                    scanner.start()
                    self._runs.park_all(self._active.values())
                    first_look = PARKED
                scanner.wake()
        for watched in fresh:
            self._active[watched.run_id] = watched
            # A run a list page showed finished is polled at once, whatever scans do.
            due = now if watched.needs_confirming_get else first_look
            self._runs.put(watched, min(due, watched.deadline))
        if fresh:
            self._runs.nudge()

    def _admit_listed(self, watched: Watched) -> None:
        """A list page showed the run processing: the row stands for its first GET.

        Its next look is one polling interval away (parked while scans watch), and the scan loop
        weighs a scan against the GETs then due, as after a scan that saw it.
        """
        if watched.delivered:
            return
        self._active[watched.run_id] = watched
        watched.likely_processing = 1.0
        self._reschedule(watched, self._now())
        scanner = self._scanner
        if scanner is not None and self.policy.strategy != "per-run" and not scanner.watching:
            scanner.wake(at=watched.natural_due)

    async def _harvest(self, batch: list[Watched]) -> None:
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

        listed: list[Watched] = []

        def processing(row: Run) -> None:
            watched = held.pop(row.id, None)
            if watched is not None:
                listed.append(watched)  # admitted with the rest: behind the GETs due now

        def release(run_id: str, finished: bool) -> None:
            watched = held.pop(run_id, None)
            if watched is not None:
                # Seen finished: the next poll is the last (with events, when asked for).
                watched.needs_confirming_get = finished
                self._admit([watched])

        scanner = self._scanner
        started = self._now()
        try:
            await harvest.run(found, release, processing=processing)
        except AuthenticationError as error:
            self._abort(error)
        except PredevError as error:
            logger.debug("reading finished runs from the list failed; polling them: %s", error)
        else:
            if harvest.requests:
                # The pages answered: whatever the tracker believed, the API is up.
                self._prober.answered()
        finally:
            self._harvesting = False
            self.harvest_requests += harvest.requests
            self.harvested += harvest.settled
            if scanner is not None and scanner.page_seconds is None and harvest.requests:
                # Until a GET or a scan is timed, the pages' own time stands in for a request's.
                scanner.page_seconds = (self._now() - started) / harvest.requests
            # Runs the pages did not meet: as likely to be processing as the rows they showed.
            self._admit(list(held.values()), processing_share=harvest.processing_share)
            for watched in listed:
                self._admit_listed(watched)

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[Watcher]:
        """``async with client.watch(...) as watcher``: owns the pollers' task group."""
        if self._task_group is not None:
            raise RuntimeError("a watch can be entered once")
        self._send, self._receive = anyio.create_memory_object_stream[RunUpdate](
            self.policy.buffer_size
        )
        self._now = self._runs.now = asyncio.get_running_loop().time
        self._started_at = time.time()  # the wall clock, as the ids' times are
        try:
            # Our own cancellation is absorbed on leaving; a failure of the watch is raised below.
            async with owned_task_group() as task_group:
                self._task_group = task_group
                for _ in range(self.policy.max_in_flight):
                    task_group.start_soon(self._worker)
                task_group.start_soon(self._runs.timer)
                if self._scanner is not None and self.policy.strategy != "per-run":
                    task_group.start_soon(self._scan_loop, self._scanner)
                task_group.start_soon(self._prober.probe_loop)
                if self.policy.max_outage is not None:
                    task_group.start_soon(self._prober.give_up_after, self.policy.max_outage)
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

    async def _worker(self) -> None:
        """One of ``max_in_flight`` workers: poll due runs, one at a time."""
        runs = self._runs
        while True:
            # A run already due is taken without creating a coroutine to wait for one.
            watched = runs.take_due() or await runs.next_due()
            watched.in_flight = True
            try:
                await self._poll(watched)
            finally:
                watched.in_flight = False

    async def _poll(self, watched: Watched, *, probe: bool = False) -> None:
        outage = self._outage
        if outage.down and not probe:
            if self._now() >= watched.deadline:
                error = WatchTimeoutError(watched.run_id, "still processing at its deadline")
                await self._deliver(watched, error=error)
            else:
                self._prober.hold(watched)  # the API is down: only the probe task sends requests
            return
        self.polls += 1
        run: Run | None = None
        sent_at = self._now()
        try:
            if watched.deadline == math.inf and not (
                watched.needs_confirming_get or self._include_events
            ):
                run = await self._fetch_run(watched.run_id, False)  # _fetch's common case, inline
            elif watched.deadline == math.inf:
                run = await self._fetch(watched)
            else:
                with anyio.move_on_after(watched.deadline - self._now()):
                    run = await self._fetch(watched)
        except AuthenticationError as error:
            self._abort(error)  # the key is wrong for every run: stop the whole watch
            return
        except NotFoundError as error:
            self._prober.answered()
            now = self._now()
            if (
                now - watched.added_at < scaled(self.policy.not_found_grace)
                and now < watched.deadline
            ):
                self._reschedule(watched, now)
            else:
                await self._deliver(watched, error=error)
            return
        except PredevError as error:
            if isinstance(error, RateLimitError):
                # The API answered, asking to slow down: a rate limit slows a run (the client's
                # rate controller paces it), never fails it, and is no sign of an outage.
                self._prober.answered()
                self._reschedule(watched, self._now())
                return
            if not is_outage(error):
                self._prober.answered()
                await self._deliver(watched, error=error)
                return
            # Charged when the request before it was answered: this run fails on its own.
            if self._prober.failed(error, sent_at):
                watched.failures += 1
            if watched.failures >= self.policy.max_failed_polls:
                await self._deliver(watched, error=error)
            elif outage.down:
                self._prober.hold(watched)
            else:
                self._reschedule(watched, self._now())
            return
        watched.failures = 0
        if run is not None:
            self._prober.answered()
            if self._scanner is not None:
                self._scanner.record_get(self._now() - sent_at)
        scanner = self._scanner
        if scanner is not None and scanner.watching and scanner.failing:
            # GETs work while list scans fail: poll runs one by one until a scan works again.
            scanner.watching = False
            self._runs.release_postponed(self._active.values())
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
        if self._progress:
            await self._maybe_progress(watched, run)
        watched.likely_processing = 1.0
        self._reschedule(watched, now)

    async def _fetch(self, watched: Watched) -> Run:
        run_id = watched.run_id
        if watched.needs_confirming_get and self._include_events:
            # Absent from a scan: most likely finished, so one GET with events confirms it.
            watched.needs_confirming_get = False
            return await self._fetch_run(run_id, True)
        watched.needs_confirming_get = False
        run = await self._fetch_run(run_id, False)
        if run.is_terminal and self._include_events:
            # Events are large: fetch them once, when the run can no longer change.
            run = await self._fetch_run(run_id, True)
        return run

    def _abort(self, error: PredevError) -> None:
        if self._fatal is None:
            self._fatal = error
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()

    def _reschedule(self, watched: Watched, now: float) -> None:
        if watched.delivered:
            return
        natural = now + scaled(self.policy.delay(watched.attempt, random.random))
        watched.attempt += 1
        watched.natural_due = natural
        due = natural
        if self._scans_watching:
            # Scans are watching it: no GET until a scan misses it, a scan fails, or scans stop
            # (each of those schedules it again). Only its deadline still wakes it.
            due = PARKED
        self._runs.put(watched, min(due, watched.deadline))

    async def _deliver(
        self, watched: Watched, *, run: Run | None = None, error: PredevError | None = None
    ) -> None:
        if watched.delivered:
            return
        watched.delivered = True
        self._active.pop(watched.run_id, None)
        await self._put(RunUpdate(watched.run_id, run=run, error=error))

    async def _maybe_progress(self, watched: Watched, run: Run) -> None:
        """With ``progress=True``, a non-final update when the run's progress moved."""
        if self._progress and run.completed != watched.last_completed:
            watched.last_completed = run.completed
            if not watched.delivered:
                await self._put(RunUpdate(watched.run_id, run=run, final=False))

    async def _put(self, update: RunUpdate) -> None:
        assert self._send is not None
        await self._send.send(update)

    async def _scan_loop(self, scanner: Scanner) -> None:
        """Decide, tick by tick, whether a list scan beats per-run GETs, and scan when it does."""
        scanner.next_at = self._now()
        while True:
            await scanner.wait_until_due()
            now = self._now()
            if not self._active:
                scanner.watching = False
                scanner.next_at = math.inf  # add() wakes us up
                continue
            backlog = scanner.backlog_seconds(self._active.values(), now)
            if backlog > 0:
                # Look again soon: the estimate firms up as GETs answer. Never sooner than a
                # millisecond: a backlog shorter than the time this check takes would otherwise
                # make the loop spin without ever letting the workers send those GETs.
                recheck = min(backlog, scaled(self.policy.initial_delay))
                scanner.next_at = now + max(recheck, _BACKLOG_RECHECK)
                continue
            scanner.tick(now)
            due_gets = scanner.replaceable_gets(self._active.values(), scanner.next_at, now=now)
            if scanner.is_cheaper(due_gets, len(self._active)):
                if not scanner.watching:
                    # Scans take over: the GETs now due are the ones this scan replaces.
                    scanner.watching = True
                    self._runs.park_all(self._active.values())
                if self._outage.down:
                    scanner.next_at = math.inf  # the probe task probes; its answer wakes us
                    continue
                await self._scan(scanner, now)
            elif scanner.watching:
                scanner.watching = False
                self._runs.release_postponed(self._active.values())

    async def _scan(self, scanner: Scanner, started: float) -> None:
        """Read every processing run; runs seen need no GET, runs missing get a confirming one."""
        try:
            seen = await scanner.read(self._active)
        except AuthenticationError as error:
            self._abort(error)
            return
        except PredevError as error:
            # Most likely an outage that GETs would hit too: keep runs parked until the next
            # scan rather than turning one failed request into a GET per run, and let one run
            # probe with a GET. If the GET works while the list does not, polling turns to
            # GETs (see _poll).
            logger.debug("list scan failed, probing with one GET: %s", error)
            now = self._now()
            if is_outage(error):
                self._prober.failed(error, started)
            else:
                self._prober.answered()
            if self._outage.down:
                scanner.next_at = math.inf  # the probe task probes; its answer wakes us
                self._runs.park_all(self._active.values())
                return
            scanner.back_off(started)
            self._runs.park_all(self._active.values())
            probe = next((w for w in self._active.values() if not w.in_flight), None)
            if probe is not None:
                self._runs.put(probe, now)
            return
        self._prober.answered()
        now = self._now()
        for watched in list(self._active.values()):
            if watched.delivered or watched.added_at > started:
                continue  # added during the scan: it may not be listed yet
            if watched.needs_confirming_get or watched.in_flight:
                continue  # a GET of its own is already on its way
            listed = seen.get(watched.run_id)
            if listed is None:
                watched.needs_confirming_get = True
                self._runs.put(watched, now)
                continue
            await self._maybe_progress(watched, listed)
            watched.likely_processing = 1.0
            self._reschedule(watched, now)
