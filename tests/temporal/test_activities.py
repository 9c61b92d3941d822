"""The shard activity, run in Temporal's activity test environment against the emulator."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from asyncclient import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    Client,
    NotFoundError,
    PollPolicy,
    RateLimitError,
    ResponseDecodeError,
    RetryPolicy,
    Run,
    RunUpdate,
    ServerError,
    WatchTimeoutError,
)
from asyncclient.temporal import (
    BatchSpec,
    PostgresSink,
    RunResult,
    ShardActivities,
    ShardProgress,
    SQLiteSink,
    StoredBy,
    load_shard,
    plan_batch,
)
from asyncclient.temporal._activities import _result_of
from asyncclient.temporal._planner import cut_ids
from asyncclient.testing import Emulator, EmulatorServer, Fault, ManualClock, serve

pytestmark = pytest.mark.anyio

POLICY = PollPolicy(
    initial_delay=0.01, max_delay=0.05, not_found_grace=0.0, max_failed_polls=2, strategy="per-run"
)
RETRY = RetryPolicy(max_retries=1, initial_delay=0.001, max_delay=0.005)
MISSING = "0123456789abcdef01234567"


@pytest.fixture
def clock() -> ManualClock:
    """A clock the test moves by hand."""
    return ManualClock(start=1_776_000_000.0)


@pytest.fixture
def emulator(clock: ManualClock) -> Emulator:
    """An emulator with 60 runs, all finished."""
    emu = Emulator(api_keys=("test-key",), clock=clock, seed=3)
    for n in range(60):
        emu.create_run(durations=[1.0, 2.0], fail_with="boom" if n % 10 == 0 else None)
    clock.advance(10.0)
    return emu


@pytest.fixture
async def server(emulator: Emulator) -> AsyncIterator[EmulatorServer]:
    """The emulator on loopback."""
    async with serve(emulator) as running:
        yield running


@pytest.fixture
async def client(server: EmulatorServer) -> AsyncIterator[Client]:
    """A client with fast retries."""
    async with Client(server.api_key, base_url=server.base_url, retry=RETRY) as api:
        yield api


@pytest.fixture
async def sink(tmp_path: Path) -> AsyncIterator[SQLiteSink]:
    """An open SQLite sink."""
    async with SQLiteSink(tmp_path / "results.db") as opened:
        yield opened


@pytest.fixture
def batch(tmp_path: Path, emulator: Emulator, sink: SQLiteSink) -> BatchSpec:
    """The emulator's runs, and one id it does not know, in 3 shards."""
    path = tmp_path / "ids.txt"
    path.write_text("\n".join([*emulator.run_ids(), MISSING]) + "\n")
    return plan_batch(path, shards=3, sink=sink.name)


def _environment(attempt: int = 1, details: list[Any] | None = None) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info,
        attempt=attempt,
        heartbeat_details=details or [],
        heartbeat_timeout=timedelta(seconds=1),
    )
    return env


async def test_a_shard_is_watched_and_each_run_stored_once_with_who_stored_it(
    client: Client, sink: SQLiteSink, batch: BatchSpec
) -> None:
    """Every run of the shard is stored once, by this batch, shard and attempt; progress is
    heartbeated as it goes."""
    activities = ShardActivities(client, sink, policy=POLICY, worker="w1", flush_interval=0.01)
    env = _environment()
    beats: list[ShardProgress] = []
    env.on_heartbeat = lambda *details: beats.append(dataclasses.replace(details[0]))
    shard = batch.shard(1)
    ids = load_shard(shard)

    result = await env.run(activities.watch_shard, shard)

    assert (result.ids, result.already_stored, result.stored, result.attempt) == (
        len(ids),
        0,
        len(ids),
        1,
    )
    assert await sink.has(ids) == set(ids)
    assert await sink.count() == len(ids)
    row = await sink.get(ids[0])
    assert row is not None
    assert row.stored_by == StoredBy(batch.batch_id, 1, 1, "w1")
    assert beats[0].in_sink == 0
    assert beats[-1].in_sink == len(ids)
    assert beats[-1].last


