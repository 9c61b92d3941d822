"""Run one contender of scenario 1 (or the iter_runs walk) for a while, to profile it.

Not part of ``run_all.py``. Sample it from outside so the profiler costs the client nothing::

    py-spy record -r 500 -o poll.svg -- python benchmarks/profile_poll.py ours --seconds 20
    py-spy record -r 500 -f raw -o poll.txt -- python benchmarks/profile_poll.py ours
    python benchmarks/spy_summary.py poll.txt

or in process: ``python benchmarks/profile_poll.py ours --pyinstrument``. The emulator runs in its
own process (as in the benchmarks), so only the client shows up in the profile.

``python benchmarks/profile_poll.py ladder`` splits the cost of one poll layer by layer instead:
the same C workers polling through aiohttp bare, aiohttp with the client's request options, the
client's transport (``Transport.get``), ``Client._fetch_run`` (transport + decode) and the watch,
alternating, and prints the client CPU per poll of each; the differences between rungs are what
each layer costs. It uses private names on purpose: it is a diagnostic, not a benchmark.

``python benchmarks/profile_poll.py pair --reps 12`` alternates a few rungs of that ladder
(default: bare aiohttp, ``Client._fetch_run``, the watch) in 1 s samples and reports the paired
ratio of the last to the first, the steadiest figure this machine gives.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import aiohttp
from _harness import API_KEY, Server, median, pin_client, rotations
from bench_poll import CONCURRENCY, Sample, _workers, asyncio_json, bare_aiohttp, ours
from yarl import URL

from asyncclient import Client, __version__


async def _aiohttp_like_ours(
    server: Server, ids: Sequence[str], concurrency: int, warmup: float, interval: float
) -> Sample:
    """Bare aiohttp, but with the client's headers, timeout and URL building."""
    base = server.base_url
    headers = {
        "Authorization": f"Bearer {API_KEY}",
        "Accept": "application/json",
        "User-Agent": f"asyncclient/{__version__}",
    }
    cycle = itertools.cycle(ids).__next__
    timeout = aiohttp.ClientTimeout(total=60.0)

    async def one_poll(session: aiohttp.ClientSession) -> None:
        url = URL(base + "/browser-agent/" + cycle(), encoded=True)
        async with session.request(
            "GET", url, params=None, headers=headers, allow_redirects=False, timeout=timeout
        ) as response:
            await response.read()

    return await _workers(server, concurrency, warmup, interval, one_poll)


_Measure = Callable[[Server, Sequence[str], int, float, float], Coroutine[Any, Any, Sample]]


def _through_client(call: Callable[[Client, str], Awaitable[object]]) -> _Measure:
    async def measure(
        server: Server, ids: Sequence[str], concurrency: int, warmup: float, interval: float
    ) -> Sample:
        cycle = itertools.cycle(ids).__next__
        async with Client(API_KEY, base_url=server.base_url) as client:

            async def one_poll(session: aiohttp.ClientSession) -> None:
                await call(client, cycle())

            return await _workers(server, concurrency, warmup, interval, one_poll)

    return measure


_LADDER: dict[str, _Measure] = {
    "1 aiohttp bare": bare_aiohttp,
    "2 aiohttp + client's options": _aiohttp_like_ours,
    "3 Transport.get": _through_client(
        lambda client, run_id: client._transport.get("/browser-agent/" + run_id, None)
    ),
    "4 Client._fetch_run": _through_client(lambda client, run_id: client._fetch_run(run_id, False)),
    "5 watch": ours,
    "ref: asyncio + json.loads": asyncio_json,
}


