"""Scenario 7: what one small request costs the client, layer by layer (the request ladder).

A static server (``_static.py``: one pre-rendered processing run, nothing computed per request)
runs pinned to the other core. Each rung makes 6,000 calls with 100 in flight (100 workers of 60
calls each, after a warm-up that opens the connections) and is measured by this process's CPU
time: client CPU per request is the figure, steadier on a shared machine than requests/s. The
rungs, each adding one layer to the one before:

1. bare aiohttp: ``session.get(url, headers=...)`` + ``await resp.read()``;
2. the same call with the client's exact options: its session's (connector, timeout, no cookie
   jar), a ``URL`` object, its headers, the ``ClientTimeout``, ``allow_redirects=False``, the
   ``Content-Length`` check;
3. ``Transport.get`` (retries, pauses, error mapping; no decoding) — a private name, on purpose;
4. ``Client.get_run`` (validation and the typed decode): what the target judges;
5. aiohttp + ``json.loads`` into dicts: what a user writes without the SDK.

Where uvloop is installed (``asyncclient[speed]``), bare aiohttp and ``get_run`` are measured on
uvloop too, in the same alternation. Rungs alternate in a rotating order, each repetition in a
fresh event loop; a ratio is the median of the per-repetition ratios. "bare ÷ it" is bare
aiohttp's CPU per request divided by the rung's: its throughput per CPU second relative to bare.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aiohttp
import anyio
from _harness import (
    API_KEY,
    Meter,
    Row,
    ScenarioResult,
    finish,
    fmt,
    fmt_ratio,
    fmt_share,
    median,
    parse_args,
    pin_client,
    rotations,
    run,
    uvloop_installed,
)
from _static import StaticServer, small_run_body
from yarl import URL

from asyncclient import Client, __version__

CALLS = 6_000
IN_FLIGHT = 100
IDS = [f"{i:024x}" for i in range(1, 1_001)]

BARE = "1 bare aiohttp: get + read"
OPTIONS = "2 aiohttp, the client's options"
TRANSPORT = "3 Transport.get"
GET_RUN = "4 Client.get_run"
JSON_LOADS = "5 aiohttp + json.loads"
BARE_UV = "bare aiohttp on uvloop"
GET_RUN_UV = "Client.get_run on uvloop"
TARGET_VS_BARE = 0.92
TARGET_VS_JSON = 1.0

_Call = Callable[[str], Awaitable[object]]


async def _drive(one: _Call, server: StaticServer, calls: int) -> dict[str, float]:
    """Warm up, then ``calls`` calls of ``one`` with ``IN_FLIGHT`` workers, metered."""
    next_id = itertools.cycle(IDS).__next__

    async def worker(count: int) -> None:
        for _ in range(count):
            await one(next_id())

    async def wave(per_worker: int) -> None:
        async with anyio.create_task_group() as group:
            for _ in range(IN_FLIGHT):
                group.start_soon(worker, per_worker)

    await wave(2)
    meter = Meter(server).start()
    await wave(calls // IN_FLIGHT)
    meter.stop()
    done = calls // IN_FLIGHT * IN_FLIGHT
    return {
        "cpu_us": meter.cpu / done * 1e6,
        "per_s": done / meter.wall,
        "server_share": meter.server_share,
    }


def _rung(name: str, server: StaticServer, calls: int) -> Callable[[], Coroutine[Any, Any, Any]]:
    base = server.base_url
    auth = {"Authorization": f"Bearer {API_KEY}"}

    async def bare() -> dict[str, float]:
        async with aiohttp.ClientSession() as session:

            async def one(run_id: str) -> bytes:
                async with session.get(f"{base}/browser-agent/{run_id}", headers=auth) as r:
                    return await r.read()

            return await _drive(one, server, calls)

    async def options() -> dict[str, float]:
        headers = {
            **auth,
            "Accept": "application/json",
            "User-Agent": f"asyncclient/{__version__}",
        }
        timeout = aiohttp.ClientTimeout(total=60.0)
        limit = 512 * 1024 * 1024
        connector = aiohttp.TCPConnector(limit=128, ttl_dns_cache=300)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
        ) as session:

            async def one(run_id: str) -> bytes:
                url = URL(f"{base}/browser-agent/{run_id}", encoded=True)
                async with session.request(
                    "GET", url, headers=headers, allow_redirects=False, timeout=timeout
                ) as r:
                    length = r.content_length
                    if length is not None and length > limit:
                        raise RuntimeError("too large")
                    return await r.read()

            return await _drive(one, server, calls)

    async def transport() -> dict[str, float]:
        async with Client(API_KEY, base_url=base) as client:

            async def one(run_id: str) -> object:
                return await client._transport.get(f"/browser-agent/{run_id}")

            return await _drive(one, server, calls)

    async def get_run() -> dict[str, float]:
        async with Client(API_KEY, base_url=base) as client:
            return await _drive(client.get_run, server, calls)

    async def json_loads() -> dict[str, float]:
        async with aiohttp.ClientSession() as session:

            async def one(run_id: str) -> Any:
                async with session.get(f"{base}/browser-agent/{run_id}", headers=auth) as r:
                    r.raise_for_status()
                    return json.loads(await r.read())

            return await _drive(one, server, calls)

    rungs = {
        BARE: bare,
        OPTIONS: options,
        TRANSPORT: transport,
        GET_RUN: get_run,
        JSON_LOADS: json_loads,
        BARE_UV: bare,
        GET_RUN_UV: get_run,
    }
    return rungs[name]


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    pin_client()
    started = time.perf_counter()
    reps = 5 if args.quick else 11
    names = [BARE, OPTIONS, TRANSPORT, GET_RUN, JSON_LOADS]
    if uvloop_installed():
        names += [BARE_UV, GET_RUN_UV]
    result = ScenarioResult(
        "request",
        params={"calls": CALLS, "in_flight": IN_FLIGHT, "reps": reps, "rungs": names},
    )
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    with StaticServer(small_run_body()) as server:
        for _, order in rotations(names, reps):
            for name in order:
                loop = "uvloop" if name.endswith("on uvloop") else "asyncio"
                samples[name].append(run(_rung(name, server, CALLS), loop))
    result.raw = samples
    result.rows = _rows(samples)
    result.seconds = time.perf_counter() - started
    finish(result, args.out)


def _ratios(samples: dict[str, list[dict[str, float]]], num: str, den: str) -> float:
    """Median over repetitions of ``num``'s CPU per request ÷ ``den``'s."""
    pairs = zip(samples[num], samples[den], strict=True)
    return median([a["cpu_us"] / b["cpu_us"] for a, b in pairs])


def _rows(samples: dict[str, list[dict[str, float]]]) -> list[Row]:
    rows = []
    for name, values in samples.items():
        cpu = median([s["cpu_us"] for s in values])
        rate = median([s["per_s"] for s in values])
        row = Row(
            scenario="7. one small request",
            contender=name,
            figure=f"{cpu:.1f} µs client CPU per request, {fmt(rate)} requests/s",
            server_cpu=fmt_share(median([s["server_share"] for s in values])),
        )
        bare = BARE_UV if name.endswith("on uvloop") else BARE
        if name != bare:
            row.note = f"bare ÷ it {fmt_ratio(_ratios(samples, bare, name))}"
        if name == BARE:
            # ours ÷ it in throughput per CPU second: its CPU per request over get_run's.
            ratio = _ratios(samples, BARE, GET_RUN)
            row.ratio = fmt_ratio(ratio)
            row.target = f"get_run ≥ {TARGET_VS_BARE:g}×"
            row.met = ratio >= TARGET_VS_BARE
        elif name == JSON_LOADS:
            ratio = _ratios(samples, JSON_LOADS, GET_RUN)
            row.ratio = fmt_ratio(ratio)
            row.target = f"get_run > {TARGET_VS_JSON:g}×"
            row.met = ratio > TARGET_VS_JSON
        elif name == GET_RUN_UV:
            ratio = _ratios(samples, GET_RUN, GET_RUN_UV)
            row.note += f"; get_run on asyncio ÷ it {fmt_ratio(ratio)}"
        rows.append(row)
    return rows


if __name__ == "__main__":
    main()
