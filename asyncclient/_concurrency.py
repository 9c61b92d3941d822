"""A task group owned by an object: left cancelled, with a lone error raised as itself.

The client (page prefetches) and the watch (pollers) each own an anyio task group for as long as
their ``async with`` block lasts (through anyio's ``AsyncContextManagerMixin``). Leaving cancels
whatever still runs there, and an error that a child (or the block) raised comes out as itself
rather than wrapped in an exception group.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["owned_task_group"]


@asynccontextmanager
async def owned_task_group() -> AsyncIterator[anyio.abc.TaskGroup]:
    """A task group that is cancelled when the block ends, raising a lone error unwrapped.

    The group's own cancellation is absorbed; a group of several real errors is raised as is.

    Yields:
        The task group, to start the owner's background tasks in.
    """
    try:
        async with anyio.create_task_group() as task_group:
            try:
                yield task_group
            finally:
                task_group.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        errors = [
            error
            for error in _leaves(group)
            if not isinstance(error, anyio.get_cancelled_exc_class())
        ]
        if len(errors) == 1:
            error = errors[0]
            raise error from error.__cause__
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            leaves.extend(_leaves(error))
        else:
            leaves.append(error)
    return leaves
