"""Building a Temporal worker that runs batches: the workflow and the shard activity."""

from __future__ import annotations

import sys
from datetime import timedelta

from temporalio.client import Client as TemporalClient
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from ._activities import ShardActivities
from ._starter import DEFAULT_TASK_QUEUE
from ._workflows import WatchBatchWorkflow

__all__ = ["create_worker"]

HEARTBEAT_THROTTLE = 5.0
"""The longest a heartbeat of a shard waits before it is sent (seconds)."""

_DETERMINISTIC_LIBRARIES = (
    "aiohappyeyeballs",
    "aiohttp",
    "aiosignal",
    "anyio",
    "attr",
    "backoff",
    "frozenlist",
    "idna",
    "msgspec",
    "multidict",
    "propcache",
    "psycopg",
    "psycopg_pool",
    "sniffio",
    "yarl",
)
"""Libraries this package imports, which the workflow never calls: the sandbox may share them."""


def _sandbox_runner() -> SandboxedWorkflowRunner:
    """The workflow sandbox, sharing the worker's already imported modules.

    Without this, every workflow run imports the libraries and this package afresh inside its
    sandbox (about 190 modules). Only the workflow's own module, and the packages above it,
    are loaded again: the sandbox must load the workflow's code itself to guard it.
    """
    workflow_module = WatchBatchWorkflow.__module__
    parents = {workflow_module.rsplit(".", n)[0] for n in range(1, workflow_module.count("."))}
    ours = {
        name
        for name in sys.modules
        if name.startswith("asyncclient.") and name != workflow_module and name not in parents
    }
    restrictions = SandboxRestrictions.default.with_passthrough_modules(
        *_DETERMINISTIC_LIBRARIES, *sorted(ours)
    )
    return SandboxedWorkflowRunner(restrictions=restrictions)


def create_worker(
    client: TemporalClient,
    activities: ShardActivities,
    *,
    task_queue: str = DEFAULT_TASK_QUEUE,
    max_concurrent_shards: int = 10,
    graceful_shutdown: float = 30.0,
) -> Worker:
    """A worker for ``task_queue`` that runs the batch workflow and the shard activity.

    Run it with ``async with worker: ...`` or ``await worker.run()``. Every worker of a task
    queue must store into the same sink: a shard meant for another sink is refused.

    Args:
        client: a connected Temporal client.
        activities: the shard activities, holding this worker's API client and sink.
        task_queue: the task queue to poll.
        max_concurrent_shards: the most shards this worker watches at once; each polls with
            its own in-flight limit (the policy's ``max_in_flight``).
        graceful_shutdown: seconds a shutdown waits for the shards in progress (which stop
            polling, store what they fetched and hand the shard on) before cancelling them.

    Returns:
        The worker, not yet running.
    """
    if max_concurrent_shards < 1:
        raise ValueError(f"max_concurrent_shards must be 1 or more, got {max_concurrent_shards}")
    if not graceful_shutdown >= 0:
        raise ValueError(f"graceful_shutdown must be >= 0 seconds, got {graceful_shutdown!r}")
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[WatchBatchWorkflow],
        workflow_runner=_sandbox_runner(),
        activities=[activities.watch_shard],
        max_concurrent_activities=max_concurrent_shards,
        graceful_shutdown_timeout=timedelta(seconds=graceful_shutdown),
        # A terminated or cancelled batch reaches its shards with the next heartbeat's answer:
        # within seconds, not the SDK's default of up to 80 % of the heartbeat timeout.
        max_heartbeat_throttle_interval=timedelta(seconds=HEARTBEAT_THROTTLE),
    )
