"""Where results go: the :class:`Sink` protocol (``_base``), one module per backend.

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

from pathlib import Path
from urllib.parse import urlsplit

from .._exceptions import SinkError
from ._base import AttemptRecord, RunResult, Sink, StoredBy, StoredResult
from ._postgres import PostgresSink, redact_conninfo
from ._sqlite import SQLiteSink

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
        return redact_conninfo(url)
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
