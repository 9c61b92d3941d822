"""Serving an emulator on a loopback port for the length of an ``async with`` block."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from ._app import build_app
from ._emulator import Emulator

__all__ = ["EmulatorServer", "serve"]

# In-flight requests get this long to finish when the server stops; a client stuck
# mid-request must not hold a test session hostage.
_SHUTDOWN_TIMEOUT = 2.0


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
    app = emu.app
    # An aiohttp application is tied to the first event loop that ran it; serving the same
    # emulator from another loop (a different test session, say) needs an app of its own.
    bound = getattr(app, "_loop", None)
    if bound is not None and bound is not asyncio.get_running_loop():
        app = build_app(emu)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        yield EmulatorServer(
            base_url=f"http://{shown}:{bound_port}",
            api_key=emu.api_keys[0],
            emulator=emu,
            host=bound_host,
            port=bound_port,
        )
    finally:
        await runner.cleanup()
