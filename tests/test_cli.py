"""The ``asyncclient`` command line, driven as a subprocess against the emulator on loopback.

The emulator runs in the test process on a manual clock: a test moves time to finish runs while
the command is polling, so watches finish when the test says, not after real waiting.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest

from asyncclient import Client, Run, __version__
from asyncclient.testing import Emulator, EmulatorServer, ManualClock, TaskPlan

pytestmark = pytest.mark.anyio

# The subprocess turns warnings into errors too, so an unclosed session shows up on stderr.
PYTHON = (sys.executable, "-W", "error", "-m", "asyncclient")
# The testing switch (set_testing) from outside: polling and retrying at 1/100 of the production
# delays (first poll after 10 ms, 404 grace 0.1 s); time budgets such as --max-outage stay as
# given. Every subprocess gets it.
FAST = {"ASYNCCLIENT_TESTING_DELAY_SCALE": "0.01"}
MISSING_ID = "0123456789abcdef01234567"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDEV_")}
    env["COLUMNS"] = "200"
    return env | FAST


def _api(server: EmulatorServer, key: str | None = None) -> tuple[str, ...]:
    return ("--base-url", server.base_url, "--api-key", key or server.api_key)


async def _cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    with anyio.fail_after(30):
        return await anyio.run_process([*PYTHON, *args], input=stdin, check=False, env=_env())


def _clean(stderr: bytes) -> str:
    text = stderr.decode()
    assert "Traceback" not in text
    assert "Warning" not in text
    assert "\x1b" not in text  # no progress bar when stderr is not a terminal
    return text


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


async def _wire(server: EmulatorServer, path: str) -> Any:
    headers = {"Authorization": f"Bearer {server.api_key}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(server.base_url + path, headers=headers) as response,
    ):
        return json.loads(await response.read())


def _holds(outer: Any, inner: Any) -> bool:
    """True when every field of ``inner`` (the wire JSON) is in ``outer`` with the same value."""
    if isinstance(inner, dict):
        return isinstance(outer, dict) and all(
            key in outer and _holds(outer[key], value) for key, value in inner.items()
        )
    if isinstance(inner, list):
        return (
            isinstance(outer, list)
            and len(outer) == len(inner)
            and all(_holds(a, b) for a, b in zip(outer, inner, strict=True))
        )
    if isinstance(inner, str) and isinstance(outer, str) and outer != inner:
        instant = _instant(inner)  # the same time, written another way
        return instant is not None and instant == _instant(outer)
    return bool(outer == inner)


def _instant(text: str) -> datetime | None:
    try:
        return msgspec.json.decode(json.dumps(text), type=datetime)
    except msgspec.ValidationError:
        return None


def _plan(finish: float, status: str = "SUCCESS") -> TaskPlan:
    data = {"title": "Example Domain"} if status == "SUCCESS" else None
    return TaskPlan("https://example.com", "Extract the heading.", {}, finish, status, data)


@pytest.fixture
async def api(server: EmulatorServer) -> AsyncIterator[Client]:
    """An in-process client to compare the command's output with."""
    async with Client(server.api_key, base_url=server.base_url) as client:
        yield client


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- runs get --------------------------------------------------------------------------------


async def test_get_json_is_the_run_as_the_api_sent_it(
    server: EmulatorServer, emulator: Emulator, clock: ManualClock, api: Client
) -> None:
    """`runs get ID --json` prints the run: every wire field, with the wire's values."""
    run_id = emulator.create_run(tasks=[_plan(1.0), _plan(2.0, "TIMEOUT")])
    clock.advance(3.0)
    result = await _cli("runs", "get", run_id, "--json", *_api(server))
    assert result.returncode == 0, result.stderr
    _clean(result.stderr)
    printed = json.loads(result.stdout)
    assert msgspec.json.decode(result.stdout, type=Run) == await api.get_run(run_id)
    assert _holds(printed, await _wire(server, f"/browser-agent/{run_id}"))
    assert printed["status"] == "completed"
    assert [task["status"] for task in printed["results"]] == ["SUCCESS", "TIMEOUT"]