async def test_a_later_attempt_skips_what_the_sink_holds_and_records_the_resume(
    client: Client, sink: SQLiteSink, batch: BatchSpec, emulator: Emulator
) -> None:
    """After a crash, the next attempt polls only the runs not stored yet, and the attempt is
    recorded with what it found and what the last heartbeat said."""
    shard = batch.shard(0)
    ids = load_shard(shard)
    done = ids[: len(ids) // 2]
    first = StoredBy(batch.batch_id, 0, 1, "w1")
    await sink.store_many([RunResult(i, "completed", b"{}") for i in done], by=first)
    activities = ShardActivities(client, sink, policy=POLICY, worker="w2", flush_interval=0.01)
    details = [{"ids": len(ids), "in_sink": len(done) - 1, "stored": 3, "last": done[-3:]}]
    gets_before = emulator.requests_by_route["get"]

    result = await _environment(attempt=2, details=details).run(activities.watch_shard, shard)

    assert result.already_stored == len(done)
    assert result.stored == len(ids) - len(done)
    assert emulator.requests_by_route["get"] - gets_before == len(ids) - len(done)
    assert await sink.has(ids) == set(ids)
    [attempt] = await sink.attempts(batch_id=batch.batch_id)
    assert (attempt.attempt, attempt.worker) == (2, "w2")
    assert (attempt.already_stored, attempt.resumed_stored) == (len(done), len(done) - 1)
    stored_again = await sink.get(done[0])
    assert stored_again is not None
    assert stored_again.stored_by == first


async def test_a_missing_run_is_stored_as_an_error(
    client: Client, sink: SQLiteSink, batch: BatchSpec
) -> None:
    """A run the API does not know is a final answer: stored with status 'error'."""
    index = next(i for i in range(3) if MISSING in load_shard(batch.shard(i)))
    activities = ShardActivities(client, sink, policy=POLICY, flush_interval=0.01)

    result = await _environment().run(activities.watch_shard, batch.shard(index))

    assert result.errors == 1
    stored = await sink.get(MISSING)
    assert stored is not None
    assert stored.status == "error"
    assert stored.body["error"] == "NotFoundError"


async def test_another_accounts_key_fails_the_shard_and_the_right_key_then_stores_results(
    server: EmulatorServer, client: Client, sink: SQLiteSink, batch: BatchSpec
) -> None:
    """A key that owns none of a shard's runs (all 404) fails it for good and stores nothing;
    the same shard with the right key then stores every run's final answer."""
    other = Emulator(api_keys=("other-key",))
    async with (
        serve(other) as elsewhere,
        Client("other-key", base_url=elsewhere.base_url, retry=RETRY) as wrong,
    ):
        activities = ShardActivities(wrong, sink, policy=POLICY, flush_interval=0.01)
        with pytest.raises(ApplicationError) as caught:
            await _environment().run(activities.watch_shard, batch.shard(0))
    assert caught.value.type == "RunsNotOwnedError"
    assert caught.value.non_retryable
    assert "owns none of these runs" in str(caught.value)
    assert await sink.count() == 0

    right = ShardActivities(client, sink, policy=POLICY, flush_interval=0.01)
    result = await _environment(attempt=2).run(right.watch_shard, batch.shard(0))

    ids = load_shard(batch.shard(0))
    assert (result.already_stored, result.stored) == (0, len(ids))
    assert await sink.has(ids) == set(ids) - {MISSING}


async def test_errors_stored_by_a_wrong_key_are_watched_again_by_the_next_run(
    server: EmulatorServer, client: Client, sink: SQLiteSink, batch: BatchSpec
) -> None:
    """Errors are not results: runs a wrong key stored as errors (the sink held some of the
    shard already) are watched again by a later run and replaced by their final answers."""
    ids = load_shard(batch.shard(1))
    good = ShardActivities(client, sink, policy=POLICY, flush_interval=0.01)
    first = [RunResult.from_run(await client.get_run(run_id)) for run_id in ids[:3]]
    await sink.store_many(first, by=StoredBy("earlier", 1, 1, "w0"))
    other = Emulator(api_keys=("other-key",))
    async with (
        serve(other) as elsewhere,
        Client("other-key", base_url=elsewhere.base_url, retry=RETRY) as wrong,
    ):
        poisoned = await _environment().run(
            ShardActivities(wrong, sink, policy=POLICY, flush_interval=0.01).watch_shard,
            batch.shard(1),
        )
    assert poisoned.errors == len(ids) - 3
    assert await sink.has(ids) == {result.run_id for result in first}

    again = await _environment().run(good.watch_shard, batch.shard(1))

    assert (again.already_stored, again.stored) == (3, len(ids) - 3)
    assert await sink.has(ids) == set(ids) - {MISSING}
    for run_id in ids:
        stored = await sink.get(run_id)
        assert stored is not None
        assert stored.status == ("error" if run_id == MISSING else stored.body["status"])


async def test_a_shard_reads_its_ids_from_the_postgresql_sink_without_the_file(
    client: Client, emulator: Emulator, postgres_url: str, tmp_path: Path
) -> None:
    """With the ids loaded into the PostgreSQL sink, a worker reads its shard's ids from the
    database: the ids file may be gone, and every run of the shard is stored."""
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(emulator.run_ids()) + "\n")
    async with PostgresSink(postgres_url) as pg:
        assert pg.identity is not None
        batch = plan_batch(path, shards=3, sink=pg.identity)
        expected = load_shard(batch.shard(1))
        assert await pg.load_ids(batch.batch_id, cut_ids(batch.ids_path, batch.ids_digest, 3))
        batch = dataclasses.replace(batch, ids_in_sink=True)
        path.unlink()
        activities = ShardActivities(client, pg, policy=POLICY, flush_interval=0.01)

        result = await _environment().run(activities.watch_shard, batch.shard(1))

        assert result.ids == result.stored == len(expected)
        assert await pg.has(expected) == set(expected)


