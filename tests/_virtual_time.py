"""An asyncio event loop on virtual time: waits take no wall time, and load cannot skew them.

The loop's clock (``loop.time()``, so ``anyio.current_time()``, every timer, aiohttp's timeouts
and the SDK's own schedule) starts at 0 and moves only when the loop would otherwise wait: when
nothing is ready, it jumps to the next timer at once. Work takes no virtual time, so a test can
run production delays (a 15 s poll interval, a 60 s request timeout, a 10-minute outage) in a
fraction of a second and assert on when things happened, exactly, however loaded the machine.

Real I/O still works. The emulator serves on loopback from the same loop, and on Linux a write
to a loopback socket is readable by its peer as soon as the write returns, so the loop finds
every answer ready before it moves the clock. Nothing here uses threads (a numeric host needs no
resolver), which could finish in real time after the clock has jumped.

Use it through anyio's pytest plugin: ``anyio_backend`` returns
``("asyncio", {"loop_factory": VirtualTimeLoop})``.
"""

from __future__ import annotations

import asyncio
import selectors

__all__ = ["VirtualTimeLoop"]


class _Selector(selectors.DefaultSelector):
    """The platform's selector, which moves the loop's clock instead of sleeping."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready: list[tuple[selectors.SelectorKey, int]] = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:  # no timer at all: only real I/O can wake the loop
            blocked: list[tuple[selectors.SelectorKey, int]] = super().select(None)
            return blocked
        self.now += timeout  # nothing to do until the next timer: be there now
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose clock is virtual (see the module docstring)."""

    def __init__(self) -> None:
        self._virtual = _Selector()
        super().__init__(self._virtual)

    def time(self) -> float:
        """Seconds of virtual time since the loop was made."""
        return self._virtual.now
