"""Finished runs read from list pages instead of one GET each (asyncclient/_harvest.py)."""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timezone

import anyio
import pytest
from aiohttp import web
from conftest import FAST_RETRY

from asyncclient import (
    AuthenticationError,
    Client,
    NotFoundError,
    PollPolicy,
    RunUpdate,
    WatchTimeoutError,
)
from asyncclient._harvest import Harvest, id_time, is_complete, minted_since
from asyncclient._models import Run
from asyncclient.testing import Emulator, EmulatorServer, Fault, ManualClock

# Virtual time (tests/_virtual_time.py): the races between list looks, GETs and deadlines come
# out the same however loaded the machine is.
pytestmark = [pytest.mark.anyio, pytest.mark.virtual_time]

NOW = 1_776_000_000.0
DOCS_ID = "65f8a9d2c1e4b5a6f7e8d9c0"
"""The documentation's example id: it decodes to 2024-03-18, its example createdAt is 2026."""


def fast(**options: object) -> PollPolicy:
    """A shrunk policy (the default strategy unless told)."""
    base: dict[str, object] = {
        "initial_delay": 0.002,
        "max_delay": 0.01,
        "max_in_flight": 16,
        "not_found_grace": 0.0,
    }
    base.update(options)
    return PollPolicy(**base)  # type: ignore[arg-type]


def history(emulator: Emulator, count: int, *, span: float = 100_000.0) -> list[str]:
    """``count`` finished runs created over the ``span`` seconds before now, oldest first."""
    step = span / count
    return [
        emulator.create_run(durations=[1.0, 2.0], created_at=NOW - span + i * step)
        for i in range(count)
    ]


async def watch_all(client: Client, ids: list[str], **options: object) -> list[RunUpdate]:
    """Every update of a watch over ``ids``, with its watcher's counters checked."""
    async with client.watch(ids, policy=fast(**options)) as watcher:
        updates = [update async for update in watcher]
    finals = Counter(update.run_id for update in updates if update.final)
    assert finals == Counter(set(ids)), "one final update per id"
    return updates


async def assert_as_got(client: Client, updates: list[RunUpdate]) -> None:
    """Each delivered run equals what a GET of it answers."""
    for update in updates:
        assert update.run is not None
        assert update.run == await client.get_run(update.run_id)


# -- the emulator speaks real ObjectIds -----------------------------------------------------


def test_emulator_ids_carry_their_creation_time(emulator: Emulator) -> None:
    """An emulated run id is an ObjectId whose first four bytes are the run's creation time."""
    run_id = emulator.create_run(created_at=NOW - 3600.7)
    assert id_time(run_id) == int(NOW - 3600.7)
    lying = emulator.create_run(created_at=NOW, id_time=id_time(DOCS_ID))
    assert datetime.fromtimestamp(id_time(lying), timezone.utc).date().isoformat() == "2024-03-18"
    assert len({emulator.create_run() for _ in range(50)}) == 50


async def test_stub_rows_switch(client: Client, emulator: Emulator) -> None:
    """``list_rows="stub"`` serves finished rows as a stub plus nulls; the default the summary."""
    run_id = emulator.create_run(durations=[1.0, 2.0, 3.0], created_at=NOW - 100)
    (summary,) = (await client.list_runs(limit=1)).runs
    assert is_complete(summary)
    assert summary == await client.get_run(run_id)
    emulator.list_rows = "stub"
    (stub,) = (await client.list_runs(limit=1)).runs
    assert stub.status == "completed" and stub.completed_at is not None
    assert stub.results[1:] == [None, None] and stub.results[0] is not None
    assert not is_complete(stub)
    with pytest.raises(ValueError, match="list_rows"):
        emulator.list_rows = "full"  # type: ignore[assignment]


async def test_status_lists_follow_the_clock(
    client: Client, emulator: Emulator, clock: ManualClock
) -> None:
    """The status-filtered list stays right as runs finish on the clock or are finished early."""
    early = emulator.create_run(durations=[5.0])
    late = emulator.create_run(durations=[50.0])
    assert (await client.list_runs(status="processing")).total == 2
    clock.advance(10)
    assert (await client.list_runs(status="processing")).total == 1
    assert [run.id for run in await client.list_runs(status="completed")] == [early]
    emulator.finish_run(late)
    assert (await client.list_runs(status="processing")).total == 0
    clock.set(NOW)  # back before either run finished
    assert (await client.list_runs(status="processing")).total == 2


