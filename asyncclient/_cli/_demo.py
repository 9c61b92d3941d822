"""``asyncclient demo``: watch a few hundred emulated runs with the real client.

The only command-line module that imports :mod:`asyncclient.testing` (the emulator); the group
loads it only when ``demo`` is named.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import anyio
import click

from .._client import Client
from .._config import PollPolicy
from .._models import CREDIT_USD
from .._tasks import TaskSpec
from ..testing import Emulator, RealClock, TaskPlan, serve
from ._exit import EXIT_FAILED, EXIT_OK, ErrorContext
from ._loop import run_command
from ._render import ProgressBar, Table, Tally

__all__ = ["demo"]

_DEMO_KEY = "demo-key"


_DEMO_INSTRUCTIONS = (
    "Extract the page title.",
    "Extract the top 5 headlines.",
    "Find the pricing table and extract each plan.",
    "Extract the contact email address.",
    "List every product name and price.",
    "Summarise the first paragraph.",
)


_DEMO_TASK_FAILURES = ("ERROR", "TIMEOUT", "BLOCKED", "CAPTCHA_FAILED", "LOOP", "NO_TARGET")


def _policy_for(speed: float) -> PollPolicy:
    """The default polling policy in the demo's time: the emulator runs ``speed`` times faster."""
    base = PollPolicy()
    return replace(
        base,
        initial_delay=base.initial_delay / speed,
        max_delay=base.max_delay / speed,
        not_found_grace=base.not_found_grace / speed,
    )


async def _demo(context: ErrorContext, *, runs: int, seed: int, speed: float, quiet: bool) -> int:
    clock = RealClock(speed=speed)
    emulator = Emulator(api_keys=(_DEMO_KEY,), clock=clock, seed=seed)
    emulator.plan_task = _demo_task_planner(random.Random(seed))
    tally = Tally()
    durations: list[float] = []
    lags: list[float] = []
    tasks: Counter[str] = Counter()
    started = time.perf_counter()
    progress_on = not quiet and sys.stderr.isatty()
    async with serve(emulator) as server:
        context.base_url = server.base_url
        async with Client(
            server.api_key, base_url=server.base_url, poll_policy=_policy_for(speed)
        ) as client:
            ids = await _submit_demo_runs(client, runs, random.Random(seed + 1))
            with ProgressBar("runs", len(ids), enabled=progress_on) as progress:
                async with client.watch(ids) as watcher:
                    async for update in watcher:
                        run = update.run
                        if run is None:
                            tally.add(None, 0.0)
                        else:
                            tally.add(run.status, run.total_credits_used)
                            tasks.update(task.status for task in run.tasks)
                            if run.created_at is not None and run.completed_at is not None:
                                end = run.completed_at.timestamp()
                                durations.append(end - run.created_at.timestamp())
                                lags.append(max(0.0, clock() - end) / speed)
                        progress.update(tally)
            requests = client.requests_sent
    wall = time.perf_counter() - started
    rows = [("runs", str(len(ids)))]
    rows += [(f"  {status}", str(count)) for status, count in _ordered(tally.statuses)]
    rows += [
        ("tasks", str(sum(tasks.values()))),
        *((f"  {status}", str(count)) for status, count in _ordered(tasks)),
        ("credits used", f"{tally.credits:.2f} (${tally.credits * CREDIT_USD:.2f})"),
        ("run duration p50", _emulated(_percentile(durations, 50))),
        ("run duration p90", _emulated(_percentile(durations, 90))),
        ("run duration max", _emulated(max(durations, default=math.nan))),
        ("noticed after p50", f"{_percentile(lags, 50):.2f} s"),
        ("noticed after p90", f"{_percentile(lags, 90):.2f} s"),
        ("requests made", str(requests)),
        ("  submits", str(len(ids))),
        ("  polls and list scans", str(requests - len(ids))),
        ("watch requests per run", f"{(requests - len(ids)) / max(1, len(ids)):.2f}"),
        ("wall time", f"{wall:.1f} s"),
    ]
    title = f"demo: {len(ids)} runs, speed ×{speed:g}"
    with Table(("", ""), (False, True), title=title, header=False) as table:
        for row in rows:
            table.add(row)
    return EXIT_OK if tally.statuses["error"] == 0 else EXIT_FAILED


async def _submit_demo_runs(client: Client, count: int, rng: random.Random) -> list[str]:
    """Submit runs of 1 to 5 tasks through the real ``submit`` call, 16 at a time."""
    ids: list[str] = []
    limiter = anyio.CapacityLimiter(16)

    async def submit_one(size: int) -> None:
        async with limiter:
            tasks = [
                TaskSpec(url=f"https://example.com/page/{rng.randrange(10_000)}", instruction=text)
                for text in rng.sample(_DEMO_INSTRUCTIONS, size)
            ]
            run = await client.submit(tasks, concurrency=rng.choice((2, 5)))
            ids.append(run.id)

    async with anyio.create_task_group() as task_group:
        for _ in range(count):
            task_group.start_soon(submit_one, rng.choice((1, 1, 2, 2, 3, 4, 5)))
    return ids


def _demo_task_planner(rng: random.Random) -> Callable[[int, Mapping[str, Any]], TaskPlan]:
    """How the emulator plays each submitted task: seconds to two minutes, some failing."""

    def plan(index: int, task: Mapping[str, Any]) -> TaskPlan:
        longest = rng.choice((15.0, 30.0, 60.0, 90.0, 120.0))
        status = "SUCCESS" if rng.random() < 0.8 else rng.choice(_DEMO_TASK_FAILURES)
        return TaskPlan(
            url=str(task.get("url", "")),
            instruction=str(task.get("instruction") or ""),
            input={},
            finish_after=round(rng.uniform(2.0, longest), 3),
            status=status,
            data={"title": f"Result {index}"} if status == "SUCCESS" else None,
        )

    return plan


def _ordered(counts: Counter[str]) -> list[tuple[str, int]]:
    known = ("completed", "failed", "error", "SUCCESS")
    return sorted(counts.items(), key=lambda item: (item[0] not in known, -item[1], item[0]))


def _percentile(values: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def _emulated(seconds: float) -> str:
    return f"{seconds:.1f} s (emulated)"


@click.command()
@click.option(
    "--runs", type=click.IntRange(min=1), default=300, show_default=True, metavar="N",
    help="How many runs to create.",
)  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True, metavar="S", help="Random seed.")
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    metavar="X",
    help="Emulated seconds per real second (runs last up to two emulated minutes).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@click.pass_obj
def demo(context: ErrorContext, runs: int, seed: int, speed: float, quiet: bool) -> int:
    """Watch a few hundred emulated runs with the real client.

    Starts the emulator in-process, creates runs of varied lengths and outcomes, watches them
    all with the real client, and prints a summary. No API key needed.
    """
    return run_command(lambda: _demo(context, runs=runs, seed=seed, speed=speed, quiet=quiet))
