"""An emulator of the pre.dev browser-agent runs API, for tests and demos.

It serves both path styles of the API (get a run, list runs, submit a run in async, blocking or
streaming mode, the queue snapshot) over real HTTP with ``aiohttp.web``, with per-key ownership,
the documented status codes and error codes, a chaos mode (:class:`Fault`), and runs whose tasks
finish on a clock you control::

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

Chaos on demand: ``emu.faults.add(Fault("status", status=503, rate=0.2))`` fails a fifth of the
requests, ``emu.faults.outage(5.0)`` fails all of them for five seconds (see :class:`Fault` for
resets, truncated, trickling, stalled and black-holed requests, 429s with every form of
``Retry-After``, non-JSON bodies and proxy error pages); ``--faults "503:0.2,reset:0.05"`` does the
same from the shell. Outages come in three forms, now or on a schedule:
``emu.faults.outage(120.0, form="refused", start=30.0)`` closes the server's port in 30 s (open
connections are cut) and reopens it on the same port two minutes later; ``form="blackhole"``
accepts connections and never answers; ``--outage refused:30:120`` does it from the shell.

A rate limit per key and latency on every answer: ``emu.rate_limits.set(200, burst=20)`` and
``emu.rate_limits.set_latency(0.010)`` (see :class:`RateLimits`), or
``--rate-limit 200 --burst 20 --latency 10ms``.

One switch for the SDK's own waits: ``set_testing(delay_scale=0.001)`` (or ``with
set_testing(delay_scale=0.001):``) scales every retry, poll and outage-probe delay, keeping the
production policies (:func:`set_testing`).
"""

from .._testing_switch import set_testing
from ._clock import Clock, ManualClock, RealClock
from ._emulator import Emulator
from ._faults import Fault, Faults
from ._ratelimit import RateLimits
from ._server import EmulatorServer, serve
from ._state import TaskPlan

__all__ = [
    "Clock",
    "Emulator",
    "EmulatorServer",
    "Fault",
    "Faults",
    "ManualClock",
    "RateLimits",
    "RealClock",
    "TaskPlan",
    "serve",
    "set_testing",
]