async def test_get_shows_tasks_and_the_event_timeline(
    server: EmulatorServer, emulator: Emulator, clock: ManualClock
) -> None:
    """`runs get ID --events` shows the run, each task's outcome and one line per event."""
    run_id = emulator.create_run(
        tasks=[_plan(1.0), _plan(2.0, "BLOCKED")], fail_with="Run aborted: test"
    )
    clock.advance(3.0)
    result = await _cli("runs", "get", run_id, "--events", *_api(server))
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert f"run {run_id}  failed  2/2 tasks" in text
    assert "error     Run aborted: test" in text
    assert "task 0  SUCCESS" in text
    assert '"title":"Example Domain"' in text
    assert "task 1  ERROR" in text
    for kind in ("navigation", "plan", "action", "screenshot", "done"):
        assert f"  {kind} " in text
    assert "https://cdn.pre.dev/screenshots/" in text
    assert "events" not in (await _cli("runs", "get", run_id, *_api(server))).stdout.decode()


# -- runs list -------------------------------------------------------------------------------


async def test_list_json_walks_every_run_newest_first(
    server: EmulatorServer, emulator: Emulator, clock: ManualClock
) -> None:
    """`runs list --all --json` is one JSON run per line, in the API's order, each once."""
    emulator.populate(130, max_duration=10.0)
    clock.advance(5.0)
    result = await _cli("runs", "list", "--all", "--json", *_api(server))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["id"] for row in rows] == emulator.run_ids("test-key")
    failed = await _cli("runs", "list", "--status", "failed", "--all", "--json", *_api(server))
    failed_ids = [json.loads(line)["id"] for line in failed.stdout.splitlines()]
    assert failed_ids == [row["id"] for row in rows if row["status"] == "failed"]
    assert failed_ids


async def test_list_table_shows_one_page_and_says_there_is_more(
    server: EmulatorServer, emulator: Emulator
) -> None:
    """`runs list --limit N` prints a header and N rows, and notes on stderr what is left."""
    for _ in range(8):
        emulator.create_run(n_tasks=2, durations=[1.0, 2.0])
    newest = emulator.run_ids("test-key")[:5]
    result = await _cli("runs", "list", "--limit", "5", *_api(server))
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.decode().splitlines()
    assert header.split()[:4] == ["id", "status", "tasks", "credits"]
    assert [row.split()[:3] for row in rows] == [[i, "processing", "0/2"] for i in newest]
    assert "5 of 8 runs" in _clean(result.stderr)


# -- runs watch ------------------------------------------------------------------------------


async def test_watch_writes_a_line_per_run_and_exits_0_when_all_completed(
    server: EmulatorServer, emulator: Emulator, clock: ManualClock, api: Client, tmp_path: Path
) -> None:
    """Ids from stdin (comments, blanks, repeats) are watched; each finished run is one line."""
    ids = [emulator.create_run(tasks=[_plan(float(n))]) for n in range(1, 4)]
    clock.advance(5.0)
    stdin = f"# my runs\n{ids[0]}\n\n{ids[1]}  # second\n{ids[2]}\n{ids[0]}\n".encode()
    out = tmp_path / "results.jsonl"
    result = await _cli(
        "runs", "watch", "--ids-file", "-", "--out", str(out), *_api(server), stdin=stdin
    )
    assert result.returncode == 0, result.stderr
    assert "watched 3 runs: 3 completed" in _clean(result.stderr)
    lines = _lines(out)
    assert sorted(line["runId"] for line in lines) == sorted(ids)
    for line in lines:
        assert line["status"] == "completed"
        assert line["error"] is None
        expected = msgspec.json.encode(await api.get_run(line["runId"]))
        assert line["run"] == json.loads(expected)


