"""Where results go: the :class:`Sink` protocol, a SQLite sink and a PostgreSQL sink.

Temporal runs an activity at least once: a worker that dies after storing a result but before
reporting it makes Temporal run the shard again. Exactly once therefore comes from here. Every
store is ``INSERT ... ON CONFLICT (run_id) DO NOTHING`` inside one transaction, and reports
which ids *this call* stored; a second store of the same run, from any process, stores nothing.

Two tables, created on :meth:`Sink.open` if missing:

``predev_results``
    one row per run: ``run_id`` (primary key), ``status`` (``completed``, ``failed`` or
    ``error``), ``body`` (the run's JSON as the API sends it, or ``{"error", "message",
    "status"}``), ``stored_at``, and who stored it: ``batch_id``, ``shard``, ``attempt`` (the
    Temporal activity attempt, 1 for the first) and ``worker``.
``predev_attempts``
    one row per activity attempt that began: ``batch_id``, ``shard``, ``attempt``, ``worker``,
    ``started_at``, ``already_stored`` (ids of the shard the sink held when it began) and
    ``resumed_stored`` (what the previous attempt's last heartbeat reported). An attempt above
    1 is the trace of a crash, a timeout or a retried failure.

Sinks are named by URL: ``sqlite:///relative.db`` or ``sqlite:////absolute/path.db`` (as in
SQLAlchemy), and ``postgresql://user:password@host:port/dbname``. :attr:`Sink.name` is the URL
without its password: it goes into Temporal payloads and batch ids, the password never does.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import anyio.to_thread
import msgspec

from .._exceptions import APIStatusError
from .._models import Run
from ._exceptions import SinkError

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg.rows import TupleRow
    from psycopg_pool import AsyncConnectionPool

__all__ = [
    "AttemptRecord",
    "PostgresSink",
    "RunResult",
    "SQLiteSink",
    "Sink",
    "StoredBy",
    "StoredResult",
    "open_sink",
    "sink_name",
]

_T = TypeVar("_T")

# Ids travel as one JSON array (SQLite) or one array (PostgreSQL) per query; a million ids
# in one message would be one huge message, so they go in chunks.
_CHUNK = 10_000
_DEADLOCK_RETRIES = 3


@dataclass(frozen=True)
class RunResult:
    """What is stored for one run.

    Attributes:
        run_id: the run.
        status: ``"completed"`` or ``"failed"`` for a finished run, ``"error"`` when it could not
            be watched (not found, refused with a 4xx, not decodable).
        body: a JSON document: the run as the API sends it (``msgspec.json.encode(run)``), or
            ``{"error": type, "message": text, "status": http status or null}``.
    """

    run_id: str
    status: str
    body: bytes

    @classmethod
    def from_run(cls, run: Run) -> RunResult:
        """The result of a finished run."""
        return cls(run.id.lower(), run.status, msgspec.json.encode(run))

    @classmethod
    def from_error(cls, run_id: str, error: Exception) -> RunResult:
        """The result of a run that could not be watched; errors never hold the API key."""
        status = error.status if isinstance(error, APIStatusError) else None
        body = {"error": type(error).__name__, "message": str(error), "status": status}
        return cls(run_id.lower(), "error", msgspec.json.encode(body))


@dataclass(frozen=True)
class StoredBy:
    """Who stores a result: recorded on its row.

    Attributes:
        batch_id: the batch.
        shard: the shard index.
        attempt: the Temporal activity attempt (1 for the first).
        worker: the worker's identity (``pid@host`` by default).
    """

    batch_id: str
    shard: int
    attempt: int
    worker: str


@dataclass(frozen=True)
class StoredResult:
    """A row of the sink, as read back.

    Attributes:
        run_id: the run.
        status: ``"completed"``, ``"failed"`` or ``"error"``.
        body: the stored JSON document, decoded.
        stored_at: when it was stored (UTC).
        stored_by: the batch, shard, attempt and worker that stored it.
    """

    run_id: str
    status: str
    body: Any
    stored_at: datetime
    stored_by: StoredBy


@dataclass(frozen=True)
class AttemptRecord:
    """One activity attempt on one shard, recorded as it begins.

    Attributes:
        batch_id: the batch.
        shard: the shard index.
        attempt: the Temporal activity attempt (1 for the first).
        worker: the worker running it.
        already_stored: how many of the shard's ids the sink held when it began.
        resumed_stored: what the previous attempt last heartbeated as stored (0 on attempt 1).
        started_at: when it began (set by the sink when recording).
    """

    batch_id: str
    shard: int
    attempt: int
    worker: str
    already_stored: int = 0
    resumed_stored: int = 0
    started_at: datetime | None = None


@runtime_checkable
class Sink(Protocol):
    """Where results go. Use as ``async with sink: ...`` (or call :meth:`open`, :meth:`aclose`).

    The one guarantee a sink gives is the one Temporal cannot: :meth:`store_many` stores a run
    only if no call, from any process, stored it before, atomically, and says which it stored.
    """

    @property
    def name(self) -> str:
        """The sink's URL without its password."""
        ...

    async def open(self) -> None:
        """Connect and create the tables if missing. Raises :class:`SinkError`."""
        ...

    async def aclose(self) -> None:
        """Disconnect. Safe to call twice."""
        ...

    async def __aenter__(self) -> Sink: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def store(self, result: RunResult, *, by: StoredBy) -> bool:
        """Store one result unless the run is stored already; True if this call stored it."""
        ...

    async def store_many(self, results: Sequence[RunResult], *, by: StoredBy) -> set[str]:
        """Store results, in one transaction, each unless its run is stored already.

        Returns:
            The ids this call stored; the others were stored before (by anyone).
        """
        ...

    async def has(self, run_ids: Iterable[str]) -> set[str]:
        """Which of ``run_ids`` are stored."""
        ...

    async def count(self, *, batch_id: str | None = None) -> int:
        """How many results are stored (by ``batch_id`` only, if given)."""
        ...

    async def get(self, run_id: str) -> StoredResult | None:
        """The stored result of one run, or ``None``."""
        ...

    async def record_attempt(self, record: AttemptRecord) -> None:
        """Record that an activity attempt began (a repeat of the same attempt is ignored)."""
        ...

    async def attempts(self, *, batch_id: str | None = None) -> list[AttemptRecord]:
        """The recorded attempts, by batch, shard and attempt."""
        ...


