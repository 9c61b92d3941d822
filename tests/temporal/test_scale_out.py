"""Scale-out for real: a Temporal dev server, the emulator and workers as subprocesses.

Each test gets its own task queue and sink, so a batch left behind by one cannot reach the
workers of another.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowExecutionStatus

from asyncclient.temporal import (
    BatchAlreadyStartedError,
    BatchResult,
    open_sink,
    start_batch,
    watch_main,
)

from .services import READY, Service, start_emulator, start_worker, watch_args, write_ids_file


async def _stored(sink_url: str, ids: list[str]) -> tuple[int, set[str]]:
    async with open_sink(sink_url) as sink:
        return await sink.count(), await sink.has(ids)


def test_twenty_thousand_runs_in_ten_shards_are_each_stored_once(
    temporal_address: str,
    postgres_url: str,
    task_queue: str,
    tmp_path: Path,
    services: list[Service],
    figures: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two workers watch 20,000 runs in 10 shards into PostgreSQL: every id stored, once."""
    emulator = start_emulator(tmp_path, runs=20_000, speed=20.0, max_duration=30.0)
    services.append(emulator)
    ids = write_ids_file(emulator.extra["base_url"], tmp_path / "ids.txt")
    assert len(ids) == 20_000
    workers = [
        start_worker(
            tmp_path,
            f"worker-{n}",
            address=temporal_address,
            task_queue=task_queue,
            base_url=emulator.extra["base_url"],
            sink=postgres_url,
        )
        for n in (1, 2)
    ]
    services.extend(workers)
    for worker in workers:
        worker.wait_for(READY)

    began = time.monotonic()
    status = watch_main(
        watch_args(
            temporal_address, task_queue, postgres_url, tmp_path / "ids.txt", "--shards", "10"
        )
    )
    elapsed = time.monotonic() - began

    out = capsys.readouterr().out
    assert status == 0, out
    assert "done: every one of 20000 ids is stored" in out
    count, stored = asyncio.run(_stored(postgres_url, ids))
    assert count == 20_000
    assert stored == set(ids)
    figures["20,000 runs, 10 shards, 2 workers, PostgreSQL sink"] = (
        f"{elapsed:.1f} s from start to every id stored: {20_000 / elapsed:,.0f} runs/s "
        f"({20_000 / elapsed / 2:,.0f} runs/s per worker, with the emulator, Temporal and "
        "PostgreSQL on the same 2 cores)"
    )


async def _start_crash_batch(address: str, queue: str, sink: str, ids_file: Path) -> str:
    client = await TemporalClient.connect(address)
    started = await start_batch(
        client,
        str(ids_file),
        sink=sink,
        shards=10,
        task_queue=queue,
        heartbeat_timeout=2.0,
        retry_initial=0.2,
    )
    return started.spec.workflow_id


async def _result(address: str, workflow_id: str) -> BatchResult:
    client = await TemporalClient.connect(address)
    handle = client.get_workflow_handle(workflow_id, result_type=BatchResult)
    return await asyncio.wait_for(handle.result(), timeout=120)


