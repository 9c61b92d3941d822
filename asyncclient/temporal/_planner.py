"""Planning a batch: read the ids file once, name the batch, and cut it into shards.

A shard is never a list of ids. Temporal caps one payload at 2 MB and keeps every payload in the
workflow's history, so what travels is a small descriptor: where the ids are (the file's path
and the digest of its content) and which shard of how many. Each activity reads the file itself
and keeps the ids whose stable hash falls in its shard.

The hash is BLAKE2b of the lower-cased id, modulo the shard count: the same on every machine
and every Python (``hash()`` is salted per process, so it would scatter a shard's ids across
workers).

Ids file format: one run id per line, surrounding whitespace ignored, blank lines and lines
starting with ``#`` skipped; ids are lower-cased and repeats are kept once.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

from .._validation import validate_run_id
from ._exceptions import BatchInputError

__all__ = [
    "BatchSpec",
    "ShardSpec",
    "batch_id_for",
    "load_shard",
    "parse_ids",
    "plan_batch",
    "read_ids",
    "shard_of",
]

MAX_SHARDS = 100_000
"""More shards than this is a mistake: each is an activity with its own history events."""

_WORKFLOW_PREFIX = "predev-batch-"


def shard_of(run_id: str, shards: int) -> int:
    """The shard ``run_id`` belongs to, out of ``shards``: stable across processes and machines.

    Args:
        run_id: a run id (compared lower-cased).
        shards: how many shards, 1 or more.

    Returns:
        A shard index in ``0..shards-1``.
    """
    digest = hashlib.blake2b(run_id.lower().encode("ascii"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def parse_ids(content: bytes, *, source: str = "ids file") -> list[str]:
    """The run ids of an ids file's content, lower-cased, repeats dropped, in file order.

    Args:
        content: the file's bytes (UTF-8).
        source: what to call the file in error messages.

    Returns:
        The ids.

    Raises:
        BatchInputError: the content is not UTF-8, or a line is not a run id (the message
            names the line).
    """
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BatchInputError(f"{source} is not UTF-8 text: {exc}") from None
    ids: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        try:
            ids[validate_run_id(entry).lower()] = None
        except ValueError as exc:
            raise BatchInputError(f"{source}, line {number}: {exc}") from None
    return list(ids)


def _read_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise BatchInputError(f"cannot read the ids file {path!r}: {exc.strerror or exc}") from exc


def _digest(content: bytes) -> str:
    return hashlib.blake2b(content, digest_size=16).hexdigest()


def read_ids(path: str) -> tuple[list[str], str]:
    """Read an ids file: its ids and the digest of its content.

    Args:
        path: the file.

    Returns:
        ``(ids, digest)``; the digest is BLAKE2b-128 of the raw bytes, in hex.

    Raises:
        BatchInputError: the file cannot be read or holds a line that is not a run id.
    """
    content = _read_bytes(path)
    return parse_ids(content, source=path), _digest(content)


def workflow_id_for(batch_id: str) -> str:
    """The Temporal workflow id of the batch ``batch_id`` (``predev-batch-`` and the id)."""
    return _WORKFLOW_PREFIX + batch_id


def batch_id_for(ids_digest: str, sink: str) -> str:
    """The batch id: a hash of the ids file's content and of where results go.

    The same file watched into the same sink is the same batch, whatever its path, its shard
    count or the machine it is started from; so a second start is recognised and refused.

    Args:
        ids_digest: the digest of the ids file (from :func:`read_ids`).
        sink: the sink's name, without password (:attr:`Sink.name`).

    Returns:
        32 hexadecimal characters.
    """
    return hashlib.blake2b(f"{ids_digest}\n{sink}".encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class ShardSpec:
    """One shard of a batch, as sent to an activity: a few hundred bytes, whatever the batch.

    Attributes:
        batch_id: the batch this shard belongs to.
        ids_path: the ids file, as a path every worker can read.
        ids_digest: the digest of the file's content when the batch was planned; a worker that
            finds other content refuses the shard rather than watch other runs.
        index: this shard, ``0..count-1``.
        count: how many shards the batch has.
        sink: the sink the results go to, without password; a worker refuses a shard meant for
            another sink.
        include_events: store finished runs with their event timelines.
        ids_in_sink: the shard's ids were loaded into the sink's database (``predev_batch_ids``)
            when the batch started: the worker reads them from there, not from the file.
    """

    batch_id: str
    ids_path: str
    ids_digest: str
    index: int
    count: int
    sink: str
    include_events: bool = False
    ids_in_sink: bool = False


@dataclass(frozen=True)
class BatchSpec:
    """A planned batch: the ids file, its digest and size, the sink and the shard count.

    Attributes:
        batch_id: see :func:`batch_id_for`.
        ids_path: the ids file (absolute).
        ids_digest: the digest of its content.
        total: how many distinct ids it holds.
        shards: how many shards it is cut into.
        sink: the sink's name, without password.
        include_events: store finished runs with their event timelines.
        ids_in_sink: the ids are loaded into the sink's database (see :class:`ShardSpec`).
    """

    batch_id: str
    ids_path: str
    ids_digest: str
    total: int
    shards: int
    sink: str
    include_events: bool = False
    ids_in_sink: bool = False

    @property
    def workflow_id(self) -> str:
        """The Temporal workflow id of this batch (``predev-batch-`` and the batch id)."""
        return workflow_id_for(self.batch_id)

    def shard(self, index: int) -> ShardSpec:
        """The descriptor of shard ``index``.

        Raises:
            IndexError: ``index`` is not in ``0..shards-1``.
        """
        if not 0 <= index < self.shards:
            raise IndexError(f"shard {index} of a batch of {self.shards} shards")
        return ShardSpec(
            batch_id=self.batch_id,
            ids_path=self.ids_path,
            ids_digest=self.ids_digest,
            index=index,
            count=self.shards,
            sink=self.sink,
            include_events=self.include_events,
            ids_in_sink=self.ids_in_sink,
        )


def plan_batch(
    ids_path: str | Path, *, shards: int, sink: str, include_events: bool = False
) -> BatchSpec:
    """Read the ids file once and plan its batch. Blocking: call it from a thread in async code.

    Args:
        ids_path: the ids file; made absolute, so every worker on a shared filesystem reads
            the same file.
        shards: how many shards, ``1..100000``; more shards than workers times their
            concurrent activities only queue.
        sink: the sink's name, without password (:attr:`Sink.name`).
        include_events: store finished runs with their event timelines.

    Returns:
        The batch.

    Raises:
        BatchInputError: the file cannot be read, holds a bad line, or holds no id.
        ValueError: ``shards`` is out of range.
    """
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"shards must be an integer in 1..{MAX_SHARDS}, got {shards!r}")
    path = str(Path(ids_path).resolve())
    ids, digest = read_ids(path)
    if not ids:
        raise BatchInputError(f"the ids file {path!r} holds no run id")
    return BatchSpec(
        batch_id=batch_id_for(digest, sink),
        ids_path=path,
        ids_digest=digest,
        total=len(ids),
        shards=shards,
        sink=sink,
        include_events=include_events,
    )


# A worker runs many shards of the same batch. Cutting the whole file for each would cost
# shards x ids hashes per batch; the last batch cut is kept, so each worker cuts it once.
_cut_lock = threading.Lock()
_last_cut: tuple[tuple[str, int], list[list[str]]] | None = None


def cut_ids(ids_path: str, ids_digest: str, shards: int) -> list[list[str]]:
    """Every shard's ids, read from the file once (to load them into a sink's database).
    Blocking: call it from a thread in async code.

    Args:
        ids_path: the ids file.
        ids_digest: the digest it was planned with.
        shards: how many shards.

    Returns:
        The ids of each shard, in file order.

    Raises:
        BatchInputError: the file cannot be read, or its content is not what was planned.
    """
    content = _read_bytes(ids_path)
    if _digest(content) != ids_digest:
        raise BatchInputError(f"the ids file {ids_path!r} changed while the batch was planned")
    cut: list[list[str]] = [[] for _ in range(shards)]
    for run_id in parse_ids(content, source=ids_path):
        cut[shard_of(run_id, shards)].append(run_id)
    return cut


def load_shard(shard: ShardSpec) -> list[str]:
    """The ids of one shard, read from its file. Blocking: call it from a thread in async code.

    The file is read and its digest checked on every call; the cut into shards is computed
    once per batch and process (the last batch's is kept).

    Args:
        shard: the descriptor.

    Returns:
        The shard's ids, in file order.

    Raises:
        BatchInputError: the file cannot be read, or its content is not what was planned.
    """
    global _last_cut
    content = _read_bytes(shard.ids_path)
    if _digest(content) != shard.ids_digest:
        raise BatchInputError(
            f"the ids file {shard.ids_path!r} changed since batch {shard.batch_id} was planned "
            "(its digest differs); start a new batch for the new content"
        )
    key = (shard.ids_digest, shard.count)
    with _cut_lock:
        if _last_cut is None or _last_cut[0] != key:
            shards: list[list[str]] = [[] for _ in range(shard.count)]
            for run_id in parse_ids(content, source=shard.ids_path):
                shards[shard_of(run_id, shard.count)].append(run_id)
            _last_cut = (key, shards)
        return list(_last_cut[1][shard.index])
