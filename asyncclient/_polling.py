"""The fan-out poller behind :meth:`Client.watch` and :meth:`Client.wait`.

One scheduler, not one sleeping task per run: every watched run is a small record in a heap keyed
by when it is next due. A dispatcher hands due runs to a fixed pool of workers (the in-flight
limit) through a zero-buffer stream, and workers send updates into a bounded stream the consumer
reads. A slow consumer therefore blocks the workers, which block the dispatcher: nothing is
dropped and memory stays bounded. The watch owns one task group; leaving it cancels everything.

Exactly once: a run's record is marked delivered before its terminal update is sent, and every
path that ends a run (finished, error, deadline) goes through that one step.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._config import RETRY_STATUSES, PollPolicy, validate_run_id
from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    NotFoundError,
    PredevError,
    WatchTimeoutError,
)
from ._models import Run

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["RunUpdate", "Watcher"]

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
        "deadline",
        "delivered",
        "failures",
        "last_completed",
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


class Watcher:
    """Watches many runs at once; use through :meth:`Client.watch`.

    ``async with client.watch(ids) as watcher: async for update in watcher: ...`` yields one
    final :class:`RunUpdate` per id, in the order runs finish (plus progress updates with
    ``progress=True``). Iteration ends when every id added so far has been delivered.

    Attributes:
        policy: the polling policy in force.
        polls: how many polls (GETs) the watch has made.
    """

    def __init__(
        self,
        fetch_run: FetchRun,
        run_ids: Iterable[str],
        *,
        include_events: bool = False,
        progress: bool = False,
        policy: PollPolicy | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if not isinstance(include_events, bool):
            raise ValueError("include_events must be a bool")
        if not isinstance(progress, bool):
            raise ValueError("progress must be a bool")
        if policy is not None and not isinstance(policy, PollPolicy):
            raise ValueError(f"policy must be a PollPolicy, got {type(policy).__name__}")
        self.policy = policy or PollPolicy()
        self._fetch_run = fetch_run
        self._include_events = include_events
        self._progress = progress
        self._rand = rand
        self._initial = self._validated(run_ids)
        self._seen: set[str] = set()
        self._heap: list[tuple[float, int, _Watched]] = []
        self._counter = itertools.count()
        self._undelivered = 0
        self._wakeup = anyio.Event()
        self._task_group: anyio.abc.TaskGroup | None = None
        self._send: MemoryObjectSendStream[RunUpdate] | None = None
        self._receive: MemoryObjectReceiveStream[RunUpdate] | None = None
        self._finished = False
        self._watch_deadline = math.inf
        self._fatal: PredevError | None = None
        self.polls = 0

    def __repr__(self) -> str:
        return f"<Watcher pending={self._undelivered} polls={self.polls}>"

    @staticmethod
    def _validated(run_ids: Iterable[str]) -> list[str]:
        if isinstance(run_ids, (str, bytes)):
            raise ValueError("run_ids must be an iterable of run ids, not a single string")
        return [validate_run_id(run_id) for run_id in run_ids]

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

    def _add(self, ids: list[str]) -> int:
        now = anyio.current_time()
        run_timeout = self.policy.run_timeout
        deadline = self._watch_deadline
        if run_timeout is not None:
            deadline = min(deadline, now + run_timeout)
        added = 0
        for run_id in ids:
            if run_id in self._seen:
                continue
            self._seen.add(run_id)
            heapq.heappush(self._heap, (now, next(self._counter), _Watched(run_id, now, deadline)))
            added += 1
        if added:
            self._undelivered += added
            self._wakeup.set()
        return added

    async def __aenter__(self) -> Watcher:
        if self._task_group is not None:
            raise RuntimeError("a watch can be entered once")
        self._send, self._receive = anyio.create_memory_object_stream[RunUpdate](
            self.policy.buffer_size
        )
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        to_workers, from_dispatcher = anyio.create_memory_object_stream[_Watched](0)
        with from_dispatcher:
            for _ in range(self.policy.max_in_flight):
                task_group.start_soon(self._work, from_dispatcher.clone())
        task_group.start_soon(self._dispatch, to_workers)
        timeout = self.policy.timeout
        self._watch_deadline = anyio.current_time() + timeout if timeout is not None else math.inf
        self._add(self._initial)
        self._initial = []
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task_group = self._task_group
        assert task_group is not None
        self._finished = True
        task_group.cancel_scope.cancel()
        try:
            # Our own cancellation is absorbed here; a failure of the watch is raised below.
            await task_group.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            _raise_single(group)
            raise
        finally:
            if self._send is not None:
                self._send.close()
            if self._receive is not None:
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

    async def _dispatch(self, to_workers: MemoryObjectSendStream[_Watched]) -> None:
        heap = self._heap
        with to_workers:
            while True:
                if not heap:
                    if self._wakeup.is_set():
                        self._wakeup = anyio.Event()
                    await self._wakeup.wait()
                    continue
                due, _, watched = heap[0]
                delay = due - anyio.current_time()
                if delay > 0:
                    if self._wakeup.is_set():
                        self._wakeup = anyio.Event()
                    with anyio.move_on_after(delay):
                        await self._wakeup.wait()
                    continue
                heapq.heappop(heap)
                if not watched.delivered:
                    await to_workers.send(watched)

    async def _work(self, from_dispatcher: MemoryObjectReceiveStream[_Watched]) -> None:
        with from_dispatcher:
            async for watched in from_dispatcher:
                await self._poll(watched)

    async def _poll(self, watched: _Watched) -> None:
        self.polls += 1
        run: Run | None = None
        try:
            if watched.deadline == math.inf:
                run = await self._fetch(watched.run_id)
            else:
                with anyio.move_on_after(watched.deadline - anyio.current_time()):
                    run = await self._fetch(watched.run_id)
        except AuthenticationError as error:
            self._fail(error)  # the key is wrong for every run: stop the whole watch
            return
        except NotFoundError as error:
            now = anyio.current_time()
            if now - watched.added_at < self.policy.not_found_grace and now < watched.deadline:
                self._reschedule(watched, now)
            else:
                await self._deliver(watched, error=error)
            return
        except PredevError as error:
            watched.failures += 1
            if _is_transient(error) and watched.failures < self.policy.max_failed_polls:
                self._reschedule(watched, anyio.current_time())
            else:
                await self._deliver(watched, error=error)
            return
        watched.failures = 0
        if run is not None and run.is_terminal:
            await self._deliver(watched, run=run)
            return
        now = anyio.current_time()
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

    async def _fetch(self, run_id: str) -> Run:
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
        due = min(now + self.policy.delay(watched.attempt, self._rand), watched.deadline)
        watched.attempt += 1
        heapq.heappush(self._heap, (due, next(self._counter), watched))
        if due <= self._heap[0][0]:
            self._wakeup.set()

    async def _deliver(
        self, watched: _Watched, *, run: Run | None = None, error: PredevError | None = None
    ) -> None:
        if watched.delivered:
            return
        watched.delivered = True
        await self._put(RunUpdate(watched.run_id, run=run, error=error))

    async def _put(self, update: RunUpdate) -> None:
        assert self._send is not None
        await self._send.send(update)


def _is_transient(error: PredevError) -> bool:
    if isinstance(error, APIConnectionError):
        return True
    return isinstance(error, APIStatusError) and error.status in RETRY_STATUSES


def _raise_single(group: BaseExceptionGroup[BaseException]) -> None:
    """Re-raise the one real error of a task group, unwrapped, keeping its own cause."""
    errors = [
        error for error in _leaves(group) if not isinstance(error, anyio.get_cancelled_exc_class())
    ]
    if len(errors) == 1:
        error = errors[0]
        raise error from error.__cause__


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            leaves.extend(_leaves(error))
        else:
            leaves.append(error)
    return leaves