# -- rows that settle runs ------------------------------------------------------------------


def test_complete_rows_only() -> None:
    """A row is the final run only when terminal with every one of its results present."""
    done = {"url": "https://a.example", "status": "SUCCESS"}
    pending = {"url": "https://a.example", "status": "PENDING"}
    cases = [
        ({"status": "completed", "total": 2, "results": [done, done]}, True),
        ({"status": "failed", "total": 1, "results": [dict(done, status="ERROR")]}, True),
        ({"status": "completed", "total": 2, "results": [done, None]}, False),
        ({"status": "completed", "total": 2, "results": [done]}, False),
        ({"status": "completed", "total": 2, "results": [done, pending]}, False),
        ({"status": "processing", "total": 1, "results": [done]}, False),
        ({"status": "completed", "total": 0, "results": []}, False),
    ]
    import msgspec

    for body, expected in cases:
        row = msgspec.convert({"id": DOCS_ID, **body}, Run)
        assert is_complete(row) is expected, body


# -- the watch ------------------------------------------------------------------------------


async def test_a_large_share_of_the_account_comes_from_pages(
    client: Client, emulator: Emulator
) -> None:
    """Half of a 2,000-run account: delivered from ~20 list pages, no GET, each as a GET says."""
    ids = history(emulator, 2000)
    watched = ids[::2]
    updates = await watch_all(client, watched)
    assert all(update.ok and update.run is not None for update in updates)
    assert emulator.requests_by_route["get"] == 0
    assert emulator.requests_by_route["list"] <= 20 + 1 + 4  # the pages, the head, stretch joins
    await assert_as_got(client, updates[:50] + updates[-50:])


async def test_a_small_recent_set_reads_only_its_window(client: Client, emulator: Emulator) -> None:
    """The 30 newest of 5,000 runs: their ids' times stop the walk at the first page."""
    ids = history(emulator, 5000)
    updates = await watch_all(client, ids[-30:])
    assert all(update.ok for update in updates)
    assert emulator.requests_by_route["list"] == 1
    assert emulator.requests_by_route["get"] == 0


async def test_an_old_set_is_found_by_seeking(client: Client, emulator: Emulator) -> None:
    """150 runs deep in a 5,000-run history: a binary search skips the newer pages above them."""
    ids = history(emulator, 5000)
    updates = await watch_all(client, ids[1000:1150])
    assert all(update.ok for update in updates)
    assert emulator.requests_by_route["get"] == 0
    # The head, about log2(50) probes, then the two or three pages of the window.
    assert emulator.requests_by_route["list"] <= 12


async def test_a_thin_set_is_cheaper_by_get(client: Client, emulator: Emulator) -> None:
    """30 runs spread over 5,000: the walk would cost more than GETs, so one page and GETs."""
    ids = history(emulator, 5000)
    watched = ids[::170][:30]
    async with client.watch(watched, policy=fast()) as watcher:
        updates = [update async for update in watcher]
    assert all(update.ok for update in updates)
    # Never more than one GET per run plus the allowance (1 + 30 // 50: the first page).
    assert watcher.harvest_requests == 1
    assert watcher.harvest_requests + emulator.requests_by_route["get"] <= len(watched) + 1
    await assert_as_got(client, updates)


async def test_ids_whose_times_lie(client: Client, emulator: Emulator) -> None:
    """Ids minted long before their createdAt (as the docs' example is) turn the hint off."""
    ids = history(emulator, 1500)
    liars = [
        emulator.create_run(durations=[1.0], created_at=NOW - 50 + i, id_time=id_time(DOCS_ID))
        for i in range(20)
    ]
    watched = ids[::3] + liars
    harvest = Harvest(client._fetch_page, watched)
    found: list[Run] = []
    released: list[str] = []

    async def collect(row: Run) -> None:
        found.append(row)

    await harvest.run(collect, lambda run_id, finished: released.append(run_id))
    assert not harvest.hint_trusted
    assert harvest.hint_mismatches == len(liars)
    assert {row.id for row in found} == set(watched) and not released and not harvest.pending
    assert harvest.requests <= 15 + 1 + 4
    updates = await watch_all(client, watched)
    assert all(update.ok for update in updates)


