"""The watch's timer waits in whole milliseconds: it never spins on uvloop's millisecond clock."""

from __future__ import annotations

import math

import pytest

from asyncclient._scheduling import timer_wait


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