class _SinkBase(Sink):
    """What both sinks share: the context manager and :meth:`store` in terms of ``store_many``.

    It subclasses the protocol so that each sink inherits its documentation, and mypy refuses
    a sink that leaves a member out.
    """

    async def __aenter__(self: _S) -> _S:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def store(self, result: RunResult, *, by: StoredBy) -> bool:
        """Store one result unless the run is stored already; True if this call stored it."""
        return result.run_id in await self.store_many([result], by=by)


_S = TypeVar("_S", bound=_SinkBase)


def _distinct(results: Sequence[RunResult]) -> list[RunResult]:
    """One result per run (the first), sorted by run id.

    Concurrent transactions that insert overlapping keys in different orders can deadlock in
    PostgreSQL, each waiting on a key the other inserted; in one order they only queue.
    """
    first: dict[str, RunResult] = {}
    for result in results:
        first.setdefault(result.run_id, result)
    return sorted(first.values(), key=lambda result: result.run_id)


def _attempt(row: Sequence[Any], started_at: datetime) -> AttemptRecord:
    return AttemptRecord(
        batch_id=row[0],
        shard=row[1],
        attempt=row[2],
        worker=row[3],
        already_stored=row[4],
        resumed_stored=row[5],
        started_at=started_at,
    )


def _now() -> datetime:
    return datetime.now(timezone.utc)


