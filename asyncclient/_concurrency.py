"""Owning a task group from an async context manager: leave it cancelled, raise one error.

The client (page prefetches) and the watch (pollers) each enter an anyio task group in
``__aenter__`` and leave it in ``__aexit__``. Leaving cancels whatever still runs there, and an
error that a child raised comes out as itself rather than wrapped in an exception group.
"""

from __future__ import annotations

import sys
from types import TracebackType

import anyio
import anyio.abc

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["close_task_group"]


async def close_task_group(
    task_group: anyio.abc.TaskGroup,
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> None:
    """Cancel ``task_group`` and leave it, raising a lone child error unwrapped.

    The group's own cancellation is absorbed; a group of several real errors is raised as is.
    """
    task_group.cancel_scope.cancel()
    try:
        await task_group.__aexit__(exc_type, exc, tb)
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
