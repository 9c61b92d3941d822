"""The PostgreSQL sink: one database, workers on many machines (psycopg 3, async)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .._exceptions import SinkError
from ._base import (
    CHUNK,
    DEADLOCK_RETRIES,
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

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg.rows import TupleRow
    from psycopg_pool import AsyncConnectionPool

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
    "CREATE TABLE IF NOT EXISTS predev_sink (id text PRIMARY KEY)",
    """
    CREATE TABLE IF NOT EXISTS predev_batch_ids (
        batch_id text NOT NULL,
        shard integer NOT NULL,
        position integer NOT NULL,
        run_id text NOT NULL,
        PRIMARY KEY (batch_id, shard, position)
    )""",
)
_POSTGRES_IDENTITY = (
    "INSERT INTO predev_sink (id) SELECT %s WHERE NOT EXISTS (SELECT 1 FROM predev_sink)"
)
# Concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalog: workers starting
# together take this lock first.
_SCHEMA_LOCK = 0x70726564  # "pred"
_POSTGRES_INSERT = """
    INSERT INTO predev_results (run_id, status, body, batch_id, shard, attempt, worker)
    SELECT r, s, b::json, %(batch_id)s, %(shard)s, %(attempt)s, %(worker)s
    FROM unnest(%(ids)s::text[], %(statuses)s::text[], %(bodies)s::text[]) AS t(r, s, b)
    ORDER BY r
    ON CONFLICT (run_id) DO UPDATE SET
        status = excluded.status, body = excluded.body, stored_at = now(),
        batch_id = excluded.batch_id, shard = excluded.shard, attempt = excluded.attempt,
        worker = excluded.worker
    -- Only a final answer replaces a watch error; nothing replaces a final answer.
    WHERE predev_results.status = 'error' AND excluded.status <> 'error'
    RETURNING run_id
"""


class PostgresSink(SinkBase):
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
        self._identity: str | None = None

    def __repr__(self) -> str:
        return f"<PostgresSink {self.name!r}>"

    @property
    def name(self) -> str:
        """The connection URL without its password."""
        return redact_conninfo(self._conninfo)

    @property
    def identity(self) -> str | None:
        """The sink's identity, stored in the database (see :attr:`Sink.identity`)."""
        return self._identity

    async def open(self) -> None:
        """Connect and create the tables if missing (see :meth:`Sink.open`)."""
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
                await conn.execute(_POSTGRES_IDENTITY, (new_identity(),))
                cursor = await conn.execute("SELECT id FROM predev_sink")
                row = await cursor.fetchone()
                assert row is not None
                self._identity = str(row[0])
        except (psycopg.Error, OSError) as exc:
            await pool.close()
            raise SinkError(f"{self.name}: {exc}") from exc
        self._pool = pool

    async def aclose(self) -> None:
        """Disconnect; safe to call twice (see :meth:`Sink.aclose`)."""
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
        """Store results in one transaction, each unless stored already (`Sink.store_many`)."""
        rows = distinct(results)
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

        for attempt in range(DEADLOCK_RETRIES):
            try:
                stored = await self._fetch(_POSTGRES_INSERT, params, transaction=True)
            except SinkError as exc:
                # Sorted inserts do not deadlock each other; other writers of the table might.
                # The transaction was rolled back whole, so trying again is safe.
                retry = isinstance(exc.__cause__, psycopg.errors.DeadlockDetected)
                if not retry or attempt == DEADLOCK_RETRIES - 1:
                    raise
                continue
            return {row[0] for row in stored}
        raise AssertionError("unreachable")  # pragma: no cover

    async def has(self, run_ids: Iterable[str], *, errors: bool = False) -> set[str]:
        """Which of ``run_ids`` hold a final answer (or any row, with ``errors``)
        (see :meth:`Sink.has`)."""
        ids = list(dict.fromkeys(run_ids))
        query = "SELECT run_id FROM predev_results WHERE run_id = ANY(%s::text[])"
        if not errors:
            query += " AND status <> 'error'"
        found: set[str] = set()
        for start in range(0, len(ids), CHUNK):
            rows = await self._fetch(query, (ids[start : start + CHUNK],))
            found.update(row[0] for row in rows)
        return found

    async def count(self, *, batch_id: str | None = None) -> int:
        """How many results are stored, by ``batch_id`` only if given (:meth:`Sink.count`)."""
        if batch_id is None:
            rows = await self._fetch("SELECT count(*) FROM predev_results", ())
        else:
            rows = await self._fetch(
                "SELECT count(*) FROM predev_results WHERE batch_id = %s",
                (batch_id,),
            )
        return int(rows[0][0])

    async def load_ids(self, batch_id: str, shards: Sequence[Sequence[str]]) -> bool:
        """Load a batch's ids by shard, once (see :meth:`Sink.load_ids`)."""
        import psycopg

        pool = self._checked_pool()
        try:
            async with pool.connection() as conn, conn.transaction():
                # One loader per batch: another watch of the same batch waits, then finds it.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (batch_id,))
                cursor = await conn.execute(
                    "SELECT 1 FROM predev_batch_ids WHERE batch_id = %s LIMIT 1", (batch_id,)
                )
                if await cursor.fetchone() is not None:
                    return False
                async with conn.cursor().copy(
                    "COPY predev_batch_ids (batch_id, shard, position, run_id) FROM STDIN"
                ) as copy:
                    for index, ids in enumerate(shards):
                        for position, run_id in enumerate(ids):
                            await copy.write_row((batch_id, index, position, run_id))
        except psycopg.Error as exc:
            raise SinkError(f"{self.name}: {exc}") from exc
        return True

    async def shard_ids(self, batch_id: str, shard: int) -> list[str]:
        """The ids of one shard, as loaded (see :meth:`Sink.shard_ids`)."""
        rows = await self._fetch(
            "SELECT run_id FROM predev_batch_ids WHERE batch_id = %s AND shard = %s "
            "ORDER BY position",
            (batch_id, shard),
        )
        return [row[0] for row in rows]

    async def get(self, run_id: str) -> StoredResult | None:
        """The stored result of one run, or ``None`` (see :meth:`Sink.get`)."""
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
        """Record that an activity attempt began (see :meth:`Sink.record_attempt`)."""
        await self._fetch(
            "INSERT INTO predev_attempts "
            "(batch_id, shard, attempt, worker, started_at, already_stored, resumed_stored) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (
                record.batch_id,
                record.shard,
                record.attempt,
                record.worker,
                record.started_at or utc_now(),
                record.already_stored,
                record.resumed_stored,
            ),
        )

    async def attempts(self, *, batch_id: str | None = None) -> list[AttemptRecord]:
        """The recorded attempts, by batch, shard and attempt (see :meth:`Sink.attempts`)."""
        rows = await self._fetch(*attempts_query(batch_id, "%s"))
        return [attempt_record(row, row[6]) for row in rows]


# -- choosing a sink by URL ------------------------------------------------------------------


def redact_conninfo(conninfo: str) -> str:
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
