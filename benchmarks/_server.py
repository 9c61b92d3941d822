"""The emulator in a process of its own, for the benchmarks.

::

    python benchmarks/_server.py --api-key bench-key --speed 10 --spec '{"groups": [...]}'

It builds an :class:`~asyncclient.testing.Emulator` on a real clock running ``--speed`` times
faster than wall time, creates the runs of ``--spec``, serves them on a free loopback port,
prints the base URL on one line of stdout and serves until SIGTERM, SIGINT or the end of its
stdin (so it never outlives the benchmark that started it).

A spec is ``{"groups": [group, ...]}``; a group creates ``count`` runs (default 1)::

    {"count": 1000, "durations": [1e9]}             # one task each, processing for ever
    {"durations": [0.5, 1.0], "event_bytes": 2e6}   # one run, ~2 MB of timelines
    {"per_run": [[3.0], [12.5, 40.0]]}              # one run per list of task durations
    {"count": 10000, "durations": [1.0], "spread": 3600, "age": 60}

``age`` (emulated seconds) creates the runs that long ago, ``spread`` spaces their creation
times evenly over that many seconds before it (list order needs distinct times), ``key`` gives
them to another of the ``--api-key`` keys than the first. A top-level ``"list_rows": "stub"``
serves finished runs in list pages as stubs (``Emulator.list_rows``).

Besides the API, four routes for the harness only:

* ``GET /_stats``: API requests answered (total and per route), the run count, and the clock
  (``origin`` and ``speed``, so a client can tell the emulated time);
* ``GET /_ids``: every run id (``?key=K``: of that key), in creation order;
* ``POST /_runs``: a spec in the body; its runs are created now; answers ``{"ids": [...]}``;
* ``POST /_counts``: ``{"ids": [...]}`` in the body; answers how many times each run was got;
* ``POST /_limit``: ``{"rate", "burst"}`` (``rate`` null: none) sets every key's rate limit now.

``--rate-limit RPS --burst N --retry-after seconds|ms|none --latency S --jitter S`` put the
emulator under a rate limit and add latency to every answer (``asyncclient.testing.RateLimits``);
``/_stats`` then also counts, per key, the requests admitted and those refused with a 429.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from asyncclient.testing import Emulator, RealClock

# Every run created here, as (key, id), in creation order (the emulator's own order is by
# creation time, then id: runs created in the same millisecond come out shuffled).
_created: list[tuple[str, str]] = []


def create_runs(emulator: Emulator, spec: dict[str, Any], now: float) -> list[str]:
    """Create the runs a spec describes, at emulated time ``now``; returns their ids."""
    ids: list[str] = []
    for group in spec.get("groups", []):
        api_key = group.get("key") or emulator.api_keys[0]
        event_bytes = int(group.get("event_bytes", 0))
        age = float(group.get("age", 0.0))
        plans: list[list[float]]
        if "per_run" in group:
            plans = [[float(d) for d in durations] for durations in group["per_run"]]
        else:
            durations = [float(d) for d in group.get("durations", [1e9])]
            plans = [durations] * int(group.get("count", 1))
        spread = float(group.get("spread", 0.0))
        step = spread / len(plans) if plans else 0.0
        for i, durations in enumerate(plans):
            created = now - age - spread + step * (i + 1) if spread else now - age
            ids.append(
                emulator.create_run(
                    api_key, durations=durations, event_bytes=event_bytes, created_at=created
                )
            )
            _created.append((api_key, ids[-1]))
    return ids


def count_gets(emulator: Emulator) -> Counter[str]:
    """Count the ``GET`` of each run (answered or not) from now on; returns the live counter."""
    counts: Counter[str] = Counter()

    def counting(route: str, request: web.Request) -> None:
        if route == "get":
            counts[request.match_info["id"]] += 1

    emulator.before_request = counting
    return counts


def build_bench_app(emulator: Emulator, clock: RealClock) -> web.Application:
    """The emulator's application (``Emulator.app``) with the harness's control routes added."""
    counts = count_gets(emulator)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {
                # The API's routes only: Emulator.request_count counts these control routes too.
                "requests": sum(emulator.requests_by_route.values()),
                "by_route": dict(emulator.requests_by_route),
                "runs": len(emulator.run_ids()),
                "origin": clock.origin,
                "speed": clock.speed,
                "pid": os.getpid(),
                "admitted": dict(emulator.rate_limits.admitted),
                "limited": dict(emulator.rate_limits.limited),
            }
        )

    async def ids(request: web.Request) -> web.Response:
        key = request.query.get("key")
        return web.json_response([i for k, i in _created if key is None or k == key])

    async def runs(request: web.Request) -> web.Response:
        spec = json.loads(await request.read())
        return web.json_response({"ids": create_runs(emulator, spec, clock())})

    async def per_run(request: web.Request) -> web.Response:
        wanted = json.loads(await request.read())["ids"]
        return web.json_response({"counts": [counts[run_id] for run_id in wanted]})

    async def limit(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        emulator.rate_limits.set(body.get("rate"), burst=body.get("burst"))
        return web.json_response({"ok": True})

    app = emulator.app  # a new application each read: this one is ours to extend and run
    router = app.router
    router.add_post("/_limit", limit)
    router.add_get("/_stats", stats)
    router.add_get("/_ids", ids)
    router.add_post("/_runs", runs)
    router.add_post("/_counts", per_run)
    return app


async def _serve(app: web.Application, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def wait_for_eof() -> None:
        # The harness holds our stdin open; when it goes away (even killed), so do we.
        with contextlib.suppress(OSError, ValueError):
            sys.stdin.buffer.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_for_eof, daemon=True).start()
    # serve() runs the emulator's own application; the control routes need ours, and the
    # benchmarks play no "refused" outage (the one thing serve() adds), so a plain runner.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound_host, bound_port = runner.addresses[0][:2]
        print(f"http://{bound_host}:{bound_port}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """Build the emulator of ``--spec``, serve it and print its base URL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--api-key", action="append", dest="api_keys", help="repeat for more (first: default)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spec", default='{"groups": []}', help="JSON spec, or @file")
    parser.add_argument("--cpu", type=int, default=None, help="pin the server to this CPU")
    parser.add_argument("--rate-limit", type=float, default=None, help="requests/s per key")
    parser.add_argument("--burst", type=float, default=None, help="the rate limit's burst")
    parser.add_argument("--retry-after", choices=("seconds", "ms", "none"), default="seconds")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to answers")
    parser.add_argument("--jitter", type=float, default=0.0, help="random extra latency")
    args = parser.parse_args(argv)
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    raw = args.spec
    if raw.startswith("@"):
        with open(raw[1:], encoding="utf-8") as file:
            raw = file.read()
    clock = RealClock(args.speed)
    keys = tuple(args.api_keys or ["bench-key"])
    emulator = Emulator(api_keys=keys, clock=clock, seed=args.seed)
    started = time.perf_counter()
    spec = json.loads(raw)
    emulator.list_rows = spec.get("list_rows", "summary")
    create_runs(emulator, spec, clock())
    print(f"created runs in {time.perf_counter() - started:.2f}s", file=sys.stderr, flush=True)
    if args.rate_limit is not None:
        emulator.rate_limits.set(args.rate_limit, burst=args.burst)
    emulator.rate_limits.retry_after = args.retry_after
    emulator.rate_limits.set_latency(args.latency, jitter=args.jitter)
    asyncio.run(_serve(build_bench_app(emulator, clock), args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
