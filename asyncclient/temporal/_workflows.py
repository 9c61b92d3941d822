"""The workflow: fan a batch's shards out as activities, a bounded number at a time.

It holds no ids and does no I/O: it starts ``watch_shard`` activities with shard descriptors,
at most ``max_parallel`` pending at once, and adds up what they report. Temporal limits how many
activities one execution may have pending (2,000 by default) and how large its history may
grow, so after ``shards_per_run`` shards (or when the server suggests it) the workflow waits for
the shards it has running and continues as new with the next shard index and the totals so far.

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
        next_shard: the first shard this execution starts (set by continue-as-new).
        done: the totals carried over from earlier executions.
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
        started = 0
        pending: list[tuple[int, asyncio.Task[ShardResult]]] = []
        while True:
            while (
                next_shard < spec.shards
                and len(pending) < batch_input.max_parallel
                and started < batch_input.shards_per_run
                and not workflow.info().is_continue_as_new_suggested()
            ):
                handle = workflow.start_activity_method(
                    ShardActivities.watch_shard,
                    spec.shard(next_shard),
                    start_to_close_timeout=timedelta(seconds=batch_input.shard_timeout),
                    heartbeat_timeout=timedelta(seconds=batch_input.heartbeat_timeout),
                    retry_policy=retry,
                    activity_id=f"shard-{next_shard}",
                    summary=f"shard {next_shard}/{spec.shards}",
                )
                pending.append((next_shard, handle))
                next_shard += 1
                started += 1
            self._running = [index for index, _ in pending]
            if not pending:
                break
            await workflow.wait([task for _, task in pending], return_when=asyncio.FIRST_COMPLETED)
            still: list[tuple[int, asyncio.Task[ShardResult]]] = []
            for index, task in pending:
                if task.done():
                    # A shard that failed for good fails the batch, with its cause.
                    self._progress = self._progress.add(task.result())
                else:
                    still.append((index, task))
            pending = still
        self._running = []
        if next_shard < spec.shards:
            workflow.continue_as_new(
                replace(
                    batch_input,
                    next_shard=next_shard,
                    done=replace(self._progress, runs=self._progress.runs + 1),
                )
            )
        return BatchResult(
            batch_id=spec.batch_id, total=spec.total, shards=spec.shards, progress=self._progress
        )