async def test_runs_that_keep_failing_for_a_passing_reason_fail_the_attempt_to_be_retried(
    client: Client, sink: SQLiteSink, batch: BatchSpec, emulator: Emulator
) -> None:
    """503s that outlive the retries store nothing for those runs and fail the attempt with a
    retryable error, so Temporal tries the shard again later."""
    emulator.faults.add(Fault("status", status=503, route="get"))
    activities = ShardActivities(client, sink, policy=POLICY, flush_interval=0.01)

    with pytest.raises(ApplicationError) as caught:
        await _environment().run(activities.watch_shard, batch.shard(2))

    assert caught.value.type == "TransientRunError"
    assert not caught.value.non_retryable
    assert await sink.count() == 0


async def test_a_shard_meant_for_another_sink_is_refused_for_good(
    client: Client, tmp_path: Path, batch: BatchSpec
) -> None:
    """A worker never stores a batch's results into a sink the batch was not planned for."""
    async with SQLiteSink(tmp_path / "other.db") as other:
        activities = ShardActivities(client, other, policy=POLICY)
        with pytest.raises(ApplicationError) as caught:
            await _environment().run(activities.watch_shard, batch.shard(0))
    assert caught.value.type == "SinkMismatchError"
    assert caught.value.non_retryable


async def test_a_shard_whose_ids_file_changed_is_refused_for_good(
    client: Client, sink: SQLiteSink, batch: BatchSpec
) -> None:
    """A worker never watches ids other than those the batch was planned with."""
    await anyio.Path(batch.ids_path).write_text(MISSING + "\n")
    activities = ShardActivities(client, sink, policy=POLICY)
    with pytest.raises(ApplicationError) as caught:
        await _environment().run(activities.watch_shard, batch.shard(0))
    assert caught.value.type == "BatchInputError"
    assert caught.value.non_retryable


async def test_a_refused_key_fails_the_shard_for_good_at_once(
    server: EmulatorServer, sink: SQLiteSink, batch: BatchSpec, emulator: Emulator
) -> None:
    """A 401 is not retried: the attempt stops at its first answer with a non-retryable
    AuthenticationError that names neither key, and stores nothing."""
    wrong = "wrong-key-0123456789abcdef"
    async with Client(wrong, base_url=server.base_url, retry=RETRY) as bad:
        activities = ShardActivities(bad, sink, policy=POLICY, flush_interval=0.01)
        with pytest.raises(ApplicationError) as caught:
            await _environment().run(activities.watch_shard, batch.shard(0))
    assert caught.value.type == "AuthenticationError"
    assert caught.value.non_retryable
    assert "no retry can fix" in str(caught.value)
    assert wrong not in str(caught.value)
    assert server.api_key not in str(caught.value)
    assert await sink.count() == 0


async def test_an_account_that_cannot_pay_fails_the_shard_for_good(
    client: Client, sink: SQLiteSink, batch: BatchSpec, emulator: Emulator
) -> None:
    """A 402 ends the shard with a non-retryable PaymentRequiredError; nothing is stored."""
    emulator.faults.add(Fault("status", status=402, route="get"))
    activities = ShardActivities(client, sink, policy=POLICY, flush_interval=0.01)
    with pytest.raises(ApplicationError) as caught:
        await _environment().run(activities.watch_shard, batch.shard(1))
    assert caught.value.type == "PaymentRequiredError"
    assert caught.value.non_retryable
    assert await sink.count() == 0


async def test_a_worker_shutdown_stores_what_was_fetched_and_hands_the_shard_on(
    client: Client, sink: SQLiteSink, emulator: Emulator, tmp_path: Path
) -> None:
    """On the worker's shutdown the attempt stops polling, stores every result it fetched
    (even one still waiting for its transaction), heartbeats, and fails to be retried."""
    finished = emulator.run_ids()[:20]
    running = [emulator.create_run(durations=[10_000.0]) for _ in range(3)]
    path = tmp_path / "mixed.txt"
    path.write_text("\n".join([*finished, *running]) + "\n")
    shard = plan_batch(path, shards=1, sink=sink.name).shard(0)
    # A transaction waits 60 s for company: only the shutdown can make it store early.
    activities = ShardActivities(client, sink, policy=POLICY, flush_interval=60.0)
    env = _environment()
    beats: list[ShardProgress] = []
    env.on_heartbeat = lambda *details: beats.append(dataclasses.replace(details[0]))
    gets = emulator.requests_by_route["get"]
    caught: list[ApplicationError] = []

    async def run() -> None:
        try:
            await env.run(activities.watch_shard, shard)
        except ApplicationError as exc:
            caught.append(exc)

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        # Several rounds of polls of the running ones: the finished ones were fetched long ago.
        while emulator.requests_by_route["get"] - gets < len(finished) + 4 * len(running):
            await anyio.sleep(0.01)
        assert await sink.count() == 0
        env.worker_shutdown()

    [error] = caught
    assert error.type == "WorkerShutdownError"
    assert not error.non_retryable
    assert await sink.has([*finished, *running]) == set(finished)
    assert beats[-1].in_sink == len(finished)


