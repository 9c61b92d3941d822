"""The activity: watch one shard with the SDK's poller and store each result once.

An attempt reads its shard's ids from the ids file, asks the sink which are stored already and
watches only the others. Finished runs flow through a bounded stream to one writer, which
stores them in small transactions (``store_many``) and heartbeats progress after each. A
heartbeat ticker keeps Temporal told the attempt is alive while runs are still processing.

After a crash Temporal starts the next attempt, on any worker, once the heartbeat timeout has
passed. The sink is the truth about what is done: the new attempt skips what it holds. The last
heartbeat's details (how many were stored, the last ids) are what the previous attempt had
reported; they are logged and recorded with the attempt so a resume can be seen and checked.

A run that cannot be watched for good (404, another refusal, a body that is not a run) is
stored with status ``error``, apart from the results: an error is not a result, so the sink does
not count it as stored, and any later attempt, batch or re-run watches that run again (a final
answer then replaces the error). A shard none of whose runs the key can see (every one answers
404, and the sink holds none of them) is a configuration error, most likely another account's
key: the attempt stores nothing and fails for good (``RunsNotOwnedError``) instead of storing
thousands of errors. A run whose polls kept failing for a passing reason (connection
errors, 5xx, 429) is not stored: the attempt fails at the end, with the others stored, and
Temporal retries the shard for the rest. A refused key (401) or an account that cannot pay
(402) is no passing reason: no retry can fix it, so the attempt stops at once and fails the
shard for good (``non_retryable``), with its type (``AuthenticationError``,
``PaymentRequiredError``) for the batch to report.

When the worker shuts down (SIGTERM), the attempt stops watching, stores every result it has
already fetched, heartbeats and fails with ``WorkerShutdownError`` so that Temporal retries the
shard on another worker at once instead of after the heartbeat timeout.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import anyio
import anyio.to_thread
import msgspec
from anyio import AsyncContextManagerMixin
from anyio.streams.memory import MemoryObjectReceiveStream
from temporalio import activity
from temporalio.common import MetricMeter
from temporalio.exceptions import ApplicationError

from .._client import Client
from .._config import PollPolicy
from .._exceptions import (
    APIStatusError,
    AuthenticationError,
    NotFoundError,
    PaymentRequiredError,
    ResponseDecodeError,
    is_transient,
)
from .._polling import RunUpdate
from ._exceptions import BatchInputError
from ._metrics import ShardMeters, counting
from ._planner import ShardSpec, load_shard
from ._shared import SharedWatch
from ._sinks import AttemptRecord, RunResult, Sink, StoredBy

__all__ = ["ShardActivities", "ShardProgress", "ShardResult"]

WATCH_SHARD = "watch_shard"
"""The activity's registered name."""
_LAST_IDS = 5
FATAL_ERROR_TYPES = ("AuthenticationError", "PaymentRequiredError")
"""The failure types of a shard that no retry can fix: the key is refused, the account cannot
pay. They end the batch."""
_FATAL = (AuthenticationError, PaymentRequiredError)
NOT_OWNED_ERROR_TYPE = "RunsNotOwnedError"
"""The failure type of a shard whose every run answered 404: the key owns none of them."""
NOT_OWNED_MIN = 10
"""The fewest ids a shard must hold for "all of them answered 404" to mean "wrong key"; a
smaller shard's missing runs are stored as errors."""
SHUTDOWN_ERROR_TYPE = "WorkerShutdownError"
"""The failure type of an attempt stopped by its worker's shutdown (retried elsewhere)."""


@dataclass(frozen=True)
class ShardResult:
    """What one shard's successful attempt reports to the workflow.

    Attributes:
        batch_id: the batch.
        index: the shard.
        ids: how many ids the shard holds.
        already_stored: how many of them the sink held when this attempt began (stored by an
            earlier attempt, or an earlier batch).
        stored: how many this attempt stored.
        errors: how many of those were stored with status ``error``.
        attempt: the attempt that finished the shard (above 1 after a crash or a retry).
    """

    batch_id: str
    index: int
    ids: int
    already_stored: int
    stored: int
    errors: int
    attempt: int