async def test_watch_keeps_under_max_requests_per_second(
    server: EmulatorServer, emulator: Emulator, clock: ManualClock, tmp_path: Path
) -> None:
    """``--max-requests-per-second`` under the key's limit: every run recorded, never a 429."""
    ids = [emulator.create_run(tasks=[_plan(1.0)]) for _ in range(6)]
    clock.advance(5.0)
    emulator.rate_limits.set(20, burst=2)
    emulator.list_rows = "stub"  # no list page settles a run: each takes its paced GET
    out = tmp_path / "results.jsonl"
    result = await _cli(
        "runs", "watch", *ids, "--out", str(out), "--max-requests-per-second", "8",
        *_api(server),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(line["runId"] for line in _lines(out)) == sorted(ids)
    assert emulator.rate_limits.limited[server.api_key] == 0
    assert emulator.rate_limits.admitted[server.api_key] >= len(ids)
    bad = await _cli("runs", "watch", ids[0], "--max-requests-per-second", "0", *_api(server))
    assert bad.returncode == 2
    assert "--max-requests-per-second" in bad.stderr.decode()


async def test_watch_exits_1_when_a_run_failed_or_is_not_found(
    server: EmulatorServer, emulator: Emulator, clock: ManualClock
) -> None:
    """A failed run and an unknown id are reported on their lines, and the exit code is 1."""
    done = emulator.create_run(tasks=[_plan(1.0)])
    failed = emulator.create_run(tasks=[_plan(1.0), _plan(2.0)], fail_with="Run aborted: test")
    clock.advance(3.0)
    result = await _cli("runs", "watch", done, failed, MISSING_ID, "-q", *_api(server))
    assert result.returncode == 1, result.stderr
    assert result.stderr == b""  # --quiet
    lines = {line["runId"]: line for line in map(json.loads, result.stdout.splitlines())}
    assert lines[done]["status"] == "completed"
    assert lines[failed]["status"] == "failed"
    assert lines[failed]["run"]["error"] == "Run aborted: test"
    assert lines[MISSING_ID]["status"] is None
    assert lines[MISSING_ID]["run"] is None
    assert lines[MISSING_ID]["error"]["type"] == "NotFoundError"
    assert lines[MISSING_ID]["error"]["status"] == 404


async def _wait_for_lines(path: Path, count: int) -> None:
    file = anyio.Path(path)
    with anyio.fail_after(15):
        while True:
            if await file.exists() and (await file.read_bytes()).count(b"\n") >= count:
                return
            await anyio.sleep(0.02)


async def test_resume_after_a_kill_records_every_run_exactly_once(
    server: EmulatorServer, emulator: Emulator, clock: ManualClock, tmp_path: Path
) -> None:
    """A watch killed half-way (even mid-line) resumes without losing or repeating a run."""
    ids = [emulator.create_run(tasks=[_plan(float(n))]) for n in range(1, 7)]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(ids) + "\n")
    out = tmp_path / "results.jsonl"
    argv = ("runs", "watch", "--ids-file", str(ids_file), "--out", str(out), *_api(server))
    async with await anyio.open_process([*PYTHON, *argv], env=_env()) as process:
        clock.advance(3.5)  # runs 1..3 finish; 4..6 keep processing
        await _wait_for_lines(out, 3)
        process.send_signal(signal.SIGKILL)
        assert await process.wait() == -signal.SIGKILL
    with out.open("ab") as torn:
        torn.write(b'{"runId": "' + ids[3].encode() + b'", "status": "comp')
    clock.advance(5.0)
    result = await _cli(*argv, "--resume")
    assert result.returncode == 0, result.stderr
    assert "3 already in" in _clean(result.stderr)
    recorded = [line["runId"] for line in _lines(out)]
    assert sorted(recorded) == sorted(ids)
    assert sorted(recorded[:3]) == sorted(ids[:3])  # the lines before the kill are kept


async def test_resume_refuses_a_file_holding_a_line_that_is_not_a_result(
    server: EmulatorServer, emulator: Emulator, tmp_path: Path
) -> None:
    """Only a torn last line (no newline) is cut off; a whole bad line is an error naming it."""
    run_id = emulator.create_run(tasks=[_plan(0.0)])
    out = tmp_path / "results.jsonl"
    out.write_bytes(b'{"runId": "x"}\nnot json\n{"runId": "y"}\n')
    result = await _cli("runs", "watch", run_id, "--out", str(out), "--resume", *_api(server))
    assert result.returncode == 2
    assert f"{out}, line 2: not a result line" in _clean(result.stderr)
    assert out.read_bytes() == b'{"runId": "x"}\nnot json\n{"runId": "y"}\n'


