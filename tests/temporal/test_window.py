"""The batch workflow's sliding window: a slow shard holds no finished one back."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowExecutionStatus

from asyncclient import Client, PollPolicy, RetryPolicy
from asyncclient.temporal import (
    ShardActivities,
    SQLiteSink,
    create_worker,
    shard_of,
    start_batch,
)
from asyncclient.testing import Emulator, serve

pytestmark = pytest.mark.anyio

POLICY = PollPolicy(initial_delay=0.02, max_delay=0.1, strategy="per-run")
RETRY = RetryPolicy(max_retries=1, initial_delay=0.001, max_delay=0.005)
SHARDS = 6


@pytest.fixture
def anyio_backend() -> str:
    """The Temporal SDK runs on asyncio."""
    return "asyncio"


async def test_a_slow_shard_does_not_hold_finished_shards_back(
    temporal_address: str, task_queue: str, tmp_path: Path
) -> None:
    """With two slots and two shards per execution, a shard whose run never finishes does not
    stop the others: every finished run is stored while it is still watched, and the
    executions continue as new around it."""
    emulator = Emulator(seed=9)
    past = time.time() - 600
    slow = ""
    while not slow:
        run_id = emulator.create_run(durations=[3600.0])
        if shard_of(run_id, SHARDS) == 0:
            slow = run_id
    finished = [emulator.create_run(durations=[1.0], created_at=past) for _ in range(60)]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join([slow, *finished]) + "\n")
    temporal = await TemporalClient.connect(temporal_address)
    async with (
        serve(emulator) as server,
        Client(server.api_key, base_url=server.base_url, retry=RETRY) as api,
        SQLiteSink(tmp_path / "results.db") as sink,
        ShardActivities(api, sink, policy=POLICY, flush_interval=0.01, max_shards=4) as shards,
    ):
        worker = create_worker(temporal, shards, task_queue=task_queue, max_concurrent_shards=4)
        async with worker:
            started = await start_batch(
                temporal,
                str(ids_file),
                sink=sink,
                shards=SHARDS,
                task_queue=task_queue,
                max_parallel=2,
                shards_per_run=2,
                heartbeat_timeout=2.0,
            )
            with anyio.fail_after(60):
                while await sink.has(finished) != set(finished):
                    await anyio.sleep(0.1)
            description = await started.workflow.describe()
            assert description.status == WorkflowExecutionStatus.RUNNING
            assert not await sink.has([slow])
            # The executions continued as new around the slow shard.
            assert description.run_id != started.workflow.first_execution_run_id
            await started.workflow.terminate("the test is over")
            # The slow shard's attempt hears of it at its next heartbeat, leaves, and its run
            # is no longer polled: nothing is in flight when the worker stops.
            watcher = shards.shared[False].watcher
            assert watcher is not None
            with anyio.fail_after(30):
                while watcher.pending:
                    await anyio.sleep(0.05)
    # The server closed the connections of requests cancelled with the abandoned attempts: let
    # the loop finish closing their transports before the test's loop goes away.
    for _ in range(10):
        await anyio.sleep(0.01)
