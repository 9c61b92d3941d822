"""The event loop commands run on: uvloop's where it is installed, else asyncio's own.

``ASYNCCLIENT_LOOP=asyncio`` forces asyncio's loop; ``=uvloop`` insists on uvloop (a usage
error without it).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
from collections.abc import Callable, Coroutine
from typing import Any

from ._exit import EXIT_USAGE, CliError

__all__ = ["event_loop_name", "run_command"]

_LOOP_ENV = "ASYNCCLIENT_LOOP"


_LOOPS = ("auto", "asyncio", "uvloop")


def event_loop_name() -> str:
    """The event loop commands run on: ``"uvloop"`` where it is installed, else ``"asyncio"``.

    ``ASYNCCLIENT_LOOP`` (``auto``, ``asyncio`` or ``uvloop``) overrides the choice.

    Raises:
        CliError: ``ASYNCCLIENT_LOOP`` is not one of those, or asks for a uvloop that is not
            installed (exit status 2).
    """
    wanted = os.environ.get(_LOOP_ENV, "auto").strip().lower() or "auto"
    if wanted not in _LOOPS:
        raise CliError(
            f"{_LOOP_ENV} must be one of {', '.join(_LOOPS)}, got {wanted!r}", EXIT_USAGE
        )
    if wanted == "asyncio":
        return "asyncio"
    if importlib.util.find_spec("uvloop") is None:
        if wanted == "uvloop":
            raise CliError(
                f"{_LOOP_ENV}=uvloop, but uvloop is not installed: "
                "pip install 'asyncclient[speed]'",
                EXIT_USAGE,
            )
        return "asyncio"
    return "uvloop"


def run_command(command: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run a command to its end on the loop :func:`event_loop_name` picks."""
    if event_loop_name() == "uvloop":
        # Imported by name: the package is typed without the speed extra installed.
        run: Callable[[Coroutine[Any, Any, int]], int] = importlib.import_module("uvloop").run
        return run(command())
    return asyncio.run(command())