async def test_a_shard_that_reaches_a_worker_shutting_down_is_handed_on_untouched(
    client: Client, sink: SQLiteSink, batch: BatchSpec
) -> None:
    """A shard delivered while the worker shuts down is not begun: no attempt recorded, no
    poll, a retryable WorkerShutdownError."""
    activities = ShardActivities(client, sink, policy=POLICY)
    env = _environment(attempt=2)
    env.worker_shutdown()
    with pytest.raises(ApplicationError) as caught:
        await env.run(activities.watch_shard, batch.shard(0))
    assert caught.value.type == "WorkerShutdownError"
    assert not caught.value.non_retryable
    assert await sink.attempts(batch_id=batch.batch_id) == []


def _status(cls: type[Any], status: int) -> Exception:
    error: Exception = cls(status=status, method="GET", path="/browser-agent/x", message="m")
    return error


RUN_ID = "65f8a9d2c1e4b5a6f7e8d9c0"


@pytest.mark.parametrize(
    ("error", "stored"),
    [
        pytest.param(_status(NotFoundError, 404), True, id="404-stored"),
        pytest.param(_status(BadRequestError, 400), True, id="400-stored"),
        pytest.param(
            ResponseDecodeError("bad", method="GET", path="/x"), True, id="not-a-run-stored"
        ),
        pytest.param(_status(ServerError, 503), False, id="503-retried"),
        pytest.param(_status(RateLimitError, 429), False, id="429-retried"),
        pytest.param(_status(AuthenticationError, 401), False, id="401-not-stored"),
        pytest.param(APIConnectionError("reset", method="GET", path="/x"), False, id="reset"),
        pytest.param(WatchTimeoutError(RUN_ID, "late"), False, id="deadline-retried"),
    ],
)
def test_only_errors_that_will_not_pass_are_stored(error: Exception, stored: bool) -> None:
    """A final error is stored; a passing one leaves the run to the next attempt."""
    result = _result_of(RunUpdate(RUN_ID, error=error))  # type: ignore[arg-type]
    assert (result is not None) == stored
    if result is not None:
        assert result.status == "error"
        assert msgspec.json.decode(result.body)["error"] == type(error).__name__


def test_a_finished_run_is_stored_as_the_wire_json() -> None:
    """A finished run is stored with its own status and its JSON as the API sends it."""
    run = Run(id=RUN_ID, total=1, completed=1, status="failed", error="boom")
    result = _result_of(RunUpdate(RUN_ID, run=run))
    assert result == RunResult(RUN_ID, "failed", msgspec.json.encode(run))


@pytest.mark.parametrize(
    ("details", "expected"),
    [
        pytest.param([], None, id="first-attempt"),
        pytest.param(["junk"], None, id="not-a-dict"),
        pytest.param([{"in_sink": "many"}], None, id="bad-number"),
        pytest.param(
            [{"ids": 9, "in_sink": 4, "stored": 2, "attempt": 1, "last": list("abcdefg")}],
            ShardProgress(ids=9, in_sink=4, stored=2, attempt=1, last=list("cdefg")),
            id="full",
        ),
        pytest.param([{"in_sink": 3}], ShardProgress(in_sink=3), id="partial"),
    ],
)
def test_heartbeat_details_are_read_back_or_ignored(
    details: list[Any], expected: ShardProgress | None
) -> None:
    """The next attempt reads what the last heartbeat said, and shrugs off what it cannot."""
    assert ShardProgress.from_details(details) == expected


def test_flush_settings_out_of_range_are_refused(tmp_path: Path) -> None:
    """A flush size below one or a negative flush interval is refused."""
    client = Client("k", base_url="http://127.0.0.1:1")
    sink = SQLiteSink(tmp_path / "r.db")
    with pytest.raises(ValueError, match="flush_size"):
        ShardActivities(client, sink, flush_size=0)
    with pytest.raises(ValueError, match="flush_interval"):
        ShardActivities(client, sink, flush_interval=-1.0)
