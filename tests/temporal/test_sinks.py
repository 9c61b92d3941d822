"""The sinks, on a real SQLite file and a real PostgreSQL: each result is stored exactly once."""

from __future__ import annotations

import random
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path

import anyio
import msgspec
import pytest

from asyncclient import NotFoundError, Run
from asyncclient.temporal import (
    AttemptRecord,
    PostgresSink,
    RunResult,
    Sink,
    SinkError,
    SQLiteSink,
    StoredBy,
    open_sink,
    plan_batch,
    sink_name,
)

pytestmark = pytest.mark.anyio

BY = StoredBy(batch_id="b" * 32, shard=3, attempt=1, worker="w1")


def _ids(n: int, *, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.getrandbits(96):024x}" for _ in range(n)]


def _result(run_id: str, status: str = "completed") -> RunResult:
    return RunResult.from_run(Run(id=run_id, total=1, completed=1, status=status))


@pytest.fixture(params=["sqlite", "postgresql"])
def sink_url(request: pytest.FixtureRequest) -> str:
    """Each test runs on both sinks."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
async def sink(sink_url: str) -> AsyncIterator[Sink]:
    """An open sink, closed after the test."""
    async with open_sink(sink_url) as opened:
        yield opened


async def test_store_stores_a_run_once_and_says_so(sink: Sink) -> None:
    """The first store of a run returns True; every later one False and changes nothing."""
    run_id = _ids(1)[0]
    assert await sink.store(_result(run_id), by=BY)
    assert not await sink.store(_result(run_id, "failed"), by=BY)
    stored = await sink.get(run_id)
    assert stored is not None
    assert stored.status == "completed"
    assert stored.body["id"] == run_id
    assert stored.stored_by == BY
    assert await sink.count() == 1


async def test_store_many_reports_only_what_this_call_stored(sink: Sink) -> None:
    """store_many returns the ids it stored, not those stored before or repeated in the call."""
    ids = _ids(10)
    assert await sink.store_many([_result(i) for i in ids[:4]], by=BY) == set(ids[:4])
    again = [_result(i) for i in ids[2:]] + [_result(ids[9])]
    assert await sink.store_many(again, by=BY) == set(ids[4:])
    assert await sink.store_many([], by=BY) == set()
    assert await sink.count() == 10


async def test_has_and_count_see_what_is_stored(sink: Sink) -> None:
    """has() answers which ids are stored; count() counts all, or one batch's."""
    ids = _ids(30)
    await sink.store_many([_result(i) for i in ids[:20]], by=BY)
    other = StoredBy(batch_id="c" * 32, shard=0, attempt=2, worker="w2")
    await sink.store_many([_result(i) for i in ids[20:25]], by=other)
    assert await sink.has(ids) == set(ids[:25])
    assert await sink.has([]) == set()
    assert await sink.count() == 25
    assert await sink.count(batch_id=BY.batch_id) == 20
    assert await sink.count(batch_id="nope") == 0


async def test_has_reads_more_ids_than_one_query_carries(sink: Sink) -> None:
    """has() of tens of thousands of ids answers them all (it asks in chunks)."""
    ids = _ids(25_000, seed=1)
    await sink.store_many([_result(i) for i in ids[::2]], by=BY)
    assert await sink.has(ids) == set(ids[::2])


async def test_concurrent_stores_from_many_tasks_and_connections_store_each_once(
    sink_url: str,
) -> None:
    """Sixty tasks on three connections store the same 400 runs: one row each, one winner each."""
    ids = _ids(400, seed=2)
    winners: Counter[str] = Counter()
    sinks = [open_sink(sink_url) for _ in range(3)]

    async def storm(sink: Sink, seed: int) -> None:
        rng = random.Random(seed)
        order = ids[:]
        rng.shuffle(order)
        for start in range(0, len(order), 37):
            chunk = [_result(i) for i in order[start : start + 37]]
            by = StoredBy(batch_id="b" * 32, shard=0, attempt=seed, worker=f"t{seed}")
            winners.update(await sink.store_many(chunk, by=by))

    for sink in sinks:
        await sink.open()
    try:
        async with anyio.create_task_group() as group:
            for seed in range(60):
                group.start_soon(storm, sinks[seed % 3], seed)
        assert set(winners) == set(ids)
        assert max(winners.values()) == 1
        assert await sinks[0].count() == len(ids)
    finally:
        for sink in sinks:
            await sink.aclose()


