"""Shared fixtures: the emulator on a free loopback port, and clients pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from _virtual_time import VirtualTimeLoop

from asyncclient import Client, PollPolicy, RetryPolicy
from asyncclient.testing import Emulator, EmulatorServer, ManualClock, serve

# Shrunk schedules: the logic is the production one, the waiting is not.
FAST_RETRY = RetryPolicy(max_retries=2, initial_delay=0.001, max_delay=0.005, max_retry_after=0.05)
FAST_POLL = PollPolicy(
    initial_delay=0.002, multiplier=1.5, max_delay=0.02, max_in_flight=16, not_found_grace=0.0
)


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> str | tuple[str, dict[str, Any]]:
    """aiohttp runs on asyncio only; a ``virtual_time`` test's loop runs on virtual time."""
    if request.node.get_closest_marker("virtual_time") is not None:
        return ("asyncio", {"loop_factory": VirtualTimeLoop})
    return "asyncio"


@pytest.fixture
def clock() -> ManualClock:
    """A clock the test moves by hand."""
    return ManualClock(start=1_776_000_000.0)


@pytest.fixture
def emulator(clock: ManualClock) -> Emulator:
    """An emulator with two keys on a manual clock."""
    return Emulator(api_keys=("test-key", "other-key"), clock=clock, seed=1)


@pytest.fixture
async def server(emulator: Emulator) -> AsyncIterator[EmulatorServer]:
    """The emulator served over real HTTP on loopback."""
    async with serve(emulator) as running:
        yield running


@pytest.fixture
async def client(server: EmulatorServer) -> AsyncIterator[Client]:
    """A client on the emulator with fast retries."""
    async with Client(
        server.api_key, base_url=server.base_url, retry=FAST_RETRY, poll_policy=FAST_POLL
    ) as api:
        yield api
