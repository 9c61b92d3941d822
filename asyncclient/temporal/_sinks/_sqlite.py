"""The SQLite sink: one file, workers on one machine."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread
import msgspec

from .._exceptions import SinkError
from ._base import (
    CHUNK,
    AttemptRecord,
    RunResult,
    SinkBase,
    StoredBy,
    StoredResult,
    attempt_record,
    attempts_query,
    distinct,
    new_identity,
    utc_now,
)

_T = TypeVar("_T")


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS predev_results (
    run_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    body TEXT NOT NULL,
    stored_at TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    shard INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    worker TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS predev_results_batch ON predev_results (batch_id);
CREATE TABLE IF NOT EXISTS predev_attempts (
    batch_id TEXT NOT NULL,
    shard INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    worker TEXT NOT NULL,
    started_at TEXT NOT NULL,
    already_stored INTEGER NOT NULL,
    resumed_stored INTEGER NOT NULL,
    PRIMARY KEY (batch_id, shard, attempt)
);
CREATE TABLE IF NOT EXISTS predev_sink (
    id TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS predev_batch_ids (
    batch_id TEXT NOT NULL,
    shard INTEGER NOT NULL,
    position INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (batch_id, shard, position)
);
"""
_SQLITE_IDENTITY = (
    "INSERT INTO predev_sink (id) SELECT ? WHERE NOT EXISTS (SELECT 1 FROM predev_sink)"
)
_SQLITE_INSERT = (
    "INSERT INTO predev_results "
    "(run_id, status, body, stored_at, batch_id, shard, attempt, worker) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET "
    "status = excluded.status, body = excluded.body, stored_at = excluded.stored_at, "
    "batch_id = excluded.batch_id, shard = excluded.shard, attempt = excluded.attempt, "
    "worker = excluded.worker "
    # Only a final answer replaces a watch error; nothing replaces a final answer.
    "WHERE predev_results.status = 'error' AND excluded.status <> 'error'"
)


_SQLITE_HAS = "SELECT run_id FROM predev_results WHERE run_id IN (SELECT value FROM json_each(?))"
_SQLITE_FINAL = " AND status <> 'error'"