@dataclass
class ShardProgress:
    """The heartbeat details of an attempt: read back by the next attempt after a crash.

    Attributes:
        ids: how many ids the shard holds.
        in_sink: how many of them the sink holds, as far as this attempt knows.
        stored: how many this attempt stored.
        attempt: the attempt reporting.
        last: the last few ids stored.
    """

    ids: int = 0
    in_sink: int = 0
    stored: int = 0
    attempt: int = 1
    last: list[str] = field(default_factory=list)

    @classmethod
    def from_details(cls, details: Sequence[Any]) -> ShardProgress | None:
        """The progress a previous attempt heartbeated, or ``None`` (first attempt, or details
        this version cannot read)."""
        if not details or not isinstance(details[0], dict):
            return None
        raw = details[0]
        try:
            return cls(
                ids=int(raw.get("ids", 0)),
                in_sink=int(raw.get("in_sink", 0)),
                stored=int(raw.get("stored", 0)),
                attempt=int(raw.get("attempt", 1)),
                last=[str(run_id) for run_id in raw.get("last", [])][-_LAST_IDS:],
            )
        except (TypeError, ValueError):
            return None


@dataclass
class _Outcome:
    """How one attempt's watch ended."""

    errors: int = 0
    deferred: int = 0
    fatal: APIStatusError | None = None
    shutdown: bool = False
    complete: bool = False
    not_owned: int = 0


def default_identity() -> str:
    """A worker's name when none is given: ``pid@host``."""
    return f"{os.getpid()}@{socket.gethostname()}"


def _result_of(update: RunUpdate) -> RunResult | None:
    """What to store for a final update, or ``None`` when its error may pass."""
    if update.error is None:
        assert update.run is not None
        return RunResult(update.run_id, update.run.status, msgspec.json.encode(update.run))
    error = update.error
    permanent = isinstance(error, (NotFoundError, ResponseDecodeError)) or (
        isinstance(error, APIStatusError)
        and not isinstance(error, AuthenticationError)
        and not is_transient(error)
    )
    return RunResult.from_error(update.run_id, error) if permanent else None


