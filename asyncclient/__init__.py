"""asyncclient: an async, typed SDK for the pre.dev browser-agent runs API.

::

    from asyncclient import Client

    async with Client() as client:                   # key from PREDEV_API_KEY
        run = await client.get_run("65f8a9d2c1e4b5a6f7e8d9c0")
        async for run in client.iter_runs(status="completed"):
            ...
        async with client.watch(run_ids) as watcher:
            async for update in watcher:
                ...
        run = await client.run([{"url": "https://example.com", "instruction": "..."}])
        async with client.stream(tasks) as events:
            async for event in events:
                ...
"""

from __future__ import annotations

from ._client import Client
from ._config import PollPolicy, RetryPolicy
from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    APIUnavailableError,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PaymentRequiredError,
    PredevError,
    RateLimitError,
    ResponseDecodeError,
    ServerError,
    WalkStalledError,
    WatchTimeoutError,
)
from ._models import (
    DoneEvent,
    EventType,
    QueueStatus,
    Run,
    RunnerEvent,
    RunPage,
    RunStatus,
    TaskEvent,
    TaskResult,
    TaskResultEvent,
    TaskStatus,
)
from ._pagination import RunIterator
from ._polling import RunUpdate, Watcher
from ._ratelimit import RateController
from ._streaming import RunStream
from ._tasks import TaskSpec
from ._version import __version__

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "APIUnavailableError",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "DoneEvent",
    "EventType",
    "NotFoundError",
    "PaymentRequiredError",
    "PollPolicy",
    "PredevError",
    "QueueStatus",
    "RateController",
    "RateLimitError",
    "ResponseDecodeError",
    "RetryPolicy",
    "Run",
    "RunIterator",
    "RunPage",
    "RunStatus",
    "RunStream",
    "RunUpdate",
    "RunnerEvent",
    "ServerError",
    "TaskEvent",
    "TaskResult",
    "TaskResultEvent",
    "TaskSpec",
    "TaskStatus",
    "WalkStalledError",
    "WatchTimeoutError",
    "Watcher",
    "__version__",
]