class SQLiteSink(SinkBase):
    """A sink in one SQLite file: the embedded default, for one machine.

    Several worker processes may share the file: it is opened in WAL mode, every store is one
    ``BEGIN IMMEDIATE`` transaction, and a writer waits up to ``timeout`` seconds for another.
    ``synchronous=NORMAL`` keeps every committed result through a crash of the process (a
    ``kill -9``); only a power loss may lose the last few commits, which are then stored again.
    sqlite3 blocks, so each call runs in a worker thread, one at a time per sink.

    Args:
        path: the database file (created if missing; its directory must exist).
        timeout: seconds to wait for another writer's lock.
    """

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        self._path = str(Path(path).resolve())
        self._timeout = timeout
        self._conn: sqlite3.Connection | None = None
        self._identity: str | None = None
        self._limiter: anyio.CapacityLimiter | None = None

    def __repr__(self) -> str:
        return f"<SQLiteSink {self._path!r}>"

    @property
    def name(self) -> str:
        """``sqlite:///`` and the absolute path of the file."""
        return "sqlite:///" + self._path

    @property
    def identity(self) -> str | None:
        """The sink's identity, stored in the database (see :attr:`Sink.identity`)."""
        return self._identity

    @property
    def path(self) -> str:
        """The absolute path of the database file."""
        return self._path

    async def _run(self, func: Callable[..., _T], *args: object) -> _T:
        if self._limiter is None:
            raise SinkError(f"{self.name} is not open: use `async with sink` or `await open()`")
        try:
            return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise SinkError(f"{self.name}: {exc}") from exc

    async def open(self) -> None:
        """Connect and create the tables if missing (see :meth:`Sink.open`)."""
        if self._conn is not None:
            return
        self._limiter = anyio.CapacityLimiter(1)
        self._conn = await self._run(self._connect)

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode: transactions are opened explicitly, BEGIN IMMEDIATE, so two writers
        # never both hold a read lock and then deadlock upgrading it.
        conn = sqlite3.connect(
            self._path, timeout=self._timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SQLITE_SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(_SQLITE_IDENTITY, (new_identity(),))
            self._identity = conn.execute("SELECT id FROM predev_sink").fetchone()[0]
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    async def aclose(self) -> None:
        """Disconnect; safe to call twice (see :meth:`Sink.aclose`)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._run(conn.close)
        self._limiter = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise SinkError(f"{self.name} is not open: use `async with sink` or `await open()`")
        return self._conn

    async def store_many(self, results: Sequence[RunResult], *, by: StoredBy) -> set[str]:
        """Store results in one transaction, each unless stored already (`Sink.store_many`)."""
        rows = distinct(results)
        if not rows:
            return set()
        return await self._run(self._store_many, rows, by)

    def _store_many(self, rows: list[RunResult], by: StoredBy) -> set[str]:
        conn = self._db()
        stamp = utc_now().isoformat()
        stored: set[str] = set()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for row in rows:
                cursor = conn.execute(
                    _SQLITE_INSERT,
                    (
                        row.run_id,
                        row.status,
                        row.body.decode("utf-8"),
                        stamp,
                        by.batch_id,
                        by.shard,
                        by.attempt,
                        by.worker,
                    ),
                )
                if cursor.rowcount == 1:
                    stored.add(row.run_id)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return stored

    async def has(self, run_ids: Iterable[str], *, errors: bool = False) -> set[str]:
        """Which of ``run_ids`` hold a final answer (or any row, with ``errors``)
        (see :meth:`Sink.has`)."""
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            return set()
        return await self._run(self._has, ids, errors)

    def _has(self, ids: list[str], errors: bool) -> set[str]:
        conn = self._db()
        query = _SQLITE_HAS if errors else _SQLITE_HAS + _SQLITE_FINAL
        found: set[str] = set()
        for start in range(0, len(ids), CHUNK):
            chunk = msgspec.json.encode(ids[start : start + CHUNK]).decode()
            found.update(row[0] for row in conn.execute(query, (chunk,)))
        return found

    async def count(self, *, batch_id: str | None = None) -> int:
        """How many results are stored, by ``batch_id`` only if given (:meth:`Sink.count`)."""
        return await self._run(self._count, batch_id)

    def _count(self, batch_id: str | None) -> int:
        conn = self._db()
        if batch_id is None:
            row = conn.execute("SELECT count(*) FROM predev_results").fetchone()
        else:
            query = "SELECT count(*) FROM predev_results WHERE batch_id = ?"
            row = conn.execute(query, (batch_id,)).fetchone()
        return int(row[0])

    async def load_ids(self, batch_id: str, shards: Sequence[Sequence[str]]) -> bool:
        """Load a batch's ids by shard, once (see :meth:`Sink.load_ids`)."""
        return await self._run(self._load_ids, batch_id, shards)

    def _load_ids(self, batch_id: str, shards: Sequence[Sequence[str]]) -> bool:
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            query = "SELECT 1 FROM predev_batch_ids WHERE batch_id = ? LIMIT 1"
            if conn.execute(query, (batch_id,)).fetchone() is not None:
                conn.execute("ROLLBACK")
                return False
            conn.executemany(
                "INSERT INTO predev_batch_ids (batch_id, shard, position, run_id) "
                "VALUES (?, ?, ?, ?)",
                (
                    (batch_id, index, position, run_id)
                    for index, ids in enumerate(shards)
                    for position, run_id in enumerate(ids)
                ),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return True

    async def shard_ids(self, batch_id: str, shard: int) -> list[str]:
        """The ids of one shard, as loaded (see :meth:`Sink.shard_ids`)."""
        return await self._run(self._shard_ids, batch_id, shard)

    def _shard_ids(self, batch_id: str, shard: int) -> list[str]:
        query = (
            "SELECT run_id FROM predev_batch_ids WHERE batch_id = ? AND shard = ? ORDER BY position"
        )
        return [row[0] for row in self._db().execute(query, (batch_id, shard))]

    async def get(self, run_id: str) -> StoredResult | None:
        """The stored result of one run, or ``None`` (see :meth:`Sink.get`)."""
        return await self._run(self._get, run_id.lower())

    def _get(self, run_id: str) -> StoredResult | None:
        row = (
            self._db()
            .execute(
                "SELECT run_id, status, body, stored_at, batch_id, shard, attempt, worker "
                "FROM predev_results WHERE run_id = ?",
                (run_id,),
            )
            .fetchone()
        )
        if row is None:
            return None
        return StoredResult(
            run_id=row[0],
            status=row[1],
            body=msgspec.json.decode(row[2]),
            stored_at=datetime.fromisoformat(row[3]),
            stored_by=StoredBy(batch_id=row[4], shard=row[5], attempt=row[6], worker=row[7]),
        )

    async def record_attempt(self, record: AttemptRecord) -> None:
        """Record that an activity attempt began (see :meth:`Sink.record_attempt`)."""
        await self._run(self._record_attempt, record)

    def _record_attempt(self, record: AttemptRecord) -> None:
        self._db().execute(
            "INSERT INTO predev_attempts "
            "(batch_id, shard, attempt, worker, started_at, already_stored, resumed_stored) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (
                record.batch_id,
                record.shard,
                record.attempt,
                record.worker,
                (record.started_at or utc_now()).isoformat(),
                record.already_stored,
                record.resumed_stored,
            ),
        )

    async def attempts(self, *, batch_id: str | None = None) -> list[AttemptRecord]:
        """The recorded attempts, by batch, shard and attempt (see :meth:`Sink.attempts`)."""
        return await self._run(self._attempts, batch_id)

    def _attempts(self, batch_id: str | None) -> list[AttemptRecord]:
        return [
            attempt_record(row, datetime.fromisoformat(row[6]))
            for row in self._db().execute(*attempts_query(batch_id, "?"))
        ]


# -- PostgreSQL ------------------------------------------------------------------------------
