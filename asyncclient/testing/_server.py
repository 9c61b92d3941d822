"""Serving an emulator on a loopback port for the length of an ``async with`` block.

The server also plays the ``"refused"`` form of an outage (:meth:`Faults.outage`): a small task
closes the listening socket and cuts the open connections when one begins, and listens again on
the same port when it ends.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
from aiohttp import web

from ._app import build_app
from ._clock import loop_time
from ._emulator import Emulator

__all__ = ["EmulatorServer", "serve"]

# In-flight requests get this long to finish when the server stops; a client stuck
# mid-request must not hold a test session hostage.
_SHUTDOWN_TIMEOUT = 2.0

logger = logging.getLogger("asyncclient.testing")


@dataclass(frozen=True)
class EmulatorServer:
    """A running emulator server.

    Attributes:
        base_url: Where it listens, e.g. ``http://127.0.0.1:51234`` (no trailing slash).
        api_key: The emulator's first API key.
        emulator: The emulator being served.
        host: The bound host.
        port: The bound port.
    """

    base_url: str
    api_key: str
    emulator: Emulator
    host: str
    port: int


@asynccontextmanager
async def serve(
    emulator: Emulator | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
) -> AsyncIterator[EmulatorServer]:
    """Serve an emulator over HTTP until the block exits.

    Example:
        >>> async with serve(Emulator(api_keys=("test-key",))) as server:  # doctest: +SKIP
        ...     print(server.base_url)

    Args:
        emulator: What to serve; defaults to a fresh :class:`Emulator` with the single key
            ``"test-key"``.
        host: The interface to bind.
        port: The port; ``0`` picks a free one.

    Yields:
        The running server; it is stopped and its sockets closed on exit.
    """
    emu = emulator if emulator is not None else Emulator()
    # An application of its own each time: an aiohttp application is tied to the loop that
    # first ran it, and the same emulator may be served again from another loop.
    runner = web.AppRunner(build_app(emu), access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        listener = _Listener(runner, site, bound_host, bound_port)
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        try:
            task_group.start_soon(listener.follow, emu)
            yield EmulatorServer(
                base_url=f"http://{shown}:{bound_port}",
                api_key=emu.api_keys[0],
                emulator=emu,
                host=bound_host,
                port=bound_port,
            )
        finally:
            task_group.cancel_scope.cancel()
            # The block's own error (if any) goes on as it is; the follower never raises.
            await task_group.__aexit__(None, None, None)
    finally:
        await runner.cleanup()


class _Listener:
    """Opens and closes one server's listening socket as ``"refused"`` outages come and go."""

    def __init__(self, runner: web.AppRunner, site: web.TCPSite, host: str, port: int) -> None:
        self._runner = runner
        self._site: web.TCPSite | None = site
        self._host = host
        self._port = port
        self._changed = anyio.Event()

    def _notify(self) -> None:
        self._changed.set()

    async def follow(self, emulator: Emulator) -> None:
        faults = emulator.faults
        faults.watch(self._notify)
        try:
            while True:
                if self._changed.is_set():
                    self._changed = anyio.Event()
                try:
                    await self._apply(faults.refusing)
                except OSError as exc:  # the port was taken meanwhile: try again shortly
                    logger.warning("cannot listen on port %d again: %s", self._port, exc)
                    await anyio.sleep(0.05)
                    continue
                wait = faults.next_change() - loop_time()
                with anyio.move_on_after(max(wait, 0.0) if math.isfinite(wait) else math.inf):
                    await self._changed.wait()
        finally:
            faults.unwatch(self._notify)

    async def _apply(self, refusing: bool) -> None:
        if refusing and self._site is not None:
            site, self._site = self._site, None
            await site.stop()
            server = self._runner.server
            for handler in server.connections if server is not None else ():
                transport = handler.transport
                if transport is not None:
                    transport.abort()
        elif not refusing and self._site is None:
            site = web.TCPSite(self._runner, self._host, self._port)
            await site.start()
            self._site = site