def ladder(server: Server, ids: Sequence[str], reps: int, interval: float) -> None:
    cpu: dict[str, list[float]] = {name: [] for name in _LADDER}
    rate: dict[str, list[float]] = {name: [] for name in _LADDER}
    for _, order in rotations(list(_LADDER), reps):
        for name in order:
            sample = asyncio.run(_LADDER[name](server, ids, CONCURRENCY, 0.3, interval))
            cpu[name].append(sample.cpu_per_1k)
            rate[name].append(sample.rate)
    # The minimum too: on a busy machine noise only ever adds CPU time.
    print(
        f"{'rung':30} {'polls/s':>8} {'CPU ms/poll median':>19} {'min':>7} {'+ min over prev':>16}"
    )
    previous = None
    for name in _LADDER:
        ms, low = median(cpu[name]), min(cpu[name])
        step = "" if previous is None or name.startswith("ref") else f"{low - previous:+.4f}"
        print(f"{name:30} {median(rate[name]):8.0f} {ms:19.4f} {low:7.4f} {step:>16}")
        previous = low


def pair(server: Server, ids: Sequence[str], rungs: Sequence[str], reps: int) -> None:
    """Two or more rungs, alternating in 1 s samples (the order reversed every other repetition).

    Prints each rung's median and minimum client CPU per poll, and the median over repetitions of
    the last rung's CPU per poll divided by the first's, measured in the same repetition: on a
    noisy machine the pairing cancels what drifts between repetitions.
    """
    cpu: dict[str, list[float]] = {name: [] for name in rungs}
    for rep in range(reps):
        for name in rungs if rep % 2 == 0 else list(reversed(rungs)):
            sample = asyncio.run(_LADDER[name](server, ids, CONCURRENCY, 0.3, 1.0))
            cpu[name].append(sample.cpu_per_1k * 1000)  # µs per poll
    for name in rungs:
        print(f"{name:30} median {median(cpu[name]):6.1f} µs  min {min(cpu[name]):6.1f} µs")
    first, last = cpu[rungs[0]], cpu[rungs[-1]]
    ratios = [b / a for a, b in zip(first, last, strict=True)]
    print(f"paired ratio, {rungs[-1]!r} ÷ {rungs[0]!r}: median {median(ratios):.3f}")


async def _walks(server: Server, seconds: float) -> int:
    walked = 0
    stop_at = time.perf_counter() + seconds
    async with Client(API_KEY, base_url=server.base_url) as client:
        while time.perf_counter() < stop_at:
            async for _ in client.iter_runs():
                walked += 1
    return walked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "contender", choices=("ours", "bare", "json", "iter_runs", "ladder", "pair")
    )
    parser.add_argument("--reps", type=int, default=5, help="ladder, pair: repetitions")
    parser.add_argument(
        "--rungs",
        nargs="+",
        choices=list(_LADDER),
        default=["1 aiohttp bare", "4 Client._fetch_run", "5 watch"],
        help="pair: the rungs to alternate (the ratio is the last ÷ the first)",
    )
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--runs", type=int, default=1_000)
    parser.add_argument("--pyinstrument", action="store_true", help="profile in process")
    args = parser.parse_args()
    pin_client()
    if args.contender == "iter_runs":
        spec = {"groups": [{"count": 10_000, "durations": [30.0, 600.0], "spread": 36_000.0}]}
    else:
        spec = {"groups": [{"count": args.runs, "durations": [1e9]}]}
    with Server(spec) as server:
        ids = server.ids()
        profiler = None
        if args.pyinstrument:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0005, async_mode="disabled")
            profiler.start()
        if args.contender == "ladder":
            ladder(server, ids, args.reps, args.seconds / 5)
        elif args.contender == "pair":
            if len(args.rungs) < 2:
                parser.error("pair needs two rungs or more")
            pair(server, ids, args.rungs, args.reps)
        elif args.contender == "iter_runs":
            print(f"walked {asyncio.run(_walks(server, args.seconds)):,} runs")
        else:
            measures: dict[str, _Measure] = {
                "ours": ours,
                "bare": bare_aiohttp,
                "json": asyncio_json,
            }
            measure = measures[args.contender]
            sample = asyncio.run(measure(server, ids, CONCURRENCY, 0.5, args.seconds))
            print(sample.to_json())
        if profiler is not None:
            profiler.stop()
            print(profiler.output_text(unicode=True, color=False, show_all=False))


if __name__ == "__main__":
    main()
