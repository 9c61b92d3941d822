"""Scenario 6: a bulk job under a rate limit, ours vs a naive gather and the docs' loop.

The emulator (in its own process) lets the key send ``L`` requests per second in bursts of
``burst``, answers 429 ``RATE_LIMITED`` with an integer ``Retry-After`` (whole seconds, as most APIs
send it) past that, and adds ``latency`` to every answer. The job: ``N`` finished runs plus a few
processing ones that finish within seconds, each watched until it is finished. Contenders, one
after the other on the same key (each with fresh processing runs), in one run of this script:

* ours (defaults): ``client.watch(ids)``, nothing configured but the per-run strategy (every run
  its own GET, as polling processing runs is; with the default strategy finished runs come from
  list pages, a hundred a request, and the job would not meet the limit at all);
* ours with ``max_requests_per_second=L``: the fixed ceiling a user who knows the limit sets;
* ours as before issue 15 (``RateController(adaptive=False)``): the client-wide Retry-After pause
  only, no pacing (full mode only: it is slow);
* naive gather: ``asyncio.gather`` of one task per run behind a 32-slot semaphore, sleeping
  ``Retry-After`` on a 429 and 5 s while a run is processing;
* the docs' loop: one task per run, GET, ``raise_for_status()``, sleep 5 s while processing (a 429
  fails the run: that is what the documentation's loop does).

Figures, from the server's own counts: wall time; goodput (successful requests per second ÷ L);
429s per 1,000 requests; attempts per call (requests ÷ calls, a call being one run's GET that
ended in an answer or an error); runs delivered as errors. Then two more jobs with ours
(defaults): L drops to a quarter a third of the way in and comes back after half the nominal
job (wall time ÷ the ideal time under that schedule, 429s per 1,000, and how long after each
change the 429s stay under 2% of requests / the admitted rate is back at 0.9 L, from a timeline
sampled every 0.1 s); and four processes sharing the key, each watching a quarter of the runs
(combined goodput and 429s per 1,000).
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
from _harness import (
    API_KEY,
    HERE,
    Row,
    ScenarioResult,
    Server,
    finish,
    fmt,
    parse_args,
    per_run_policy,
    pin_client,
)

from asyncclient import Client, RateController

_TERMINAL = ("completed", "failed")
PROCESSES = 4


class _Stats:
    """The server's admitted/refused counts for our key, sampled every 0.1 s from a thread."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def counts(self) -> tuple[int, int]:
        stats = self._server.stats()
        return int(stats["admitted"].get(API_KEY, 0)), int(stats["limited"].get(API_KEY, 0))

    def start(self) -> _Stats:
        self.samples = []
        self._stop.clear()

        def run() -> None:
            while not self._stop.is_set():
                admitted, limited = self.counts()
                self.samples.append((time.perf_counter(), admitted, limited))
                self._stop.wait(0.1)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _runs(server: Server, finished: list[str], processing: int, seed: int) -> list[str]:
    """The job's ids: the finished runs and ``processing`` new runs ending within 0.3..1.5 s
    (seen finished by their second or third poll, well before the job ends)."""
    per_run = [[0.3 + 1.2 * ((i * 7919 + seed) % 100) / 100] for i in range(processing)]
    return finished + server.create_runs({"groups": [{"per_run": per_run}]})


async def _ours(base_url: str, ids: list[str], **options: Any) -> dict[str, Any]:
    async with Client(API_KEY, base_url=base_url, **options) as client:
        errors = 0
        # One GET per run: the watch would otherwise read finished runs from list pages, a
        # hundred a request, and the job would send too few requests to meet the limit.
        async with client.watch(ids, policy=per_run_policy()) as watcher:
            async for update in watcher:
                errors += not update.ok
        rate = client.rate_controller
        return {
            "errors": errors,
            "client_requests": client.requests_sent,
            "throttles": dict(rate.throttles),
            "cuts": rate.cuts,
            "waited_s": rate.waited,
            "final_rate": rate.rate,
        }