async def test_ids_that_claim_the_wrong_window(client: Client, emulator: Emulator) -> None:
    """Old runs whose ids claim to be new are missed by the window and still delivered by GET."""
    history(emulator, 2000)
    misfiled = [
        emulator.create_run(durations=[1.0], created_at=NOW - 200_000 - i, id_time=NOW - 10)
        for i in range(40)
    ]
    async with client.watch(misfiled, policy=fast()) as watcher:
        updates = [update async for update in watcher]
    assert all(update.ok for update in updates)
    assert emulator.requests_by_route["get"] == len(misfiled)
    assert watcher.harvest_requests == 1  # the head page only: the ids say "newer than this"
    await assert_as_got(client, updates)


async def test_stub_rows_fall_back_to_one_get_per_run(client: Client, emulator: Emulator) -> None:
    """Rows that stay stubs once finished: about one GET per run, every run complete."""
    emulator.list_rows = "stub"
    ids = history(emulator, 2000)
    watched = ids[::4]
    async with client.watch(watched, policy=fast(strategy="per-run")) as baseline:
        expected = {update.run_id: update.run async for update in baseline}
    gets = emulator.requests_by_route["get"]
    async with client.watch(watched, policy=fast()) as watcher:
        updates = [update async for update in watcher]
    for update in updates:
        assert update.run is not None and is_complete(update.run)
        assert update.run == expected[update.run_id]
    assert emulator.requests_by_route["get"] - gets == len(watched)
    # The first page shows finished rows are stubs: the walk stops there.
    assert watcher.harvest_requests == 1
    assert watcher.harvest_requests + len(watched) <= 1.02 * len(watched)


async def test_stub_rows_cost_one_get_per_run_and_the_page_that_showed_them(
    client: Client, emulator: Emulator
) -> None:
    """Finished runs whose rows are stubs: one GET each, plus only the page that showed stubs."""
    emulator.list_rows = "stub"
    ids = history(emulator, 2000)
    watched = ids[::5]
    async with client.watch(watched, policy=fast(strategy="per-run")) as baseline:
        assert len([update async for update in baseline]) == len(watched)
    per_run = {route: emulator.requests_by_route[route] for route in ("get", "list")}
    async with client.watch(watched, policy=fast()) as watcher:
        updates = [update async for update in watcher]
    assert all(update.run is not None and is_complete(update.run) for update in updates)
    ours = {route: emulator.requests_by_route[route] - per_run[route] for route in ("get", "list")}
    # The page showed no run processing: no list scan bets on the runs it did not meet.
    assert ours == {"get": per_run["get"], "list": 1}
    assert (watcher.harvest_requests, watcher.scans) == (1, 0)


async def test_stub_rows_never_cost_more_than_get_per_run_but_the_page_that_showed_them(
    client: Client, emulator: Emulator, clock: ManualClock
) -> None:
    """Stub rows, with runs still processing behind a backlog of GETs: no scan bets meanwhile."""
    emulator.list_rows = "stub"
    finished = history(emulator, 1500)[::3]
    spent: dict[str, int] = {}
    for strategy in ("per-run", "auto"):
        processing_until = clock() + 60.0
        # Runs of its own for each contender: they finish while the GETs of the others queue.
        processing = [emulator.create_run(durations=[60.0]) for _ in range(3)]
        before = emulator.request_count
        policy = fast(strategy=strategy, max_in_flight=2)
        async with client.watch(finished + processing, policy=policy) as watcher:
            async for update in watcher:
                assert update.ok
                if clock() < processing_until:
                    clock.advance(120.0)
        spent[strategy] = emulator.request_count - before
    # A GET each is the floor when rows are stubs; the first page is what showed they are.
    assert spent["auto"] <= spent["per-run"] + 1
    assert (watcher.harvest_requests, watcher.scans) == (1, 0)


async def test_stub_rows_stop_a_search_before_it_starts(client: Client, emulator: Emulator) -> None:
    """Stub rows on the first page: no binary search for an old set, only GETs after it."""
    emulator.list_rows = "stub"
    ids = history(emulator, 3000)
    async with client.watch(ids[:400], policy=fast()) as watcher:
        updates = [update async for update in watcher]
    assert all(update.run is not None and is_complete(update.run) for update in updates)
    assert watcher.harvest_requests == 1
    assert emulator.requests_by_route["get"] == 400


async def test_events_need_one_get_per_finished_run(client: Client, emulator: Emulator) -> None:
    """With include_events, pages tell which runs finished: one GET each, with events."""
    ids = history(emulator, 1000)
    watched = ids[::2]
    async with client.watch(watched, include_events=True, policy=fast()) as watcher:
        updates = [update async for update in watcher]
    assert len(updates) == len(watched)
    for update in updates:
        assert update.run is not None
        assert all(task is not None and task.events for task in update.run.results)
    assert emulator.requests_by_route["get"] == len(watched)
    assert watcher.harvested == len(watched)


