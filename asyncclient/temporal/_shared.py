"""One watch per worker: the shards a worker runs share one scan of the list.

Each shard watching its own runs with a list-assisted strategy would read the key's whole
``processing`` list on every tick: list pages would grow with the number of shards, and each
shard would hold its results back until its own first scan. A worker therefore runs one
long-lived :class:`~asyncclient.Watcher` per ``include_events`` setting; a shard adds its ids to
it (:meth:`SharedWatch.subscribe`) and reads back the final updates of its own runs only. One
client, one connection pool, one scanner, however many shards.

The shared watch lives in a task of its own, so a refused key (401), which ends a watch,
fails only the shards subscribed at that moment (each gets the error) and the next shard finds
a fresh watch. A shard that leaves early (shutdown, failure) takes its ids out of the watch
(``Watcher.discard``): nothing is polled for it any more, and a retry of the shard on this
worker adds them afresh.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio
import anyio.abc
from anyio import AsyncContextManagerMixin
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._client import Client
from .._config import PollPolicy
from .._exceptions import AuthenticationError
from .._polling import RunUpdate, Watcher

__all__ = ["SharedWatch"]


class _Route:
    """Where the final updates of one shard's runs go."""

    __slots__ = ("pending", "send")

    def __init__(self, pending: set[str], send: MemoryObjectSendStream[RunUpdate]) -> None:
        self.pending = pending
        self.send = send


class SharedWatch(AsyncContextManagerMixin):
    """One watch that many shards of a worker add their runs to.

    Use as ``async with SharedWatch(client) as shared:``, then, in each shard,
    ``async with shared.subscribe(ids) as updates: async for update in updates: ...``.

    Args:
        client: the worker's API client.
        include_events: deliver finished runs with their event timelines.
        policy: the polling policy (default: the client's).
    """

    def __init__(
        self, client: Client, *, include_events: bool = False, policy: PollPolicy | None = None
    ) -> None:
        self._client = client
        self._include_events = include_events
        self._policy = policy
        self._watcher: Watcher | None = None
        self._up = anyio.Event()
        self._added = anyio.Event()
        self._owner: dict[str, _Route] = {}
        self._task_group: anyio.abc.TaskGroup | None = None

    def __repr__(self) -> str:
        return f"<SharedWatch runs={len(self._owner)} include_events={self._include_events}>"

    @property
    def watcher(self) -> Watcher | None:
        """The watch now running (its counters: ``polls``, ``scan_requests``...), if any."""
        return self._watcher

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[SharedWatch]:
        """``async with SharedWatch(...)``: hosts the watch in a task group, cancelled on exit."""
        async with anyio.create_task_group() as task_group:
            self._task_group = task_group
            task_group.start_soon(self._host)
            await self._up.wait()
            try:
                yield self
            finally:
                self._task_group = None
                task_group.cancel_scope.cancel()

    async def _host(self) -> None:
        """Run the watch; after a refused key, tell its shards and start a fresh one."""
        while True:
            try:
                async with self._client.watch(
                    [], include_events=self._include_events, policy=self._policy
                ) as watcher:
                    self._watcher = watcher
                    self._up.set()
                    await self._route(watcher)
            except AuthenticationError as error:
                self._watcher = None
                self._up = anyio.Event()
                owners, self._owner = self._owner, {}
                for route in {id(route): route for route in owners.values()}.values():
                    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                        route.send.send_nowait(RunUpdate("0" * 24, error=error))
                    route.send.close()

    async def _route(self, watcher: Watcher) -> None:
        """Hand each final update to the shard that owns its run."""
        while True:
            if watcher.pending == 0:
                await self._added.wait()
                self._added = anyio.Event()
                continue
            try:
                update = await watcher.__anext__()
            except StopAsyncIteration:
                continue
            if not update.final:
                continue
            route = self._owner.pop(update.run_id, None)
            if route is None or update.run_id not in route.pending:
                continue  # its shard left; a duplicate of a discarded run
            route.pending.discard(update.run_id)
            watcher.discard([update.run_id])  # delivered: a retry of the shard adds it afresh
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                route.send.send_nowait(update)
            if not route.pending:
                route.send.close()

    @contextlib.asynccontextmanager
    async def subscribe(
        self, run_ids: Sequence[str]
    ) -> AsyncIterator[MemoryObjectReceiveStream[RunUpdate]]:
        """Watch ``run_ids`` in the shared watch; yields the stream of their final updates.

        The stream ends once every id has its final update. A refused key (401) arrives as one
        update whose ``error`` is the :class:`~asyncclient.AuthenticationError`, then the end.
        Leaving the block early takes the ids that are still pending out of the watch.

        Args:
            run_ids: the ids (validated by the watch; duplicates are watched once).

        Raises:
            ValueError: an id is not a run id.
            RuntimeError: the shared watch is not running.
        """
        if self._task_group is None:
            raise RuntimeError("subscribe() needs a running shared watch: `async with` it")
        await self._up.wait()
        watcher = self._watcher
        assert watcher is not None
        ids = list(dict.fromkeys(run_ids))
        send, receive = anyio.create_memory_object_stream[RunUpdate](math.inf)
        route = _Route(set(ids), send)
        if not ids:
            send.close()
        for run_id in ids:
            self._owner[run_id] = route
        try:
            # Ids another shard still watches (a retry of a shard on the same worker) are
            # pending in the watch already: they are routed here from now on.
            watcher.add(ids)
            self._added.set()
            async with receive:
                yield receive
        finally:
            left = [run_id for run_id in route.pending if self._owner.get(run_id) is route]
            for run_id in left:
                del self._owner[run_id]
            if self._watcher is watcher and left:
                watcher.discard(left)
            send.close()
