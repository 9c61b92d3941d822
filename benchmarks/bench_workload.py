"""Scenario 4: requests per finished run for a realistic workload, ours vs the docs' loop.

Runs arrive over a window (uniformly at random), each with 1 to 5 tasks; a run lasts from 2 s to
3 minutes (log-uniform), its other tasks end between 20% and 100% of that. Time is compressed:
the emulator's clock runs ``speed`` times faster than the wall, and every poller is scaled by the
same factor:

* ours: one ``client.watch`` with the default policy, its schedule scaled
  (``PollPolicy(initial_delay=1/s, max_delay=15/s)``: 1 s, ×1.5, capped at 15 s, jittered), runs
  added with ``watcher.add`` as they are submitted; where the package has poll strategies, the
  default one (which may read the list endpoint instead of one GET per run) and, as a second
  contender, ``strategy="per-run"``;
* the docs' loop: the documentation's ``wait_for_run`` (GET, ``json.loads``, stop on
  ``completed``/``failed``, else sleep 5 s scaled), one asyncio task per run on aiohttp, so
  that only the schedule differs from ours.

Each repetition submits the same runs to every contender (one copy each, created by the same
request, each contender on an API key of its own so that list scans see only its runs), and they
all run at the same time in one event loop: the figure is a count, not a speed, and running side
by side gives all the same machine load. Requests are counted client side and checked against
the server's count. Also reported: how late each poller saw a run finish (emulated seconds after
its ``completedAt``), the fair price of polling less, and, by run length (under 10 s, 10 s to
1 min, over 1 min), the GETs per run the server counted (list pages serve all runs at once and
are not in those).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
from dataclasses import fields
from datetime import datetime
from typing import Any

import aiohttp
import anyio
from _harness import (
    API_KEY,
    FOURTH_KEY,
    OTHER_KEY,
    THIRD_KEY,
    Meter,
    Row,
    ScenarioResult,
    Server,
    finish,
    fmt_ratio,
    fmt_share,
    median,
    parse_args,
    per_run_policy,
    pin_client,
    run,
)

from asyncclient import Client, PollPolicy, Watcher

MIN_DURATION = 2.0
MAX_DURATION = 180.0
TICK = 0.1
_TERMINAL = ("completed", "failed")


def plan_runs(n: int, window: float, seed: int) -> list[tuple[float, list[float]]]:
    """``(arrival offset in wall seconds, task durations in emulated seconds)`` per run."""
    rng = random.Random(seed)
    plans = []
    for _ in range(n):
        length = math.exp(rng.uniform(math.log(MIN_DURATION), math.log(MAX_DURATION)))
        n_tasks = rng.choice((1, 1, 2, 3, 5))
        durations = [round(rng.uniform(0.2, 1.0) * length, 3) for _ in range(n_tasks - 1)]
        durations.append(round(length, 3))
        rng.shuffle(durations)
        plans.append((rng.uniform(0.0, window), durations))
    plans.sort(key=lambda plan: plan[0])
    return plans


def _timestamp(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


BUCKETS = ((MIN_DURATION, 10.0), (10.0, 60.0), (60.0, MAX_DURATION + 1))


class _Tally:
    """One contender's account of a repetition."""

    def __init__(self, name: str, key: str) -> None:
        self.name = name
        self.key = key
        self.requests = 0
        self.finished = 0
        self.lags: dict[str, float] = {}
        self.length: dict[str, float] = {}

    def summary(self, n: int, gets: list[int]) -> dict[str, Any]:
        lags = sorted(self.lags.values())
        by_bucket = {}
        for low, high in BUCKETS:
            inside = [
                (count, self.lags[run_id])
                for run_id, count in zip(self.length, gets, strict=True)
                if low <= self.length[run_id] < high
            ]
            by_bucket[f"{low:g}-{min(high, MAX_DURATION):g}s"] = {
                "runs": len(inside),
                "gets_per_run": sum(c for c, _ in inside) / max(1, len(inside)),
                "mean_lag_s": sum(lag for _, lag in inside) / max(1, len(inside)),
            }
        return {
            "requests": self.requests,
            "gets": sum(gets),
            "list_requests": self.requests - sum(gets),
            "finished": self.finished,
            "requests_per_run": self.requests / n,
            "mean_lag_s": sum(lags) / n,
            "p95_lag_s": lags[int(0.95 * (n - 1))],
            "by_duration": by_bucket,
        }


