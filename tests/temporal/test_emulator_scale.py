"""The emulator behind the scale-out tests: a list page costs its rows, not the account."""

from __future__ import annotations

import pytest

from asyncclient import Client
from asyncclient.testing import Emulator, ManualClock, serve

pytestmark = pytest.mark.anyio

START = 1_776_000_000.0
PROCESSING = 300


def _account(finished: int) -> tuple[Emulator, ManualClock]:
    """``finished`` runs finished long ago and 300 that finish one by one over 300 s."""
    clock = ManualClock(start=START)
    emu = Emulator(clock=clock, seed=2)
    for n in range(finished):
        emu.create_run(durations=[1.0], created_at=START - 10_000 + n * 0.001)
    for n in range(PROCESSING):
        emu.create_run(durations=[1.0 + n])
    return emu, clock


async def _scan_work(emu: Emulator, clock: ManualClock) -> tuple[int, list[int]]:
    """Read the first processing page every 10 s while runs finish; the runs examined."""
    key = emu.api_keys[0]
    totals = []
    async with serve(emu) as server, Client(server.api_key, base_url=server.base_url) as client:
        # The first look drops the runs that had finished before it, once each.
        await client.list_runs(status="processing", limit=100)
        before = emu._processing[key].examined
        for _ in range(25):
            clock.advance(10.0)
            page = await client.list_runs(status="processing", limit=100)
            totals.append(page.total)
        return emu._processing[key].examined - before, totals


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_processing_page_costs_the_same_at_a_thousand_and_a_hundred_thousand_runs(
    anyio_backend: str,
) -> None:
    """Scanning the processing list while runs finish examines the runs that finished, not the
    account: the same work with 1,000 or 100,000 runs finished before (each run is looked at
    once when it has finished, not on every page)."""
    small, small_clock = _account(1_000)
    large, large_clock = _account(100_000)

    small_work, small_totals = await _scan_work(small, small_clock)
    large_work, large_totals = await _scan_work(large, large_clock)

    assert small_totals == large_totals
    assert small_totals[0] == PROCESSING - 10 and small_totals[-1] == PROCESSING - 250
    assert small_work == large_work
    assert large_work <= PROCESSING  # each run that finished is looked at once
