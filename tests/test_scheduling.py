"""The watch's schedule: due runs handed out in order, and a timer that never spins on uvloop."""

from __future__ import annotations

import math

import anyio
import pytest

from asyncclient._scheduling import RunSchedule, Watched, timer_wait
from asyncclient.testing import ManualClock


@pytest.mark.parametrize(
    "delay",
    [
        pytest.param(1e-7, id="a-tenth-of-a-microsecond"),
        pytest.param(0.0003, id="under-half-a-tick"),
        pytest.param(0.0007, id="over-half-a-tick"),
        pytest.param(0.001, id="one-tick"),
        pytest.param(0.0053, id="between-ticks"),
        pytest.param(1.2345678, id="a-second-and-a-bit"),
        pytest.param(15.0, id="the-cap"),
    ],
)
def test_timer_wait_ends_on_the_first_millisecond_tick_after_the_due_time(delay: float) -> None:
    """A run due between two ticks is waited for up to the later tick, never to the earlier."""
    wait = timer_wait(delay)
    ticks = math.ceil(delay * 1000)
    # uvloop rounds a timer to whole milliseconds: this one rounds to the tick after the due time.
    assert round(wait * 1000) == ticks
    assert wait < ticks / 1000  # a hair before the tick: float error cannot push it past
    assert wait >= delay - 1e-6
    assert wait - delay < 0.001


def test_timer_wait_for_parked_runs_is_unbounded() -> None:
    """With only parked runs (list scans watch them) the timer waits without a deadline."""
    assert timer_wait(math.inf) == math.inf


def test_take_due_hands_out_due_runs_only_and_skips_stale_entries() -> None:
    """``take_due`` never waits: a due run, in due order, or ``None``; stale entries are dropped."""
    clock = ManualClock(start=0.0)
    schedule = RunSchedule(clock)
    early, late, gone, busy = (Watched(name, 0.0, math.inf) for name in "abcd")
    schedule.put(late, 2.0)
    schedule.put(early, 1.0)
    schedule.put(gone, 0.5)
    schedule.put(busy, 0.5)
    gone.delivered = True
    busy.in_flight = True
    assert schedule.take_due() is None  # nothing due at 0
    clock.advance(1.0)
    assert schedule.take_due() is early  # delivered and in-flight entries were skipped
    assert schedule.take_due() is None
    schedule.put(late, 3.0)  # re-scheduled: its entry at 2.0 is stale
    clock.advance(1.5)  # 2.5
    assert schedule.take_due() is None
    clock.advance(0.5)  # 3.0
    assert schedule.take_due() is late


@pytest.mark.anyio
async def test_take_due_wakes_an_idle_worker_when_more_is_due() -> None:
    """A worker taking one of two due runs wakes a waiting worker for the other."""
    schedule = RunSchedule(ManualClock(start=0.0))
    taken: list[Watched] = []
    async with anyio.create_task_group() as task_group:

        async def worker() -> None:
            taken.append(await schedule.next_due())

        task_group.start_soon(worker)
        await anyio.wait_all_tasks_blocked()  # the worker waits: nothing is due
        first, second = Watched("a", 0.0, math.inf), Watched("b", 0.0, math.inf)
        schedule.put(first, 0.0)
        schedule.put(second, 0.0)
        assert schedule.take_due() is first  # and it wakes the waiting worker for the second
        await anyio.wait_all_tasks_blocked()
        assert taken == [second]  # (if it were not woken, the failure cancels it)
