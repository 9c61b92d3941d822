"""Helpers shared by the test modules."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
from aiohttp import web

from asyncclient.testing import ManualClock

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serve_handler(handler: Handler, *, method: str = "*") -> AsyncIterator[str]:
    """Serve one handler for every path on a free loopback port; yields the base URL."""
    app = web.Application()
    app.router.add_route(method, "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def ticking(clock: ManualClock, *, step: float, every: float) -> AsyncIterator[None]:
    """Move the emulator's clock forward by ``step`` every ``every`` real seconds."""
    async with anyio.create_task_group() as task_group:

        async def tick() -> None:
            while True:
                await anyio.sleep(every)
                clock.advance(step)

        task_group.start_soon(tick)
        yield
        task_group.cancel_scope.cancel()
