"""Starting a batch, idempotently: one workflow per batch at a time, and none after success.

The workflow id is derived from the batch (the ids file's content and the sink). The start asks
Temporal to refuse that id while an execution with it runs (``FAIL`` on conflict) or after one
completed (``ALLOW_DUPLICATE_FAILED_ONLY``): a second start of a running or finished batch
raises :class:`BatchAlreadyStartedError` instead of watching every run again. A batch that
failed, was terminated, cancelled or timed out can be started again: the new execution skips
what the sink holds, and the sink stores nothing twice. Temporal forgets closed executions
after the namespace's retention period; past it a completed batch could run again, and the
sink would still store nothing twice.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, replace

import anyio.to_thread
from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from ._exceptions import BatchAlreadyStartedError
from ._planner import BatchSpec, cut_ids, plan_batch
from ._sinks import PostgresSink, Sink, open_sink, sink_name
from ._workflows import BatchInput, BatchResult, WatchBatchWorkflow

__all__ = ["DEFAULT_TASK_QUEUE", "StartedBatch", "start_batch"]

DEFAULT_TASK_QUEUE = "asyncclient-watch"
"""The task queue workers listen on and batches are started on, unless told otherwise."""
MAX_PARALLEL = 2_000
"""The most shards a batch may watch at once: Temporal's default limit of pending activities
per workflow execution (``limit.numPendingActivities.error``); past it no shard is scheduled."""


@dataclass(frozen=True)
class StartedBatch:
    """A batch that was started.

    Attributes:
        spec: the planned batch (its id, file, digest, size, shard count, sink).
        workflow: the handle of its workflow: ``await started.workflow.result()`` waits for
            the :class:`BatchResult`; ``query(WatchBatchWorkflow.progress)`` reads progress.
    """

    spec: BatchSpec
    workflow: WorkflowHandle[WatchBatchWorkflow, BatchResult]


async def start_batch(
    client: TemporalClient,
    ids_path: str,
    *,
    sink: str | Sink,
    shards: int,
    task_queue: str = DEFAULT_TASK_QUEUE,
    include_events: bool = False,
    max_parallel: int = 50,
    shards_per_run: int = 500,
    heartbeat_timeout: float = 60.0,
    shard_timeout: float = 7 * 24 * 3600.0,
    retry_initial: float = 1.0,
    retry_max: float = 60.0,
    max_attempts: int = 20,
    ids_in_sink: bool | None = None,
) -> StartedBatch:
    """Plan a batch from an ids file and start its workflow, once.

    Args:
        client: a connected Temporal client.
        ids_path: the ids file, one run id per line; every worker must be able to read it at
            the same absolute path, unless its ids are loaded into the sink (``ids_in_sink``).
        sink: the sink's URL (or the sink) the workers store into; the batch is keyed by the
            identity its database holds (a URL is opened to read it), so every spelling of one
            database's URL is one batch; no password goes into the workflow.
        shards: how many shards to cut the batch into.
        task_queue: the task queue the workers listen on.
        include_events: store finished runs with their event timelines.
        max_parallel: the most shards watched at once, over all workers; at most
            :data:`MAX_PARALLEL` (2,000).
        shards_per_run: shards one workflow execution starts before continuing as new.
        heartbeat_timeout: seconds of silence after which a shard's attempt is presumed dead
            and retried on another worker.
        shard_timeout: seconds one attempt at one shard may take in all.
        retry_initial: seconds before the first retry of a failed attempt.
        retry_max: the longest wait between two attempts.
        max_attempts: the most attempts at one shard before it fails the batch (with the
            default schedule, 20 attempts span about a quarter of an hour of retries).
        ids_in_sink: load the ids, once, by shard, into the sink's database
            (``predev_batch_ids``), and have each shard read its own from there; default: for
            a PostgreSQL sink (workers on other machines need no shared file then), not for
            SQLite (one machine, where the file is shared anyway).

    Returns:
        The batch and its workflow handle.

    Raises:
        BatchAlreadyStartedError: this batch (same ids content, same sink) is running, or
            completed before.
        BatchInputError: the ids file cannot be read, holds a bad line, or no id.
        SinkError: ``sink`` is not a sink URL this package knows, or cannot be opened.
        ValueError: a scheduling argument is out of range.
    """
    if not isinstance(sink, Sink):
        sink_name(sink)  # a URL this package does not know is refused before any connection
    for label, value in (
        ("max_parallel", max_parallel),
        ("shards_per_run", shards_per_run),
        ("max_attempts", max_attempts),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be an integer >= 1, got {value!r}")
    if max_parallel > MAX_PARALLEL:
        raise ValueError(
            f"max_parallel must be at most {MAX_PARALLEL:,} (Temporal's limit of pending "
            f"activities per workflow execution; past it no shard is scheduled), got "
            f"{max_parallel:,}"
        )
    for label, seconds in (
        ("heartbeat_timeout", heartbeat_timeout),
        ("shard_timeout", shard_timeout),
        ("retry_initial", retry_initial),
        ("retry_max", retry_max),
    ):
        if not seconds > 0:
            raise ValueError(f"{label} must be > 0 seconds, got {seconds!r}")
    async with contextlib.AsyncExitStack() as stack:
        opened = (
            sink if isinstance(sink, Sink) else await stack.enter_async_context(open_sink(sink))
        )
        # A sink is known by the identity its database holds, whatever URL reached it.
        name = opened.identity or opened.name
        spec = await anyio.to_thread.run_sync(
            functools.partial(
                plan_batch, ids_path, shards=shards, sink=name, include_events=include_events
            )
        )
        if isinstance(opened, PostgresSink) if ids_in_sink is None else ids_in_sink:
            # Read once here, stored by shard: workers need no shared file, and each reads
            # its own shard's ids only.
            cut = await anyio.to_thread.run_sync(
                cut_ids, spec.ids_path, spec.ids_digest, spec.shards
            )
            await opened.load_ids(spec.batch_id, cut)
            spec = replace(spec, ids_in_sink=True)
    batch_input = BatchInput(
        batch=spec,
        max_parallel=max_parallel,
        shards_per_run=shards_per_run,
        heartbeat_timeout=heartbeat_timeout,
        shard_timeout=shard_timeout,
        retry_initial=retry_initial,
        retry_max=max(retry_max, retry_initial),
        max_attempts=max_attempts,
    )
    try:
        handle = await client.start_workflow(
            WatchBatchWorkflow.run,
            batch_input,
            id=spec.workflow_id,
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        )
    except WorkflowAlreadyStartedError as exc:
        raise BatchAlreadyStartedError(spec.batch_id, spec.workflow_id, exc.run_id) from exc
    return StartedBatch(spec=spec, workflow=handle)
