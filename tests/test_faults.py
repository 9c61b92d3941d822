"""The emulator's fault mode: each kind of failure on the wire, per route, per rate, seeded."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anyio
import pytest

import asyncclient.testing.__main__ as entry
from asyncclient.testing import Emulator, EmulatorServer, Fault, Faults, ManualClock, serve

pytestmark = pytest.mark.anyio

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
async def emu() -> Emulator:
    """An emulator with one finished run and one key."""
    emulator = Emulator(api_keys=(KEY,), clock=ManualClock(), seed=3)
    emulator.create_run(durations=[0.0, 0.0], event_bytes=2_000)
    return emulator


@pytest.fixture
async def server(emu: Emulator) -> AsyncIterator[EmulatorServer]:
    """That emulator on loopback."""
    async with serve(emu) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp session (no SDK in the way), one connection per request."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        yield session


def run_url(server: EmulatorServer) -> str:
    """The URL of the emulator's only run."""
    return f"{server.base_url}/browser-agent/{server.emulator.run_ids()[0]}"


def list_url(server: EmulatorServer) -> str:
    """The list endpoint's URL."""
    return f"{server.base_url}/list-browser-agents?limit=5"


async def fetch(http: aiohttp.ClientSession, url: str) -> tuple[int, Any, bytes]:
    """Status, headers and body of one GET, with the key."""
    async with http.get(url, headers=AUTH) as response:
        return response.status, response.headers, await response.read()


# -- the Fault value ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"kind": "explode"}, id="unknown-kind"),
        pytest.param({"kind": "status", "status": 200}, id="status-not-an-error"),
        pytest.param({"kind": "status", "status": 600}, id="status-too-high"),
        pytest.param({"kind": "status", "status": True}, id="status-bool"),
        pytest.param({"kind": "reset", "rate": 1.5}, id="rate-above-1"),
        pytest.param({"kind": "reset", "rate": -0.1}, id="rate-negative"),
        pytest.param({"kind": "reset", "rate": float("nan")}, id="rate-nan"),
        pytest.param({"kind": "stall", "delay": -1.0}, id="delay-negative"),
        pytest.param({"kind": "stall", "delay": float("inf")}, id="delay-infinite"),
        pytest.param({"kind": "trickle", "chunk_size": 0}, id="chunk-empty"),
        pytest.param({"kind": "reset", "times": 0}, id="times-zero"),
        pytest.param({"kind": "reset", "route": "post"}, id="unknown-route"),
        pytest.param({"kind": "status", "retry_after": "1\r\nX-Evil: 1"}, id="header-injection"),
        pytest.param({"kind": "status", "code": 5}, id="code-not-str"),
    ],
)
def test_fault_rejects_impossible_values(kwargs: dict[str, Any]) -> None:
    """A fault that could not be served is refused when it is made, not when it strikes."""
    with pytest.raises(ValueError):  # noqa: PT011 - the table names what is wrong
        Fault(**kwargs)


def test_add_refuses_what_is_not_a_fault() -> None:
    """Only Fault values can be put in force."""
    with pytest.raises(ValueError, match="Fault"):
        Faults().add("503:1")  # type: ignore[arg-type]


# -- each kind on the wire ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "headers", "code"),
    [
        pytest.param(Fault("status", status=503), {}, None, id="503"),
        pytest.param(Fault("status", status=500, code="INTERNAL"), {}, "INTERNAL", id="500"),
        pytest.param(
            Fault("status", status=429, retry_after="2"),
            {"Retry-After": "2"},
            "RATE_LIMITED",
            id="429-seconds",
        ),
        pytest.param(
            Fault("status", status=429, retry_after_ms="250", code="QUEUE_FULL"),
            {"retry-after-ms": "250"},
            "QUEUE_FULL",
            id="429-milliseconds",
        ),
        pytest.param(
            Fault("status", status=429, retry_after="Sun, 12 Apr 2026 13:21:00 GMT"),
            {"Retry-After": "Sun, 12 Apr 2026 13:21:00 GMT"},
            "RATE_LIMITED",
            id="429-date",
        ),
        pytest.param(
            Fault("status", status=429, retry_after="garbage"),
            {"Retry-After": "garbage"},
            "RATE_LIMITED",
            id="429-garbage",
        ),
        pytest.param(
            Fault("status", status=402, code="INSUFFICIENT_CREDITS"),
            {},
            "INSUFFICIENT_CREDITS",
            id="402",
        ),
    ],
)
async def test_status_fault_is_a_json_error_with_raw_retry_headers(
    server: EmulatorServer,
    http: aiohttp.ClientSession,
    fault: Fault,
    headers: dict[str, str],
    code: str | None,
) -> None:
    """A status fault answers the API's error JSON, with Retry-After headers sent verbatim."""
    server.emulator.faults.add(fault)
    status, got, body = await fetch(http, run_url(server))
    assert status == fault.status
    assert got["Content-Type"].startswith("application/json")
    payload = json.loads(body)
    assert isinstance(payload["error"], str) and payload["error"]
    assert payload.get("code") == code
    for name, value in headers.items():
        assert got[name] == value
    if not headers:
        assert "Retry-After" not in got and "retry-after-ms" not in got