async def _naive(base_url: str, ids: list[str]) -> dict[str, Any]:
    """gather + a 32-slot semaphore; on a 429 sleep Retry-After, while processing sleep 5 s."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    semaphore = asyncio.Semaphore(32)
    errors = 0

    async def one(session: aiohttp.ClientSession, run_id: str) -> None:
        nonlocal errors
        while True:
            async with semaphore, session.get(f"{base_url}/browser-agent/{run_id}") as r:
                body = await r.read()
                retry_after = r.headers.get("Retry-After")
                status = r.status
            if status == 429:
                await asyncio.sleep(float(retry_after or 1))
                continue
            if status != 200:
                errors += 1
                return
            if json.loads(body)["status"] in _TERMINAL:
                return
            await asyncio.sleep(5.0)

    async with aiohttp.ClientSession(headers=headers) as session:
        await asyncio.gather(*(one(session, run_id) for run_id in ids))
    return {"errors": errors}


async def _docs(base_url: str, ids: list[str]) -> dict[str, Any]:
    """The documentation's loop: GET, raise_for_status, sleep 5 s while processing."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    errors = 0

    async def wait_for_run(session: aiohttp.ClientSession, run_id: str) -> None:
        nonlocal errors
        try:
            while True:
                async with session.get(f"{base_url}/browser-agent/{run_id}") as r:
                    r.raise_for_status()
                    run = json.loads(await r.read())
                if run["status"] in _TERMINAL:
                    return
                await asyncio.sleep(5.0)
        except aiohttp.ClientResponseError:
            errors += 1

    async with aiohttp.ClientSession(headers=headers) as session:
        await asyncio.gather(*(wait_for_run(session, run_id) for run_id in ids))
    return {"errors": errors}


def _measure(
    server: Server,
    stats: _Stats,
    job: Callable[[], Coroutine[Any, Any, dict[str, Any]]],
    limit: float,
) -> dict[str, Any]:
    time.sleep(0.5)  # let the server's bucket fill up between contenders
    admitted0, limited0 = stats.counts()
    stats.start()
    started = time.perf_counter()
    figures: dict[str, Any] = asyncio.run(job())
    wall = time.perf_counter() - started
    stats.stop()
    admitted1, limited1 = stats.counts()
    admitted, limited = admitted1 - admitted0, limited1 - limited0
    requests = admitted + limited
    calls = admitted + figures.get("errors", 0)
    figures.update(
        wall_s=wall,
        admitted=admitted,
        limited=limited,
        goodput=admitted / wall / limit,
        per_1000=1000.0 * limited / max(1, requests),
        attempts_per_call=requests / max(1, calls),
        ideal_s=admitted / limit,
        timeline=[(t - started, a - admitted0, b - limited0) for t, a, b in stats.samples],
    )
    return figures


def _settle(
    timeline: list[tuple[float, int, int]], start: float, end: float, rate: float
) -> tuple[float, float]:
    """After a change at ``start``: seconds until 429s stay under 2% of requests (1 s windows)
    for good, and until the admitted rate first reaches 0.9 of ``rate``."""
    points = [p for p in timeline if start <= p[0] <= end]
    calm = math.nan
    reached = math.nan
    for i, (t, admitted, limited) in enumerate(points):
        later = next((p for p in points[i:] if p[0] >= t + 1.0), None)
        if later is None:
            break
        got, refused = later[1] - admitted, later[2] - limited
        if math.isnan(reached) and got / (later[0] - t) >= 0.9 * rate:
            reached = t - start
        ok = all(
            (q2[2] - q1[2]) <= 0.02 * max(1, (q2[1] - q1[1]) + (q2[2] - q1[2]))
            for q1, q2 in _windows(points[i:])
        )
        if ok and math.isnan(calm):
            calm = t - start
        if refused < 0 or got < 0:
            break
    return calm, reached


def _windows(points: list[tuple[float, int, int]]) -> list[tuple[Any, Any]]:
    out = []
    j = 0
    for i, point in enumerate(points):
        while j < len(points) and points[j][0] < point[0] + 1.0:
            j += 1
        if j >= len(points):
            break
        out.append((points[i], points[j]))
    return out


