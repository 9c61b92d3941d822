"""An emulator of the pre.dev browser-agent runs API, for tests and demos.

It serves both path styles of the two read endpoints (get a run, list runs) over real HTTP
with ``aiohttp.web``, with per-key ownership, the documented status codes, and runs whose
tasks finish on a clock you control::

    from asyncclient.testing import Emulator, ManualClock, serve

    clock = ManualClock()
    emu = Emulator(api_keys=("test-key", "other-key"), clock=clock, seed=0)
    run_id = emu.create_run(n_tasks=3, durations=[1.0, 2.0, 5.0], event_bytes=50_000)

    async with serve(emu) as server:
        ...  # point a client at server.base_url with server.api_key: the run is processing
        clock.advance(5.0)
        ...  # now it is completed, with completedAt and every task's result

From a shell, ``python -m asyncclient.testing --port 8765 --api-key demo-key --runs 100``
serves 100 runs on real time (``--speed 10`` makes them ten times faster).
"""

from ._clock import Clock, ManualClock, RealClock
from ._emulator import Emulator
from ._server import EmulatorServer, serve
from ._state import TaskPlan

__all__ = [
    "Clock",
    "Emulator",
    "EmulatorServer",
    "ManualClock",
    "RealClock",
    "TaskPlan",
    "serve",
]