async def test_reset_drops_the_connection_before_any_answer(
    server: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    """A reset fault leaves the client with a connection error, not a status."""
    faults = server.emulator.faults
    reset = faults.add(Fault("reset"))
    with pytest.raises(aiohttp.ClientOSError, match="reset"):
        await fetch(http, run_url(server))
    # aiohttp itself retries an idempotent request once on a reset connection.
    assert faults.injected["reset"] == 2
    assert server.emulator.request_count == 0  # it never reached the API
    faults.remove(reset)
    status, _, _ = await fetch(http, run_url(server))
    assert status == 200


async def test_truncate_announces_the_whole_body_and_sends_half(
    server: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    """A truncated answer has the real Content-Length, half the bytes, then a closed socket."""
    _, _, whole = await fetch(http, run_url(server))
    server.emulator.faults.add(Fault("truncate", times=1))
    async with http.get(run_url(server), headers=AUTH) as response:
        assert response.status == 200
        assert response.content_length == len(whole)
        received = b""

        async def read_all() -> None:
            nonlocal received
            async for chunk in response.content.iter_any():
                received += chunk

        with pytest.raises(aiohttp.ClientPayloadError):
            await read_all()
    assert 0 < len(received) < len(whole)
    assert whole.startswith(received)


async def test_trickle_sends_the_real_body_in_small_paced_chunks(
    server: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    """A trickling answer is the real body, complete, arriving chunk by chunk."""
    _, _, whole = await fetch(http, run_url(server))
    server.emulator.faults.add(Fault("trickle", delay=0.01, chunk_size=len(whole) // 5 + 1))
    started = time.monotonic()
    pieces: list[bytes] = []
    async with http.get(run_url(server), headers=AUTH) as response:
        assert response.content_length == len(whole)
        async for chunk in response.content.iter_any():
            pieces.append(chunk)
    assert b"".join(pieces) == whole
    assert len(pieces) >= 3
    assert time.monotonic() - started >= 4 * 0.01


async def test_stall_answers_late_and_gives_up_when_the_client_does(
    server: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    """A stall holds the answer for its delay; a client that times out is not answered at all."""
    server.emulator.faults.add(Fault("stall", delay=0.1, times=1))
    started = time.monotonic()
    status, _, body = await fetch(http, run_url(server))
    assert status == 200 and json.loads(body)["status"] == "completed"
    assert time.monotonic() - started >= 0.1
    assert server.emulator.request_count == 1

    server.emulator.faults.add(Fault("stall", delay=30.0, times=1))
    # aiohttp raises asyncio.TimeoutError, which is the builtin TimeoutError only from 3.11.
    with pytest.raises(asyncio.TimeoutError):
        async with http.get(
            run_url(server), headers=AUTH, timeout=aiohttp.ClientTimeout(total=0.05)
        ):
            pass
    # The stalled handler notices the hang-up within a tick and never calls the API.
    await anyio.sleep(0.1)
    assert server.emulator.request_count == 1


async def test_not_json_is_a_200_that_does_not_parse(
    server: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    """The not_json fault answers 200 application/json with a body no JSON parser accepts."""
    server.emulator.faults.add(Fault("not_json"))
    status, headers, body = await fetch(http, run_url(server))
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    with pytest.raises(ValueError):  # noqa: PT011 - json's own error
        json.loads(body)


@pytest.mark.parametrize("status", [pytest.param(502, id="502"), pytest.param(503, id="503")])
async def test_html_is_a_proxy_error_page(
    server: EmulatorServer, http: aiohttp.ClientSession, status: int
) -> None:
    """The html fault answers like nginx in front of the API: text/html, not JSON."""
    server.emulator.faults.add(Fault("html", status=status))
    got, headers, body = await fetch(http, list_url(server))
    assert got == status
    assert headers["Content-Type"].startswith("text/html")
    assert f"<title>{status} ".encode() in body


# -- choosing which requests fail --------------------------------------------------------------


async def test_route_limits_a_fault_to_one_endpoint(
    server: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    """A fault on ``list`` leaves ``get`` alone, and the other way round."""
    faults = server.emulator.faults
    on_list = faults.add(Fault("status", status=503, route="list"))
    assert (await fetch(http, run_url(server)))[0] == 200
    assert (await fetch(http, list_url(server)))[0] == 503
    faults.remove(on_list)
    faults.add(Fault("status", status=500, route="get"))
    assert (await fetch(http, run_url(server)))[0] == 500
    assert (await fetch(http, list_url(server)))[0] == 200
    faults.clear()
    faults.add(Fault("status", status=502))
    assert (await fetch(http, f"{server.base_url}/no/such/path"))[0] == 502


async def test_submit_and_status_routes_can_be_targeted(
    server: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    """``submit`` hits POSTs of runs (both path styles), ``status`` the queue snapshot only."""
    faults = server.emulator.faults
    seen: list[str] = []
    faults.on_request = lambda route, request, fault: seen.append(route)
    faults.add(Fault("status", status=503, route="submit"))
    faults.add(Fault("status", status=502, route="status"))
    submission = {"tasks": [{"url": "https://example.com"}], "async": True}
    for path in ("/browser-agent", "/api/v1/browser-agents"):
        async with http.post(server.base_url + path, json=submission, headers=AUTH) as response:
            assert response.status == 503
    assert (await fetch(http, f"{server.base_url}/api/v1/browser-agents?limit=3"))[0] == 200
    assert (await fetch(http, f"{server.base_url}/browser-agent-status"))[0] == 502
    assert (await fetch(http, run_url(server)))[0] == 200
    assert seen == ["submit", "submit", "list", "status", "get"]


async def sequence(seed: int, rate: float, n: int) -> list[int]:
    """The statuses of ``n`` sequential requests to a fresh emulator with one seeded fault."""
    emulator = Emulator(api_keys=(KEY,), clock=ManualClock(), seed=seed)
    emulator.create_run(durations=[0.0])
    emulator.faults.add(Fault("status", status=503, rate=rate))
    async with (
        serve(emulator) as running,
        aiohttp.ClientSession() as session,
    ):
        return [(await fetch(session, run_url(running)))[0] for _ in range(n)]


async def test_rate_is_a_seeded_probability() -> None:
    """The same seed fails the same requests; the share failed is close to the rate."""
    first = await sequence(seed=7, rate=0.3, n=300)
    again = await sequence(seed=7, rate=0.3, n=300)
    other = await sequence(seed=8, rate=0.3, n=300)
    assert first == again
    assert first != other
    share = first.count(503) / len(first)
    assert 0.2 <= share <= 0.4, share
    assert set(first) == {200, 503}


async def test_times_retires_a_fault_and_remove_clear_end_faults(
    server: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    """``times`` caps a fault; ``remove`` and ``clear`` retire faults; counters stay."""
    faults = server.emulator.faults
    faults.add(Fault("status", status=503, times=2))
    statuses = [(await fetch(http, run_url(server)))[0] for _ in range(4)]
    assert statuses == [503, 503, 200, 200]
    assert faults.active == ()
    kept = faults.add(Fault("status", status=500))
    assert faults.remove(kept) is True
    assert faults.remove(kept) is False
    faults.add(Fault("html"))
    faults.add(Fault("reset"))
    faults.clear()
    assert (await fetch(http, run_url(server)))[0] == 200
    assert faults.injected == {"status": 2}


async def test_outage_fails_everything_for_a_while_then_recovers(
    server: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    """An outage answers every request with its status until its time is up, ahead of others."""
    faults = server.emulator.faults
    faults.add(Fault("not_json", route="list"))
    faults.outage(0.2, status=502)
    assert [(await fetch(http, list_url(server)))[0] for _ in range(3)] == [502] * 3
    assert (await fetch(http, run_url(server)))[0] == 502
    await anyio.sleep(0.25)
    assert (await fetch(http, run_url(server)))[0] == 200
    assert len(faults.active) == 1  # the outage is over, the other fault is not
    ended = faults.outage(60.0)
    assert (await fetch(http, run_url(server)))[0] == 503
    faults.remove(ended)
    assert (await fetch(http, run_url(server)))[0] == 200


def test_outage_refuses_impossible_lengths() -> None:
    """An outage needs a finite, non-negative length."""
    for seconds in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="seconds"):
            Faults().outage(seconds)


async def test_every_request_is_counted_and_seen(
    server: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    """``requests``, ``injected`` and ``on_request`` see faulted and healthy requests alike."""
    faults = server.emulator.faults
    seen: list[tuple[str, str | None]] = []
    faults.on_request = lambda route, request, fault: seen.append(
        (route, fault.kind if fault else None)
    )
    faults.add(Fault("html", route="list", times=1))
    await fetch(http, list_url(server))
    await fetch(http, list_url(server))
    await fetch(http, run_url(server))
    await fetch(http, f"{server.base_url}/elsewhere")
    assert seen == [("list", "html"), ("list", None), ("get", None), ("other", None)]
    assert faults.requests == 4
    assert faults.injected == {"html": 1}
    assert server.emulator.request_count == 3  # the faulted one never reached the API
    assert "injected=1" in repr(faults)


# -- the command line --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(
            "503:0.2,reset:0.05,429:0.01",
            [
                Fault("status", status=503, rate=0.2),
                Fault("reset", rate=0.05),
                Fault("status", status=429, rate=0.01),
            ],
            id="documented-example",
        ),
        pytest.param(
            "429=2:1, list/stall=1.5:0.5 ,get/html:0.1,html=503:1,submit/reset:0.2,status/500:1",
            [
                Fault("status", status=429, retry_after="2", rate=1.0),
                Fault("stall", delay=1.5, route="list", rate=0.5),
                Fault("html", status=502, route="get", rate=0.1),
                Fault("html", status=503, rate=1.0),
                Fault("reset", route="submit", rate=0.2),
                Fault("status", status=500, route="status", rate=1.0),
            ],
            id="values-and-routes",
        ),
        pytest.param(
            "trickle:1,stall:1,truncate:0,not_json:1",
            [
                Fault("trickle", delay=0.05, rate=1.0),
                Fault("stall", delay=65.0, rate=1.0),
                Fault("truncate", rate=0.0),
                Fault("not_json", rate=1.0),
            ],
            id="defaults",
        ),
    ],
)
def test_fault_spec_parses(spec: str, expected: list[Fault]) -> None:
    """The --faults syntax turns into the faults it names, in order."""
    faults = Faults()
    assert faults.add_spec(spec) == expected
    assert list(faults.active) == expected


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param("", id="empty"),
        pytest.param("503", id="no-rate"),
        pytest.param("503:often", id="rate-not-a-number"),
        pytest.param("503:2", id="rate-above-1"),
        pytest.param("200:0.5", id="not-an-error-status"),
        pytest.param("boom:0.5", id="unknown-kind"),
        pytest.param("reset=3:0.5", id="value-where-none-is-taken"),
        pytest.param("stall=-1:0.5", id="negative-delay"),
        pytest.param("html=abc:0.5", id="html-status-not-a-number"),
        pytest.param("post/503:0.5", id="unknown-route"),
        pytest.param("503:0.1,bogus:1", id="one-bad-item"),
    ],
)
def test_bad_fault_spec_is_refused_whole(spec: str) -> None:
    """A spec that does not parse adds nothing and says which item is wrong."""
    faults = Faults()
    with pytest.raises(ValueError, match="fault"):
        faults.add_spec(spec)
    assert faults.active == ()


def test_module_entry_takes_faults(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--faults`` puts the parsed faults in force on the served emulator."""
    seen: list[Emulator] = []

    async def interrupted(emulator: Emulator, host: str, port: int) -> None:
        seen.append(emulator)
        raise KeyboardInterrupt

    monkeypatch.setattr(entry, "_serve_forever", interrupted)
    assert entry.main(["--runs", "1", "--faults", "503:0.2,reset:0.05"]) == 0
    [emulator] = seen
    assert emulator.faults.active == (Fault("status", rate=0.2), Fault("reset", rate=0.05))


def test_module_entry_rejects_a_bad_fault_spec(capsys: pytest.CaptureFixture[str]) -> None:
    """A --faults spec that does not parse is a usage error (exit status 2)."""
    with pytest.raises(SystemExit) as exc:
        entry.main(["--runs", "0", "--faults", "503:lots"])
    assert exc.value.code == 2
    assert "--faults" in capsys.readouterr().err


def test_module_help_documents_the_fault_syntax(capsys: pytest.CaptureFixture[str]) -> None:
    """``--help`` explains every part of the --faults syntax with an example."""
    with pytest.raises(SystemExit):
        entry.main(["--help"])
    out = capsys.readouterr().out
    for word in ("[ROUTE/]WHAT[=VALUE]:RATE", "reset", "truncate", "trickle", "stall"):
        assert word in out
    assert "not_json" in out and "html" in out and "503:0.2" in out
