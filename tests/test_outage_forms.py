"""The emulator's outage forms and the command line through an outage, in real time.

The watch's own behaviour through outages is in ``tests/test_outage.py``, on virtual time.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import anyio
import pytest

from asyncclient import APIConnectionError, Client, RetryPolicy
from asyncclient.testing import Emulator, EmulatorServer, Fault, Faults, ManualClock
from asyncclient.testing import __main__ as entry

pytestmark = pytest.mark.anyio

RUNS = 20


def make_runs(emulator: Emulator, count: int) -> list[str]:
    """Runs that take 100 emulated seconds: processing until the test moves the clock."""
    return [emulator.create_run(n_tasks=1, durations=[100.0], event_bytes=0) for _ in range(count)]


# -- the emulator's outage forms ---------------------------------------------------------------


def connect(port: int) -> bool:
    """Whether a TCP connection to the port is accepted."""
    with socket.socket() as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return False
        return True


async def test_refused_outage_closes_the_port_then_reopens_it(
    emulator: Emulator, server: EmulatorServer
) -> None:
    """A refused outage refuses connections and cuts open ones; the same port serves after it."""
    run_id = emulator.create_run(durations=[1.0])
    async with Client(
        server.api_key, base_url=server.base_url, retry=RetryPolicy(max_retries=0)
    ) as client:
        await client.get_run(run_id)  # a pooled keep-alive connection now exists
        fault = emulator.faults.outage(0.3, form="refused")
        await anyio.sleep(0.05)
        assert emulator.faults.refusing
        assert not await anyio.to_thread.run_sync(connect, server.port)
        with pytest.raises(APIConnectionError):
            await client.get_run(run_id)
        assert emulator.faults.remove(fault)
        await anyio.sleep(0.05)
        assert await anyio.to_thread.run_sync(connect, server.port)
        assert (await client.get_run(run_id)).id == run_id


async def test_scheduled_outage_begins_and_ends_on_time(
    emulator: Emulator, server: EmulatorServer
) -> None:
    """An outage with ``start`` leaves the API alone until then, and ends after its length."""
    run_id = emulator.create_run(durations=[1.0])
    emulator.faults.outage(0.2, form="refused", start=0.2)
    async with Client(
        server.api_key, base_url=server.base_url, retry=RetryPolicy(max_retries=0)
    ) as client:
        await client.get_run(run_id)
        assert not emulator.faults.active
        await anyio.sleep(0.3)
        with pytest.raises(APIConnectionError):
            await client.get_run(run_id)
        await anyio.sleep(0.2)
        assert (await client.get_run(run_id)).id == run_id


async def test_black_hole_accepts_and_never_answers(
    emulator: Emulator, server: EmulatorServer
) -> None:
    """A black hole holds requests past the client's timeout; when it ends the API answers."""
    run_id = emulator.create_run(durations=[1.0])
    retry = RetryPolicy(max_retries=0)
    async with Client(server.api_key, base_url=server.base_url, retry=retry, timeout=0.1) as client:
        fault = emulator.faults.outage(60.0, form="blackhole")
        assert await anyio.to_thread.run_sync(connect, server.port)
        with anyio.fail_after(5), pytest.raises(APIConnectionError, match="timed out"):
            await client.get_run(run_id)
        assert emulator.faults.injected["blackhole"] == 1
        emulator.faults.remove(fault)
        assert (await client.get_run(run_id)).id == run_id


def test_refused_is_an_outage_form_only() -> None:
    """A refused fault closes the whole listener, so it is refused as a per-request fault."""
    with pytest.raises(ValueError, match="form='refused'"):
        Faults().add(Fault("refused"))
    with pytest.raises(ValueError, match="form"):
        Faults().outage(1.0, form="gone")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="start"):
        Faults().outage(1.0, start=-1.0)
    (hole,) = Faults().add_spec("get/blackhole:0.5")
    assert (hole.kind, hole.route, hole.rate) == ("blackhole", "get", 0.5)


# -- the command line --------------------------------------------------------------------------

PYTHON = (sys.executable, "-W", "error", "-m", "asyncclient")


async def test_cli_watch_rides_out_a_refused_outage(
    emulator: Emulator, server: EmulatorServer, clock: ManualClock, tmp_path: Path
) -> None:
    """`runs watch` through a 2-minute refused outage exits 0 with every run in the file once."""
    ids = make_runs(emulator, RUNS)
    out = tmp_path / "results.jsonl"
    scale = 0.01  # the CLI's testing delay scale: probes every 0.15 s, --max-outage 6 s
    length = 2 * 60.0 * scale
    argv = [*PYTHON, "runs", "watch", *ids, "--out", str(out)]
    argv += ["--base-url", server.base_url, "--api-key", server.api_key]
    with anyio.fail_after(30):
        env = os.environ | {"ASYNCCLIENT_TESTING_DELAY_SCALE": str(scale)}
        async with await anyio.open_process(argv, stderr=subprocess.PIPE, env=env) as process:
            while emulator.request_count < 3:  # it is watching (a scan or GETs, then more)
                await anyio.sleep(0.02)
            emulator.faults.outage(length, form="refused")
            clock.advance(1_000.0)
            code = await process.wait()
            assert process.stderr is not None
            stderr = (await process.stderr.receive()).decode()
    assert code == 0, stderr
    lines = [json.loads(line) for line in out.read_bytes().splitlines()]
    assert Counter(line["runId"] for line in lines) == Counter(ids)
    assert all(line["status"] == "completed" for line in lines)
    logged = stderr.splitlines()
    assert "Traceback" not in stderr
    assert logged[0].startswith("asyncclient: the API is unreachable (")
    assert logged[1].startswith("asyncclient: the API answers again, after ")
    assert logged[2].startswith(f"watched {RUNS} runs: {RUNS} completed")


async def test_emulator_command_line_schedules_outages() -> None:
    """`asyncclient emulator --outage refused:START:SECONDS` closes its port on that schedule."""
    argv = [*PYTHON, "emulator", "--port", "0", "--runs", "1", "--outage", "refused:0.5:0.5"]
    async with await anyio.open_process(argv) as process:
        assert process.stdout is not None
        seen = b""
        with anyio.fail_after(15):
            while b"\n" not in seen:
                seen += await process.stdout.receive()
        port = int(seen.split(b"\n", 1)[0].decode().rsplit(":", 1)[1])
        assert await anyio.to_thread.run_sync(connect, port)
        await anyio.sleep(0.7)
        assert not await anyio.to_thread.run_sync(connect, port)
        await anyio.sleep(0.6)
        assert await anyio.to_thread.run_sync(connect, port)
        process.terminate()
        with anyio.fail_after(10):
            assert await process.wait() == 0


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param("gone:1:2", id="unknown-form"),
        pytest.param("refused:1", id="two-parts"),
        pytest.param("refused:soon:2", id="not-a-number"),
        pytest.param("refused:1:-2", id="negative"),
        pytest.param("200:1:2", id="not-an-error-status"),
    ],
)
def test_emulator_command_line_refuses_malformed_outages(
    spec: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A malformed ``--outage`` is a usage error (exit 2) naming the option."""
    with pytest.raises(SystemExit) as info:
        entry.main(["--outage", spec])
    assert info.value.code == 2
    assert "--outage" in capsys.readouterr().err
