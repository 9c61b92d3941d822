"""Scenario 1: poll throughput over 1,000 and 10,000 watched runs with small bodies.

Every run stays ``processing`` (one task that ends in a billion seconds), so nothing ever
finishes and every contender polls as fast as it can for a fixed wall interval:

* ours: ``client.watch(ids, policy=PollPolicy(...))`` with a 1 ms schedule,
  ``max_in_flight=C`` and ``strategy="per-run"`` (one GET per poll, not list scans); the count
  is ``watcher.polls``;
* bare aiohttp: C workers doing GET + ``await resp.read()`` round-robin over the ids, no decoding
  (the physical limit of aiohttp on this machine);
* asyncio + json.loads: what a user writes from the docs with aiohttp: C workers, GET,
  ``raise_for_status()``, ``json.loads`` into dicts, check the status;
* docs' requests loop: the documentation's synchronous loop in one thread with a
  ``requests.Session``, without its 5 s sleep.

Reported: polls/s and this process's CPU seconds per 1,000 polls, each the median of the
repetitions (contenders alternate, in a rotating order); a ratio is ours ÷ the contender's
median. Polls/s is what the targets judge; CPU per poll is the steadier figure on a busy machine.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import anyio
import requests
from _harness import (
    API_KEY,
    Meter,
    Row,
    ScenarioResult,
    Server,
    finish,
    fmt,
    fmt_ratio,
    fmt_share,
    median,
    parse_args,
    per_run_policy,
    pin_client,
    rotations,
    run,
)
from yarl import URL

from asyncclient import Client, PollPolicy

CONCURRENCY = 32
_TERMINAL = ("completed", "failed")


class Sample:
    """Polls counted over one measured interval."""

    def __init__(self, polls: int, meter: Meter) -> None:
        self.polls = polls
        self.wall = meter.wall
        self.cpu = meter.cpu
        self.server_share = meter.server_share

    @property
    def rate(self) -> float:
        return self.polls / self.wall

    @property
    def cpu_per_1k(self) -> float:
        return self.cpu / self.polls * 1000 if self.polls else float("nan")

    def to_json(self) -> dict[str, float]:
        return {
            "polls": self.polls,
            "wall": round(self.wall, 4),
            "cpu": round(self.cpu, 4),
            "server_share": round(self.server_share, 4),
            "polls_per_s": round(self.rate, 1),
            "cpu_s_per_1k_polls": round(self.cpu_per_1k, 5),
        }


async def _measure(
    server: Server, count: Callable[[], int], warmup: float, interval: float
) -> Sample:
    await anyio.sleep(warmup)
    meter = Meter(server).start()
    before = count()
    await anyio.sleep(interval)
    after = count()
    meter.stop()
    return Sample(after - before, meter)


async def ours(
    server: Server, ids: Sequence[str], concurrency: int, warmup: float, interval: float
) -> Sample:
    policy: PollPolicy = per_run_policy(
        initial_delay=0.001,
        max_delay=0.001,
        multiplier=1.0,
        jitter=0.0,
        max_in_flight=concurrency,
    )
    async with (
        Client(API_KEY, base_url=server.base_url) as client,
        client.watch(ids, policy=policy) as watcher,
    ):
        return await _measure(server, lambda: watcher.polls, warmup, interval)


async def _workers(
    server: Server,
    concurrency: int,
    warmup: float,
    interval: float,
    one_poll: Callable[[aiohttp.ClientSession], Awaitable[None]],
) -> Sample:
    done = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done
        while True:
            await one_poll(session)
            done += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        anyio.create_task_group() as group,
    ):
        for _ in range(concurrency):
            group.start_soon(worker, session)
        sample = await _measure(server, lambda: done, warmup, interval)
        group.cancel_scope.cancel()
    return sample


async def bare_aiohttp(
    server: Server, ids: Sequence[str], concurrency: int, warmup: float, interval: float
) -> Sample:
    urls = itertools.cycle([URL(f"{server.base_url}/browser-agent/{i}", encoded=True) for i in ids])
    headers = {"Authorization": f"Bearer {API_KEY}"}

    async def one_poll(session: aiohttp.ClientSession) -> None:
        async with session.get(next(urls), headers=headers) as response:
            await response.read()

    return await _workers(server, concurrency, warmup, interval, one_poll)


async def asyncio_json(
    server: Server, ids: Sequence[str], concurrency: int, warmup: float, interval: float
) -> Sample:
    base = f"{server.base_url}/browser-agent"
    hdr = {"Authorization": f"Bearer {API_KEY}"}
    next_id = itertools.cycle(ids).__next__
    finished: list[dict[str, Any]] = []

    async def one_poll(session: aiohttp.ClientSession) -> None:
        run_id = next_id()
        async with session.get(f"{base}/{run_id}", headers=hdr) as r:
            r.raise_for_status()
            run = json.loads(await r.read())
        if run["status"] in _TERMINAL:
            finished.append(run)

    return await _workers(server, concurrency, warmup, interval, one_poll)


def requests_loop(server: Server, ids: Sequence[str], warmup: float, interval: float) -> Sample:
    base = f"{server.base_url}/browser-agent"
    hdr = {"Authorization": f"Bearer {API_KEY}"}
    next_id = itertools.cycle(ids).__next__
    finished: list[dict[str, Any]] = []
    polls = 0
    meter = Meter(server)
    with requests.Session() as session:
        started = time.perf_counter()
        measuring_from = started + warmup
        stop_at = measuring_from + interval
        measuring = False
        while True:
            now = time.perf_counter()
            if not measuring and now >= measuring_from:
                measuring = True
                meter.start()
                polls = 0
            elif measuring and now >= stop_at:
                break
            r = session.get(f"{base}/{next_id()}", headers=hdr)
            r.raise_for_status()
            run = r.json()
            if run["status"] in _TERMINAL:
                finished.append(run)
            polls += 1
    meter.stop()
    return Sample(polls, meter)


CONTENDERS = ("ours", "bare aiohttp", "asyncio + json.loads", "docs' requests loop")


def measure_one(
    name: str, server: Server, ids: Sequence[str], warmup: float, interval: float
) -> Sample:
    if name == "ours":
        return run(lambda: ours(server, ids, CONCURRENCY, warmup, interval))
    if name == "bare aiohttp":
        return run(lambda: bare_aiohttp(server, ids, CONCURRENCY, warmup, interval))
    if name == "asyncio + json.loads":
        return run(lambda: asyncio_json(server, ids, CONCURRENCY, warmup, interval))
    return requests_loop(server, ids, warmup, interval)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    pin_client()
    started = time.perf_counter()
    # Many short alternating slices rather than a few long ones: on a shared machine the
    # background load moves on a scale of seconds, and every contender should see all of it.
    reps = 3 if args.quick else 8
    warmup = 0.25 if args.quick else 0.4
    interval = 0.6 if args.quick else 1.0
    sizes = (1_000, 10_000)
    result = ScenarioResult(
        "poll",
        params={
            "sizes": sizes,
            "reps": reps,
            "warmup_s": warmup,
            "interval_s": interval,
            "concurrency": CONCURRENCY,
        },
    )
    spec = {"groups": [{"count": max(sizes), "durations": [1e9]}]}
    with Server(spec) as server:
        all_ids = server.ids()
        for size in sizes:
            ids = all_ids[:size]
            samples: dict[str, list[Sample]] = {name: [] for name in CONTENDERS}
            for _, order in rotations(CONTENDERS, reps):
                for name in order:
                    samples[name].append(measure_one(name, server, ids, warmup, interval))
            result.raw[str(size)] = {
                name: [sample.to_json() for sample in values] for name, values in samples.items()
            }
            result.rows.extend(_rows(size, samples))
    result.seconds = time.perf_counter() - started
    finish(result, args.out)


_TARGETS = {"bare aiohttp": 0.85, "asyncio + json.loads": 1.2}


def _rows(size: int, samples: dict[str, list[Sample]]) -> list[Row]:
    rows = []
    mine = samples["ours"]
    for name, values in samples.items():
        rate = median([s.rate for s in values])
        cpu = median([s.cpu_per_1k for s in values])
        share = median([s.server_share for s in values])
        row = Row(
            scenario=f"1. poll {size:,} runs",
            contender=name,
            figure=f"{fmt(rate)} polls/s, {cpu:.3f} CPU s/1k polls",
            server_cpu=fmt_share(share),
        )
        if name != "ours":
            ratio = median([s.rate for s in mine]) / rate
            cpu_ratio = median([s.cpu_per_1k for s in mine]) / cpu
            row.ratio = fmt_ratio(ratio)
            row.note = f"CPU per poll, ours ÷ it: {fmt_ratio(cpu_ratio)}"
            if name in _TARGETS:
                row.target = f"≥ {_TARGETS[name]}×"
                row.met = ratio >= _TARGETS[name]
        rows.append(row)
    return rows


if __name__ == "__main__":
    main()
