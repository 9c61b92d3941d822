"""Temporal at scale: a batch of mostly finished runs on three workers, one killed part-way.

    python benchmarks/bench_temporal.py [--runs 50000] [--finishing 5000] [--over 60]
        [--strategies per-run,auto] [--kill-at 0.3] [--max-shards 15]

For each strategy it starts a Temporal dev server and a PostgreSQL cluster (the machine's
``initdb``/``pg_ctl``, as the Temporal tests do), serves the emulator in this process (so its
request counters can be read), and runs three ``worker`` subprocesses and one ``watch``. The
emulator holds ``--runs`` runs: all but ``--finishing`` finished long ago, the rest finish
evenly over ``--over`` seconds. Once ``--kill-at`` of the finished runs are stored, one worker
gets ``kill -9``. It reports, side by side:

- every run stored once (rows == runs; the primary key forbids a second row) and the retries;
- the time until every run that had finished before the start is stored;
- list pages and GETs per run;
- each worker's peak RSS (``VmHWM``; the killed one as of its kill).

Not part of ``run_all.py``: it takes minutes. It needs the ``temporal`` extra and PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asyncclient.temporal import PostgresSink
from asyncclient.testing import Emulator, serve

# The Temporal tests' service helpers (dev server, PostgreSQL cluster, workers), imported by
# name: the benchmark runs from the repository, where they live.
_services: Any = importlib.import_module("tests.temporal.services")
API_KEY: str = _services.API_KEY
READY: str = _services.READY
postgres_cluster = _services.postgres_cluster
start_service = _services.start_service
start_worker = _services.start_worker
temporal_dev_server = _services.temporal_dev_server


def _peak_rss_mib(pid: int) -> float:
    """The process's peak resident set (``VmHWM``), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _emulator(runs: int, finishing: int, over: float) -> tuple[Emulator, list[str], list[str]]:
    emu = Emulator(api_keys=(API_KEY,), seed=20)
    now = time.time()
    finished = [
        emu.create_run(durations=[1.0], created_at=now - 3600 + n * 0.01, event_bytes=200)
        for n in range(runs - finishing)
    ]
    later = [
        emu.create_run(durations=[5.0 + over * n / finishing], event_bytes=200)
        for n in range(finishing)
    ]
    return emu, finished, later


async def _database(server_url: str) -> str:
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(server_url, autocommit=True) as conn:
        await conn.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + "/" + name


async def _one(
    strategy: str, args: argparse.Namespace, workdir: Path, address: str, server: str
) -> dict[str, object]:
    emu, finished, later = _emulator(args.runs, args.finishing, args.over)
    ids_file = workdir / "ids.txt"
    ids_file.write_text("\n".join(finished + later) + "\n")
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    killed_after = 0.0
    sink_url = await _database(server)
    async with serve(emu) as api, PostgresSink(sink_url) as sink:
        workers: list[Any] = []
        watch: Any = None
        try:
            for n in range(3):
                worker = start_worker(
                    workdir,
                    f"{strategy}-worker-{n}",
                    address=address,
                    task_queue=queue,
                    base_url=api.base_url,
                    sink=sink_url,
                    poll=(0.5, 5.0),
                    extra=("--strategy", strategy, "--max-shards", str(args.max_shards)),
                )
                workers.append(worker)
            for worker in workers:
                await asyncio.to_thread(worker.wait_for, READY, timeout=120)
            started = time.monotonic()
            watch = start_service(
                "watch",
                [
                    sys.executable,
                    "-m",
                    "asyncclient.temporal",
                    "watch",
                    "--address",
                    address,
                    "--task-queue",
                    queue,
                    "--sink",
                    sink_url,
                    "--ids-file",
                    str(ids_file),
                    "--shards",
                    "30",
                    "--heartbeat-timeout",
                    "10",
                    "--interval",
                    "5",
                ],
                workdir / f"{strategy}-watch.log",
            )
            killed_rss = None
            finished_at = None
            while watch.process.poll() is None:
                await asyncio.sleep(0.5)
                if finished_at is None:
                    stored = len(await sink.has(finished))
                    if killed_rss is None and stored >= args.kill_at * len(finished):
                        killed_rss = _peak_rss_mib(workers[2].process.pid)
                        workers[2].kill_9()
                        killed_after = time.monotonic() - started
                    if stored == len(finished):
                        finished_at = time.monotonic() - started
            all_at = time.monotonic() - started
            rss = [_peak_rss_mib(w.process.pid) for w in workers[:2]]
            rows = await sink.count()
            attempts = await sink.attempts()
            answered = len(await sink.has(finished + later))
        finally:
            for service in [*([watch] if watch else []), *workers]:
                service.stop()
    return {
        "strategy": strategy,
        "max shards a worker": args.max_shards,
        "watch exit": watch.process.returncode if watch else None,
        "rows": rows,
        "runs": args.runs,
        "answered": answered,
        "retried attempts": sum(1 for a in attempts if a.attempt > 1),
        "killed after s": round(killed_after, 1) if killed_rss is not None else None,
        "finished runs stored s": round(finished_at, 1) if finished_at else None,
        "all stored s": round(all_at, 1),
        "list pages per run": round(emu.requests_by_route["list"] / args.runs, 4),
        "GETs per run": round(emu.requests_by_route["get"] / args.runs, 3),
        "peak RSS MiB (2 workers; killed one)": [*(round(r, 1) for r in rss), killed_rss],
    }


def main() -> int:
    """Run the benchmark for each strategy and print the figures side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50_000)
    parser.add_argument("--finishing", type=int, default=5_000)
    parser.add_argument("--over", type=float, default=60.0)
    parser.add_argument("--strategies", default="per-run,auto")
    parser.add_argument("--kill-at", type=float, default=0.3)
    # 30 shards: with 15 slots a worker, the two left after the kill can take every shard; with
    # 10, the killed worker's shards wait for slots held by shards whose runs still process.
    parser.add_argument("--max-shards", type=int, default=15)
    args = parser.parse_args()
    results = []
    for strategy in args.strategies.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            (workdir / "temporal").mkdir()
            with temporal_dev_server(workdir / "temporal") as address, postgres_cluster() as pg:
                results.append(asyncio.run(_one(strategy, args, workdir, address, pg)))
        print(results[-1], flush=True)
    keys = list(results[0])
    width = max(len(k) for k in keys)
    for key in keys:
        print(f"{key:<{width}}  " + "  ".join(str(r[key]) for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
