"""Owning a task group: leaving cancels what still runs, and a lone error comes out as itself."""

from __future__ import annotations

import sys

import anyio
import anyio.abc
import pytest

from asyncclient._concurrency import owned_task_group

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import ExceptionGroup

pytestmark = pytest.mark.anyio


async def test_leaving_cancels_what_still_runs() -> None:
    """A child still running when the owner leaves is cancelled, and leaving raises nothing."""
    cancelled = anyio.Event()

    async def forever(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise

    async with owned_task_group() as task_group:
        await task_group.start(forever)
    assert cancelled.is_set()


async def test_a_lone_child_error_comes_out_unwrapped() -> None:
    """One failing child raises its own error (with its cause), not an exception group."""

    async def fail() -> None:
        raise ValueError("boom") from KeyError("why")

    async def own() -> None:
        async with owned_task_group() as task_group:
            task_group.start_soon(fail)
            await anyio.sleep_forever()

    with pytest.raises(ValueError, match="boom") as info:
        await own()
    assert type(info.value) is ValueError
    assert isinstance(info.value.__cause__, KeyError)


async def test_an_error_of_the_block_comes_out_as_itself() -> None:
    """An error raised in the owner's block leaves as that very error, not wrapped."""
    raised = LookupError("mine")

    async def own() -> None:
        async with owned_task_group():
            raise raised

    with pytest.raises(LookupError) as info:
        await own()
    assert info.value is raised


async def test_several_child_errors_stay_a_group() -> None:
    """Two real errors are both kept: the group is raised as it is."""

    async def fail(message: str) -> None:
        raise ValueError(message)

    async def own() -> None:
        async with owned_task_group() as task_group:
            task_group.start_soon(fail, "one")
            task_group.start_soon(fail, "two")
            await anyio.sleep_forever()

    with pytest.raises(ExceptionGroup) as info:
        await own()
    assert sorted(str(error) for error in info.value.exceptions) == ["one", "two"]