async def test_ctrl_c_exits_130_and_leaves_only_whole_lines(
    server: EmulatorServer, emulator: Emulator, clock: ManualClock, tmp_path: Path
) -> None:
    """SIGINT stops the watch with exit 130, one line on stderr, and a file of whole lines."""
    ids = [emulator.create_run(tasks=[_plan(float(n))]) for n in range(1, 5)]
    out = tmp_path / "results.jsonl"
    stderr_path = tmp_path / "stderr.txt"
    argv = [*PYTHON, "runs", "watch", *ids, "--out", str(out), *_api(server)]
    with stderr_path.open("wb") as stderr:
        async with await anyio.open_process(argv, env=_env(), stderr=stderr) as process:
            clock.advance(2.5)
            await _wait_for_lines(out, 2)
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(10):
                assert await process.wait() == 130
    text = _clean(stderr_path.read_bytes())
    assert text.splitlines() == [
        "asyncclient: error: interrupted; 2 new runs recorded in "
        f"{out}; rerun with --resume to go on"
    ]
    assert sorted(line["runId"] for line in _lines(out)) == sorted(ids[:2])
    assert out.read_bytes().endswith(b"\n")


async def test_watch_with_events_records_each_task_timeline(
    server: EmulatorServer, emulator: Emulator, clock: ManualClock, tmp_path: Path
) -> None:
    """`--events` puts every task's event timeline in the recorded run."""
    run_id = emulator.create_run(tasks=[_plan(1.0), _plan(2.0, "LOOP")])
    clock.advance(3.0)
    result = await _cli("runs", "watch", run_id, "--events", "-q", *_api(server))
    assert result.returncode == 0, result.stderr
    (line,) = [json.loads(line) for line in result.stdout.splitlines()]
    wire = await _wire(server, f"/browser-agent/{run_id}?includeEvents=true")
    assert _holds(line["run"], wire)
    assert [task["events"][-1]["data"]["status"] for task in line["run"]["results"]] == [
        "SUCCESS",
        "LOOP",
    ]


@pytest.mark.parametrize(
    ("options", "shown"),
    [pytest.param((), True, id="terminal"), pytest.param(("--quiet",), False, id="quiet")],
)
async def test_progress_is_drawn_only_on_a_terminal(
    server: EmulatorServer,
    emulator: Emulator,
    clock: ManualClock,
    tmp_path: Path,
    options: Sequence[str],
    shown: bool,
) -> None:
    """With stderr on a terminal the watch draws a progress bar, unless --quiet."""
    import pty  # POSIX only; rich comes with the test install (the cli extra)

    ids = [emulator.create_run(tasks=[_plan(1.0)]) for _ in range(3)]
    clock.advance(2.0)
    out = tmp_path / "results.jsonl"
    argv = [*PYTHON, "runs", "watch", *ids, "--out", str(out), *options, *_api(server)]
    controller, terminal = pty.openpty()
    try:
        async with await anyio.open_process(
            argv, env=_env(), stdout=subprocess.DEVNULL, stderr=terminal
        ) as process:
            with anyio.fail_after(20):
                assert await process.wait() == 0
        os.set_blocking(controller, False)
        drawn = b""
        with contextlib.suppress(OSError):
            while chunk := os.read(controller, 65536):
                drawn += chunk
    finally:
        os.close(controller)
        os.close(terminal)
    assert (b"3/3" in drawn) is shown
    assert (b"\x1b[" in drawn) is shown
    assert len(_lines(out)) == 3


