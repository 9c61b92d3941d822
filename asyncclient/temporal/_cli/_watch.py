"""``watch``: start a batch from an ids file and follow it until every id is stored."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import anyio
import anyio.to_thread
import click
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.api.workflow.v1 import PendingActivityInfo
from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.exceptions import ActivityError, ApplicationError, RetryState

from ..._cli._exit import CliError
from .._activities import FATAL_ERROR_TYPES, NOT_OWNED_ERROR_TYPE
from .._connect import TemporalSettings
from .._exceptions import BatchAlreadyStartedError, BatchInputError, SinkError
from .._planner import BatchSpec, batch_id_for, plan_batch, read_ids, workflow_id_for
from .._sinks import Sink, open_sink
from .._starter import MAX_PARALLEL, start_batch
from .._workflows import BatchResult
from ._common import (
    EXIT_ALREADY_STARTED,
    EXIT_FAILED,
    EXIT_KEY,
    EXIT_OK,
    EXIT_USAGE,
    Number,
    connect_temporal,
    open_sink_store,
    run_command,
    temporal_command,
    temporal_options,
    temporal_settings,
)

__all__ = ["watch"]


def _max_parallel(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if not 1 <= value <= MAX_PARALLEL:
        raise click.BadParameter(
            f"must be 1 to {MAX_PARALLEL:,} (Temporal's limit of pending activities per "
            f"workflow execution), got {value:,}",
            ctx,
            param,
        )
    return value


@temporal_command(
    "Start a batch and follow it by counting stored results until every id is stored. The "
    "same ids file into the same sink is refused while it runs and after it completed "
    "(--attach follows it instead); after it failed, was terminated or cancelled, it is "
    "started again and skips what the sink holds. Prints one progress line every "
    "--interval seconds (stored/total, rate, elapsed).",
    short_help="Start a batch and follow it until every id is stored.",
)
@click.option(
    "--ids-file", required=True, help="One run id per line; workers must read the same path."
)
@temporal_options
@click.option("--shards", type=int, default=10, show_default=True, help="How many shards.")
@click.option(
    "--max-parallel",
    type=int,
    default=50,
    show_default=True,
    callback=_max_parallel,
    help=f"Shards watched at once in all (at most {MAX_PARALLEL:,}, Temporal's limit of "
    "pending activities per workflow).",
)
@click.option(
    "--shards-per-run",
    type=int,
    default=500,
    show_default=True,
    help="Shards per workflow execution before it continues as new.",
)
@click.option(
    "--heartbeat-timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds of silence before a shard is retried elsewhere.",
)
@click.option(
    "--retry-initial",
    type=float,
    default=1.0,
    show_default=True,
    help="Seconds before a failed or timed-out shard is retried, doubling.",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Attempts at one shard before it fails the batch; crashes and worker shutdowns count "
    "(20: about a quarter of an hour of retries).",
)
@click.option("--include-events", is_flag=True, help="Store runs with their event timelines.")
@click.option(
    "--attach", is_flag=True, help="If the batch was started before, follow it instead of failing."
)
@click.option(
    "--interval",
    type=Number(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds between progress lines.",
)
@click.option(
    "--timeout",
    type=Number(min=0, min_open=True),
    default=None,
    help="Give up following after this many seconds (no limit).",
)
def watch(**params: Any) -> int:
    """Start a batch and follow it until every id is stored; returns the exit status."""

    def body() -> int:
        settings = temporal_settings(params)
        return asyncio.run(_watch(SimpleNamespace(**params), settings))

    return run_command(body)


async def _watch(args: SimpleNamespace, settings: TemporalSettings) -> int:
    # Everything that needs no network is checked first.
    try:
        sink = open_sink(args.sink)
        ids, digest = await anyio.to_thread.run_sync(read_ids, args.ids_file)
    except (SinkError, BatchInputError) as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    await open_sink_store(sink)
    try:
        temporal = await connect_temporal(settings)
        try:
            # Before the start, so that every row after it is this execution's: an earlier
            # execution of the same batch (failed, terminated) may have stored some already.
            stored_before = len(await sink.has(ids))
            batch_id = batch_id_for(digest, sink.identity or sink.name)
            by_batch_before = await sink.count(batch_id=batch_id)
            ended = await _ended_before(temporal, batch_id)
            spec, workflow, attached = await _start_or_attach(temporal, args, sink)
            if ended is not None and not attached:
                print(
                    f"this batch ran before and ended {ended}: started again; the "
                    f"{stored_before} ids the sink holds are skipped",
                    flush=True,
                )
        except (BatchInputError, ValueError) as exc:
            raise CliError(str(exc), EXIT_USAGE) from exc
        except BatchAlreadyStartedError as exc:
            print(
                f"error: {exc}\nhint: --attach follows the batch already started", file=sys.stderr
            )
            return EXIT_ALREADY_STARTED

        async def stored() -> int:
            if attached:
                # Some were stored by this very batch already: count them all, id by id.
                return len(await sink.has(ids))
            return stored_before + await sink.count(batch_id=spec.batch_id) - by_batch_before

        return await _follow(args, temporal, sink, spec, workflow, ids, stored)
    finally:
        await sink.aclose()


_Handle = WorkflowHandle[Any, BatchResult]


async def _start_or_attach(
    temporal: TemporalClient, args: SimpleNamespace, sink: Sink
) -> tuple[BatchSpec, _Handle, bool]:
    try:
        started = await start_batch(
            temporal,
            args.ids_file,
            sink=sink,
            shards=args.shards,
            task_queue=args.task_queue,
            include_events=args.include_events,
            max_parallel=args.max_parallel,
            shards_per_run=args.shards_per_run,
            heartbeat_timeout=args.heartbeat_timeout,
            retry_initial=args.retry_initial,
            max_attempts=args.max_attempts,
        )
    except BatchAlreadyStartedError as exc:
        if not args.attach:
            raise
        spec = await anyio.to_thread.run_sync(
            lambda: plan_batch(args.ids_file, shards=args.shards, sink=sink.identity or sink.name)
        )
        print(f"batch {spec.batch_id} was started before: following it", flush=True)
        handle = temporal.get_workflow_handle(exc.workflow_id, result_type=BatchResult)
        return spec, handle, True
    spec = started.spec
    print(
        f"batch {spec.batch_id}: {spec.total} runs in {spec.shards} shards, workflow "
        f"{spec.workflow_id}, sink {spec.sink}",
        flush=True,
    )
    return spec, started.workflow, False


async def _follow(
    args: SimpleNamespace,
    temporal: TemporalClient,
    sink: Sink,
    spec: BatchSpec,
    workflow: _Handle,
    ids: list[str],
    stored: Callable[[], Awaitable[int]],
) -> int:
    """Print progress from the sink's count until every id is stored or the workflow ends."""
    finished = anyio.Event()
    outcome: list[BaseException | BatchResult] = []

    async def wait_for_workflow() -> None:
        try:
            outcome.append(await workflow.result())
        except Exception as exc:  # the batch failed: report its cause
            outcome.append(exc)
        finished.set()

    started_at = time.monotonic()
    deadline = started_at + args.timeout if args.timeout is not None else None
    total = len(ids)
    last_count, last_time = await stored(), started_at
    timed_out = False
    async with anyio.create_task_group() as group:
        group.start_soon(wait_for_workflow)
        while True:
            with anyio.move_on_after(args.interval):
                await finished.wait()
            now = time.monotonic()
            count = min(total, await stored())
            rate = (count - last_count) / max(now - last_time, 1e-9)
            last_count, last_time = count, now
            pending = [] if finished.is_set() else await _pending(temporal, spec.workflow_id)
            print(
                f"[{now - started_at:7.1f}s] stored {count}/{total} "
                f"({100.0 * count / total:5.1f}%), {rate:,.0f} runs/s{_pending_line(pending)}",
                flush=True,
            )
            for line in _failing_lines(pending):
                print(line, flush=True)
            if count >= total or finished.is_set():
                break
            if deadline is not None and now >= deadline:
                timed_out = True
                break
        group.cancel_scope.cancel()
    answered = len(await sink.has(ids))
    missing = total - len(await sink.has(ids, errors=True))
    errored = total - answered - missing
    if outcome and isinstance(outcome[0], BaseException):
        why, fatal = _failure_of(outcome[0])
        print(f"error: batch {spec.batch_id} failed: {why}", file=sys.stderr)
        if fatal:
            return EXIT_KEY
        print(
            "hint: watch again on the same ids file and sink to run the batch again; what is "
            "stored stays stored",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if missing:
        why = "still watching after --timeout" if timed_out else "the batch ended"
        print(f"error: {missing} of {total} ids are not stored ({why})", file=sys.stderr)
        return EXIT_FAILED
    if errored:
        print(
            f"error: {errored} of {total} ids could not be watched (404, another refusal): "
            "they are stored as errors, apart from the results; watching the ids again tries "
            "them again",
            file=sys.stderr,
        )
        return EXIT_FAILED
    elapsed = time.monotonic() - started_at
    print(f"done: every one of {total} ids is stored ({elapsed:.1f}s)", flush=True)
    return EXIT_OK


_SHOWN_FAILING = 5
_RERUN_STATUSES = {
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.CANCELED: "cancelled",
    WorkflowExecutionStatus.TIMED_OUT: "timed out",
}


async def _ended_before(temporal: TemporalClient, batch_id: str) -> str | None:
    """How the batch's last execution ended if it may be started again, else ``None``."""
    workflow_id = workflow_id_for(batch_id)
    try:
        description = await temporal.get_workflow_handle(workflow_id).describe()
    except Exception:  # not found (never started, or forgotten), or Temporal won't say
        return None
    return _RERUN_STATUSES.get(description.status) if description.status else None


async def _pending(temporal: TemporalClient, workflow_id: str) -> list[PendingActivityInfo]:
    """The batch's pending shard activities (of its latest run), or none if Temporal won't say."""
    try:
        description = await temporal.get_workflow_handle(workflow_id).describe()
    except Exception:  # RPCError and friends: the progress line goes without it
        return []
    return list(description.raw_description.pending_activities)


def _pending_line(pending: list[PendingActivityInfo]) -> str:
    if not pending:
        return ""
    waiting = sum(a.state == PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED for a in pending)
    return f"; {len(pending)} shards pending ({len(pending) - waiting} running, {waiting} waiting)"


def _failing_lines(pending: list[PendingActivityInfo]) -> list[str]:
    """One line per shard that has failed before and is being retried: its last failure."""
    failing = [a for a in pending if a.attempt > 1 and a.last_failure.message]
    lines = []
    for info in failing[:_SHOWN_FAILING]:
        limit = info.maximum_attempts or "no limit"
        lines.append(
            f"  {info.activity_id.replace('-', ' ')}: attempt {info.attempt} of {limit}, "
            f"last failure: {info.last_failure.message}"
        )
    if len(failing) > _SHOWN_FAILING:
        lines.append(f"  and {len(failing) - _SHOWN_FAILING} more shards retrying")
    return lines


def _failure_of(error: BaseException) -> tuple[str, bool]:
    """Why a batch failed, in one line, and whether no retry could fix it (a refused key)."""
    messages: list[str] = []
    fatal = False
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ApplicationError):
            fatal = fatal or cause.type in (*FATAL_ERROR_TYPES, NOT_OWNED_ERROR_TYPE)
            messages.append(cause.message)
        elif (
            isinstance(cause, ActivityError)
            and cause.retry_state == RetryState.MAXIMUM_ATTEMPTS_REACHED
        ):
            messages.append("every attempt allowed (--max-attempts) was made")
        cause = cause.__cause__
    if not messages:
        messages.append(str(error))
    return "; ".join(reversed(messages)), fatal
