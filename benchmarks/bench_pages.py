"""Scenario 5: walking 10,000 runs, ``client.iter_runs()`` vs a naive ``skip += limit`` loop.

The emulator holds 10,000 runs created over the last ten hours (most finished, the newest still
processing). Both walks use the same client and pages of 100:

* ours: ``async for run in client.iter_runs()`` inside ``async with Client()`` (it fetches the
  next page while the current one is consumed, and anchors on the last run seen);
* naive: ``page = await client.list_runs(limit=100, skip=skip)`` until ``has_more`` is false,
  ``skip += 100``.

Reported: runs per second and list requests per 100 runs (counted by ``client.requests_sent``),
and that each walk saw every run exactly once. The two alternate, repetition by repetition.
"""

from __future__ import annotations

import time
from typing import Any

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
    pin_client,
    rotations,
    run,
)

from asyncclient import Client

RUNS = 10_000
PAGE = 100
CONTENDERS = ("ours: iter_runs", "naive skip += limit")


async def walk(server: Server, name: str) -> dict[str, Any]:
    seen: set[str] = set()
    rows = 0
    async with Client(API_KEY, base_url=server.base_url) as client:
        await client.list_runs(limit=1)  # open the connection
        sent = client.requests_sent
        meter = Meter(server).start()
        if name == CONTENDERS[0]:
            async for run in client.iter_runs(page_size=PAGE):
                seen.add(run.id)
                rows += 1
        else:
            skip = 0
            while True:
                page = await client.list_runs(limit=PAGE, skip=skip)
                for run in page.runs:
                    seen.add(run.id)
                    rows += 1
                if not page.has_more:
                    break
                skip += PAGE
        meter.stop()
        requests = client.requests_sent - sent
    return {
        "rows": rows,
        "distinct": len(seen),
        "requests": requests,
        "wall_s": meter.wall,
        "cpu_s": meter.cpu,
        "server_share": meter.server_share,
        "runs_per_s": rows / meter.wall,
        "requests_per_100": requests / rows * 100,
    }


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    pin_client()
    started = time.perf_counter()
    reps = 3 if args.quick else 5
    result = ScenarioResult("pages", params={"runs": RUNS, "page": PAGE, "reps": reps})
    spec = {"groups": [{"count": RUNS, "durations": [30.0, 600.0], "spread": 36_000.0}]}
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in CONTENDERS}
    with Server(spec) as server:
        for _, order in rotations(CONTENDERS, reps):
            for name in order:
                samples[name].append(run(lambda: walk(server, name)))  # noqa: B023 - run at once
    result.raw = samples
    mine = samples[CONTENDERS[0]]
    for name, values in samples.items():
        rate = median([v["runs_per_s"] for v in values])
        per_100 = median([v["requests_per_100"] for v in values])
        exact = all(v["rows"] == v["distinct"] == RUNS for v in values)
        row = Row(
            f"5. walk {RUNS:,} runs",
            name,
            f"{fmt(rate)} runs/s, {per_100:.2f} requests per 100 runs",
            server_cpu=fmt_share(median([v["server_share"] for v in values])),
            note="each run once" if exact else "runs missed or repeated",
        )
        if values is not mine:
            row.ratio = fmt_ratio(median([v["runs_per_s"] for v in mine]) / rate)
        result.rows.append(row)
    result.seconds = time.perf_counter() - started
    finish(result, args.out)


if __name__ == "__main__":
    main()