# -- errors and exit codes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(("runs", "get", "not-an-id"), "'not-an-id' is not a run id", id="get-bad-id"),
        pytest.param(
            ("runs", "watch", MISSING_ID, "xyz"), "'xyz' is not a run id", id="watch-bad-id"
        ),
        pytest.param(
            ("runs", "watch", "--ids-file", "{ids}"), "ids.txt, line 3: 'nope'", id="bad-line"
        ),
        pytest.param(
            ("runs", "watch", "--ids-file", "{missing}"),
            "Invalid value for '--ids-file'",
            id="no-file",
        ),
        pytest.param(("runs", "watch"), "no runs to watch", id="no-ids"),
        pytest.param(("runs", "watch", MISSING_ID, "--resume"), "--resume needs", id="resume"),
        pytest.param(("runs", "list", "--limit", "0"), "0 is not in the range x>=1", id="click"),
        pytest.param(("runs", "frobnicate"), "No such command 'frobnicate'", id="unknown-command"),
    ],
)
async def test_usage_errors_exit_2_with_one_line(
    server: EmulatorServer, tmp_path: Path, argv: Sequence[str], message: str
) -> None:
    """A bad id, a bad ids file or a bad option is one clear line on stderr and exit code 2."""
    ids = tmp_path / "ids.txt"
    ids.write_text(f"# header\n{MISSING_ID}\nnope\n")
    filled = [arg.format(ids=ids, missing=tmp_path / "missing.txt") for arg in argv]
    result = await _cli(*filled, *(_api(server) if filled[1] != "frobnicate" else ()))
    assert result.returncode == 2
    text = _clean(result.stderr)
    assert message in text
    assert result.stdout == b""


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(("runs", "get", MISSING_ID), id="get"),
        pytest.param(("runs", "list"), id="list"),
        pytest.param(("runs", "watch", MISSING_ID), id="watch"),
    ],
)
async def test_a_refused_or_missing_key_exits_3(
    server: EmulatorServer, argv: Sequence[str]
) -> None:
    """401 and a missing key both exit 3 with one line, never echoing the key."""
    refused = await _cli(*argv, *_api(server, key="wrong-secret"))
    assert refused.returncode == 3
    text = _clean(refused.stderr)
    assert text.startswith("asyncclient: error: the API key was refused (401")
    assert "wrong-secret" not in text
    missing = await _cli(*argv, "--base-url", server.base_url)
    assert missing.returncode == 3
    assert "no API key: pass --api-key or set PREDEV_API_KEY" in _clean(missing.stderr)


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(("runs", "get", MISSING_ID), id="get"),
        # A time budget, not scaled: a tenth of a second of riding it out.
        pytest.param(
            ("runs", "watch", MISSING_ID, "--out", "{out}", "--max-outage", "0.1"),
            id="watch",
        ),
    ],
)
async def test_an_unreachable_host_exits_4(
    closed_port: int, tmp_path: Path, argv: Sequence[str]
) -> None:
    """Nothing listening: exit 4 with a line naming the host (watch: after --max-outage)."""
    out = tmp_path / "results.jsonl"
    base_url = f"http://127.0.0.1:{closed_port}"
    filled = [arg.format(out=out) for arg in argv]
    result = await _cli(*filled, "--base-url", base_url, "--api-key", "k")
    assert result.returncode == 4
    *logged, line = _clean(result.stderr).splitlines()
    assert line.startswith(f"asyncclient: error: cannot reach {base_url} (")
    if "watch" in argv:
        assert "unreachable for" in line
        (began,) = logged  # the watch said when the outage began, then gave up
        assert began.startswith("asyncclient: the API is unreachable (")
    else:
        assert logged == []
    assert not out.exists() or out.read_bytes() == b""


async def test_key_and_base_url_come_from_the_environment(
    server: EmulatorServer, emulator: Emulator
) -> None:
    """PREDEV_API_KEY and PREDEV_BASE_URL stand in for --api-key and --base-url."""
    run_id = emulator.create_run(tasks=[_plan(1.0)])
    env = _env() | {"PREDEV_API_KEY": server.api_key, "PREDEV_BASE_URL": server.base_url}
    with anyio.fail_after(30):
        result = await anyio.run_process([*PYTHON, "runs", "get", run_id, "--json"], env=env)
    assert json.loads(result.stdout)["id"] == run_id


# -- emulator and demo -----------------------------------------------------------------------


async def test_emulator_command_serves_runs_until_terminated() -> None:
    """`asyncclient emulator` prints its URL, serves its runs, and stops on SIGTERM."""
    argv = [*PYTHON, "emulator", "--port", "0", "--runs", "7", "--api-key", "emu-key"]
    async with await anyio.open_process(argv, env=_env()) as process:
        assert process.stdout is not None
        seen = b""
        with anyio.fail_after(15):
            while b"\n" not in seen:
                seen += await process.stdout.receive()
        base_url = seen.split(b"\n", 1)[0].decode()
        result = await _cli(
            "runs", "list", "--json", "--base-url", base_url, "--api-key", "emu-key"
        )
        assert len(result.stdout.splitlines()) == 7
        process.terminate()
        with anyio.fail_after(10):
            assert await process.wait() == 0