def _attempts_table(db: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with sqlite3.connect(db) as conn:
        by_attempt = conn.execute(
            "SELECT shard, attempt, worker, count(*), min(stored_at) FROM predev_results "
            "GROUP BY shard, attempt, worker"
        ).fetchall()
        attempts = conn.execute(
            "SELECT shard, attempt, worker, already_stored, started_at FROM predev_attempts"
        ).fetchall()
    return by_attempt, attempts


async def _retry_causes(address: str, workflow_id: str) -> list[tuple[int, str]]:
    """For each shard whose last attempt was not its first: that attempt's number and why the
    one before failed (an application failure's type, or ``"timeout"``)."""
    client = await TemporalClient.connect(address)
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    causes = []
    for event in history.events:
        if not event.HasField("activity_task_started_event_attributes"):
            continue
        started = event.activity_task_started_event_attributes
        if started.attempt < 2:
            continue
        failure = started.last_failure
        if failure.HasField("timeout_failure_info"):
            causes.append((started.attempt, "timeout"))
        else:
            causes.append((started.attempt, failure.application_failure_info.type))
    return causes


@pytest.mark.parametrize("how", ["kill -9", "SIGTERM"])
def test_a_worker_stopped_mid_batch_loses_nothing_and_stores_nothing_twice(
    how: str,
    temporal_address: str,
    task_queue: str,
    tmp_path: Path,
    services: list[Service],
    figures: dict[str, str],
) -> None:
    """The worker holding every shard is killed (kill -9) or stopped (SIGTERM) part-way: a
    standby worker resumes each shard from where the sink says and every run is stored exactly
    once. After kill -9 the shards wait out the heartbeat timeout; after SIGTERM the worker
    stores what it fetched, hands its shards on at once and exits 0."""
    # Runs that finish over the next twenty seconds or so, so the stop lands mid-shard.
    emulator = start_emulator(tmp_path, runs=4_000, speed=2.0, max_duration=40.0)
    services.append(emulator)
    base_url = emulator.extra["base_url"]
    ids = write_ids_file(base_url, tmp_path / "ids.txt")
    db = tmp_path / "results.db"
    sink = f"sqlite:///{db}"

    def worker(name: str) -> Service:
        service = start_worker(
            tmp_path,
            name,
            address=temporal_address,
            task_queue=task_queue,
            base_url=base_url,
            sink=sink,
            poll=(0.2, 1.0),
        )
        services.append(service)
        return service

    first = worker("worker-a")
    first.wait_for(READY)
    workflow_id = asyncio.run(
        _start_crash_batch(temporal_address, task_queue, sink, tmp_path / "ids.txt")
    )
    deadline = time.monotonic() + 60
    # worker-a takes all ten shards before the standby polls.
    while db.exists() is False or len(_attempts_table(db)[1]) < 10:
        assert time.monotonic() < deadline, "worker-a did not take every shard"
        time.sleep(0.05)
    standby = worker("worker-b")
    standby.wait_for(READY)
    while asyncio.run(_stored(sink, []))[0] < len(ids) // 5:
        assert time.monotonic() < deadline, "the first worker stored nothing"
        time.sleep(0.05)
    stopped_at = time.time()
    if how == "kill -9":
        first.kill_9()
    else:
        first.process.send_signal(signal.SIGTERM)
        assert first.process.wait(timeout=30) == 0
        assert "stopping: no new shards" in first.output()
    left_after = time.time() - stopped_at
    stored_at_stop = asyncio.run(_stored(sink, []))[0]
    assert stored_at_stop < len(ids), "the batch finished before the stop"

    result = asyncio.run(_result(temporal_address, workflow_id))

    count, stored = asyncio.run(_stored(sink, ids))
    assert count == len(ids)
    assert stored == set(ids)
    assert result.progress.ids == len(ids)
    assert result.progress.max_attempt >= 2
    by_attempt, attempts = _attempts_table(db)

    def after_stop(started_at: str) -> bool:
        return datetime.fromisoformat(started_at).timestamp() >= stopped_at

    # The stop was real: shards were begun by worker-a, and attempted again after the stop by
    # worker-b only, which found part of them stored and finished the rest. (On a loaded
    # machine an attempt may also time out before the stop: those are worker-a's or -b's.)
    assert {w for _, a, w, _, _ in attempts if a == 1} == {"worker-a"}
    later = [(shard, w, already) for shard, a, w, already, t in attempts if after_stop(t)]
    assert later
    assert {w for _, w, _ in later} == {"worker-b"}
    assert any(already > 0 for *_, already in later)
    resumed = {s for s, _, w, *_ in by_attempt if w == "worker-a"} & {
        s for s, _, w, *_ in by_attempt if w == "worker-b"
    }
    assert resumed, by_attempt
    assert sum(n for *_, n, _ in by_attempt) == len(ids)
    # Why each shard's last attempt began: after kill -9, only heartbeat timeouts; after
    # SIGTERM, the worker's shutdown (and, under load, maybe a timeout as well).
    causes = {cause for _, cause in asyncio.run(_retry_causes(temporal_address, workflow_id))}
    if how == "kill -9":
        assert causes == {"timeout"}
    else:
        assert "WorkerShutdownError" in causes
        assert causes <= {"WorkerShutdownError", "timeout"}
    first_after = min(datetime.fromisoformat(t) for _, _, w, _, t in by_attempt if w == "worker-b")
    recovery = first_after.timestamp() - stopped_at
    figures[f"{how} of the worker holding all 10 shards, 4,000 runs, heartbeat timeout 2 s"] = (
        f"{stored_at_stop} stored before the stop; the worker was gone {left_after:.2f} s after "
        f"it; the standby's first store came {recovery:.1f} s after it; "
        f"{len({shard for shard, *_ in later})} shards resumed after the stop, {len(resumed)} "
        "of them with rows from both workers"
    )


def test_the_same_batch_is_not_started_twice_even_after_it_finished(
    temporal_address: str,
    sqlite_url: str,
    task_queue: str,
    tmp_path: Path,
    services: list[Service],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A batch runs once (continuing as new on the way); starting it again is refused, and
    --attach follows the one that ran."""
    emulator = start_emulator(tmp_path, runs=600, speed=50.0, max_duration=10.0)
    services.append(emulator)
    ids_file = tmp_path / "ids.txt"
    ids = write_ids_file(emulator.extra["base_url"], ids_file)
    worker = start_worker(
        tmp_path,
        "worker-1",
        address=temporal_address,
        task_queue=task_queue,
        base_url=emulator.extra["base_url"],
        sink=sqlite_url,
    )
    services.append(worker)
    worker.wait_for(READY)
    args = watch_args(
        temporal_address,
        task_queue,
        sqlite_url,
        ids_file,
        "--shards",
        "6",
        "--max-parallel",
        "2",
        "--shards-per-run",
        "3",
    )

    assert watch_main(args) == 0
    capsys.readouterr()
    assert watch_main(args) == 5
    refused = capsys.readouterr().err
    assert "already started" in refused
    assert "--attach" in refused
    assert watch_main([*args, "--attach"]) == 0
    assert "was started before: following it" in capsys.readouterr().out

    count, stored = asyncio.run(_stored(sqlite_url, ids))
    assert count == len(ids) == len(stored)
    workflow_id = refused.split("workflow id '")[1].split("'")[0]
    result = asyncio.run(_result(temporal_address, workflow_id))
    assert result.progress.shards_done == 6
    # Six shards, three per execution: it continued as new (once, or more when shards still
    # running were started again by the next execution rather than waited for).
    assert result.progress.runs >= 2
    # A shard started again finds what its abandoned attempt stored: each run stored once.
    assert 0 < result.progress.stored <= len(ids)
    assert result.progress.already_stored + result.progress.stored <= len(ids)


async def _start_twice(address: str, queue: str, ids_file: Path, sink: str) -> None:
    client = await TemporalClient.connect(address)
    first = await start_batch(client, str(ids_file), sink=sink, shards=2, task_queue=queue)
    try:
        with pytest.raises(BatchAlreadyStartedError) as caught:
            await start_batch(client, str(ids_file), sink=sink, shards=5, task_queue=queue)
        assert caught.value.workflow_id == first.spec.workflow_id
        assert caught.value.batch_id == first.spec.batch_id
        description = await first.workflow.describe()
        assert description.status == WorkflowExecutionStatus.RUNNING
    finally:
        await first.workflow.terminate(reason="test over")


def test_a_running_batch_is_not_started_again(
    temporal_address: str, sqlite_url: str, task_queue: str, tmp_path: Path
) -> None:
    """While a batch runs (here: no worker yet), a second start, however sharded, is refused."""
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("65f8a9d2c1e4b5a6f7e8d9c0\n000000000000000000000001\n")
    asyncio.run(_start_twice(temporal_address, task_queue, ids_file, sqlite_url))