async def test_an_error_is_stored_with_its_type_and_status(sink: Sink) -> None:
    """A run that could not be watched is stored as status 'error' with what went wrong."""
    run_id = _ids(1)[0]
    error = NotFoundError(status=404, method="GET", path="/browser-agent/x", message="gone")
    assert await sink.store(RunResult.from_error(run_id, error), by=BY)
    stored = await sink.get(run_id)
    assert stored is not None
    assert stored.status == "error"
    assert stored.body["error"] == "NotFoundError"
    assert stored.body["status"] == 404
    assert await sink.get(_ids(2)[1]) is None


async def test_an_error_is_not_a_result_and_a_final_answer_replaces_it(sink: Sink) -> None:
    """A watch error is not "stored" for has(); the run's final answer replaces it, once, and
    an error never replaces a final answer."""
    errored, finished = _ids(2, seed=7)
    error = NotFoundError(status=404, method="GET", path="/browser-agent/x", message="gone")
    later = StoredBy("batch-2", 0, 1, "w2")
    assert await sink.store_many(
        [RunResult.from_error(errored, error), _result(finished)], by=BY
    ) == {errored, finished}
    assert await sink.has([errored, finished]) == {finished}
    assert await sink.has([errored, finished], errors=True) == {errored, finished}

    assert await sink.store(RunResult.from_error(errored, error), by=later) is False
    assert await sink.store_many([_result(errored), _result(finished, "failed")], by=later) == {
        errored
    }
    assert await sink.store(_result(errored, "failed"), by=later) is False
    assert await sink.store(RunResult.from_error(finished, error), by=later) is False

    assert await sink.has([errored, finished]) == {errored, finished}
    replaced = await sink.get(errored)
    assert replaced is not None
    assert (replaced.status, replaced.stored_by) == ("completed", later)
    kept = await sink.get(finished)
    assert kept is not None
    assert (kept.status, kept.stored_by) == ("completed", BY)
    assert await sink.count() == 2


async def test_attempts_are_recorded_once_each_in_order(sink: Sink) -> None:
    """Each activity attempt is recorded once, even if recorded twice; read back in order."""
    second = AttemptRecord("b" * 32, 1, 2, "w2", already_stored=5, resumed_stored=4)
    first = AttemptRecord("b" * 32, 1, 1, "w1")
    await sink.record_attempt(second)
    await sink.record_attempt(first)
    await sink.record_attempt(AttemptRecord("b" * 32, 1, 1, "w9"))
    await sink.record_attempt(AttemptRecord("c" * 32, 0, 1, "w1"))
    attempts = await sink.attempts(batch_id="b" * 32)
    assert [(a.attempt, a.worker, a.already_stored, a.resumed_stored) for a in attempts] == [
        (1, "w1", 0, 0),
        (2, "w2", 5, 4),
    ]
    assert all(isinstance(a.started_at, datetime) for a in attempts)
    assert len(await sink.attempts()) == 3


async def test_a_stored_run_reads_back_as_the_wire_json(sink: Sink) -> None:
    """The body is the run as the API sends it: it decodes back into the same Run."""
    run = Run(id=_ids(1)[0], total=2, completed=2, status="failed", error="boom")
    await sink.store(RunResult.from_run(run), by=BY)
    stored = await sink.get(run.id)
    assert stored is not None
    assert msgspec.convert(stored.body, Run) == run
    assert stored.stored_at.tzinfo is not None
    assert abs((datetime.now(timezone.utc) - stored.stored_at).total_seconds()) < 60


async def test_sqlite_sink_uses_wal_and_keeps_results_across_reopening(tmp_path: Path) -> None:
    """The SQLite file is in WAL mode and what was stored is there after reopening."""
    path = tmp_path / "r.db"
    async with SQLiteSink(path) as sink:
        await sink.store(_result(_ids(1)[0]), by=BY)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    async with SQLiteSink(path) as sink:
        assert await sink.count() == 1


