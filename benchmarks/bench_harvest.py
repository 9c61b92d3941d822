"""Scenario 6: finished runs in bulk: a watch reads them from list pages instead of one GET each.

The account holds 20,000 finished runs, created 5 s apart over the 28 hours before the start,
and a job watches 5,000 of them plus 20 that are still processing (each finishes 10 emulated
seconds after it was submitted): a reconciliation, or a job restarted with ``--resume``. The
emulator's clock runs ``SPEED`` times faster than the wall and every schedule is scaled by the
same factor. Two contenders watch the same ids, one after the other in rotated order, each with
20 processing runs of its own:

* ours: ``client.watch(ids)`` with the default policy (which may read finished runs from list
  pages, see ``asyncclient/_harvest.py``);
* GET-per-run: the same watch with ``strategy="per-run"``: one GET per run, as before.

Three cases:

* ``spread``: the 5,000 are a seeded random sample of the history, so their window is all of it
  (about 200 pages);
* ``recent``: the newest 5,000: their ids' times stop the walk after about 50 pages;
* ``stubs``: as ``spread``, but the emulator serves finished rows as stubs (``list_rows="stub"``,
  the other reading of the list page): the walk cannot settle any run and must give up at once.

Every request has ``LATENCY`` seconds of round trip added on the client (an aiohttp trace hook
that sleeps before each request goes out). The emulator limits no reads, so no rate limit is
applied: under a limit of ``r`` requests per second a watch would take about ``requests / r``.
Requests are counted on the client; "per finished run" counts the list pages read for finished
runs plus the GETs of the 5,000 finished runs, divided by 5,000.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import aiohttp
from _harness import (
    API_KEY,
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
    rotations,
)

from asyncclient import Client, PollPolicy

ACCOUNT = 20_000
WATCHED = 5_000
PROCESSING = 20
SPEED = 10.0
LATENCY = 0.03
CONTENDERS = ("ours", "GET-per-run")
CASES = ("spread", "recent", "stubs")


def history_spec(*, stubs: bool) -> dict[str, Any]:
    """The account: 20,000 runs finished long ago, 5 s apart."""
    spec: dict[str, Any] = {
        "groups": [
            {"count": ACCOUNT, "durations": [3.0, 20.0], "spread": ACCOUNT * 5.0, "age": 600.0}
        ]
    }
    if stubs:
        spec["list_rows"] = "stub"
    return spec


def policy_for(name: str) -> PollPolicy:
    """The default policy on the scaled clock; per-run for the GET-per-run contender."""
    options: dict[str, Any] = {"initial_delay": 1.0 / SPEED, "max_delay": 15.0 / SPEED}
    if name == "ours":
        return PollPolicy(**options)
    policy: PollPolicy = per_run_policy(**options)
    return policy


async def one_watch(
    server: Server, name: str, finished: list[str], processing: list[str]
) -> dict[str, Any]:
    """Watch the finished and processing runs with one contender; count what it sent."""
    wanted = set(finished)
    counts = {"list": 0, "finished_get": 0, "other_get": 0}

    async def delayed(
        session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestStartParams
    ) -> None:
        path = params.url.path
        if "list" in path:
            counts["list"] += 1
        elif path.rsplit("/", 1)[-1] in wanted:
            counts["finished_get"] += 1
        else:
            counts["other_get"] += 1
        await asyncio.sleep(LATENCY)

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(delayed)
    ids = finished + processing
    async with (
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=128), trace_configs=[trace]
        ) as session,
        Client(API_KEY, base_url=server.base_url, session=session) as client,
    ):
        meter = Meter(server).start()
        async with client.watch(ids, policy=policy_for(name)) as watcher:
            finals = [update async for update in watcher if update.final]
        meter.stop()
        sent = client.requests_sent
    delivered = {update.run_id for update in finals}
    ok = len(finals) == len(ids) and delivered == set(ids) and all(u.ok for u in finals)
    finished_list = watcher.harvest_requests
    return {
        "requests": sent,
        "list": counts["list"],
        "harvest_pages": finished_list,
        "harvested": watcher.harvested,
        "finished_gets": counts["finished_get"],
        "other_gets": counts["other_get"],
        "per_run": sent / len(ids),
        "per_finished_run": (finished_list + counts["finished_get"]) / len(finished),
        "wall_s": meter.wall,
        "server_share": meter.server_share,
        "exactly_once": ok,
    }


def run_case(case: str, reps: int) -> dict[str, list[dict[str, Any]]]:
    """Every repetition of one case, both contenders, on one server."""
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in CONTENDERS}
    with Server(history_spec(stubs=case == "stubs"), speed=SPEED) as server:
        history = server.ids(API_KEY)[:ACCOUNT]  # in creation order: oldest first
        if case == "recent":
            finished = history[-WATCHED:]
        else:
            finished = random.Random(6).sample(history, WATCHED)
        for _, order in rotations(CONTENDERS, reps):
            for name in order:
                processing = server.create_runs(
                    {"groups": [{"count": PROCESSING, "durations": [10.0]}]}
                )
                samples[name].append(asyncio.run(one_watch(server, name, finished, processing)))
    return samples


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    pin_client()
    started = time.perf_counter()
    reps = 1 if args.quick else 3
    result = ScenarioResult(
        "harvest",
        params={
            "account": ACCOUNT,
            "watched_finished": WATCHED,
            "processing": PROCESSING,
            "speed": SPEED,
            "latency_s": LATENCY,
            "rate_limit": None,
            "reps": reps,
        },
    )
    for case in CASES:
        samples = run_case(case, reps)
        result.raw[case] = samples
        ours, theirs = samples["ours"], samples["GET-per-run"]
        for name, values in samples.items():
            per_finished = median([v["per_finished_run"] for v in values])
            per_run = median([v["per_run"] for v in values])
            wall = median([v["wall_s"] for v in values])
            row = Row(
                f"6. {WATCHED:,} of {ACCOUNT:,} finished runs + {PROCESSING} processing ({case})",
                name,
                f"{per_finished:.3f} requests per finished run, {per_run:.3f} per run, "
                f"{wall:.2f} s",
                server_cpu=fmt_share(median([v["server_share"] for v in values])),
                note="each run once"
                if all(v["exactly_once"] for v in values)
                else "runs missed or repeated",
            )
            if values is ours:
                if case == "stubs":
                    row.target = "≤ 1.02 requests per run"
                    row.met = per_run <= 1.02
                elif case == "spread":
                    row.target = "≤ 0.05 requests per finished run"
                    row.met = per_finished <= 0.05
            else:
                # Requests, ours ÷ GET-per-run (fewer is better), measured rep by rep.
                ratios = [a["requests"] / b["requests"] for a, b in zip(ours, theirs, strict=True)]
                row.ratio = fmt_ratio(median(ratios)) + " requests"
                row.target = "ours ≤ GET-per-run (requests)"
                row.met = max(ratios) <= 1.0
                wall_ratio = median(
                    [b["wall_s"] / a["wall_s"] for a, b in zip(ours, theirs, strict=True)]
                )
                row.note += f"; ours {wall_ratio:.1f}× as fast"
            result.rows.append(row)
    result.seconds = time.perf_counter() - started
    finish(result, args.out)


if __name__ == "__main__":
    main()