async def test_demo_watches_every_run_and_prints_the_summary() -> None:
    """`asyncclient demo` needs no key, exits 0, and ends with the summary on stdout."""
    result = await _cli("demo", "--runs", "40", "--speed", "300")
    assert result.returncode == 0, result.stderr
    _clean(result.stderr)
    title, *lines = result.stdout.decode().splitlines()
    assert title == "demo: 40 runs, speed ×300"
    rows = dict(line.strip().split("  ", 1) for line in lines)
    rows = {label: value.strip() for label, value in rows.items()}
    assert rows["runs"] == "40"
    assert int(rows["completed"]) + int(rows.get("failed", "0")) == 40
    assert int(rows["requests made"]) >= 80  # 40 submits, then at least one GET per run
    assert int(rows["submits"]) == 40
    assert int(rows["polls and list scans"]) == int(rows["requests made"]) - 40
    for label in ("credits used", "run duration p50", "run duration p90"):
        assert rows[label]
    assert float(rows["watch requests per run"]) >= 1.0
    assert rows["wall time"].endswith(" s")


# -- the program -----------------------------------------------------------------------------


async def test_help_and_version_need_no_command() -> None:
    """`--help` lists every command group and `--version` prints the installed version."""
    help_text = await _cli("--help")
    assert help_text.returncode == 0
    for command in ("runs", "emulator", "demo", "temporal"):
        assert f"  {command} " in help_text.stdout.decode()
    version = await _cli("--version")
    assert (version.returncode, version.stdout.decode()) == (0, f"asyncclient {__version__}\n")
    missing = await _cli()
    assert missing.returncode == 2
    assert _clean(missing.stderr).startswith("asyncclient: error: Missing command")


async def test_runs_commands_do_not_import_the_emulator(server: EmulatorServer) -> None:
    """`runs get` loads neither the emulator nor aiohttp's server: those are for `emulator`."""
    probe = (
        "import sys; from asyncclient._cli import main; "
        f"code = main(['runs', 'get', {MISSING_ID!r}, *sys.argv[1:]]); "
        "print(code, sorted(m for m in sys.modules "
        "if m.startswith('asyncclient.testing') or m == 'aiohttp.web'))"
    )
    with anyio.fail_after(30):
        result = await anyio.run_process(
            [sys.executable, "-W", "error", "-c", probe, *_api(server)], check=False, env=_env()
        )
    assert result.stdout.decode().split(None, 1) == ["1", "[]\n"]


async def test_temporal_without_its_extra_is_a_usage_error_naming_it() -> None:
    """`asyncclient temporal worker` without temporalio installed: exit 2 and the pip command."""
    # A None entry in sys.modules makes `import temporalio` fail as if it were not installed.
    probe = (
        "import sys; sys.modules['temporalio'] = None; from asyncclient._cli import main; "
        "sys.exit(main(['temporal', 'worker', '--help']))"
    )
    with anyio.fail_after(30):
        result = await anyio.run_process(
            [sys.executable, "-W", "error", "-c", probe], check=False, env=_env()
        )
    assert result.returncode == 2
    assert _clean(result.stderr) == (
        "asyncclient: error: the temporal commands need the extra: "
        "pip install 'asyncclient[temporal]'\n"
    )


async def test_a_bad_testing_delay_scale_is_a_usage_error(server: EmulatorServer) -> None:
    """A malformed ASYNCCLIENT_TESTING_DELAY_SCALE is exit 2 with one line, before any request."""
    env = _env() | {"ASYNCCLIENT_TESTING_DELAY_SCALE": "fast"}
    with anyio.fail_after(30):
        result = await anyio.run_process(
            [*PYTHON, "runs", "watch", MISSING_ID, *_api(server)], check=False, env=env
        )
    assert result.returncode == 2
    assert _clean(result.stderr) == (
        "asyncclient: error: ASYNCCLIENT_TESTING_DELAY_SCALE must be a positive number, "
        "got 'fast'\n"
    )