async def test_a_sink_that_is_not_open_says_so(tmp_path: Path) -> None:
    """Using a sink before opening it raises SinkError, not an AttributeError."""
    with pytest.raises(SinkError, match="not open"):
        await SQLiteSink(tmp_path / "r.db").count()
    with pytest.raises(SinkError, match="not open"):
        await PostgresSink("postgresql://nobody@127.0.0.1:1/x").count()


async def test_an_unreachable_postgres_is_a_sink_error() -> None:
    """A PostgreSQL that cannot be reached fails open() with SinkError, password not shown."""
    sink = PostgresSink("postgresql://u:hunter2@127.0.0.1:1/db", timeout=1.0)
    with pytest.raises(SinkError) as caught:
        await sink.open()
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "name"),
    [
        pytest.param(
            "postgresql://app:secret@db.example:5433/results",
            "postgresql://app@db.example:5433/results",
            id="password-in-userinfo",
        ),
        pytest.param(
            "postgres://app@db/results?password=secret&sslmode=require",
            "postgresql://app@db/results?sslmode=require",
            id="password-in-query",
        ),
        pytest.param("sqlite:////var/data/r.db", "sqlite:////var/data/r.db", id="sqlite-absolute"),
    ],
)
def test_sink_names_never_carry_the_password(url: str, name: str) -> None:
    """A sink's name (what goes into Temporal and the batch id) drops the password."""
    assert sink_name(url) == name
    assert open_sink(url).name == name


def test_a_relative_sqlite_path_is_named_absolutely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sqlite:///rel.db names the file in the current directory, by its absolute path."""
    monkeypatch.chdir(tmp_path)
    assert sink_name("sqlite:///rel.db") == f"sqlite:///{tmp_path.resolve() / 'rel.db'}"


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("mysql://u:secret@h/db", id="unknown-scheme"),
        pytest.param("sqlite:///", id="sqlite-without-path"),
        pytest.param("results.db", id="bare-path"),
    ],
)
def test_an_unknown_sink_url_is_refused_without_showing_secrets(url: str) -> None:
    """A URL that is no sink raises SinkError naming the problem, never the password."""
    with pytest.raises(SinkError) as caught:
        open_sink(url)
    assert "secret" not in str(caught.value)
    with pytest.raises(SinkError):
        sink_name(url)


async def test_two_urls_for_one_database_are_one_sink_and_one_batch(
    postgres_url: str, tmp_path: Path
) -> None:
    """The sink's identity lives in the database: localhost and 127.0.0.1 reach one sink, so
    a batch started through either is the same batch; another database is another sink."""
    spelled = postgres_url.replace("@127.0.0.1:", "@localhost:")
    assert spelled != postgres_url
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(_ids(20)) + "\n")
    async with open_sink(postgres_url) as first, open_sink(spelled) as second:
        assert first.name != second.name
        assert first.identity is not None
        assert first.identity == second.identity
        a = plan_batch(ids_file, shards=2, sink=first.identity)
        b = plan_batch(ids_file, shards=2, sink=second.identity)
        assert a.batch_id == b.batch_id
    async with (
        open_sink(postgres_url) as again,
        open_sink(f"sqlite:///{tmp_path / 'x.db'}") as other,
    ):
        assert again.identity == first.identity
        assert other.identity not in (None, first.identity)


async def test_a_batch_ids_are_loaded_once_by_shard_and_read_back_by_shard(sink: Sink) -> None:
    """load_ids stores each shard's ids once per batch; shard_ids reads one shard, in order."""
    shards = [_ids(3, seed=1), [], _ids(2, seed=2)]
    assert await sink.load_ids("batch-x", shards)
    assert not await sink.load_ids("batch-x", [_ids(1, seed=3)])
    assert [await sink.shard_ids("batch-x", index) for index in range(3)] == shards
    assert await sink.shard_ids("batch-y", 0) == []