# -- SQLite ----------------------------------------------------------------------------------

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
"""
_SQLITE_INSERT = (
    "INSERT INTO predev_results "
    "(run_id, status, body, stored_at, batch_id, shard, attempt, worker) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING"
)


_SQLITE_HAS = "SELECT run_id FROM predev_results WHERE run_id IN (SELECT value FROM json_each(?))"


class SQLiteSink(_SinkBase):
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
        self._limiter: anyio.CapacityLimiter | None = None

    def __repr__(self) -> str:
        return f"<SQLiteSink {self._path!r}>"

    @property
    def name(self) -> str:
        """``sqlite:///`` and the absolute path of the file."""
        return "sqlite:///" + self._path

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
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._run(conn.close)
        self._limiter = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise SinkError(f"{self.name} is not open: use `async with sink` or `await open()`")
        return self._conn

    async def store_many(self, results: Sequence[RunResult], *, by: StoredBy) -> set[str]:
        rows = _distinct(results)
        if not rows:
            return set()
        return await self._run(self._store_many, rows, by)

    def _store_many(self, rows: list[RunResult], by: StoredBy) -> set[str]:
        conn = self._db()
        stamp = _now().isoformat()
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

    async def has(self, run_ids: Iterable[str]) -> set[str]:
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            return set()
        return await self._run(self._has, ids)

    def _has(self, ids: list[str]) -> set[str]:
        conn = self._db()
        found: set[str] = set()
        for start in range(0, len(ids), _CHUNK):
            chunk = msgspec.json.encode(ids[start : start + _CHUNK]).decode()
            found.update(row[0] for row in conn.execute(_SQLITE_HAS, (chunk,)))
        return found

    async def count(self, *, batch_id: str | None = None) -> int:
        return await self._run(self._count, batch_id)

    def _count(self, batch_id: str | None) -> int:
        conn = self._db()
        if batch_id is None:
            row = conn.execute("SELECT count(*) FROM predev_results").fetchone()
        else:
            query = "SELECT count(*) FROM predev_results WHERE batch_id = ?"
            row = conn.execute(query, (batch_id,)).fetchone()
        return int(row[0])

    async def get(self, run_id: str) -> StoredResult | None:
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
                (record.started_at or _now()).isoformat(),
                record.already_stored,
                record.resumed_stored,
            ),
        )

    async def attempts(self, *, batch_id: str | None = None) -> list[AttemptRecord]:
        return await self._run(self._attempts, batch_id)

    def _attempts(self, batch_id: str | None) -> list[AttemptRecord]:
        query = (
            "SELECT batch_id, shard, attempt, worker, already_stored, resumed_stored, started_at "
            "FROM predev_attempts"
        )
        params: tuple[str, ...] = ()
        if batch_id is not None:
            query += " WHERE batch_id = ?"
            params = (batch_id,)
        query += " ORDER BY batch_id, shard, attempt"
        return [
            _attempt(row, datetime.fromisoformat(row[6]))
            for row in self._db().execute(query, params)
        ]


# -- PostgreSQL ------------------------------------------------------------------------------

# ``json`` rather than ``jsonb``: it keeps the document verbatim and accepts every string the
# API may send (jsonb refuses \u0000), and is still queryable with ->> and friends.
_POSTGRES_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS predev_results (
        run_id text PRIMARY KEY,
        status text NOT NULL,
        body json NOT NULL,
        stored_at timestamptz NOT NULL DEFAULT now(),
        batch_id text NOT NULL,
        shard integer NOT NULL,
        attempt integer NOT NULL,
        worker text NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS predev_results_batch ON predev_results (batch_id)",
    """
    CREATE TABLE IF NOT EXISTS predev_attempts (
        batch_id text NOT NULL,
        shard integer NOT NULL,
        attempt integer NOT NULL,
        worker text NOT NULL,
        started_at timestamptz NOT NULL DEFAULT now(),
        already_stored integer NOT NULL,
        resumed_stored integer NOT NULL,
        PRIMARY KEY (batch_id, shard, attempt)
    )""",
)
# Concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalog: workers starting
# together take this lock first.
_SCHEMA_LOCK = 0x70726564  # "pred"
_POSTGRES_INSERT = """
    INSERT INTO predev_results (run_id, status, body, batch_id, shard, attempt, worker)
    SELECT r, s, b::json, %(batch_id)s, %(shard)s, %(attempt)s, %(worker)s
    FROM unnest(%(ids)s::text[], %(statuses)s::text[], %(bodies)s::text[]) AS t(r, s, b)
    ORDER BY r
    ON CONFLICT (run_id) DO NOTHING
    RETURNING run_id
"""