class ShardActivities(AsyncContextManagerMixin):
    """The activities of a worker: one instance per worker, sharing its client and its sink.

    Register ``activities.watch_shard`` with the worker (see :func:`create_worker`). Inside
    ``async with activities:`` the shards share one watch (one list scan, one in-flight pool of
    ``policy.max_in_flight`` times ``max_shards`` requests, see ``_shared``); outside it, each
    shard runs a watch of its own.

    Args:
        client: the API client every shard polls through (its session and its rate controller
            are shared: ``max_requests_per_second`` on it is this worker's share of the key).
        sink: where results go; it must be open while the worker runs.
        policy: the polling policy of each shard's watch (default: the client's).
        worker: this worker's identity, recorded on every row it stores.
        flush_size: the most results stored in one transaction.
        flush_interval: seconds a result may wait for others to share its transaction.
        max_shards: the most shards the worker runs at once: the shared watch has the
            requests in flight of that many shards.
        meter: where the shared watch's requests are counted (the SDK runtime's
            ``metric_meter``); not counted when ``None``.
    """

    def __init__(
        self,
        client: Client,
        sink: Sink,
        *,
        policy: PollPolicy | None = None,
        worker: str | None = None,
        flush_size: int = 200,
        flush_interval: float = 0.2,
        max_shards: int = 1,
        meter: MetricMeter | None = None,
    ) -> None:
        if max_shards < 1:
            raise ValueError(f"max_shards must be 1 or more, got {max_shards!r}")
        if flush_size < 1:
            raise ValueError(f"flush_size must be 1 or more, got {flush_size!r}")
        if not flush_interval >= 0:
            raise ValueError(f"flush_interval must be >= 0, got {flush_interval!r}")
        self._client = client
        self._sink = sink
        self._policy = policy
        self.worker = worker or default_identity()
        self._flush_size = flush_size
        self._flush_interval = flush_interval
        self._max_shards = max_shards
        self._meter = meter
        self._shared: dict[bool, SharedWatch] = {}

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[ShardActivities]:
        """``async with ShardActivities(...)``: runs the shared watches, stopped on exit."""
        # The client's own default when none was given (it has no public accessor).
        policy = self._policy or self._client.poll_policy
        shared_policy = replace(
            policy, max_in_flight=min(10_000, policy.max_in_flight * self._max_shards)
        )
        # The shared watches' tasks start in this context: their requests count for the worker.
        meters = ShardMeters(self._meter) if self._meter is not None else None
        async with contextlib.AsyncExitStack() as stack:
            with counting(meters) if meters is not None else contextlib.nullcontext():
                for events in (False, True):
                    self._shared[events] = await stack.enter_async_context(
                        SharedWatch(self._client, include_events=events, policy=shared_policy)
                    )
            try:
                yield self
            finally:
                self._shared = {}

    @property
    def shared(self) -> dict[bool, SharedWatch]:
        """The shared watches by ``include_events`` (empty outside ``async with``)."""
        return dict(self._shared)

    @contextlib.asynccontextmanager
    async def _updates(self, todo: list[str], shard: ShardSpec) -> AsyncIterator[Any]:
        """The final updates of ``todo``: from the worker's shared watch, or a watch of their
        own outside ``async with activities``."""
        shared = self._shared.get(shard.include_events)
        if shared is not None:
            async with shared.subscribe(todo) as updates:
                yield updates
            return
        async with self._client.watch(
            todo, include_events=shard.include_events, policy=self._policy
        ) as watcher:
            yield watcher

    @activity.defn(name=WATCH_SHARD)
    async def watch_shard(self, shard: ShardSpec) -> ShardResult:
        """Watch the runs of one shard that the sink does not hold yet, and store each.

        Args:
            shard: the shard's descriptor.

        Returns:
            The shard's counts.

        Raises:
            ApplicationError: non-retryable when the shard is meant for another sink or its ids
                file changed; retryable when some runs kept failing for a passing reason.
        """
        info = activity.info()
        if shard.sink not in (self._sink.identity, self._sink.name):
            raise ApplicationError(
                f"shard {shard.index} of batch {shard.batch_id} stores into {shard.sink}, "
                f"but this worker's sink is {self._sink.identity} ({self._sink.name})",
                type="SinkMismatchError",
                non_retryable=True,
            )
        if activity.is_worker_shutdown():
            # A poll still out when the shutdown began can bring a shard: hand it on untouched.
            raise ApplicationError(
                f"shard {shard.index}: worker {self.worker} is shutting down; not begun",
                type=SHUTDOWN_ERROR_TYPE,
            )
        try:
            if shard.ids_in_sink:
                # Only this shard's ids: memory does not grow with the batch, nor a shared file.
                ids = await self._sink.shard_ids(shard.batch_id, shard.index)
            else:
                ids = await anyio.to_thread.run_sync(load_shard, shard)
        except BatchInputError as exc:
            raise ApplicationError(str(exc), type="BatchInputError", non_retryable=True) from exc
        resumed = ShardProgress.from_details(info.heartbeat_details)
        already = await self._sink.has(ids)
        await self._sink.record_attempt(
            AttemptRecord(
                batch_id=shard.batch_id,
                shard=shard.index,
                attempt=info.attempt,
                worker=self.worker,
                already_stored=len(already),
                resumed_stored=resumed.in_sink if resumed is not None else 0,
            )
        )
        if info.attempt > 1:
            activity.logger.info(
                "shard %d attempt %d: the last heartbeat reported %s stored; the sink holds "
                "%d of %d, watching the other %d",
                shard.index,
                info.attempt,
                resumed.in_sink if resumed is not None else "nothing",
                len(already),
                len(ids),
                len(ids) - len(already),
            )
        progress = ShardProgress(ids=len(ids), in_sink=len(already), attempt=info.attempt)
        activity.heartbeat(progress)
        todo = [run_id for run_id in ids if run_id not in already]
        outcome = _Outcome()
        meters = ShardMeters(activity.metric_meter(), shard.batch_id, shard.index)
        if todo:
            with counting(meters):
                await self._watch(todo, shard, progress, info.heartbeat_timeout, outcome, meters)
            meters.deferred.add(outcome.deferred)
        errors, deferred = outcome.errors, outcome.deferred
        if outcome.not_owned:
            raise ApplicationError(
                f"shard {shard.index}: every one of its {outcome.not_owned} runs answered 404: "
                "this key owns none of these runs (is it another account's key?); nothing was "
                "stored: fix the key, then start the batch again",
                type=NOT_OWNED_ERROR_TYPE,
                non_retryable=True,
            )
        if outcome.fatal is not None:
            kind = type(outcome.fatal).__name__
            raise ApplicationError(
                f"shard {shard.index}: the API refused this worker's key ({outcome.fatal}); "
                "no retry can fix that: fix the key or the account, then start the batch again",
                type=kind,
                non_retryable=True,
            )
        if outcome.shutdown and not outcome.complete:
            activity.heartbeat(progress)
            raise ApplicationError(
                f"shard {shard.index}: worker {self.worker} is shutting down; {progress.stored} "
                "stored by this attempt, the shard is retried for the rest",
                type=SHUTDOWN_ERROR_TYPE,
            )
        if deferred:
            raise ApplicationError(
                f"shard {shard.index}: {deferred} runs kept failing for a passing reason "
                f"(connection errors, 5xx, 429); {progress.stored} stored, the shard is retried "
                "for the rest",
                type="TransientRunError",
            )
        return ShardResult(
            batch_id=shard.batch_id,
            index=shard.index,
            ids=len(ids),
            already_stored=len(already),
            stored=progress.stored,
            errors=errors,
            attempt=info.attempt,
        )

    async def _watch(
        self,
        todo: list[str],
        shard: ShardSpec,
        progress: ShardProgress,
        heartbeat_timeout: timedelta | None,
        outcome: _Outcome,
        meters: ShardMeters,
    ) -> None:
        """Watch ``todo`` and store each final result, until done, a refused key or the
        worker's shutdown; whatever was fetched is stored before this returns."""
        by = StoredBy(shard.batch_id, shard.index, progress.attempt, self.worker)
        # Beat well inside the timeout; the SDK itself sends at most one beat per 80 % of it.
        beat = 5.0
        if heartbeat_timeout is not None:
            beat = min(beat, max(0.05, heartbeat_timeout.total_seconds() / 4))
        send, receive = anyio.create_memory_object_stream[RunResult](2 * self._flush_size)
        # 404s are held back while no run of the shard has answered otherwise: if every one
        # does, the key owns none of them, and they are not stored at all.
        held: list[RunResult] | None = [] if progress.in_sink == 0 else None
        async with anyio.create_task_group() as ticker:
            ticker.start_soon(self._heartbeat_loop, progress, beat)
            async with anyio.create_task_group() as flow:
                flow.start_soon(self._write, receive, by, progress, meters)
                # Stopping the watch closes the stream: the writer stores what it holds.
                with anyio.CancelScope() as watching:
                    ticker.start_soon(self._stop_on_shutdown, watching, outcome)
                    try:
                        async with send, self._updates(todo, shard) as updates:
                            async for update in updates:
                                if not update.final:
                                    continue
                                if isinstance(update.error, _FATAL):
                                    raise update.error
                                result = _result_of(update)
                                if result is None:
                                    outcome.deferred += 1
                                    continue
                                if held is not None:
                                    if isinstance(update.error, NotFoundError):
                                        held.append(result)
                                        continue
                                    # The key sees this shard: the 404s are errors of their own.
                                    release: list[RunResult] = held
                                    held = None
                                    for missing in release:
                                        outcome.errors += 1
                                        await send.send(missing)
                                outcome.errors += result.status == "error"
                                await send.send(result)
                            outcome.complete = True
                            if held and (len(held) < NOT_OWNED_MIN or len(held) < len(todo)):
                                for missing in held:
                                    outcome.errors += 1
                                    await send.send(missing)
                            elif held:
                                outcome.not_owned = len(held)
                    except _FATAL as exc:  # the watch stops at the first 401 by itself
                        outcome.fatal = exc
            ticker.cancel_scope.cancel()

    @staticmethod
    async def _stop_on_shutdown(watching: anyio.CancelScope, outcome: _Outcome) -> None:
        """Stop the watch when the worker begins to shut down."""
        await activity.wait_for_worker_shutdown()
        outcome.shutdown = True
        watching.cancel()

    async def _write(
        self,
        receive: MemoryObjectReceiveStream[RunResult],
        by: StoredBy,
        progress: ShardProgress,
        meters: ShardMeters,
    ) -> None:
        """Store results in small transactions, heartbeating progress after each."""
        async with receive:
            async for first in receive:
                batch = [first]
                # Linger briefly so one transaction carries many results, not one each.
                with anyio.move_on_after(self._flush_interval):
                    while len(batch) < self._flush_size:
                        try:
                            batch.append(await receive.receive())
                        except anyio.EndOfStream:
                            break
                stored = await self._sink.store_many(batch, by=by)
                progress.in_sink += len(batch)
                progress.stored += len(stored)
                meters.stored.add(len(stored))
                progress.last = [result.run_id for result in batch[-_LAST_IDS:]]
                activity.heartbeat(progress)

    @staticmethod
    async def _heartbeat_loop(progress: ShardProgress, every: float) -> None:
        """Heartbeat while runs are processing and nothing is being stored."""
        while True:
            await anyio.sleep(every)
            activity.heartbeat(progress)
