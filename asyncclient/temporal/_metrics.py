"""The worker's own metrics, exported with the Temporal SDK's on one Prometheus endpoint.

Each shard attempt counts, with the attributes ``batch`` and ``shard`` (and the SDK's
``namespace``, ``task_queue``, ``activity_type``):

- ``asyncclient_runs_stored``: runs this worker stored into the sink;
- ``asyncclient_runs_deferred``: runs left to the shard's next attempt (their polls kept
  failing for a passing reason);
- ``asyncclient_requests``: HTTP requests to the API, retries included, by ``status`` (the
  HTTP status, or ``error`` when no answer came);
- ``asyncclient_rate_limited``: of those, the ones answered 429.

They go through the SDK's metric meter: with no ``--metrics-bind`` it is a no-op meter and
counting costs next to nothing. Requests are counted by an aiohttp trace on the worker's
session, which finds the shard a request belongs to through a context variable set by the
shard's attempt (every poll of a shard runs in a task started from it). A worker's shards share
one watch (``_shared``), whose requests (a list page serves every shard at once) are counted
for the worker: without the ``batch`` and ``shard`` attributes.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import aiohttp
from temporalio.common import MetricCounter, MetricMeter

__all__ = ["ShardMeters", "counting", "counting_session"]


class ShardMeters:
    """The counters of one shard attempt.

    Args:
        meter: the SDK's meter (``activity.metric_meter()`` inside an activity).
        batch_id: the batch, an attribute of every count.
        shard: the shard's index, likewise; ``None`` for the counters of the worker's shared
            watch (no ``batch`` or ``shard`` attribute then).
    """

    def __init__(self, meter: MetricMeter, batch_id: str = "", shard: int | None = None) -> None:
        attributes = {} if shard is None else {"batch": batch_id, "shard": str(shard)}

        def counter(name: str, description: str, unit: str) -> MetricCounter:
            return meter.create_counter(name, description, unit).with_additional_attributes(
                attributes
            )

        self.stored = counter("asyncclient_runs_stored", "runs stored into the sink", "runs")
        self.deferred = counter(
            "asyncclient_runs_deferred", "runs left to the shard's next attempt", "runs"
        )
        self.requests = counter(
            "asyncclient_requests", "HTTP requests to the API, retries included", "requests"
        )
        self.rate_limited = counter(
            "asyncclient_rate_limited", "HTTP requests answered 429", "requests"
        )

    def response(self, status: int | None) -> None:
        """Count one request, answered with ``status`` (``None``: no answer)."""
        self.requests.add(1, {"status": "error" if status is None else str(status)})
        if status == 429:
            self.rate_limited.add(1)


_current: contextvars.ContextVar[ShardMeters | None] = contextvars.ContextVar(
    "asyncclient_temporal_shard_meters", default=None
)


@contextmanager
def counting(meters: ShardMeters) -> Iterator[ShardMeters]:
    """Count the requests made in this context (and the tasks started from it) for a shard."""
    token = _current.set(meters)
    try:
        yield meters
    finally:
        _current.reset(token)


async def _on_end(
    session: aiohttp.ClientSession, context: SimpleNamespace, params: aiohttp.TraceRequestEndParams
) -> None:
    meters = _current.get()
    if meters is not None:
        meters.response(params.response.status)


async def _on_exception(
    session: aiohttp.ClientSession,
    context: SimpleNamespace,
    params: aiohttp.TraceRequestExceptionParams,
) -> None:
    meters = _current.get()
    if meters is not None:
        meters.response(None)


def counting_session() -> aiohttp.ClientSession:
    """A session for the worker's API client that counts each request for the shard it was
    made for (call it inside the running loop; the caller closes it)."""
    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(_on_end)
    trace.on_request_exception.append(_on_exception)
    # The transport's own limits: only the trace is added.
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=128, ttl_dns_cache=300), trace_configs=[trace]
    )
