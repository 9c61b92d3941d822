"""The command line of the Temporal extra: run a worker, start and follow a batch.

::

    python -m asyncclient.temporal worker --sink SINK [--address HOST:PORT] [--namespace NS]
        [--task-queue Q] [--base-url URL] [--api-key KEY] [--max-shards N] [poll options]
    python -m asyncclient.temporal watch --ids-file FILE --sink SINK [--shards N]
        [--address HOST:PORT] [--namespace NS] [--task-queue Q] [--attach] [scheduling options]

The API key comes from ``--api-key`` or, better (argv is visible to every user of the machine),
from ``PREDEV_API_KEY``; the Temporal address from ``--address`` or ``TEMPORAL_ADDRESS``.

Exit codes: 0 success (``watch``: every id is stored; ``worker``: stopped by SIGINT/SIGTERM);
1 the batch failed or ended with ids not stored; 2 a usage error (bad option, unreadable or bad
ids file, unknown sink); 3 no API key, or an unusable one; 4 Temporal or the sink could not be
reached; 5 the batch was started before (``watch`` without ``--attach``); 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import anyio.to_thread
from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowHandle

from .._client import Client
from .._config import API_KEY_ENV, BASE_URL_ENV, POLL_STRATEGIES, PollPolicy
from ._activities import ShardActivities, _default_identity
from ._exceptions import BatchAlreadyStartedError, BatchInputError, SinkError
from ._planner import BatchSpec, plan_batch, read_ids
from ._sinks import Sink, open_sink, sink_name
from ._starter import DEFAULT_TASK_QUEUE, start_batch
from ._worker import create_worker
from ._workflows import BatchResult

__all__ = ["main", "watch_main", "worker_main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_KEY = 3
EXIT_UNREACHABLE = 4
EXIT_ALREADY_STARTED = 5
EXIT_INTERRUPTED = 130

ADDRESS_ENV = "TEMPORAL_ADDRESS"
NAMESPACE_ENV = "TEMPORAL_NAMESPACE"
DEFAULT_SINK = "sqlite:///predev-results.db"

logger = logging.getLogger("asyncclient.temporal")

_USAGE = """\
usage: python -m asyncclient.temporal {worker,watch} ...

  worker   run a Temporal worker that watches shards and stores their results
  watch    start a batch from an ids file and follow it until every id is stored