def _drop_job(
    server: Server,
    stats: _Stats,
    base_url: str,
    ids: list[str],
    limit: float,
    burst: float,
    *,
    low_for: float | None,
) -> dict[str, Any]:
    """L drops to a quarter a third of the way in; back after ``low_for`` s (``None``: never)."""
    nominal = len(ids) / limit
    drop_at = nominal / 3
    back_at = math.inf if low_for is None else drop_at + low_for

    async def job() -> dict[str, Any]:
        async def schedule() -> None:
            await asyncio.sleep(drop_at)
            await asyncio.to_thread(server.set_limit, limit / 4, max(1.0, burst / 4))
            if back_at == math.inf:
                return
            await asyncio.sleep(back_at - drop_at)
            await asyncio.to_thread(server.set_limit, limit, burst)

        task = asyncio.ensure_future(schedule())
        try:
            return await _ours(base_url, ids)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    figures = _measure(server, stats, job, limit)
    server.set_limit(limit, burst)
    admitted = figures["admitted"]
    # The ideal: the same successful requests, each admitted the moment the limit allows.
    low = limit / 4 * (back_at - drop_at)
    first = limit * drop_at
    ideal = (
        admitted / limit
        if admitted <= first
        else drop_at + (admitted - first) / (limit / 4)
        if admitted <= first + low
        else back_at + (admitted - first - low) / limit
    )
    timeline = figures["timeline"]
    calm, _ = _settle(timeline, drop_at, min(back_at, figures["wall_s"]), limit / 4)
    reached = math.nan
    if back_at < figures["wall_s"]:
        _, reached = _settle(timeline, back_at, figures["wall_s"], limit)
    figures.update(
        ideal_s=ideal,
        vs_ideal=figures["wall_s"] / ideal,
        settle_drop_s=calm,
        settle_rise_s=reached,
        drop_at_s=drop_at,
        back_at_s=None if back_at == math.inf else back_at,
    )
    return figures


def _child(base_url: str, ids_file: str) -> None:
    ids = json.loads(Path(ids_file).read_text())
    started = time.monotonic()
    result: dict[str, Any] = asyncio.run(_ours(base_url, ids))
    result.update(started=started, ended=time.monotonic())
    print(json.dumps(result))


