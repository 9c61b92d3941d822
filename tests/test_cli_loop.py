"""Which event loop the command line runs on: uvloop with the ``speed`` extra, else asyncio's.

uvloop need not be installed here: a stand-in module named ``uvloop`` (whose ``run`` records the
call and hands the coroutine to ``asyncio.run``) shows that the command line gives its commands to
uvloop when it finds one, and ``sys.modules["uvloop"] = None`` makes it absent. Where the real one
is installed, every subprocess test of ``test_cli.py`` runs on it.
"""

from __future__ import annotations

import asyncio
import importlib.machinery
import sys
import types
from collections.abc import Coroutine
from typing import Any

import pytest

from asyncclient._cli import _exit, _loop, main

MISSING_ID = "0123456789abcdef01234567"


class _StandIn:
    """What the command line sees as uvloop: records each run, runs it on asyncio's loop."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.runs = 0
        module = types.ModuleType("uvloop")
        module.__spec__ = importlib.machinery.ModuleSpec("uvloop", None)
        module.run = self.run  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "uvloop", module)

    def run(self, main: Coroutine[Any, Any, int]) -> int:
        self.runs += 1
        return asyncio.run(main)


def _command(seen: list[str]) -> Coroutine[Any, Any, int]:
    async def command() -> int:
        seen.append(type(asyncio.get_running_loop()).__module__)
        return 7

    return command()


def test_commands_run_on_uvloop_when_it_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """With uvloop importable (``asyncclient[speed]``) a command is handed to ``uvloop.run``."""
    monkeypatch.delenv("ASYNCCLIENT_LOOP", raising=False)
    uvloop = _StandIn(monkeypatch)
    seen: list[str] = []
    assert _loop.run_command(lambda: _command(seen)) == 7
    assert uvloop.runs == 1
    assert len(seen) == 1


@pytest.mark.parametrize("value", ["asyncio", "ASYNCIO", " asyncio "])
def test_asyncio_loop_can_be_forced(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """``ASYNCCLIENT_LOOP=asyncio`` runs on asyncio's own loop even where uvloop is installed."""
    monkeypatch.setenv("ASYNCCLIENT_LOOP", value)
    uvloop = _StandIn(monkeypatch)
    seen: list[str] = []
    assert _loop.run_command(lambda: _command(seen)) == 7
    assert uvloop.runs == 0
    assert seen == ["asyncio.unix_events" if sys.platform != "win32" else "asyncio.windows_events"]


def test_without_uvloop_commands_run_on_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the ``speed`` extra the default choice is asyncio's loop, silently."""
    monkeypatch.delenv("ASYNCCLIENT_LOOP", raising=False)
    monkeypatch.setitem(sys.modules, "uvloop", None)
    assert _loop.event_loop_name() == "asyncio"
    seen: list[str] = []
    assert _loop.run_command(lambda: _command(seen)) == 7
    assert len(seen) == 1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("uvloop", "pip install 'asyncclient[speed]'", id="uvloop-missing"),
        pytest.param("trio", "ASYNCCLIENT_LOOP must be one of auto, asyncio, uvloop", id="unknown"),
    ],
)
def test_bad_loop_choice_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    """An unknown ``ASYNCCLIENT_LOOP``, or a missing uvloop asked for, exits 2 before a request."""
    monkeypatch.setenv("ASYNCCLIENT_LOOP", value)
    monkeypatch.setitem(sys.modules, "uvloop", None)
    # Nothing listens on port 9: the command fails this way only if it never ran.
    argv = ["runs", "get", MISSING_ID, "--api-key", "k", "--base-url", "http://127.0.0.1:9"]
    assert main(argv) == _exit.EXIT_USAGE
    assert message in capsys.readouterr().err
