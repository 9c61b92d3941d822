"""The command line of the Temporal extra: run a worker, start and follow a batch.

::

    python -m asyncclient.temporal worker --sink SINK [connection options] [--task-queue Q]
        [--base-url URL] [--api-key KEY] [--max-shards N] [poll options]
    python -m asyncclient.temporal watch --ids-file FILE --sink SINK [--shards N]
        [connection options] [--task-queue Q] [--attach] [scheduling options]

    connection options: [--profile NAME] [--config-file TOML] [--address HOST:PORT]
        [--namespace NS] [--tls | --no-tls] [--tls-ca PEM] [--tls-cert PEM --tls-key PEM]
        [--tls-server-name NAME]

The API key comes from ``--api-key`` or, better (argv is visible to every user of the machine),
from ``PREDEV_API_KEY``. The Temporal connection comes from Temporal's client configuration (a
profile of its TOML file and the ``TEMPORAL_*`` variables, see :mod:`._connect`), which the
``--address``, ``--namespace``, ``--profile``, ``--config-file`` and ``--tls*`` flags override;
the Temporal API key only from the profile or ``TEMPORAL_API_KEY``. The two keys never mix.

Exit codes: 0 success (``watch``: every id is stored; ``worker``: stopped by SIGINT/SIGTERM);
1 the batch failed or ended with ids not stored (or stored only as watch errors, which a later
``watch`` tries again); 2 a usage error (bad option, unreadable or bad
ids file, unknown sink, unusable Temporal configuration); 3 no API key, or an unusable one
(``watch``: the batch failed because the API refused a worker's key, 401, or its account,
402, or every run of a shard answered 404: another account's key); 4 Temporal or the sink
could not be reached; 5 the batch is running or completed already
(``watch`` without ``--attach``; a failed, terminated or cancelled one is started again); 130
interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.api.workflow.v1 import PendingActivityInfo
from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.exceptions import ActivityError, ApplicationError, RetryState
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from .._client import Client
from .._config import API_KEY_ENV, BASE_URL_ENV, POLL_STRATEGIES, PollPolicy
from ._activities import (
    FATAL_ERROR_TYPES,
    NOT_OWNED_ERROR_TYPE,
    ShardActivities,
    _default_identity,
)
from ._connect import DEFAULT_ADDRESS, DEFAULT_NAMESPACE, TemporalSettings, connect, load_settings
from ._exceptions import BatchAlreadyStartedError, BatchInputError, SinkError
from ._metrics import counting_session
from ._planner import BatchSpec, batch_id_for, plan_batch, read_ids, workflow_id_for
from ._sinks import Sink, open_sink, sink_name
from ._starter import DEFAULT_TASK_QUEUE, MAX_PARALLEL, start_batch
from ._worker import create_worker
from ._workflows import BatchResult

if TYPE_CHECKING:
    import aiohttp

__all__ = ["main", "watch_main", "worker_main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_KEY = 3
EXIT_UNREACHABLE = 4
EXIT_ALREADY_STARTED = 5
EXIT_INTERRUPTED = 130

DEFAULT_SINK = "sqlite:///predev-results.db"

logger = logging.getLogger("asyncclient.temporal")

_USAGE = """\
usage: python -m asyncclient.temporal {worker,watch} ...

  worker   run a Temporal worker that watches shards and stores their results
  watch    start a batch from an ids file and follow it until every id is stored

