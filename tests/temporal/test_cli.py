"""The command line's answers that need no running batch: usage, missing key, no server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from asyncclient.temporal import watch_main, worker_main
from asyncclient.temporal._cli import main

UNREACHABLE = "127.0.0.1:1"


def _ids_file(tmp_path: Path) -> Path:
    path = tmp_path / "ids.txt"
    path.write_text("65f8a9d2c1e4b5a6f7e8d9c0\n")
    return path


def test_no_command_prints_usage_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a command the usage goes to stderr with status 2; --help to stdout with 0."""
    assert main([]) == 2
    assert "worker" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "watch" in capsys.readouterr().out
    assert main(["launch"]) == 2
    assert "unknown command 'launch'" in capsys.readouterr().err


def test_python_dash_m_runs_the_command_line() -> None:
    """python -m asyncclient.temporal is the same command line."""
    done = subprocess.run(
        [sys.executable, "-m", "asyncclient.temporal", "watch", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0
    assert "--ids-file" in done.stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(["--sink", "mysql://u:secret@h/db"], "unknown sink scheme", id="bad-sink"),
        pytest.param(["--ids-file", "/nonexistent/ids.txt"], "cannot read", id="no-ids-file"),
    ],
)
def test_watch_refuses_bad_input_before_touching_the_network(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    """A bad sink or an unreadable ids file is a usage error (2), found before any connection."""
    argv = ["--ids-file", str(_ids_file(tmp_path)), "--sink", f"sqlite:///{tmp_path}/r.db"]
    status = watch_main([*argv, *extra, "--address", UNREACHABLE])
    err = capsys.readouterr().err
    assert status == 2
    assert message in err
    assert "secret" not in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(["--interval", "0"], "--interval", id="interval"),
        pytest.param(["--timeout", "-1"], "--timeout", id="timeout"),
        pytest.param(["--max-parallel", "2001"], "limit of pending", id="max-parallel"),
        pytest.param(["--max-attempts", "0"], "--max-attempts", id="max-attempts"),
    ],
)
def test_watch_refuses_options_out_of_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    """Option values out of range, --max-parallel above Temporal's 2,000 pending activities
    included, stop the command with the usage status 2 and the reason."""
    assert watch_main(["--ids-file", str(_ids_file(tmp_path)), *extra]) == 2
    assert message in capsys.readouterr().err


def test_watch_without_temporal_says_it_cannot_reach_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No Temporal at the address: status 4 and the address in the message."""
    argv = ["--ids-file", str(_ids_file(tmp_path)), "--sink", f"sqlite:///{tmp_path}/r.db"]
    assert watch_main([*argv, "--address", UNREACHABLE]) == 4
    assert f"cannot reach Temporal at {UNREACHABLE}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(["--sink", "bogus://x"], id="bad-sink"),
        pytest.param(["--poll-max-delay", "0.001"], id="bad-policy"),
        pytest.param(["--max-shards", "0"], id="no-shards"),
        pytest.param(["--shutdown-grace", "-1"], id="negative-grace"),
        pytest.param(["--max-requests-per-second", "0"], id="no-rate"),
        pytest.param(["--max-requests-per-second", "nan"], id="nan-rate"),
    ],
)
def test_worker_refuses_bad_options(extra: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Options that make no worker stop the command with status 2 and the usage."""
    assert worker_main(["--api-key", "k", *extra]) == 2
    assert "Usage:" in capsys.readouterr().err


def test_worker_without_an_api_key_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """No --api-key and no PREDEV_API_KEY: status 3 and the variable's name."""
    monkeypatch.delenv("PREDEV_API_KEY", raising=False)
    assert worker_main(["--sink", f"sqlite:///{tmp_path}/r.db"]) == 3
    assert "PREDEV_API_KEY" in capsys.readouterr().err


def test_worker_without_temporal_says_it_cannot_reach_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """No Temporal at the address: status 4."""
    argv = ["--api-key", "k", "--sink", f"sqlite:///{tmp_path}/r.db", "--address", UNREACHABLE]
    assert worker_main(argv) == 4
    assert "cannot reach Temporal" in capsys.readouterr().err


def test_the_commands_take_the_name_they_are_wired_under(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Wired into another command line, usage shows that command's name."""
    for command in (watch_main, worker_main):
        for flag in ("--help", "-h"):
            assert command([flag], prog="asyncclient temporal x") == 0
            assert capsys.readouterr().out.startswith("Usage: asyncclient temporal x")


@pytest.mark.parametrize("command", ["worker", "watch"])
def test_asyncclient_temporal_hands_over_to_the_extra(command: str) -> None:
    """`asyncclient temporal worker|watch` is the extra's command line, under the main program."""
    done = subprocess.run(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-m", "asyncclient", "temporal", command, "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Usage: asyncclient temporal {command}")
    assert "--sink" in done.stdout
