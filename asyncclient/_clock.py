"""The one clock the SDK's own timing reads: the running event loop's.

Sleeps, timeouts and the poller's schedule already run on the event loop's clock (anyio's
``current_time()``, aiohttp's timers). The rate controller reads the same clock, so what it
measures and what it waits for agree: for asyncio's loops that is ``time.monotonic()``, and under
a loop on virtual time (as the test suite runs its timing tests) everything moves together.
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["loop_time"]


def loop_time() -> float:
    """Monotonic seconds: the running event loop's clock, or ``time.monotonic()`` outside one."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return time.monotonic()
    return loop.time()