Each takes --help.
"""


def _add_temporal_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "Temporal",
        "Connection settings come from Temporal's client configuration: a profile of its TOML "
        "file and the TEMPORAL_* environment variables (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, "
        "TEMPORAL_API_KEY, TEMPORAL_TLS, TEMPORAL_TLS_CLIENT_CERT_PATH, "
        "TEMPORAL_TLS_CLIENT_KEY_PATH, TEMPORAL_TLS_SERVER_CA_CERT_PATH, "
        "TEMPORAL_TLS_SERVER_NAME); these flags override them. The Temporal API key is read "
        "only from the profile or $TEMPORAL_API_KEY.",
    )
    group.add_argument(
        "--profile", help="the profile of the configuration file ($TEMPORAL_PROFILE, else default)"
    )
    group.add_argument(
        "--config-file",
        help="Temporal's TOML client configuration ($TEMPORAL_CONFIG_FILE, else "
        "~/.config/temporalio/temporal.toml)",
    )
    group.add_argument(
        "--address", help=f"the Temporal frontend, host:port (else {DEFAULT_ADDRESS})"
    )
    group.add_argument("--namespace", help=f"the Temporal namespace (else {DEFAULT_NAMESPACE})")
    group.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="force TLS on or off (else on when an API key or a TLS setting is configured)",
    )
    group.add_argument("--tls-ca", metavar="PEM", help="the CA of the server's certificate")
    group.add_argument("--tls-cert", metavar="PEM", help="the client certificate (mTLS)")
    group.add_argument("--tls-key", metavar="PEM", help="the client certificate's private key")
    group.add_argument(
        "--tls-server-name", metavar="NAME", help="the name on the server's certificate (SNI)"
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


def _temporal_settings(args: argparse.Namespace) -> TemporalSettings:
    """The connection settings: the profile and TEMPORAL_* environment, then the flags."""
    return load_settings(
        profile=args.profile,
        config_file=args.config_file,
        address=args.address,
        namespace=args.namespace,
        tls=args.tls,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_server_name=args.tls_server_name,
    )


def _worker_parser(prog: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m asyncclient.temporal worker",
        description="Run a Temporal worker: it watches shards of batches and stores each result "
        "once. Stop it with Ctrl-C or SIGTERM: it takes no new shard, its shards store what "
        "they fetched (within --shutdown-grace) and are retried on other workers at once.",
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
        "--max-failed-polls",
        type=int,
        default=PollPolicy.max_failed_polls,
        help="polls of one run in a row that may fail for a passing reason before the run is "
        f"left to the shard's next attempt ({PollPolicy.max_failed_polls})",
    )
    work.add_argument(
        "--not-found-grace",
        type=float,
        default=PollPolicy.not_found_grace,
        help="seconds a run may answer 404 before it is taken as missing "
        f"({PollPolicy.not_found_grace:g})",
    )
    work.add_argument(
        "--strategy", choices=POLL_STRATEGIES, default="auto", help="polling strategy (auto)"
    )
    work.add_argument(
        "--metrics-bind",
        metavar="HOST:PORT",
        help="serve Prometheus metrics (the Temporal SDK's and this worker's) on "
        "http://HOST:PORT/metrics (off)",
    )
    work.add_argument(
        "--shutdown-grace",
        type=float,
        default=30.0,
        help="seconds SIGTERM waits for the shards in progress to store what they fetched and "
        "hand over before they are cancelled (30)",
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
        description="Start a batch and follow it by counting stored results until every id is "
        "stored. The same ids file into the same sink is refused while it runs and after it "
        "completed (--attach follows it instead); after it failed, was terminated or "
        "cancelled, it is started again and skips what the sink holds.",
    )
    parser.add_argument(
        "--ids-file", required=True, help="one run id per line; workers must read the same path"
    )
    _add_temporal_options(parser)
    plan = parser.add_argument_group("scheduling")
    plan.add_argument("--shards", type=int, default=10, help="how many shards (10)")
    plan.add_argument(
        "--max-parallel",
        type=int,
        default=50,
        help=f"shards watched at once in all (50; at most {MAX_PARALLEL:,}, Temporal's limit "
        "of pending activities per workflow)",
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
        "--max-attempts",
        type=int,
        default=20,
        help="attempts at one shard before it fails the batch; crashes and worker shutdowns "
        "count (20: about a quarter of an hour of retries)",
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
            max_failed_polls=args.max_failed_polls,
            not_found_grace=args.not_found_grace,
            strategy=args.strategy,
        )
        sink_name(args.sink)
        if args.max_shards < 1:
            raise ValueError(f"--max-shards must be 1 or more, got {args.max_shards}")
        rps = args.max_requests_per_second
        if rps is not None and not (rps > 0 and math.isfinite(rps)):
            raise ValueError(f"--max-requests-per-second must be a positive number, got {rps}")
        if not args.shutdown_grace >= 0:
            raise ValueError(f"--shutdown-grace must be >= 0, got {args.shutdown_grace}")
    except (ValueError, SinkError) as exc:
        parser.error(str(exc))
    try:
        settings = _temporal_settings(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        _api_client(args, policy)  # the key, the URL and the rate are checked before any connection
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_KEY if "key" in str(exc) else EXIT_USAGE
    try:
        runtime = _metrics_runtime(args.metrics_bind) if args.metrics_bind else None
    except ValueError as exc:
        parser.error(str(exc))
    try:
        return asyncio.run(_run_worker(args, settings, policy, runtime))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _api_client(
    args: argparse.Namespace, policy: PollPolicy, session: aiohttp.ClientSession | None = None
) -> Client:
    """The worker's API client (its key from --api-key or PREDEV_API_KEY, never Temporal's)."""
    # One client, so one rate controller, for every shard this worker watches.
    return Client(
        args.api_key,
        base_url=args.base_url,
        poll_policy=policy,
        session=session,
        max_requests_per_second=args.max_requests_per_second,
    )


def _metrics_runtime(bind: str) -> Runtime:
    """An SDK runtime that serves its metrics, and ours, on ``http://BIND/metrics``."""
    host, _, port = bind.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--metrics-bind must be HOST:PORT, got {bind!r}")
    try:
        return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=bind)))
    except Exception as exc:  # the SDK's core raises RuntimeError and friends
        raise ValueError(f"--metrics-bind {bind}: cannot serve metrics there: {exc}") from exc


