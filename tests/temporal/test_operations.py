"""Operating batches on a real dev server: failing loudly, bounded retries, re-runs."""

from __future__ import annotations

import asyncio
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from temporalio.client import Client as TemporalClient

from asyncclient.temporal import BatchResult, open_sink, start_batch, watch_main

from .services import (
    API_KEY,
    READY,
    Service,
    free_port,
    start_emulator,
    start_service,
    start_worker,
    watch_args,
    write_ids_file,
)


def _scrape(bind: str) -> str:
    with urllib.request.urlopen(f"http://{bind}/metrics", timeout=10) as response:
        return str(response.read().decode())


def _series(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Prometheus text: each series of the metric ``name``, by its labels."""
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, value = line.rsplit(" ", 1)
        labels: tuple[tuple[str, str], ...] = ()
        if "{" in head:
            body = head[head.index("{") + 1 : head.rindex("}")]
            labels = tuple(
                (key, raw.strip('"'))
                for key, raw in (pair.split("=", 1) for pair in body.split(",") if pair)
            )
        found[labels] = float(value)
    return found


def _watch_args(address: str, queue: str, sink: str, ids_file: Path, *extra: str) -> list[str]:
    """``watch_args`` at this module's pace: a status line per 0.5 s, retries after 0.2 s."""
    return watch_args(
        address, queue, sink, ids_file, "--retry-initial", "0.2", *extra, interval="0.5"
    )


async def _count(sink_url: str, ids: list[str]) -> tuple[int, set[str]]:
    async with open_sink(sink_url) as sink:
        return await sink.count(), await sink.has(ids)


def test_a_refused_key_fails_the_batch_at_once_and_the_batch_can_run_again(
    temporal_address: str,
    sqlite_url: str,
    task_queue: str,
    tmp_path: Path,
    services: list[Service],
    figures: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Workers with a wrong key: watch reports the 401 at once and exits 3, no retry; with
    the key fixed the same batch runs again to the end; once completed it is refused."""
    emulator = start_emulator(tmp_path, runs=200, speed=50.0, max_duration=5.0)
    services.append(emulator)
    base_url = emulator.extra["base_url"]
    ids_file = tmp_path / "ids.txt"
    ids = write_ids_file(base_url, ids_file)

    def worker(name: str, key: str | None = None) -> Service:
        service = start_worker(
            tmp_path,
            name,
            address=temporal_address,
            task_queue=task_queue,
            base_url=base_url,
            sink=sqlite_url,
            env={"PREDEV_API_KEY": key} if key else None,
        )
        services.append(service)
        service.wait_for(READY)
        return service

    bad = worker("worker-bad-key", key="wrong-key-for-this-test")
    args = _watch_args(temporal_address, task_queue, sqlite_url, ids_file, "--shards", "4")
    began = time.monotonic()
    assert watch_main(args) == 3
    reported_after = time.monotonic() - began
    failed = capsys.readouterr()
    assert "refused this worker's key" in failed.err
    assert "401" in failed.err
    assert "wrong-key-for-this-test" not in failed.err + failed.out
    assert asyncio.run(_count(sqlite_url, ids))[0] == 0
    bad.stop()

    worker("worker-good-key")
    assert watch_main(args) == 0
    again = capsys.readouterr().out
    assert "this batch ran before and ended failed: started again" in again
    assert f"done: every one of {len(ids)} ids is stored" in again
    count, stored = asyncio.run(_count(sqlite_url, ids))
    assert count == len(ids)
    assert stored == set(ids)
    assert watch_main(args) == 5
    assert "already started" in capsys.readouterr().err
    figures["bad API key, 4 shards"] = (
        f"watch exited 3 with the 401 {reported_after:.1f} s after it started the batch"
    )


def test_a_shard_that_keeps_failing_is_shown_while_waiting_and_its_retries_end(
    temporal_address: str,
    sqlite_url: str,
    task_queue: str,
    tmp_path: Path,
    services: list[Service],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every poll answered 503: watch prints the shard's attempt and last failure while it
    retries, and after --max-attempts the batch fails (exit 1) with that failure."""
    emulator = start_emulator(tmp_path, runs=5, speed=50.0, max_duration=5.0, faults="get/503:1")
    services.append(emulator)
    ids_file = tmp_path / "ids.txt"
    write_ids_file(emulator.extra["base_url"], ids_file)
    worker = start_worker(
        tmp_path,
        "worker-503",
        address=temporal_address,
        task_queue=task_queue,
        base_url=emulator.extra["base_url"],
        sink=sqlite_url,
        extra=("--max-failed-polls", "1"),
    )
    services.append(worker)
    worker.wait_for(READY)
    args = _watch_args(
        temporal_address, task_queue, sqlite_url, ids_file, "--shards", "1", "--max-attempts", "3"
    )

    assert watch_main(args) == 1

    out, err = capsys.readouterr()
    assert "1 shards pending" in out
    assert "shard 0: attempt 2 of 3, last failure: shard 0: 5 runs kept failing" in out
    assert "kept failing for a passing reason" in err
    assert "every attempt allowed (--max-attempts) was made" in err
    assert "hint: watch again" in err


async def _start_and_terminate(
    address: str, queue: str, ids_file: Path, sink: str, ids: list[str]
) -> int:
    client = await TemporalClient.connect(address)
    started = await start_batch(client, str(ids_file), sink=sink, shards=3, task_queue=queue)
    deadline = time.monotonic() + 60
    while (stored := (await _count(sink, []))[0]) < len(ids) // 4:
        assert time.monotonic() < deadline, "nothing was stored"
        await asyncio.sleep(0.05)
    await started.workflow.terminate(reason="the operator stopped it")
    return stored


async def _last_result(address: str, workflow_id: str) -> BatchResult:
    client = await TemporalClient.connect(address)
    handle = client.get_workflow_handle(workflow_id, result_type=BatchResult)
    return await asyncio.wait_for(handle.result(), timeout=120)


def test_a_terminated_batch_runs_again_and_stores_nothing_twice(
    temporal_address: str,
    sqlite_url: str,
    task_queue: str,
    tmp_path: Path,
    services: list[Service],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A batch terminated part-way is started again by watch on the same file and sink: the
    new execution skips what is stored and every id ends stored once; the worker's metrics
    count each stored run, per shard, and its requests and 429s."""
    emulator = start_emulator(
        tmp_path, runs=600, speed=2.0, max_duration=20.0, faults="get/429:0.01"
    )
    services.append(emulator)
    base_url = emulator.extra["base_url"]
    ids_file = tmp_path / "ids.txt"
    ids = write_ids_file(base_url, ids_file)
    metrics = f"127.0.0.1:{free_port()}"
    worker = start_worker(
        tmp_path,
        "worker-1",
        address=temporal_address,
        task_queue=task_queue,
        base_url=base_url,
        sink=sqlite_url,
        extra=("--metrics-bind", metrics),
    )
    services.append(worker)
    worker.wait_for(READY)
    before = asyncio.run(
        _start_and_terminate(temporal_address, task_queue, ids_file, sqlite_url, ids)
    )

    args = _watch_args(temporal_address, task_queue, sqlite_url, ids_file, "--shards", "3")
    assert watch_main(args) == 0

    out = capsys.readouterr().out
    assert "this batch ran before and ended terminated: started again" in out
    assert f"done: every one of {len(ids)} ids is stored" in out
    count, stored = asyncio.run(_count(sqlite_url, ids))
    assert count == len(ids)
    assert stored == set(ids)
    workflow_id = out.split("workflow ")[1].split(",")[0]
    result = asyncio.run(_last_result(temporal_address, workflow_id))
    # What the terminated execution stored is skipped; its attempts may still have stored a few
    # more until their next heartbeat told them: the sink took each run from one of them only.
    assert result.progress.already_stored >= before
    assert result.progress.already_stored + result.progress.stored <= len(ids)

    # The one worker stored every run: its metrics say so, per shard, with its requests.
    scraped = _scrape(metrics)
    stored_by_shard = _series(scraped, "asyncclient_runs_stored")
    assert sum(stored_by_shard.values()) == len(ids)
    assert {labels["shard"] for labels in map(dict, stored_by_shard)} == {"0", "1", "2"}
    requests = _series(scraped, "asyncclient_requests")
    ok = sum(n for labels, n in requests.items() if dict(labels)["status"] == "200")
    refused = sum(n for labels, n in requests.items() if dict(labels)["status"] == "429")
    assert ok >= len(ids)
    assert refused > 0
    assert sum(_series(scraped, "asyncclient_rate_limited").values()) == refused
    # And the SDK's own: task slots and activity latencies.
    assert _series(scraped, "temporal_worker_task_slots_available")
    assert _series(scraped, "temporal_activity_execution_latency_count")


def test_another_accounts_key_fails_the_batch_and_the_right_key_then_stores_every_result(
    temporal_address: str,
    sqlite_url: str,
    task_queue: str,
    tmp_path: Path,
    services: list[Service],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Workers whose key is valid but owns none of the runs (every one 404): the batch fails
    for good with "this key owns none of these runs" (exit 3) and nothing is stored; with the
    right key the same watch stores every run's final answer."""
    emulator = start_service(
        "emulator",
        [
            sys.executable,
            "-m",
            "asyncclient.testing",
            "--port",
            "0",
            "--api-key",
            API_KEY,
            "--api-key",
            "another-accounts-key",
            "--runs",
            "120",
            "--speed",
            "50",
            "--max-duration",
            "5",
        ],
        tmp_path / "emulator.log",
    )
    services.append(emulator)
    emulator.wait_for("http://", timeout=60)
    base_url = emulator.output().split()[0]
    ids_file = tmp_path / "ids.txt"
    ids = write_ids_file(base_url, ids_file)

    def worker(name: str, key: str | None = None) -> Service:
        service = start_worker(
            tmp_path,
            name,
            address=temporal_address,
            task_queue=task_queue,
            base_url=base_url,
            sink=sqlite_url,
            env={"PREDEV_API_KEY": key} if key else None,
            extra=("--not-found-grace", "0.2"),
        )
        services.append(service)
        service.wait_for(READY)
        return service

    wrong = worker("worker-other-account", key="another-accounts-key")
    args = _watch_args(temporal_address, task_queue, sqlite_url, ids_file, "--shards", "3")
    assert watch_main(args) == 3
    failed = capsys.readouterr().err
    assert "this key owns none of these runs" in failed
    assert "another-accounts-key" not in failed
    assert asyncio.run(_count(sqlite_url, ids))[0] == 0
    wrong.stop()

    worker("worker-right-account")
    assert watch_main(args) == 0
    assert f"done: every one of {len(ids)} ids is stored" in capsys.readouterr().out
    count, stored = asyncio.run(_count(sqlite_url, ids))
    assert count == len(ids)
    assert stored == set(ids)
