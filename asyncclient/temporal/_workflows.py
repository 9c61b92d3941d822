"""The workflow: fan a batch's shards out as activities, a sliding window of them at a time.

It holds no ids and does no I/O: it starts ``watch_shard`` activities with shard descriptors,
at most ``max_parallel`` pending at once, starting the next shard as soon as any slot frees up,
and adds up what they report. Temporal limits how many activities one execution may have
pending (2,000 by default) and how large its history may grow, so after ``shards_per_run``
shards (or when the server suggests it) the workflow continues as new, with the next shard
index, the totals so far and the shards still running.

It does not wait for those to drain first: one slow shard would hold every slot back (head-of-
line blocking). It continues as new as soon as a slot is free and there is more to start; the
shards still running are started again, first, by the next execution. That is cheap and safe:
the sink is the truth about what is done, so a shard started again watches only the runs not
stored yet, and the abandoned attempt is cancelled at its next heartbeat (the sink stores each
run once whichever of the two stores it). Each execution's history stays within
``shards_per_run`` starts plus at most ``max_parallel`` restarts.

This module follows the workflow sandbox's rules: everything it imports besides ``temporalio``
is passed through, and workflow code only computes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from ._activities import FATAL_ERROR_TYPES, ShardActivities, ShardResult
    from ._planner import BatchSpec

__all__ = ["BatchInput", "BatchProgress", "BatchResult", "WatchBatchWorkflow"]

WORKFLOW_NAME = "WatchBatch"
"""The workflow's registered name."""


@dataclass(frozen=True)
class BatchProgress:
    """The totals of the shards that have finished.

    Attributes:
        shards_done: shards finished.
        ids: ids in those shards.
        already_stored: ids the sink held when their last attempt began.
        stored: ids their last attempts stored.
        errors: of those, stored with status ``error``.
        max_attempt: the highest attempt that finished a shard (above 1: a retry happened).
        runs: executions of this workflow so far (continue-as-new adds one).
    """

    shards_done: int = 0
    ids: int = 0
    already_stored: int = 0
    stored: int = 0
    errors: int = 0
    max_attempt: int = 0
    runs: int = 1

    def add(self, shard: ShardResult) -> BatchProgress:
        """These totals with one more finished shard."""
        return replace(
            self,
            shards_done=self.shards_done + 1,
            ids=self.ids + shard.ids,
            already_stored=self.already_stored + shard.already_stored,
            stored=self.stored + shard.stored,
            errors=self.errors + shard.errors,
            max_attempt=max(self.max_attempt, shard.attempt),
        )


@dataclass(frozen=True)
class BatchInput:
    """The workflow's input: the batch and how to schedule it.

    Attributes:
        batch: the planned batch.
        max_parallel: the most shard activities pending at once.
        shards_per_run: the most shards one execution starts before continuing as new.
        heartbeat_timeout: seconds without a heartbeat after which an attempt is presumed dead
            and the shard is retried (on any worker): the recovery time after a crash.
        shard_timeout: seconds one attempt may take in all.
        retry_initial: seconds before the first retry of a failed attempt (doubling, up to
            ``retry_max``).
        retry_max: the longest wait between attempts.
        max_attempts: the most attempts at one shard (crashes and shutdowns count too); past
            them the shard, and so the batch, fails.
        next_shard: the first new shard this execution starts (set by continue-as-new).
        done: the totals carried over from earlier executions.
        carried: the shards that were still running when the last execution continued as
            new: this one starts them again, first.
    """

    batch: BatchSpec
    max_parallel: int = 50
    shards_per_run: int = 500
    heartbeat_timeout: float = 60.0
    shard_timeout: float = 7 * 24 * 3600.0
    retry_initial: float = 1.0
    retry_max: float = 60.0
    max_attempts: int = 20
    next_shard: int = 0
    done: BatchProgress = field(default_factory=BatchProgress)
    carried: tuple[int, ...] = ()


@dataclass(frozen=True)
class BatchResult:
    """What the workflow returns when every shard is done.

    Attributes:
        batch_id: the batch.
        total: ids in the batch.
        shards: how many shards.
        progress: the totals over every shard.
    """

    batch_id: str
    total: int
    shards: int
    progress: BatchProgress


@workflow.defn(name=WORKFLOW_NAME)
class WatchBatchWorkflow:
    """Watch a batch: every shard's activity, at most ``max_parallel`` at once."""

    def __init__(self) -> None:
        self._progress = BatchProgress()
        self._running: list[int] = []

    @workflow.query
    def progress(self) -> BatchProgress:
        """The totals of the shards finished so far."""
        return self._progress

    @workflow.query
    def running(self) -> list[int]:
        """The shards whose activities are pending now."""
        return list(self._running)

    @workflow.run
    async def run(self, batch_input: BatchInput) -> BatchResult:
        """Run the batch's shards, continuing as new every ``shards_per_run`` shards.

        Args:
            batch_input: the batch and its scheduling.

        Returns:
            The totals, once every shard is done.
        """
        spec = batch_input.batch
        self._progress = batch_input.done
        retry = RetryPolicy(
            initial_interval=timedelta(seconds=batch_input.retry_initial),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=batch_input.retry_max),
            maximum_attempts=batch_input.max_attempts,
            non_retryable_error_types=["BatchInputError", "SinkMismatchError", *FATAL_ERROR_TYPES],
        )
        next_shard = batch_input.next_shard
        carried = list(batch_input.carried)
        started = finished = 0
        pending: list[tuple[int, asyncio.Task[ShardResult]]] = []

        def more() -> bool:
            return bool(carried) or next_shard < spec.shards

        def may_start() -> bool:
            return (
                started < batch_input.shards_per_run
                and not workflow.info().is_continue_as_new_suggested()
            )

        while True:
            while more() and len(pending) < batch_input.max_parallel and may_start():
                if carried:
                    index = carried.pop(0)
                else:
                    index, next_shard = next_shard, next_shard + 1
                handle = workflow.start_activity_method(
                    ShardActivities.watch_shard,
                    spec.shard(index),
                    start_to_close_timeout=timedelta(seconds=batch_input.shard_timeout),
                    heartbeat_timeout=timedelta(seconds=batch_input.heartbeat_timeout),
                    retry_policy=retry,
                    activity_id=f"shard-{index}",
                    summary=f"shard {index}/{spec.shards}",
                )
                pending.append((index, handle))
                started += 1
            self._running = [index for index, _ in pending]
            if not pending:
                break
            if more() and len(pending) < batch_input.max_parallel and finished:
                # A slot is free but this execution may start no more: continue as new now,
                # rather than after the slowest shard; the next one starts these again (each
                # execution finishes one shard at least, so the batch always moves on).
                break
            await workflow.wait([task for _, task in pending], return_when=asyncio.FIRST_COMPLETED)
            still: list[tuple[int, asyncio.Task[ShardResult]]] = []
            for index, task in pending:
                if task.done():
                    # A shard that failed for good fails the batch, with its cause.
                    self._progress = self._progress.add(task.result())
                    finished += 1
                else:
                    still.append((index, task))
            pending = still
        self._running = []
        if more() or pending:
            workflow.continue_as_new(
                replace(
                    batch_input,
                    next_shard=next_shard,
                    carried=(*(index for index, _ in pending), *carried),
                    done=replace(self._progress, runs=self._progress.runs + 1),
                )
            )
        return BatchResult(
            batch_id=spec.batch_id, total=spec.total, shards=spec.shards, progress=self._progress
        )