Each takes --help.
"""


def _add_temporal_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Temporal")
    group.add_argument(
        "--address",
        default=os.environ.get(ADDRESS_ENV, "localhost:7233"),
        help=f"the Temporal frontend, host:port (${ADDRESS_ENV}, else localhost:7233)",
    )
    group.add_argument(
        "--namespace",
        default=os.environ.get(NAMESPACE_ENV, "default"),
        help=f"the Temporal namespace (${NAMESPACE_ENV}, else default)",
    )
    group.add_argument(
        "--task-queue",
        default=DEFAULT_TASK_QUEUE,
        help=f"the task queue workers poll ({DEFAULT_TASK_QUEUE})",
    )
    parser.add_argument(
        "--sink",
        default=DEFAULT_SINK,
        help=f"where results go: sqlite:///file.db, sqlite:////abs/file.db or "
        f"postgresql://user:password@host:port/db ({DEFAULT_SINK})",
    )


def _worker_parser(prog: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m asyncclient.temporal worker",
        description="Run a Temporal worker: it watches shards of batches and stores each result "
        "once. Stop it with Ctrl-C or SIGTERM; its shards are retried on other workers.",
    )
    _add_temporal_options(parser)
    api = parser.add_argument_group("API")
    api.add_argument("--base-url", help=f"the API origin (${BASE_URL_ENV}, else the real API)")
    api.add_argument(
        "--api-key",
        help=f"the API key; prefer ${API_KEY_ENV}: the command line is visible to other users",
    )
    work = parser.add_argument_group("work")
    work.add_argument(
        "--max-shards", type=int, default=10, help="shards watched at once by this worker (10)"
    )
    work.add_argument(
        "--max-in-flight", type=int, default=32, help="requests in flight per shard (32)"
    )
    work.add_argument(
        "--poll-initial-delay", type=float, default=1.0, help="seconds before a run's 2nd poll (1)"
    )
    work.add_argument(
        "--poll-multiplier", type=float, default=1.5, help="growth of the poll delay (1.5)"
    )
    work.add_argument(
        "--poll-max-delay", type=float, default=15.0, help="cap of the poll delay (15)"
    )
    work.add_argument(
        "--strategy", choices=POLL_STRATEGIES, default="auto", help="polling strategy (auto)"
    )
    work.add_argument(
        "--max-requests-per-second",
        type=float,
        default=None,
        metavar="RPS",
        help="this worker's share of the key's rate limit, for all its shards together (none: "
        "pacing starts at the first 429 and adapts, across workers, without configuration)",
    )
    work.add_argument("--identity", help="this worker's name in Temporal and the sink (pid@host)")
    work.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="logging level on stderr (INFO)",
    )
    return parser


def _watch_parser(prog: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m asyncclient.temporal watch",
        description="Start a batch (once: the same ids file into the same sink is refused the "
        "second time) and follow it by counting stored results until every id is stored.",
    )
    parser.add_argument(
        "--ids-file", required=True, help="one run id per line; workers must read the same path"
    )
    _add_temporal_options(parser)
    plan = parser.add_argument_group("scheduling")
    plan.add_argument("--shards", type=int, default=10, help="how many shards (10)")
    plan.add_argument(
        "--max-parallel", type=int, default=50, help="shards watched at once in all (50)"
    )
    plan.add_argument(
        "--shards-per-run",
        type=int,
        default=500,
        help="shards per workflow execution before it continues as new (500)",
    )
    plan.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=60.0,
        help="seconds of silence before a shard is retried elsewhere (60)",
    )
    plan.add_argument(
        "--retry-initial",
        type=float,
        default=1.0,
        help="seconds before a failed or timed-out shard is retried, doubling (1)",
    )
    plan.add_argument(
        "--include-events", action="store_true", help="store runs with their event timelines"
    )
    follow = parser.add_argument_group("following")
    follow.add_argument(
        "--attach",
        action="store_true",
        help="if the batch was started before, follow it instead of failing",
    )
    follow.add_argument(
        "--interval", type=float, default=5.0, help="seconds between progress lines (5)"
    )
    follow.add_argument(
        "--timeout", type=float, help="give up following after this many seconds (no limit)"
    )
    return parser


# -- worker --------------------------------------------------------------------------------


def worker_main(argv: Sequence[str], *, prog: str | None = None) -> int:
    """Run a worker until SIGINT or SIGTERM.

    Args:
        argv: the arguments after ``worker``.
        prog: the command's name in usage messages (``python -m asyncclient.temporal worker``).

    Returns:
        The exit status (see the module's docstring).
    """
    parser = _worker_parser(prog)
    args = parser.parse_args(list(argv))
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        policy = PollPolicy(
            initial_delay=args.poll_initial_delay,
            multiplier=args.poll_multiplier,
            max_delay=args.poll_max_delay,
            max_in_flight=args.max_in_flight,
            strategy=args.strategy,
        )
        sink_name(args.sink)
        if args.max_shards < 1:
            raise ValueError(f"--max-shards must be 1 or more, got {args.max_shards}")
        rps = args.max_requests_per_second
        if rps is not None and not (rps > 0 and math.isfinite(rps)):
            raise ValueError(f"--max-requests-per-second must be a positive number, got {rps}")
    except (ValueError, SinkError) as exc:
        parser.error(str(exc))
    try:
        # One client, so one rate controller, for every shard this worker watches.
        api = Client(
            args.api_key,
            base_url=args.base_url,
            poll_policy=policy,
            max_requests_per_second=args.max_requests_per_second,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_KEY if "key" in str(exc) else EXIT_USAGE
    try:
        return asyncio.run(_run_worker(args, api, policy))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


async def _run_worker(args: argparse.Namespace, api: Client, policy: PollPolicy) -> int:
    identity = args.identity or _default_identity()
    try:
        temporal = await TemporalClient.connect(
            args.address, namespace=args.namespace, identity=identity
        )
    except Exception as exc:  # the SDK raises RuntimeError and friends for a failed connect
        print(f"error: cannot reach Temporal at {args.address}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        sink = open_sink(args.sink)
        await sink.open()
    except SinkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    try:
        async with api:
            activities = ShardActivities(api, sink, policy=policy, worker=identity)
            worker = create_worker(
                temporal,
                activities,
                task_queue=args.task_queue,
                max_concurrent_shards=args.max_shards,
            )
            async with worker:
                print(
                    f"worker {identity} ready: task queue {args.task_queue!r} on "
                    f"{args.address}, sink {sink.name}",
                    flush=True,
                )
                await stop.wait()
                logger.info("stopping: shards in progress are retried by other workers")
    finally:
        await sink.aclose()
    return EXIT_OK


# -- watch ---------------------------------------------------------------------------------


def watch_main(argv: Sequence[str], *, prog: str | None = None) -> int:
    """Start a batch and follow it until every id is stored.

    Prints one progress line every ``--interval`` seconds (stored/total, rate, elapsed).

    Args:
        argv: the arguments after ``watch``.
        prog: the command's name in usage messages (``python -m asyncclient.temporal watch``).

    Returns:
        The exit status (see the module's docstring).
    """
    parser = _watch_parser(prog)
    args = parser.parse_args(list(argv))
    if not args.interval > 0:
        parser.error("--interval must be > 0")
    if args.timeout is not None and not args.timeout > 0:
        parser.error("--timeout must be > 0")
    try:
        return asyncio.run(_watch(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


async def _watch(args: argparse.Namespace) -> int:
    # Everything that needs no network is checked first.
    try:
        sink = open_sink(args.sink)
        ids, _ = await anyio.to_thread.run_sync(read_ids, args.ids_file)
    except (SinkError, BatchInputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        await sink.open()
    except SinkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        try:
            temporal = await TemporalClient.connect(args.address, namespace=args.namespace)
        except Exception as exc:  # the SDK raises RuntimeError and friends for a failed connect
            print(f"error: cannot reach Temporal at {args.address}: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE
        try:
            stored_before = len(await sink.has(ids))
            spec, workflow, attached = await _start_or_attach(temporal, args, sink)
        except (BatchInputError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except BatchAlreadyStartedError as exc:
            print(
                f"error: {exc}\nhint: --attach follows the batch already started", file=sys.stderr
            )
            return EXIT_ALREADY_STARTED

        async def stored() -> int:
            if attached:
                # Some were stored by this very batch already: count them all, id by id.
                return len(await sink.has(ids))
            return stored_before + await sink.count(batch_id=spec.batch_id)

        return await _follow(args, sink, spec, workflow, ids, stored)
    finally:
        await sink.aclose()


_Handle = WorkflowHandle[Any, BatchResult]


async def _start_or_attach(
    temporal: TemporalClient, args: argparse.Namespace, sink: Sink
) -> tuple[BatchSpec, _Handle, bool]:
    try:
        started = await start_batch(
            temporal,
            args.ids_file,
            sink=sink,
            shards=args.shards,
            task_queue=args.task_queue,
            include_events=args.include_events,
            max_parallel=args.max_parallel,
            shards_per_run=args.shards_per_run,
            heartbeat_timeout=args.heartbeat_timeout,
            retry_initial=args.retry_initial,
        )
    except BatchAlreadyStartedError as exc:
        if not args.attach:
            raise
        spec = await anyio.to_thread.run_sync(
            lambda: plan_batch(args.ids_file, shards=args.shards, sink=sink.name)
        )
        print(f"batch {spec.batch_id} was started before: following it", flush=True)
        handle = temporal.get_workflow_handle(exc.workflow_id, result_type=BatchResult)
        return spec, handle, True
    spec = started.spec
    print(
        f"batch {spec.batch_id}: {spec.total} runs in {spec.shards} shards, workflow "
        f"{spec.workflow_id}, sink {spec.sink}",
        flush=True,
    )
    return spec, started.workflow, False


async def _follow(
    args: argparse.Namespace,
    sink: Sink,
    spec: BatchSpec,
    workflow: _Handle,
    ids: list[str],
    stored: Callable[[], Awaitable[int]],
) -> int:
    """Print progress from the sink's count until every id is stored or the workflow ends."""
    finished = anyio.Event()
    outcome: list[BaseException | BatchResult] = []

    async def wait_for_workflow() -> None:
        try:
            outcome.append(await workflow.result())
        except Exception as exc:  # the batch failed: report its cause
            outcome.append(exc)
        finished.set()

    started_at = time.monotonic()
    deadline = started_at + args.timeout if args.timeout is not None else None
    total = len(ids)
    last_count, last_time = await stored(), started_at
    timed_out = False
    async with anyio.create_task_group() as group:
        group.start_soon(wait_for_workflow)
        while True:
            with anyio.move_on_after(args.interval):
                await finished.wait()
            now = time.monotonic()
            count = min(total, await stored())
            rate = (count - last_count) / max(now - last_time, 1e-9)
            last_count, last_time = count, now
            print(
                f"[{now - started_at:7.1f}s] stored {count}/{total} "
                f"({100.0 * count / total:5.1f}%), {rate:,.0f} runs/s",
                flush=True,
            )
            if count >= total or finished.is_set():
                break
            if deadline is not None and now >= deadline:
                timed_out = True
                break
        group.cancel_scope.cancel()
    missing = total - len(await sink.has(ids))
    if outcome and isinstance(outcome[0], BaseException):
        cause = outcome[0].__cause__ or outcome[0]
        print(f"error: batch {spec.batch_id} failed: {cause}", file=sys.stderr)
        return EXIT_FAILED
    if missing:
        why = "still watching after --timeout" if timed_out else "the batch ended"
        print(f"error: {missing} of {total} ids are not stored ({why})", file=sys.stderr)
        return EXIT_FAILED
    elapsed = time.monotonic() - started_at
    print(f"done: every one of {total} ids is stored ({elapsed:.1f}s)", flush=True)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m asyncclient.temporal {worker,watch} ...``.

    Args:
        argv: the arguments; defaults to ``sys.argv[1:]``.

    Returns:
        The exit status.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_USAGE, end="", file=sys.stdout if args else sys.stderr)
        return EXIT_OK if args else EXIT_USAGE
    command, rest = args[0], args[1:]
    if command == "worker":
        return worker_main(rest)
    if command == "watch":
        return watch_main(rest)
    print(f"error: unknown command {command!r}\n\n{_USAGE}", end="", file=sys.stderr)
    return EXIT_USAGE
