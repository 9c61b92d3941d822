"""Leaving a task group an object owns: cancel what still runs, raise a lone error as itself."""

from __future__ import annotations

import sys

import anyio
import anyio.abc
import pytest

from asyncclient._concurrency import close_task_group

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import ExceptionGroup

pytestmark = pytest.mark.anyio


async def entered() -> anyio.abc.TaskGroup:
    """A task group entered by hand, as the client and the watch enter theirs."""
    task_group = anyio.create_task_group()
    await task_group.__aenter__()
    return task_group


async def test_leaving_cancels_what_still_runs() -> None:
    """A child still running when the owner leaves is cancelled, and leaving raises nothing."""
    task_group = await entered()
    cancelled = anyio.Event()

    async def forever(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise

    await task_group.start(forever)
    await close_task_group(task_group, None, None, None)
    assert cancelled.is_set()


async def test_a_lone_child_error_comes_out_unwrapped() -> None:
    """One failing child raises its own error (with its cause), not an exception group."""
    task_group = await entered()

    async def fail() -> None:
        raise ValueError("boom") from KeyError("why")

    task_group.start_soon(fail)
    with pytest.raises(ValueError, match="boom") as info:
        await close_task_group(task_group, None, None, None)
    assert type(info.value) is ValueError
    assert isinstance(info.value.__cause__, KeyError)


async def test_several_child_errors_stay_a_group() -> None:
    """Two real errors are both kept: the group is raised as it is."""
    task_group = await entered()

    async def fail(message: str) -> None:
        raise ValueError(message)

    task_group.start_soon(fail, "one")
    task_group.start_soon(fail, "two")
    with pytest.raises(ExceptionGroup) as info:
        await close_task_group(task_group, None, None, None)
    assert sorted(str(error) for error in info.value.exceptions) == ["one", "two"]