def contenders() -> list[tuple[str, str, str | None]]:
    """``(name, API key, strategy)``; the docs' loop has no strategy. One key each."""
    has_strategies = "strategy" in {f.name for f in fields(PollPolicy)}
    listed: list[tuple[str, str, str | None]] = [
        ("ours", API_KEY, "default" if has_strategies else "per-run")
    ]
    if has_strategies:
        listed.append(("ours, list", FOURTH_KEY, "list"))
        listed.append(("ours, per-run", THIRD_KEY, "per-run"))
    listed.append(("docs", OTHER_KEY, None))
    return listed


async def one_rep(
    server: Server, plans: list[tuple[float, list[float]]], speed: float
) -> dict[str, Any]:
    stats = server.stats()
    origin, clock_speed = float(stats["origin"]), float(stats["speed"])
    requests_before = int(stats["requests"])

    def emulated_now() -> float:
        return origin + (time.time() - origin) * clock_speed

    n = len(plans)
    tallies = [_Tally(name, key) for name, key, _ in contenders()]
    strategies = {name: strategy for name, _, strategy in contenders()}
    docs = tallies[-1]
    base = f"{server.base_url}/browser-agent"
    hdr = {"Authorization": f"Bearer {docs.key}"}
    poll_every = 5.0 / speed

    async def wait_for_run(session: aiohttp.ClientSession, run_id: str) -> None:
        # The docs' loop, asyncio flavour; the 30-minute deadline never matters here.
        while True:
            async with session.get(f"{base}/{run_id}", headers=hdr) as r:
                docs.requests += 1
                r.raise_for_status()
                run = json.loads(await r.read())
            if run["status"] in _TERMINAL:
                docs.lags[run_id] = emulated_now() - _timestamp(run["completedAt"])
                docs.finished += 1
                return
            await asyncio.sleep(poll_every)

    async def consume(tally: _Tally, client: Client, watcher: Watcher) -> None:
        while tally.finished < n:
            try:
                update = await watcher.__anext__()
            except StopAsyncIteration:  # everything added so far is done; more will come
                await anyio.sleep(TICK / 2)
                continue
            assert update.run is not None
            assert update.run.completed_at is not None
            tally.lags[update.run_id] = emulated_now() - update.run.completed_at.timestamp()
            tally.finished += 1
        tally.requests = client.requests_sent

    meter = Meter(server).start()
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        watchers: list[Watcher] = []
        clients: list[Client] = []
        for tally in tallies[:-1]:
            options: dict[str, Any] = {"initial_delay": 1.0 / speed, "max_delay": 15.0 / speed}
            strategy = strategies[tally.name]
            if strategy == "per-run":
                policy = per_run_policy(**options)
            elif strategy == "list":
                policy = PollPolicy(strategy="list", **options)
            else:
                policy = PollPolicy(**options)
            client = await stack.enter_async_context(Client(tally.key, base_url=server.base_url))
            watcher = await stack.enter_async_context(client.watch([], policy=policy))
            watchers.append(watcher)
            clients.append(client)
        group = await stack.enter_async_context(anyio.create_task_group())
        for tally, client, watcher in zip(tallies, clients, watchers, strict=False):
            group.start_soon(consume, tally, client, watcher)

        async def submit() -> None:
            started = time.perf_counter()
            index = 0
            while index < n:
                elapsed = time.perf_counter() - started
                batch = []
                while index < n and plans[index][0] <= elapsed:
                    batch.append(plans[index][1])
                    index += 1
                if batch:
                    lengths = [max(durations) for durations in batch]
                    # Every contender's copy of each run is created by the same request.
                    spec = {"groups": [{"per_run": batch, "key": t.key} for t in tallies]}
                    async with session.post(f"{server.base_url}/_runs", json=spec) as r:
                        ids = (await r.json())["ids"]
                    for i, tally in enumerate(tallies):
                        mine = ids[i * len(batch) : (i + 1) * len(batch)]
                        tally.length.update(zip(mine, lengths, strict=True))
                        if tally is docs:
                            for run_id in mine:
                                group.start_soon(wait_for_run, session, run_id)
                        else:
                            watchers[i].add(mine)
                await anyio.sleep(TICK)

        group.start_soon(submit)
    meter.stop()
    after = server.stats()
    server_requests = int(after["requests"]) - requests_before
    gets = server.get_counts([run_id for tally in tallies for run_id in tally.length])
    return {
        "runs": n,
        "wall_s": meter.wall,
        "client_cpu_share": meter.client_share,
        "server_share": meter.server_share,
        "server_requests": server_requests,
        "contenders": {
            tally.name: tally.summary(n, gets[i * n : (i + 1) * n])
            for i, tally in enumerate(tallies)
        },
    }


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    pin_client()
    started = time.perf_counter()
    if args.quick:
        n, speed, window, reps = 300, 45.0, 4.0, 3
    else:
        # 10,000 runs would push the client past saturation on a two-core machine shared with
        # other jobs: the pollers then fall behind their schedules and the counts mean little.
        n, speed, window, reps = 5_000, 15.0, 75.0, 3
    result = ScenarioResult(
        "workload",
        params={
            "runs": n,
            "speed": speed,
            "arrival_window_s": window,
            "reps": reps,
            "durations_s": [MIN_DURATION, MAX_DURATION],
        },
    )
    samples = []
    for rep in range(reps):
        # A fresh emulator each time: finished runs of earlier repetitions would slow its
        # status-filtered list pages (it filters the whole list for every page).
        with Server(speed=speed) as server:
            plans = plan_runs(n, window, seed=rep)
            samples.append(run(lambda: one_rep(server, plans, speed)))  # noqa: B023 - run at once
    result.raw["reps"] = samples
    share = fmt_share(median([s["server_share"] for s in samples]))
    client_share = median([s["client_cpu_share"] for s in samples])
    agree = all(
        s["server_requests"] == sum(c["requests"] for c in s["contenders"].values())
        for s in samples
    )

    def figure(name: str, field: str, bucket: str | None = None) -> float:
        if bucket is None:
            return median([s["contenders"][name][field] for s in samples])
        return median([s["contenders"][name]["by_duration"][bucket][field] for s in samples])

    docs = "docs"
    labels = {
        "ours": "ours: watch, default policy (scaled)",
        "ours, list": "ours: watch, strategy='list' (scaled)",
        "ours, per-run": "ours: watch, strategy='per-run' (scaled)",
        "docs": "docs' 5 s loop (scaled)",
    }
    names = list(samples[0]["contenders"])
    for name in names:
        per_run = figure(name, "requests_per_run")
        lists = figure(name, "list_requests")
        row = Row(
            f"4. workload, {n:,} runs × {reps}",
            labels.get(name, name),
            f"{per_run:.2f} requests per finished run; seen {figure(name, 'mean_lag_s'):.1f} s "
            f"(p95 {figure(name, 'p95_lag_s'):.1f} s) late",
            server_cpu=share,
            note=f"{lists / n:.2f} of them list pages" if lists else "",
        )
        if name != docs:
            row.ratio = fmt_ratio(per_run / figure(docs, "requests_per_run"))
        else:
            row.note = (
                f"client CPU {client_share * 100:.0f}%; "
                f"server's count {'agrees' if agree else 'DISAGREES'}"
            )
        result.rows.append(row)
    for bucket in samples[0]["contenders"][docs]["by_duration"]:
        count = figure(docs, "runs", bucket)
        theirs = figure(docs, "gets_per_run", bucket)
        for name in names[:-1]:
            mine = figure(name, "gets_per_run", bucket)
            result.rows.append(
                Row(
                    f"4. … runs lasting {bucket} ({count:g})",
                    f"{name} vs docs",
                    f"GETs per run {mine:.2f} vs {theirs:.2f}; seen "
                    f"{figure(name, 'mean_lag_s', bucket):.1f} vs "
                    f"{figure(docs, 'mean_lag_s', bucket):.1f} s late",
                    ratio=fmt_ratio(mine / theirs),
                )
            )
    result.seconds = time.perf_counter() - started
    finish(result, args.out)


if __name__ == "__main__":
    main()
