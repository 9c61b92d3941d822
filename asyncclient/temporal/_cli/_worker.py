"""``worker``: run a Temporal worker that watches shards and stores their results."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TypeVar

import click
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from ..._cli._exit import CliError
from ..._client import Client
from ..._config import POLL_STRATEGIES, PollPolicy
from ..._constants import API_KEY_ENV, BASE_URL_ENV
from .._activities import ShardActivities, default_identity
from .._connect import TemporalSettings
from .._exceptions import SinkError
from .._metrics import counting_session
from .._sinks import open_sink, sink_name
from .._worker import create_worker
from ._common import (
    EXIT_KEY,
    EXIT_OK,
    EXIT_USAGE,
    Number,
    connect_temporal,
    open_sink_store,
    run_command,
    temporal_command,
    temporal_options,
    temporal_settings,
)

if TYPE_CHECKING:
    import aiohttp

__all__ = ["worker"]

logger = logging.getLogger("asyncclient.temporal")

_F = TypeVar("_F", bound=Callable[..., Any])

_POLL = PollPolicy()

_POLL_OPTIONS = (
    ("--max-in-flight", "max_in_flight", click.INT, "Requests in flight per shard."),
    ("--poll-initial-delay", "initial_delay", click.FLOAT, "Seconds before a run's 2nd poll."),
    ("--poll-multiplier", "multiplier", click.FLOAT, "Growth of the poll delay."),
    ("--poll-max-delay", "max_delay", click.FLOAT, "Cap of the poll delay."),
    (
        "--max-failed-polls",
        "max_failed_polls",
        click.INT,
        "Polls of one run in a row that may fail for a passing reason before the run is left "
        "to the shard's next attempt.",
    ),
    (
        "--not-found-grace",
        "not_found_grace",
        click.FLOAT,
        "Seconds a run may answer 404 before it is taken as missing.",
    ),
    ("--strategy", "strategy", click.Choice(POLL_STRATEGIES), "Polling strategy."),
)
"""The worker's ``PollPolicy`` options: flag, field (whose default the option shows), type, help.

The values are checked by ``PollPolicy`` itself (a bad one is a usage error), not retyped here.
"""


def poll_options(command: _F) -> _F:
    """Add an option per :data:`_POLL_OPTIONS` row, defaulting to ``PollPolicy()``'s field."""
    for flag, field, kind, text in reversed(_POLL_OPTIONS):
        option = click.option(
            flag, field, type=kind, default=getattr(_POLL, field), show_default=True, help=text
        )
        command = option(command)
    return command


def poll_policy(params: dict[str, Any]) -> PollPolicy:
    """The ``PollPolicy`` the poll options ask for.

    Raises:
        ValueError: a value ``PollPolicy`` refuses.
    """
    return PollPolicy(**{field: params[field] for _, field, _, _ in _POLL_OPTIONS})


@temporal_command(
    "Run a Temporal worker: it watches shards of batches and stores each result once. Stop "
    "it with Ctrl-C or SIGTERM: it takes no new shard, its shards store what they fetched "
    "(within --shutdown-grace) and are retried on other workers at once.",
    short_help="Run a worker that watches shards and stores their results.",
)
@temporal_options
@click.option("--base-url", help=f"The API origin (${BASE_URL_ENV}, else the real API).")
@click.option(
    "--api-key",
    help=f"The API key; prefer ${API_KEY_ENV}: the command line is visible to other users.",
)
@click.option(
    "--max-shards",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Shards watched at once by this worker.",
)
@poll_options
@click.option(
    "--metrics-bind",
    metavar="HOST:PORT",
    help="Serve Prometheus metrics (the Temporal SDK's and this worker's) on "
    "http://HOST:PORT/metrics (off).",
)
@click.option(
    "--shutdown-grace",
    type=Number(min=0),
    default=30.0,
    show_default=True,
    help="Seconds SIGTERM waits for the shards in progress to store what they fetched and hand "
    "over before they are cancelled.",
)
@click.option(
    "--max-requests-per-second",
    type=Number(min=0, min_open=True, finite=True),
    default=None,
    metavar="RPS",
    help="This worker's share of the key's rate limit, for all its shards together (none: "
    "pacing starts at the first 429 and adapts, across workers, without configuration).",
)
@click.option("--identity", help="This worker's name in Temporal and the sink (pid@host).")
@click.option(
    "--log-level",
    type=click.Choice(("DEBUG", "INFO", "WARNING", "ERROR")),
    default="INFO",
    show_default=True,
    help="Logging level on stderr.",
)
def worker(**params: Any) -> int:
    """Run a worker until SIGINT or SIGTERM; returns the exit status."""
    return run_command(lambda: _worker(SimpleNamespace(**params), params))


def _worker(args: SimpleNamespace, params: dict[str, Any]) -> int:
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        policy = poll_policy(params)
        sink_name(args.sink)
    except (ValueError, SinkError) as exc:
        raise click.UsageError(str(exc)) from exc
    settings = temporal_settings(params)
    try:
        _api_client(args, policy)  # the key, the URL and the rate are checked before any connection
    except ValueError as exc:
        raise CliError(str(exc), EXIT_KEY if "key" in str(exc) else EXIT_USAGE) from exc
    try:
        runtime = _metrics_runtime(args.metrics_bind) if args.metrics_bind else None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    return asyncio.run(_run_worker(args, settings, policy, runtime))


def _api_client(
    args: SimpleNamespace, policy: PollPolicy, session: aiohttp.ClientSession | None = None
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
    args: SimpleNamespace,
    settings: TemporalSettings,
    policy: PollPolicy,
    runtime: Runtime | None,
) -> int:
    identity = args.identity or default_identity()
    temporal = await connect_temporal(settings, identity=identity, runtime=runtime)
    sink = open_sink(args.sink)  # its URL was checked before (sink_name)
    await open_sink_store(sink)
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
