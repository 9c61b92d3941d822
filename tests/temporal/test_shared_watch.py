"""A worker's shards share one watch: one list scan, however many shards (the emulator)."""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from temporalio.testing import ActivityEnvironment

from asyncclient import Client, PollPolicy, RetryPolicy
from asyncclient.temporal import BatchSpec, ShardActivities, SQLiteSink, load_shard, plan_batch
from asyncclient.temporal._shared import SharedWatch
from asyncclient.testing import Emulator, serve

pytestmark = pytest.mark.anyio

AUTO = PollPolicy(initial_delay=0.05, max_delay=0.2, not_found_grace=0.0, strategy="auto")
RETRY = RetryPolicy(max_retries=1, initial_delay=0.001, max_delay=0.005)
FINISHED = 900
PROCESSING = 100


def _emulator() -> Emulator:
    """900 runs finished long ago and 100 that finish within about a second."""
    emu = Emulator(seed=11)
    past = time.time() - 600
    for n in range(FINISHED):
        emu.create_run(durations=[1.0], created_at=past + n * 0.1)
    for n in range(PROCESSING):
        emu.create_run(durations=[0.3 + n * 0.01])
    return emu


def _environment() -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_timeout=timedelta(seconds=5))
    return env


async def _run_batch(tmp_path: Path, shards: int, *, shared: bool) -> tuple[int, int]:
    """Run every shard of a batch at once on one worker; the list pages and the rows stored."""
    emu = _emulator()
    path = tmp_path / f"ids-{shards}-{shared}.txt"
    path.write_text("\n".join(emu.run_ids()) + "\n")
    async with (
        serve(emu) as server,
        Client(server.api_key, base_url=server.base_url, retry=RETRY) as client,
        SQLiteSink(tmp_path / f"results-{shards}-{shared}.db") as sink,
    ):
        batch: BatchSpec = plan_batch(path, shards=shards, sink=sink.name)
        activities = ShardActivities(
            client, sink, policy=AUTO, flush_interval=0.01, max_shards=shards
        )

        async def shard(index: int) -> None:
            await _environment().run(activities.watch_shard, batch.shard(index))

        async def all_shards() -> None:
            async with anyio.create_task_group() as group:
                for index in range(shards):
                    group.start_soon(shard, index)

        if shared:
            async with activities:
                await all_shards()
        else:
            await all_shards()
        stored = await sink.count()
    return emu.requests_by_route["list"], stored


@pytest.mark.parametrize("shards", [10, 30])
async def test_many_shards_of_a_worker_cost_the_list_pages_of_one(
    tmp_path: Path, shards: int
) -> None:
    """With `auto`, a worker's shards read about as many list pages as one shard would (one
    scan per worker, not per shard), and every run is stored once."""
    one, stored_one = await _run_batch(tmp_path, 1, shared=True)
    many, stored_many = await _run_batch(tmp_path, shards, shared=True)
    alone, _ = await _run_batch(tmp_path, shards, shared=False)

    assert stored_one == stored_many == FINISHED + PROCESSING
    # Scans are per tick, so a loaded machine adds a few to either run: a factor, not a
    # count per shard (measured quietly: 26 pages for 1 shard, 24 for 10, 22 for 30).
    assert many <= 2 * one, (one, many)
    # The same shards, each with a watch of its own, scan once each: the trap this avoids.
    assert alone > many + shards, (alone, many)


async def test_a_shard_that_leaves_takes_its_runs_out_and_a_retry_gets_them(
    tmp_path: Path,
) -> None:
    """A shard that stops early leaves nothing polled for it, and the same ids subscribed
    again (a retry on the same worker) get their final updates."""
    per_run = dataclasses.replace(AUTO, strategy="per-run")
    emu = Emulator(seed=5)
    ids = [emu.create_run(durations=[30.0]) for _ in range(5)]
    done = [emu.create_run(durations=[0.0]) for _ in range(5)]
    async with (
        serve(emu) as server,
        Client(server.api_key, base_url=server.base_url, retry=RETRY) as client,
        SharedWatch(client, policy=per_run) as shared,
    ):
        async with shared.subscribe(ids + done) as updates:
            first = await updates.receive()
        assert first.run_id in done
        watcher = shared.watcher
        assert watcher is not None
        # The finals already fetched reach the router (and go nowhere); the rest are dropped.
        with anyio.fail_after(5):
            while watcher.pending:
                await anyio.sleep(0.01)
        polls = watcher.polls

        async with shared.subscribe(done) as updates:
            finals = [update async for update in updates]
        assert sorted(update.run_id for update in finals) == sorted(done)
        assert all(update.run is not None and update.run.is_terminal for update in finals)
        assert watcher.polls - polls <= len(done)  # the slow runs that were left: no polls


def test_the_shard_ids_used_above_are_a_partition(tmp_path: Path) -> None:
    """The batches above cut every id into exactly one shard (so counts compare)."""
    emu = _emulator()
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(emu.run_ids()) + "\n")
    batch = plan_batch(path, shards=30, sink="sqlite:///x.db")
    seen = [run_id for index in range(30) for run_id in load_shard(batch.shard(index))]
    assert sorted(seen) == sorted(emu.run_ids())