class PostgresSink(_SinkBase):
    """A sink in a PostgreSQL database, for workers on many machines (psycopg 3, async).

    Each :meth:`store_many` is one statement, ``INSERT ... SELECT FROM unnest(...) ON CONFLICT
    (run_id) DO NOTHING RETURNING run_id``, in one transaction: concurrent stores of the same run
    from any number of workers leave one row, and exactly one of them is told it stored it.

    Args:
        conninfo: a ``postgresql://`` URL or a libpq connection string.
        max_connections: the size of the connection pool.
        timeout: seconds to wait for a connection from the pool.
    """

    def __init__(self, conninfo: str, *, max_connections: int = 4, timeout: float = 30.0) -> None:
        self._conninfo = conninfo
        self._max_connections = max_connections
        self._timeout = timeout
        self._pool: AsyncConnectionPool[AsyncConnection[TupleRow]] | None = None

    def __repr__(self) -> str:
        return f"<PostgresSink {self.name!r}>"

    @property
    def name(self) -> str:
        """The connection URL without its password."""
        return _redact(self._conninfo)

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            import psycopg
            from psycopg_pool import AsyncConnectionPool
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise SinkError(
                "the PostgreSQL sink needs psycopg: pip install 'asyncclient[temporal]'"
            ) from exc
        pool: AsyncConnectionPool[AsyncConnection[TupleRow]] = AsyncConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=self._max_connections,
            kwargs={"autocommit": True},
            check=AsyncConnectionPool.check_connection,
            timeout=self._timeout,
            open=False,
        )
        try:
            await pool.open(wait=True, timeout=self._timeout)
            async with pool.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                for statement in _POSTGRES_SCHEMA:
                    await conn.execute(statement)
        except (psycopg.Error, OSError) as exc:
            await pool.close()
            raise SinkError(f"{self.name}: {exc}") from exc
        self._pool = pool

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _checked_pool(self) -> AsyncConnectionPool[AsyncConnection[TupleRow]]:
        if self._pool is None:
            raise SinkError(f"{self.name} is not open: use `async with sink` or `await open()`")
        return self._pool

    async def _fetch(self, query: str, params: Any, *, transaction: bool = False) -> list[Any]:
        import psycopg

        pool = self._checked_pool()
        try:
            async with pool.connection() as conn:
                if transaction:
                    async with conn.transaction():
                        cursor = await conn.execute(query, params)
                        return await cursor.fetchall()
                cursor = await conn.execute(query, params)
                return await cursor.fetchall() if cursor.description else []
        except psycopg.Error as exc:
            raise SinkError(f"{self.name}: {exc}") from exc

    async def store_many(self, results: Sequence[RunResult], *, by: StoredBy) -> set[str]:
        rows = _distinct(results)
        if not rows:
            return set()
        params = {
            "ids": [row.run_id for row in rows],
            "statuses": [row.status for row in rows],
            "bodies": [row.body.decode("utf-8") for row in rows],
            "batch_id": by.batch_id,
            "shard": by.shard,
            "attempt": by.attempt,
            "worker": by.worker,
        }
        import psycopg.errors

        for attempt in range(_DEADLOCK_RETRIES):
            try:
                stored = await self._fetch(_POSTGRES_INSERT, params, transaction=True)
            except SinkError as exc:
                # Sorted inserts do not deadlock each other; other writers of the table might.
                # The transaction was rolled back whole, so trying again is safe.
                retry = isinstance(exc.__cause__, psycopg.errors.DeadlockDetected)
                if not retry or attempt == _DEADLOCK_RETRIES - 1:
                    raise
                continue
            return {row[0] for row in stored}
        raise AssertionError("unreachable")  # pragma: no cover

    async def has(self, run_ids: Iterable[str]) -> set[str]:
        ids = list(dict.fromkeys(run_ids))
        found: set[str] = set()
        for start in range(0, len(ids), _CHUNK):
            rows = await self._fetch(
                "SELECT run_id FROM predev_results WHERE run_id = ANY(%s::text[])",
                (ids[start : start + _CHUNK],),
            )
            found.update(row[0] for row in rows)
        return found

    async def count(self, *, batch_id: str | None = None) -> int:
        if batch_id is None:
            rows = await self._fetch("SELECT count(*) FROM predev_results", ())
        else:
            rows = await self._fetch(
                "SELECT count(*) FROM predev_results WHERE batch_id = %s",
                (batch_id,),
            )
        return int(rows[0][0])

    async def get(self, run_id: str) -> StoredResult | None:
        rows = await self._fetch(
            "SELECT run_id, status, body, stored_at, batch_id, shard, attempt, worker "
            "FROM predev_results WHERE run_id = %s",
            (run_id.lower(),),
        )
        if not rows:
            return None
        row = rows[0]
        return StoredResult(
            run_id=row[0],
            status=row[1],
            body=row[2],
            stored_at=row[3],
            stored_by=StoredBy(batch_id=row[4], shard=row[5], attempt=row[6], worker=row[7]),
        )

    async def record_attempt(self, record: AttemptRecord) -> None:
        await self._fetch(
            "INSERT INTO predev_attempts "
            "(batch_id, shard, attempt, worker, started_at, already_stored, resumed_stored) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (
                record.batch_id,
                record.shard,
                record.attempt,
                record.worker,
                record.started_at or _now(),
                record.already_stored,
                record.resumed_stored,
            ),
        )

    async def attempts(self, *, batch_id: str | None = None) -> list[AttemptRecord]:
        query = (
            "SELECT batch_id, shard, attempt, worker, already_stored, resumed_stored, started_at "
            "FROM predev_attempts"
        )
        params: tuple[str, ...] = ()
        if batch_id is not None:
            query += " WHERE batch_id = %s"
            params = (batch_id,)
        rows = await self._fetch(query + " ORDER BY batch_id, shard, attempt", params)
        return [_attempt(row, row[6]) for row in rows]


