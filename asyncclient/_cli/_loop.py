"""The event loop commands run on: uvloop's where it is installed, else asyncio's own.

``ASYNCCLIENT_LOOP=asyncio`` forces asyncio's loop; ``=uvloop`` insists on uvloop (a usage
error without it).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import signal
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
    """Run a command to its end on the loop :func:`event_loop_name` picks.

    Ctrl-C cancels the command, which unwinds as any cancellation does (whole lines written,
    connections closed), then surfaces as ``KeyboardInterrupt``.
    """
    if event_loop_name() == "uvloop":
        # Imported by name: the package is typed without the speed extra installed.
        run: Callable[[Coroutine[Any, Any, int]], int] = importlib.import_module("uvloop").run
        return run(_interruptible(command))
    return asyncio.run(_interruptible(command))


async def _interruptible(command: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run ``command`` with SIGINT turned into a cancellation of it, on every Python.

    Python 3.11's ``asyncio.run`` does this itself; on 3.10 the default handler raises
    ``KeyboardInterrupt`` wherever the loop happens to be, which can leave it unable to finish
    (a watch that never exits). Handled through the loop, the signal arrives between steps.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    interrupted = False

    def interrupt() -> None:
        nonlocal interrupted
        interrupted = True
        if task is not None:
            task.cancel()

    try:
        loop.add_signal_handler(signal.SIGINT, interrupt)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
        return await command()
    try:
        return await command()
    except asyncio.CancelledError:
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGINT)