def _processes(
    server: Server, stats: _Stats, base_url: str, ids: list[str], limit: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for index in range(PROCESSES):
            path = Path(tmp) / f"ids-{index}.json"
            path.write_text(json.dumps(ids[index::PROCESSES]))
            files.append(str(path))

        async def job() -> dict[str, Any]:
            procs = [
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(HERE / "bench_ratelimit.py"),
                    "--child",
                    base_url,
                    path,
                    stdout=subprocess.PIPE,
                )
                for path in files
            ]
            outputs = [json.loads((await proc.communicate())[0]) for proc in procs]
            return {
                "errors": sum(o["errors"] for o in outputs),
                "children": outputs,
            }

        figures = _measure(server, stats, job, limit)
    # The processes' own span, without their start-up (imports) or exit.
    children = figures["children"]
    span = max(c["ended"] for c in children) - min(c["started"] for c in children)
    figures.update(wall_s=span, goodput=figures["admitted"] / span / limit)
    return figures


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3])
        return
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    pin_client()
    limit, burst, latency = 200.0, 20.0, 0.010
    n = 800 if args.quick else 3_000
    processing = n // 20
    params = {
        "limit_rps": limit,
        "burst": burst,
        "latency_s": latency,
        "retry_after": "integer seconds",
        "finished_runs": n,
        "processing_runs": processing,
        "processes": PROCESSES,
    }
    result = ScenarioResult("ratelimit", params=params)
    started = time.perf_counter()
    spec = {"groups": [{"count": n, "durations": [0.0], "event_bytes": 0, "age": 60}]}
    server_args = ["--rate-limit", str(limit), "--burst", str(burst), "--latency", str(latency)]
    with Server(spec, args=server_args) as server:
        finished = server.ids()
        base_url = server.base_url
        stats = _Stats(server)
        contenders: list[
            tuple[str, str, Callable[[list[str]], Coroutine[Any, Any, dict[str, Any]]]]
        ] = [
            ("ours", "ours (defaults)", lambda ids: _ours(base_url, ids)),
            (
                "ceiling",
                f"ours, max_requests_per_second={limit:g}",
                lambda ids: _ours(base_url, ids, max_requests_per_second=limit),
            ),
        ]
        if not args.quick:
            contenders.append(
                (
                    "before",
                    "ours before issue 15 (Retry-After pause only)",
                    lambda ids: _ours(
                        base_url, ids, rate_controller=RateController(adaptive=False)
                    ),
                )
            )
        contenders += [
            (
                "naive",
                "naive gather + semaphore, sleeps Retry-After",
                lambda ids: _naive(base_url, ids),
            ),
            ("docs", "the docs' loop", lambda ids: _docs(base_url, ids)),
        ]
        raw: dict[str, Any] = {}
        for seed, (name, _, run) in enumerate(contenders):
            ids = _runs(server, finished, processing, seed)
            print(f"  {name} ...", file=sys.stderr, flush=True)
            raw[name] = _measure(server, stats, functools.partial(run, ids), limit)
        print("  drop ...", file=sys.stderr, flush=True)
        # Quick: half the runs, so that the whole script stays under a minute.
        dropped = finished[: n // 2] if args.quick else finished
        raw["drop"] = _drop_job(
            server,
            stats,
            base_url,
            _runs(server, dropped, processing, 99),
            limit,
            burst,
            low_for=None,
        )
        if not args.quick:
            print("  drop and back ...", file=sys.stderr, flush=True)
            raw["back"] = _drop_job(
                server,
                stats,
                base_url,
                _runs(server, finished, processing, 97),
                limit,
                burst,
                low_for=n / limit / 3,
            )
        print("  processes ...", file=sys.stderr, flush=True)
        raw["processes"] = _processes(
            server, stats, base_url, _runs(server, finished, processing, 98), limit
        )
    for figures in raw.values():
        figures.pop("timeline", None)
    result.raw = raw
    scenario = f"bulk job under a rate limit ({fmt(n)} runs, L={limit:g}/s, burst {burst:g})"
    for name, label, _ in contenders:
        f = raw[name]
        ours_default = name == "ours"
        result.rows.append(
            Row(
                scenario=scenario,
                contender=label,
                figure=f"goodput {f['goodput']:.2f} of L",
                ratio=f"{raw['ours']['wall_s'] / f['wall_s']:.2f}× wall",
                target="≥ 0.90 of L" if ours_default else "",
                met=f["goodput"] >= 0.9 if ours_default else None,
                note=(
                    f"{f['wall_s']:.1f} s wall, ideal {f['ideal_s']:.1f} s; "
                    f"{f['per_1000']:.1f} 429s/1,000 (target ≤ 10); "
                    f"{f['attempts_per_call']:.3f} attempts/call (target ≤ 1.02); "
                    f"{f['errors']} runs delivered as errors"
                ),
            )
        )
        if ours_default:
            result.rows.append(
                Row(
                    scenario=scenario,
                    contender=label,
                    figure=f"{f['per_1000']:.1f} 429s per 1,000 requests",
                    target="≤ 10",
                    met=f["per_1000"] <= 10,
                )
            )
            result.rows.append(
                Row(
                    scenario=scenario,
                    contender=label,
                    figure=f"{f['attempts_per_call']:.3f} attempts per call",
                    target="≤ 1.02",
                    met=f["attempts_per_call"] <= 1.02,
                )
            )
    drop = raw["drop"]
    result.rows.append(
        Row(
            scenario="L drops to a quarter a third of the way in",
            contender="ours (defaults)",
            figure=f"{drop['vs_ideal']:.2f}× the ideal time",
            target="≤ 1.15×, ≤ 40 429s/1,000",
            met=drop["vs_ideal"] <= 1.15 and drop["per_1000"] <= 40,
            note=(
                f"{drop['wall_s']:.1f} s vs ideal {drop['ideal_s']:.1f} s; "
                f"{drop['per_1000']:.1f} 429s/1,000; 429s under 2% of requests "
                f"{drop['settle_drop_s']:.1f} s after the drop"
            ),
        )
    )
    if "back" in raw:
        back = raw["back"]
        result.rows.append(
            Row(
                scenario="L drops to a quarter a third of the way in, back after a third",
                contender="ours (defaults)",
                figure=f"{back['vs_ideal']:.2f}× the ideal time",
                note=(
                    f"{back['wall_s']:.1f} s vs ideal {back['ideal_s']:.1f} s; "
                    f"{back['per_1000']:.1f} 429s/1,000; 429s under 2% "
                    f"{back['settle_drop_s']:.1f} s after the drop; admitted rate at 0.9 L "
                    f"{back['settle_rise_s']:.1f} s after it came back"
                ),
            )
        )
    procs = raw["processes"]
    result.rows.append(
        Row(
            scenario=f"{PROCESSES} processes sharing one key",
            contender="ours (defaults), one client each",
            figure=f"combined goodput {procs['goodput']:.2f} of L",
            target="≥ 0.85 of L, ≤ 30 429s/1,000",
            met=procs["goodput"] >= 0.85 and procs["per_1000"] <= 30,
            note=(
                f"{procs['per_1000']:.1f} 429s/1,000; {procs['wall_s']:.1f} s wall; "
                f"{procs['errors']} runs delivered as errors"
            ),
        )
    )
    result.params["median_of"] = 1
    result.seconds = time.perf_counter() - started
    finish(result, args.out)


if __name__ == "__main__":
    main()