# -- choosing a sink by URL ------------------------------------------------------------------


def _redact(conninfo: str) -> str:
    """A PostgreSQL URL without its password (in the user-info or the query)."""
    parts = urlsplit(conninfo)
    if parts.scheme not in ("postgresql", "postgres"):
        # A key=value connection string: drop the password=... pair.
        return " ".join(
            item for item in conninfo.split() if not item.lower().startswith("password=")
        )
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port is not None:
        netloc += f":{parts.port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k.lower() != "password"])
    return urlunsplit(("postgresql", netloc, parts.path, query, ""))


def _sqlite_path(url: str) -> str:
    # sqlite:///relative/path.db and sqlite:////absolute/path.db, as SQLAlchemy spells them.
    path = url[len("sqlite:///") :]
    if not path or "?" in path:
        raise SinkError(f"a SQLite sink is sqlite:///path/to/file.db, got {url!r}")
    return path


def _unknown(url: str) -> SinkError:
    scheme = urlsplit(url).scheme or url[:12]
    return SinkError(
        f"unknown sink scheme {scheme!r}: use sqlite:///path.db or postgresql://user@host/db"
    )


def sink_name(url: str) -> str:
    """The name of the sink ``url`` points to (its canonical URL without password).

    Args:
        url: ``sqlite:///file.db``, ``sqlite:////abs/file.db`` or ``postgresql://...``.

    Raises:
        SinkError: the URL is not one of those.
    """
    if url.startswith("sqlite:///"):
        return "sqlite:///" + str(Path(_sqlite_path(url)).resolve())
    if url.startswith(("postgresql://", "postgres://")):
        return _redact(url)
    raise _unknown(url)


def open_sink(url: str) -> Sink:
    """The sink ``url`` points to, not yet opened (use ``async with``).

    Args:
        url: ``sqlite:///file.db`` (relative), ``sqlite:////abs/file.db``, or
            ``postgresql://user:password@host:port/dbname``.

    Raises:
        SinkError: the URL is not one of those.
    """
    if url.startswith("sqlite:///"):
        return SQLiteSink(_sqlite_path(url))
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresSink(url)
    raise _unknown(url)
