"""What every sink is: the records it stores, the :class:`Sink` protocol and the shared base.

The storage contract (exactly once through insert-if-absent) is described in the package
docstring; each backend lives in a module of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Protocol, TypeVar, runtime_checkable

import msgspec

from ..._exceptions import APIStatusError
from ..._models import Run

# Ids travel as one JSON array (SQLite) or one array (PostgreSQL) per query; a million ids
# in one message would be one huge message, so they go in chunks.
CHUNK = 10_000
DEADLOCK_RETRIES = 3


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

    @property
    def identity(self) -> str | None:
        """The sink's identity: a random id stored in the database itself (a row created on
        its first open), so every URL that reaches one database names one sink, and batches
        are keyed by it. ``None`` until the sink is opened."""
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

        A final answer (``completed``, ``failed``) is stored once and never replaced. A watch
        error (status ``error``) is kept apart from them: it never replaces anything, and a
        final answer for its run replaces it (and counts as stored by that call).

        Returns:
            The ids this call stored; the others were stored before (by anyone).
        """
        ...

    async def has(self, run_ids: Iterable[str], *, errors: bool = False) -> set[str]:
        """Which of ``run_ids`` hold a final answer (``completed`` or ``failed``).

        A watch error is not a result: it is not "stored" for a later attempt, batch or
        re-run, which watch its run again.

        Args:
            run_ids: the ids to look up.
            errors: also count the ids stored as watch errors.
        """
        ...

    async def count(self, *, batch_id: str | None = None) -> int:
        """How many results are stored (by ``batch_id`` only, if given)."""
        ...

    async def load_ids(self, batch_id: str, shards: Sequence[Sequence[str]]) -> bool:
        """Load a batch's ids, shard by shard, into ``predev_batch_ids`` (once per batch).

        Args:
            batch_id: the batch.
            shards: the ids of each shard, by shard index.

        Returns:
            True if this call loaded them; False if the batch's ids were there already.
        """
        ...

    async def shard_ids(self, batch_id: str, shard: int) -> list[str]:
        """The ids of one shard of a batch, as :meth:`load_ids` loaded them (in order)."""
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


class SinkBase(Sink):
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


_S = TypeVar("_S", bound=SinkBase)


def distinct(results: Sequence[RunResult]) -> list[RunResult]:
    """One result per run (the first), sorted by run id.

    Concurrent transactions that insert overlapping keys in different orders can deadlock in
    PostgreSQL, each waiting on a key the other inserted; in one order they only queue.
    """
    first: dict[str, RunResult] = {}
    for result in results:
        first.setdefault(result.run_id, result)
    return sorted(first.values(), key=lambda result: result.run_id)


def attempts_query(batch_id: str | None, placeholder: str) -> tuple[str, tuple[str, ...]]:
    """The query that reads attempts back (by batch if given), and its parameters.

    Its columns are the ones :func:`attempt_record` reads, in that order.

    Args:
        batch_id: only this batch's attempts, if given.
        placeholder: the driver's parameter marker (``?`` for sqlite3, ``%s`` for psycopg).
    """
    query = (
        "SELECT batch_id, shard, attempt, worker, already_stored, resumed_stored, started_at "
        "FROM predev_attempts"
    )
    params: tuple[str, ...] = ()
    if batch_id is not None:
        query += f" WHERE batch_id = {placeholder}"
        params = (batch_id,)
    return query + " ORDER BY batch_id, shard, attempt", params


def attempt_record(row: Sequence[Any], started_at: datetime) -> AttemptRecord:
    """An attempt from a row of :func:`attempts_query`, with ``started_at`` as a datetime."""
    return AttemptRecord(
        batch_id=row[0],
        shard=row[1],
        attempt=row[2],
        worker=row[3],
        already_stored=row[4],
        resumed_stored=row[5],
        started_at=started_at,
    )


def new_identity() -> str:
    """A fresh sink identity (kept only if the database has none yet)."""
    return "sink-" + uuid.uuid4().hex


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


# -- SQLite ----------------------------------------------------------------------------------