async def _run_worker(
    args: argparse.Namespace,
    settings: TemporalSettings,
    policy: PollPolicy,
    runtime: Runtime | None,
) -> int:
    identity = args.identity or _default_identity()
    try:
        temporal = await connect(settings, identity=identity, runtime=runtime)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
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
    # The worker's own session, so that each request is counted for its shard (--metrics-bind).
    session = counting_session()
    try:
        async with (
            session,
            _api_client(args, policy, session) as api,
            # One watch for all of this worker's shards: one list scan, one pool (_shared).
            ShardActivities(
                api,
                sink,
                policy=policy,
                worker=identity,
                max_shards=args.max_shards,
                meter=(runtime or Runtime.default()).metric_meter,
            ) as activities,
        ):
            worker = create_worker(
                temporal,
                activities,
                task_queue=args.task_queue,
                max_concurrent_shards=args.max_shards,
                graceful_shutdown=args.shutdown_grace,
            )
            async with worker:
                metrics = f"; metrics on http://{args.metrics_bind}/metrics" if runtime else ""
                print(
                    f"worker {identity} ready: task queue {args.task_queue!r} on "
                    f"{settings.describe()}; sink {sink.name} ({sink.identity}){metrics}",
                    flush=True,
                )
                await stop.wait()
                logger.info(
                    "stopping: no new shards; the shards in progress store what they fetched "
                    "and are retried on other workers (waiting up to %gs)",
                    args.shutdown_grace,
                )
            logger.info("stopped")
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
    if not 1 <= args.max_parallel <= MAX_PARALLEL:
        parser.error(
            f"--max-parallel must be 1 to {MAX_PARALLEL:,} (Temporal's limit of pending "
            f"activities per workflow execution), got {args.max_parallel:,}"
        )
    if args.max_attempts < 1:
        parser.error(f"--max-attempts must be 1 or more, got {args.max_attempts}")
    try:
        settings = _temporal_settings(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(_watch(args, settings))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


async def _watch(args: argparse.Namespace, settings: TemporalSettings) -> int:
    # Everything that needs no network is checked first.
    try:
        sink = open_sink(args.sink)
        ids, digest = await anyio.to_thread.run_sync(read_ids, args.ids_file)
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
            temporal = await connect(settings)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE
        try:
            # Before the start, so that every row after it is this execution's: an earlier
            # execution of the same batch (failed, terminated) may have stored some already.
            stored_before = len(await sink.has(ids))
            batch_id = batch_id_for(digest, sink.identity or sink.name)
            by_batch_before = await sink.count(batch_id=batch_id)
            ended = await _ended_before(temporal, batch_id)
            spec, workflow, attached = await _start_or_attach(temporal, args, sink)
            if ended is not None and not attached:
                print(
                    f"this batch ran before and ended {ended}: started again; the "
                    f"{stored_before} ids the sink holds are skipped",
                    flush=True,
                )
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
            return stored_before + await sink.count(batch_id=spec.batch_id) - by_batch_before

        return await _follow(args, temporal, sink, spec, workflow, ids, stored)
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
            max_attempts=args.max_attempts,
        )
    except BatchAlreadyStartedError as exc:
        if not args.attach:
            raise
        spec = await anyio.to_thread.run_sync(
            lambda: plan_batch(args.ids_file, shards=args.shards, sink=sink.identity or sink.name)
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
    temporal: TemporalClient,
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
            pending = [] if finished.is_set() else await _pending(temporal, spec.workflow_id)
            print(
                f"[{now - started_at:7.1f}s] stored {count}/{total} "
                f"({100.0 * count / total:5.1f}%), {rate:,.0f} runs/s{_pending_line(pending)}",
                flush=True,
            )
            for line in _failing_lines(pending):
                print(line, flush=True)
            if count >= total or finished.is_set():
                break
            if deadline is not None and now >= deadline:
                timed_out = True
                break
        group.cancel_scope.cancel()
    answered = len(await sink.has(ids))
    missing = total - len(await sink.has(ids, errors=True))
    errored = total - answered - missing
    if outcome and isinstance(outcome[0], BaseException):
        why, fatal = _failure_of(outcome[0])
        print(f"error: batch {spec.batch_id} failed: {why}", file=sys.stderr)
        if fatal:
            return EXIT_KEY
        print(
            "hint: watch again on the same ids file and sink to run the batch again; what is "
            "stored stays stored",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if missing:
        why = "still watching after --timeout" if timed_out else "the batch ended"
        print(f"error: {missing} of {total} ids are not stored ({why})", file=sys.stderr)
        return EXIT_FAILED
    if errored:
        print(
            f"error: {errored} of {total} ids could not be watched (404, another refusal): "
            "they are stored as errors, apart from the results; watching the ids again tries "
            "them again",
            file=sys.stderr,
        )
        return EXIT_FAILED
    elapsed = time.monotonic() - started_at
    print(f"done: every one of {total} ids is stored ({elapsed:.1f}s)", flush=True)
    return EXIT_OK


_SHOWN_FAILING = 5
_RERUN_STATUSES = {
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.CANCELED: "cancelled",
    WorkflowExecutionStatus.TIMED_OUT: "timed out",
}


async def _ended_before(temporal: TemporalClient, batch_id: str) -> str | None:
    """How the batch's last execution ended if it may be started again, else ``None``."""
    workflow_id = workflow_id_for(batch_id)
    try:
        description = await temporal.get_workflow_handle(workflow_id).describe()
    except Exception:  # not found (never started, or forgotten), or Temporal won't say
        return None
    return _RERUN_STATUSES.get(description.status) if description.status else None


async def _pending(temporal: TemporalClient, workflow_id: str) -> list[PendingActivityInfo]:
    """The batch's pending shard activities (of its latest run), or none if Temporal won't say."""
    try:
        description = await temporal.get_workflow_handle(workflow_id).describe()
    except Exception:  # RPCError and friends: the progress line goes without it
        return []
    return list(description.raw_description.pending_activities)


def _pending_line(pending: list[PendingActivityInfo]) -> str:
    if not pending:
        return ""
    waiting = sum(a.state == PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED for a in pending)
    return f"; {len(pending)} shards pending ({len(pending) - waiting} running, {waiting} waiting)"


def _failing_lines(pending: list[PendingActivityInfo]) -> list[str]:
    """One line per shard that has failed before and is being retried: its last failure."""
    failing = [a for a in pending if a.attempt > 1 and a.last_failure.message]
    lines = []
    for info in failing[:_SHOWN_FAILING]:
        limit = info.maximum_attempts or "no limit"
        lines.append(
            f"  {info.activity_id.replace('-', ' ')}: attempt {info.attempt} of {limit}, "
            f"last failure: {info.last_failure.message}"
        )
    if len(failing) > _SHOWN_FAILING:
        lines.append(f"  and {len(failing) - _SHOWN_FAILING} more shards retrying")
    return lines


def _failure_of(error: BaseException) -> tuple[str, bool]:
    """Why a batch failed, in one line, and whether no retry could fix it (a refused key)."""
    messages: list[str] = []
    fatal = False
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ApplicationError):
            fatal = fatal or cause.type in (*FATAL_ERROR_TYPES, NOT_OWNED_ERROR_TYPE)
            messages.append(cause.message)
        elif (
            isinstance(cause, ActivityError)
            and cause.retry_state == RetryState.MAXIMUM_ATTEMPTS_REACHED
        ):
            messages.append("every attempt allowed (--max-attempts) was made")
        cause = cause.__cause__
    if not messages:
        messages.append(str(error))
    return "; ".join(reversed(messages)), fatal


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
