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
"""

from __future__ import annotations

__version__ = "0.1.0"

from ._client import Client
from ._config import PollPolicy, RetryPolicy
from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
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
from ._models import EventType, Run, RunnerEvent, RunPage, RunStatus, TaskResult, TaskStatus
from ._pagination import RunIterator
from ._polling import RunUpdate, Watcher

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "EventType",
    "NotFoundError",
    "PaymentRequiredError",
    "PollPolicy",
    "PredevError",
    "RateLimitError",
    "ResponseDecodeError",
    "RetryPolicy",
    "Run",
    "RunIterator",
    "RunPage",
    "RunStatus",
    "RunUpdate",
    "RunnerEvent",
    "ServerError",
    "TaskResult",
    "TaskStatus",
    "WalkStalledError",
    "WatchTimeoutError",
    "Watcher",
    "__version__",
]
