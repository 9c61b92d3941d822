"""List scans: a watch's processing runs read a hundred a page (asyncclient/_scanning.py)."""

from __future__ import annotations

import math

import anyio
import pytest

from asyncclient import Client, PollPolicy, PredevError
from asyncclient._scanning import SCAN_FAILURES_BEFORE_GETS, Scanner
from asyncclient._scheduling import Watched
from asyncclient.testing import Emulator, Fault, ManualClock

pytestmark = pytest.mark.anyio


def scanner_of(client: Client, strategy: str = "auto") -> Scanner:
    """A scanner on the client's list endpoint."""
    policy = PollPolicy(strategy=strategy)  # type: ignore[arg-type]
    return Scanner(client._fetch_page, policy, anyio.current_time)


async def test_a_scan_returns_the_wanted_processing_rows_at_a_page_per_hundred(
    client: Client, emulator: Emulator, clock: ManualClock
) -> None:
    """One scan reads every processing run at 100 a page and keeps only the wanted runs' rows."""
    processing = [emulator.create_run(durations=[60.0]) for _ in range(250)]
    finished = emulator.create_run(durations=[1.0], created_at=clock() - 10.0)
    wanted = {processing[0], processing[123], processing[249], finished}
    scanner = scanner_of(client)
    before = emulator.requests_by_route["list"]
    seen = await scanner.read(wanted)
    assert set(seen) == {processing[0], processing[123], processing[249]}
    assert all(row.status == "processing" for row in seen.values())
    assert emulator.requests_by_route["list"] - before == 3 == scanner.requests
    assert (scanner.scans, scanner.total, scanner.failures) == (1, 250, 0)


async def test_a_scan_is_chosen_only_when_its_pages_cost_less_than_the_gets_it_replaces(
    client: Client, emulator: Emulator
) -> None:
    """``auto`` scans only when fewer pages than due GETs; ``list`` scans whatever it costs."""
    for _ in range(250):
        emulator.create_run(durations=[60.0])
    scanner = scanner_of(client)
    assert scanner.pages(watched_runs=5) == 1  # before any scan: the watched runs' pages
    await scanner.read(set())
    assert scanner.pages(watched_runs=5) == 3  # after one: the list's own total
    assert not scanner.is_cheaper(3, watched_runs=5)
    assert scanner.is_cheaper(4, watched_runs=5)
    assert scanner_of(client, "list").is_cheaper(0, watched_runs=5)


async def test_failed_scans_are_counted_in_a_row_and_in_all(
    client: Client, emulator: Emulator
) -> None:
    """Scans failing in a row hand runs to GETs; one that works resets the streak, not the total."""
    emulator.create_run(durations=[60.0])
    scanner = scanner_of(client)
    emulator.faults.add(Fault("status", status=400, route="list", times=SCAN_FAILURES_BEFORE_GETS))
    for _ in range(SCAN_FAILURES_BEFORE_GETS):
        with pytest.raises(PredevError):
            await scanner.read(set())
    failing = [scanner.failing]
    await scanner.read(set())
    failing.append(scanner.failing)
    assert failing == [True, False]
    assert (scanner.consecutive_failures, scanner.failures, scanner.scans) == (0, 3, 4)


async def test_a_scan_replaces_only_the_gets_of_runs_likely_processing(client: Client) -> None:
    """GETs owed to confirm a finish, in flight, or taken by the workers at once: not replaced."""
    scanner = scanner_of(client)
    runs = [Watched(f"{index:024x}", added_at=0.0, deadline=math.inf) for index in range(6)]
    for watched in runs:
        watched.due = watched.natural_due = 1.0
    runs[0].needs_confirming_get = True
    runs[1].in_flight = True
    runs[2].likely_processing = 0.5
    assert scanner.replaceable_gets(runs, until=2.0) == 3.5
    assert scanner.replaceable_gets(runs, until=0.5) == 0.0
    # Four queued now: 32 workers send them all, two workers two, before a scan could answer.
    assert scanner.replaceable_gets(runs, until=2.0, now=1.0) == 0.0
    two_workers = Scanner(client._fetch_page, PollPolicy(max_in_flight=2), anyio.current_time)
    assert two_workers.replaceable_gets(runs, until=2.0, now=1.0) == 1.5


async def test_a_scan_already_due_still_lets_the_other_tasks_run(client: Client) -> None:
    """Waiting for a scan that is due already yields, so a loop of checks cannot starve GETs."""
    scanner = scanner_of(client)
    scanner.next_at = -math.inf
    others_ran = 0

    async def other() -> None:
        nonlocal others_ran
        others_ran += 1

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(other)
        await scanner.wait_until_due()  # returns at once, but through the event loop
        assert others_ran == 1