async def test_processing_runs_found_on_pages_are_polled(
    client: Client, emulator: Emulator, clock: ManualClock
) -> None:
    """Runs a page shows processing go to the pollers and are delivered once they finish."""
    finished = history(emulator, 500)[::2]
    running = [emulator.create_run(durations=[30.0]) for _ in range(10)]
    async with client.watch(finished + running, policy=fast()) as watcher:
        updates: list[RunUpdate] = []
        async for update in watcher:
            updates.append(update)
            if len(updates) == len(finished):
                clock.advance(60)
    assert {u.run_id for u in updates[: len(finished)]} == set(finished)
    assert {u.run_id for u in updates[len(finished) :]} == set(running)
    assert all(update.ok for update in updates)
    assert watcher.harvested == len(finished)


async def test_churn_during_the_walk(
    client: Client, emulator: Emulator, clock: ManualClock
) -> None:
    """Runs created and finishing between pages: each watched run delivered once, as a GET says."""
    finished = history(emulator, 1200)[::2]
    running = [emulator.create_run(durations=[5.0], created_at=NOW - 3) for _ in range(20)]
    pages = 0

    def churn(route: str, request: web.Request) -> None:
        nonlocal pages
        if route != "list":
            return
        pages += 1
        for _ in range(7):
            emulator.create_run(durations=[100.0])  # new runs push every row down
        if pages == 3:
            clock.advance(10)  # the watched processing runs finish mid-walk

    emulator.before_request = churn
    updates = await watch_all(client, finished + running)
    emulator.before_request = None
    assert all(update.ok for update in updates)
    assert emulator.requests_by_route["get"] <= len(running) * 3
    await assert_as_got(client, updates)


async def test_runs_added_later_are_harvested_too(client: Client, emulator: Emulator) -> None:
    """``watcher.add`` of a batch of finished runs is read from pages like the first batch."""
    ids = history(emulator, 600)
    async with client.watch(ids[:1], policy=fast()) as watcher:
        updates = [await watcher.__anext__()]
        watcher.add(ids[100:400])
        updates += [update async for update in watcher]
    assert {u.run_id for u in updates} == {ids[0], *ids[100:400]}
    assert emulator.requests_by_route["get"] <= 1
    assert watcher.harvested == 300


def test_minted_since_reads_the_ids_times_with_the_hints_slack(emulator: Emulator) -> None:
    """A batch is "minted since" only when every id is, allowing the server's clock 5 s behind."""
    since = 1_800_000_000.0
    new = [emulator.create_run(id_time=since + 1), emulator.create_run(id_time=since - 4)]
    old = emulator.create_run(id_time=since - 60)
    assert minted_since(new, since)
    assert not minted_since([*new, old], since)
    assert not minted_since([old], since)


async def test_new_runs_added_while_scans_watch_are_left_to_the_scans(
    client: Client, emulator: Emulator, clock: ManualClock
) -> None:
    """Submissions added mid-watch (ids minted after it began) cost no list look of their own.

    The scans take them in; a batch of old finished runs added beside them is still harvested.
    """
    watched = [emulator.create_run(durations=[30.0]) for _ in range(20)]
    async with client.watch(watched, policy=fast(strategy="list")) as watcher:
        with anyio.fail_after(10):
            while watcher.scans < 1:
                await anyio.sleep(0.001)
        looks = watcher.harvest_requests
        born = int(time.time()) + 1  # as a run submitted now would be stamped
        added: list[str] = []
        for _ in range(5):
            batch = [emulator.create_run(durations=[30.0], id_time=born) for _ in range(3)]
            assert watcher.add(batch) == 3
            added += batch
            await anyio.sleep(0.005)
        assert watcher.harvest_requests == looks, "a list look for runs just submitted"
        old = history(emulator, 200)[::2]
        watcher.add(old)
        clock.advance(60.0)  # every processing run finishes
        updates = [update async for update in watcher]
    assert Counter(u.run_id for u in updates) == Counter([*watched, *added, *old])
    assert all(update.ok for update in updates)
    assert watcher.harvest_requests > looks
    assert watcher.harvested >= len(old) // 2


async def test_per_run_strategy_never_reads_the_list(client: Client, emulator: Emulator) -> None:
    """``strategy="per-run"`` keeps one GET per run: the list is not read."""
    ids = history(emulator, 300)
    await watch_all(client, ids[::3], strategy="per-run")
    assert emulator.requests_by_route["list"] == 0
    assert emulator.requests_by_route["get"] == 100


async def test_a_failing_list_falls_back_to_gets(client: Client, emulator: Emulator) -> None:
    """When the list answers 503 (after retries), every run is got instead."""
    ids = history(emulator, 300)
    emulator.faults.add(Fault("status", status=503, route="list"))
    updates = await watch_all(client, ids[::3])
    assert all(update.ok for update in updates)
    assert emulator.requests_by_route["get"] == 100


async def test_a_deadline_during_the_walk(server: EmulatorServer, emulator: Emulator) -> None:
    """A watch deadline that passes while pages are read delivers every run with the timeout."""
    ids = history(emulator, 300)
    emulator.faults.add(Fault("stall", delay=0.5, route="list"))
    async with Client(server.api_key, base_url=server.base_url, retry=FAST_RETRY) as client:
        updates = await watch_all(client, ids[::3], timeout=0.05)
    assert all(isinstance(update.error, WatchTimeoutError) for update in updates)
    assert emulator.requests_by_route["get"] == 0


async def test_a_wrong_key_stops_the_watch(server: EmulatorServer, emulator: Emulator) -> None:
    """A 401 on the first list page stops the whole watch with AuthenticationError."""
    ids = history(emulator, 50)
    async with Client("not-a-key", base_url=server.base_url, retry=FAST_RETRY) as client:
        with pytest.raises(AuthenticationError):
            await watch_all(client, ids)


async def test_a_deadline_while_a_slow_consumer_holds_deliveries(
    client: Client, emulator: Emulator
) -> None:
    """A deadline passing while page rows wait for a slow consumer: each run once, none lost."""
    ids = history(emulator, 1000)[::2]
    updates: list[RunUpdate] = []
    async with client.watch(ids, policy=fast(buffer_size=1, timeout=0.05)) as watcher:
        async for update in watcher:
            updates.append(update)
            await anyio.sleep(0.001)
    assert Counter(update.run_id for update in updates) == Counter(ids)
    assert all(update.ok or isinstance(update.error, WatchTimeoutError) for update in updates)
    assert any(not update.ok for update in updates), "the deadline passed during the watch"
    assert watcher.harvested >= 1


# -- get_runs -------------------------------------------------------------------------------


async def test_get_runs_reads_finished_runs_from_pages(
    client: Client, emulator: Emulator, clock: ManualClock
) -> None:
    """``get_runs`` returns every run as a GET would, in order, finished ones from pages."""
    finished = history(emulator, 1000)[::3]
    running = [emulator.create_run(durations=[50.0]) for _ in range(5)]
    wanted = [*running[:2], *finished, *running[2:], finished[0]]
    runs = await client.get_runs(wanted)
    assert [run.id for run in runs] == list(dict.fromkeys(wanted))
    assert [run.status for run in runs[:2]] == ["processing", "processing"]
    requests = emulator.requests_by_route
    assert requests["get"] == len(running)
    assert requests["list"] <= 1000 // 100 + 1 + 4
    for run in runs[:5] + runs[-5:]:
        assert run == await client.get_run(run.id)


async def test_get_runs_with_events_gets_each_run_once(client: Client, emulator: Emulator) -> None:
    """``include_events=True``: one GET per run, each with every task's timeline."""
    ids = history(emulator, 300)[::3]
    runs = await client.get_runs(ids, include_events=True)
    assert all(task is not None and task.events for run in runs for task in run.results)
    assert emulator.requests_by_route["get"] == len(ids)


async def test_get_runs_raises_the_first_error(client: Client, emulator: Emulator) -> None:
    """A run that does not exist raises NotFoundError; bad arguments raise before any request."""
    ids = history(emulator, 200)[::2]
    with pytest.raises(NotFoundError):
        await client.get_runs([*ids, "0123456789abcdef01234567"])
    sent = client.requests_sent
    with pytest.raises(ValueError, match="run_id"):
        await client.get_runs([*ids, "nope"])
    with pytest.raises(ValueError, match="single string"):
        await client.get_runs(ids[0])
    with pytest.raises(ValueError, match="max_in_flight"):
        await client.get_runs(ids, max_in_flight=0)
    assert client.requests_sent == sent
