"""The emulator answers like the published API: routes, auth, run states, paging, events."""

from __future__ import annotations

import ast
import copy
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest
import yaml
from aiohttp import web
from jsonschema import Draft202012Validator

import asyncclient.testing.__main__ as entry
from asyncclient.testing import (
    Emulator,
    EmulatorServer,
    ManualClock,
    RealClock,
    TaskPlan,
    serve,
)

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
SPEC: dict[str, Any] = yaml.safe_load((Path(__file__).parent / "spec" / "openapi.yaml").read_text())
T0 = 1_776_000_000.0
KEY = "test-key"
OTHER = "other-key"
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
HEX24 = re.compile(r"[0-9a-f]{24}")
EVENT_TYPES = {"navigation", "plan", "action", "screenshot", "validation", "done", "error"}
FAILURES = ("ERROR", "TIMEOUT", "BLOCKED", "CAPTCHA_FAILED", "LOOP", "NO_TARGET")


def _validator(path: str, *, nullable_results: bool = False) -> Draft202012Validator:
    """Build a validator for the 200 body of ``path``, with the spec's components inlined."""
    responses = SPEC["paths"][path]["get"]["responses"]
    schema = copy.deepcopy(responses["200"]["content"]["application/json"]["schema"])
    components = copy.deepcopy(SPEC["components"])
    if nullable_results:
        # The pages disagree (spec/README.md): the schema says TaskResult[], the prose says
        # list rows hold null after index 0 until the run finishes. The prose wins for rows.
        results = components["schemas"]["BatchResult"]["properties"]["results"]
        results["items"] = {"anyOf": [results["items"], {"type": "null"}]}
    schema["components"] = components
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


@dataclass(frozen=True)
class Style:
    """One of the two documented path styles."""

    get: str
    list: str


LEGACY = Style("/browser-agent/{id}", "/list-browser-agents")
V1 = Style("/api/v1/browser-agents/{id}", "/api/v1/browser-agents")
VALIDATORS = {
    LEGACY.get: _validator(LEGACY.get),
    V1.get: _validator(V1.get),
    LEGACY.list: _validator(LEGACY.list, nullable_results=True),
    V1.list: _validator(V1.list, nullable_results=True),
}


def _check_timestamps(run: dict[str, Any]) -> None:
    """Every timestamp in a run summary is ISO-8601 UTC with milliseconds and Z."""
    assert TIMESTAMP.fullmatch(run["createdAt"])
    if "completedAt" in run:
        assert TIMESTAMP.fullmatch(run["completedAt"])
    for result in run["results"]:
        for event in (result or {}).get("events", []):
            assert TIMESTAMP.fullmatch(event["ts"])
    for live in run.get("liveEvents", []):
        for event in live:
            assert TIMESTAMP.fullmatch(event["ts"])


@dataclass
class Reply:
    """What came back from one request."""

    status: int
    body: Any
    size: int
    headers: dict[str, str]


@dataclass
class Api:
    """Raw HTTP against a served emulator, validating every 200 body against the spec."""

    http: aiohttp.ClientSession
    base_url: str
    style: Style

    async def request(
        self, method: str, path: str, spec_path: str | None, authorization: str | None, **q: str
    ) -> Reply:
        """Send one request and decode (and, for a 200, validate) the JSON body."""
        headers = {} if authorization is None else {"Authorization": authorization}
        async with self.http.request(
            method, self.base_url + path, headers=headers, params=q
        ) as resp:
            raw = await resp.read()
            assert resp.content_type == "application/json"
            body = msgspec.json.decode(raw)
            if resp.status == 200:
                if spec_path is not None:  # None: the caller validates a deliberate oddity
                    VALIDATORS[spec_path].validate(body)
                for run in body.get("batches", [body]):
                    _check_timestamps(run)
            else:
                assert isinstance(body["error"], str)
                assert body["error"]
            return Reply(resp.status, body, len(raw), dict(resp.headers))

    async def get(
        self, run_id: str, *, key: str | None = KEY, authorization: str | None = None, **q: str
    ) -> Reply:
        """GET one run."""
        auth = authorization if authorization is not None or key is None else f"Bearer {key}"
        path = self.style.get.replace("{id}", run_id)
        return await self.request("GET", path, self.style.get, auth, **q)

    async def list(
        self, *, key: str | None = KEY, authorization: str | None = None, **q: str
    ) -> Reply:
        """GET one page of runs."""
        auth = authorization if authorization is not None or key is None else f"Bearer {key}"
        return await self.request("GET", self.style.list, self.style.list, auth, **q)


@pytest.fixture
def manual() -> ManualClock:
    """A clock the test moves by hand."""
    return ManualClock(start=T0)


@pytest.fixture
def emu(manual: ManualClock) -> Emulator:
    """An emulator with two keys on a manual clock."""
    return Emulator(api_keys=(KEY, OTHER), clock=manual, seed=7)


@pytest.fixture
async def served(emu: Emulator) -> AsyncIterator[EmulatorServer]:
    """The emulator on a free loopback port."""
    async with serve(emu) as running:
        yield running


@pytest.fixture(params=[LEGACY, V1], ids=["legacy", "v1"])
async def api(served: EmulatorServer, request: pytest.FixtureRequest) -> AsyncIterator[Api]:
    """A raw HTTP caller for one path style (every test using it runs on both)."""
    async with aiohttp.ClientSession() as http:
        yield Api(http, served.base_url, request.param)


def _plain(body: dict[str, Any]) -> dict[str, Any]:
    """Drop fields that only exist with includeEvents, for comparing bodies."""
    out = {k: v for k, v in body.items() if k != "liveEvents"}
    out["results"] = [{k: v for k, v in r.items() if k != "events"} for r in body["results"]]
    return out


def test_manual_clock_moves_only_when_told() -> None:
    """ManualClock stands still until advanced or set, and refuses to go back by advance."""
    clock = ManualClock(start=10.0)
    assert clock() == 10.0
    assert clock() == 10.0
    clock.advance(2.5)
    assert clock() == 12.5
    clock.set(5.0)
    assert clock() == 5.0
    with pytest.raises(ValueError, match="negative"):
        clock.advance(-1)
    assert "5.0" in repr(clock)


def test_real_clock_runs_at_its_speed() -> None:
    """RealClock follows wall time, scaled by its speed factor."""
    import time

    fast = RealClock(speed=1000.0)
    normal = RealClock()
    a, wall = fast(), time.time()
    time.sleep(0.02)
    assert fast() - a >= 10.0
    assert abs(normal() - time.time()) < 1.0
    assert abs(a - wall) < 1.0
    assert fast.speed == 1000.0
    assert "1000.0" in repr(fast)
    with pytest.raises(ValueError, match="positive"):
        RealClock(speed=0)


def test_real_clock_origin_maps_emulated_time_back_to_real_time() -> None:
    """RealClock.origin is where emulated and real time agree: a harness converts between them."""
    import time

    before = time.time()
    fast = RealClock(speed=1000.0)
    after = time.time()
    assert before <= fast.origin <= after
    emulated = fast()
    real = fast.origin + (emulated - fast.origin) / fast.speed
    assert fast.origin <= real <= time.time() + 1e-6  # 1e-6: a float's rounding at 1.7e9 s


# -- getting a run ------------------------------------------------------------------------


async def test_processing_run_shows_pending_stubs(
    api: Api, emu: Emulator, manual: ManualClock
) -> None:
    """While processing, unfinished tasks are PENDING stubs and completed counts real results."""
    run_id = emu.create_run(durations=[1.0, 2.0, 3.0], statuses=["SUCCESS"] * 3)
    manual.advance(1.5)
    body = (await api.get(run_id)).body
    assert body["id"] == run_id
    assert body["status"] == "processing"
    assert (body["total"], body["completed"]) == (3, 1)
    assert body["results"][0]["status"] == "SUCCESS"
    for stub in body["results"][1:]:
        assert set(stub) == {"url", "instruction", "input", "status"}
        assert stub["status"] == "PENDING"
    assert body["totalCreditsUsed"] == body["results"][0]["creditsUsed"]
    assert body["createdAt"] == "2026-04-12T13:20:00.000Z"
    assert "completedAt" not in body
    assert "liveEvents" not in body
    assert "error" not in body
    assert "events" not in body["results"][0]


async def test_run_before_any_task_finishes_is_all_stubs(api: Api, emu: Emulator) -> None:
    """A run just created has completed 0, no credits and only stubs."""
    run_id = emu.create_run(n_tasks=4)
    body = (await api.get(run_id, includeEvents="true")).body
    assert body["completed"] == 0
    assert body["totalCreditsUsed"] == 0
    assert [r["status"] for r in body["results"]] == ["PENDING"] * 4
    assert body["liveEvents"] == [[], [], [], []]


async def test_live_events_grow_into_the_final_timeline(
    api: Api, emu: Emulator, manual: ManualClock
) -> None:
    """liveEvents holds a growing prefix of each running task's timeline, [] for finished ones."""
    run_id = emu.create_run(durations=[1.0, 10.0], statuses=["SUCCESS", "TIMEOUT"])
    manual.advance(3.0)
    early = (await api.get(run_id, includeEvents="true")).body
    assert early["liveEvents"][0] == []
    assert early["results"][0]["events"][-1] == {
        "type": "done",
        "data": {"status": "SUCCESS"},
        "ts": "2026-04-12T13:20:01.000Z",
    }
    assert "events" not in early["results"][1]
    first = early["liveEvents"][1]
    assert first
    assert first[-1]["type"] != "done"
    manual.advance(5.0)
    later = (await api.get(run_id, includeEvents="true")).body["liveEvents"][1]
    assert len(later) > len(first)
    assert later[: len(first)] == first
    manual.advance(5.0)
    final = (await api.get(run_id, includeEvents="true")).body
    assert "liveEvents" not in final
    events = final["results"][1]["events"]
    assert events[: len(later)] == later
    assert [e["type"] for e in events[-2:]] == ["error", "done"]


async def test_finished_run_has_completed_at_and_events_only_on_request(
    api: Api, emu: Emulator, manual: ManualClock
) -> None:
    """A finished run carries completedAt, never liveEvents, and events only with includeEvents."""
    run_id = emu.create_run(durations=[0.5, 2.25, 1.0])
    manual.advance(2.25)
    plain = (await api.get(run_id)).body
    assert plain["status"] == "completed"
    assert plain["completed"] == 3
    assert plain["completedAt"] == "2026-04-12T13:20:02.250Z"
    assert "liveEvents" not in plain
    assert all("events" not in r for r in plain["results"])
    assert (await api.get(run_id, includeEvents="false")).body == plain
    full = (await api.get(run_id, includeEvents="true")).body
    assert "liveEvents" not in full
    assert all(r["events"] for r in full["results"])
    assert _plain(full) == plain


async def test_task_results_follow_the_billing_rules(
    api: Api, emu: Emulator, manual: ManualClock
) -> None:
    """SUCCESS costs at least 0.1 credits; every failure costs 0, has no data and has an error."""
    statuses = ["SUCCESS", *FAILURES, "SUCCESS"]
    durations = [float(i + 1) for i in range(len(statuses))]
    run_id = emu.create_run(durations=durations, statuses=statuses)
    manual.advance(100.0)
    body = (await api.get(run_id)).body
    results = body["results"]
    assert [r["status"] for r in results] == statuses
    for result, duration in zip(results, durations, strict=True):
        assert result["durationMs"] == duration * 1000
        if result["status"] == "SUCCESS":
            assert result["creditsUsed"] >= 0.1
            assert "error" not in result
        else:
            assert result["creditsUsed"] == 0
            assert result["data"] is None
            assert isinstance(result["error"], str)
    assert body["totalCreditsUsed"] == round(sum(r["creditsUsed"] for r in results), 2)


async def test_failed_run_reports_its_error(api: Api, emu: Emulator, manual: ManualClock) -> None:
    """A run planned to fail ends failed with its error; unfinished tasks are aborted."""
    message = "Run aborted: browser pool unavailable"
    run_id = emu.create_run(
        durations=[1.0, 2.0, 3.0, 4.0], statuses=["SUCCESS"] * 4, fail_with=message
    )
    manual.advance(2.5)
    body = (await api.get(run_id)).body
    assert (body["status"], body["completed"]) == ("processing", 2)
    assert "error" not in body
    manual.advance(0.5)
    body = (await api.get(run_id, includeEvents="true")).body
    assert body["status"] == "failed"
    assert body["error"] == message
    assert body["completedAt"] == "2026-04-12T13:20:03.000Z"
    assert "liveEvents" not in body
    assert [r["status"] for r in body["results"]] == ["SUCCESS", "SUCCESS", "ERROR", "ERROR"]
    assert [r.get("error") for r in body["results"][2:]] == [message, message]
    row = (await api.list()).body["batches"][0]
    assert (row["status"], row["error"]) == ("failed", message)


async def test_finish_run_completes_every_task_now(
    api: Api, emu: Emulator, manual: ManualClock
) -> None:
    """finish_run ends every unfinished task at the current time with its planned status."""
    run_id = emu.create_run(durations=[0.5, 10.0, 20.0], statuses=["SUCCESS", "LOOP", "SUCCESS"])
    manual.advance(1.0)
    assert (await api.get(run_id, includeEvents="true")).body["completed"] == 1  # in-flight
    emu.finish_run(run_id)
    body = (await api.get(run_id, includeEvents="true")).body
    assert body["status"] == "completed"
    assert body["completedAt"] == "2026-04-12T13:20:01.000Z"
    assert [r["durationMs"] for r in body["results"]] == [500, 1000, 1000]
    assert [r["status"] for r in body["results"]] == ["SUCCESS", "LOOP", "SUCCESS"]
    assert body["results"][1]["events"][-1]["ts"] == body["completedAt"]
    emu.finish_run(run_id)  # already finished: nothing changes
    assert (await api.get(run_id, includeEvents="true")).body == body
    with pytest.raises(KeyError):
        emu.finish_run("0" * 24)


async def test_task_plans_are_served_as_given(api: Api, emu: Emulator, manual: ManualClock) -> None:
    """Explicit TaskPlans keep their url, input, data, credits and error."""
    plans = [
        TaskPlan(
            "https://example.com",
            "Extract the heading.",
            {"lang": "en"},
            1.0,
            data={"heading": "Example Domain"},
            credits=0.11,
        ),
        TaskPlan("https://example.org", "Click it.", {}, 2.0, "BLOCKED", error="403 from WAF"),
        TaskPlan("https://example.net", "Read it.", {}, 3.0, "RATE_SHAPED"),
    ]
    run_id = emu.create_run(tasks=plans, event_bytes=0)
    manual.advance(3.0)
    reply = await api.request("GET", api.style.get.replace("{id}", run_id), None, f"Bearer {KEY}")
    results = reply.body["results"]
    assert results[0] == {
        "url": "https://example.com",
        "instruction": "Extract the heading.",
        "input": {"lang": "en"},
        "status": "SUCCESS",
        "data": {"heading": "Example Domain"},
        "creditsUsed": 0.11,
        "durationMs": 1000,
    }
    assert (results[1]["status"], results[1]["error"]) == ("BLOCKED", "403 from WAF")
    # An unknown status is served as is, so clients can test forward compatibility; apart
    # from that enum value the body is what the spec says.
    assert results[2]["status"] == "RATE_SHAPED"
    assert reply.body["totalCreditsUsed"] == 0.11
    known = copy.deepcopy(reply.body)
    known["results"][2]["status"] = "ERROR"
    VALIDATORS[api.style.get].validate(known)


async def test_timelines_read_like_the_documented_events(
    api: Api, emu: Emulator, manual: ManualClock
) -> None:
    """Events are typed steps with the documented data fields, ending in done."""
    run_id = emu.create_run(
        durations=[1.0, 2.0, 3.0], statuses=["SUCCESS", "NO_TARGET", "CAPTCHA_FAILED"]
    )
    manual.advance(3.0)
    body = (await api.get(run_id, includeEvents="true")).body
    for result in body["results"]:
        events = result["events"]
        assert events[0] == {
            "type": "navigation",
            "data": {"url": result["url"]},
            "ts": events[0]["ts"],
        }
        assert events[-1]["type"] == "done"
        assert events[-1]["data"] == {"status": result["status"]}
        stamps = [e["ts"] for e in events]
        assert stamps == sorted(stamps)
        for event in events:
            assert event["type"] in EVENT_TYPES
            data = event["data"]
            if event["type"] == "plan":
                assert len(data["reasoning"]) >= 40
                assert all(isinstance(s, str) for s in data["steps"])
            elif event["type"] == "action":
                assert data["action"] in {"click", "type", "scroll", "extract"}
                assert data["selector"]
            elif event["type"] == "screenshot":
                assert data["url"].startswith(f"https://cdn.pre.dev/screenshots/{run_id}/")
            elif event["type"] == "validation":
                assert isinstance(data["passed"], bool)
                assert isinstance(data["errors"], list)
            elif event["type"] == "error":
                assert data["message"] == result["error"]
    assert {e["type"] for e in body["results"][0]["events"]} >= EVENT_TYPES - {"error"}


@pytest.mark.parametrize("event_bytes", [2_000_000, 20_000_000])
async def test_event_bytes_sizes_the_timeline(
    api: Api, emu: Emulator, manual: ManualClock, event_bytes: int
) -> None:
    """includeEvents bodies come within 20 % of event_bytes; plain bodies stay small."""
    run_id = emu.create_run(n_tasks=3, durations=[1.0, 2.0, 3.0], event_bytes=event_bytes)
    manual.advance(2.0)
    live = await api.get(run_id, includeEvents="true")
    assert live.size < event_bytes * 1.2
    manual.advance(1.0)
    full = await api.get(run_id, includeEvents="true")
    assert 0.8 * event_bytes <= full.size <= 1.2 * event_bytes
    again = await api.get(run_id, includeEvents="true")
    assert again.body == full.body
    plain = await api.get(run_id)
    assert plain.size < 5_000


# -- errors -------------------------------------------------------------------------------

BAD_AUTH = [
    pytest.param(None, id="missing"),
    pytest.param("Bearer wrong-key", id="unknown-key"),
    pytest.param("Token test-key", id="wrong-scheme"),
    pytest.param("Bearer ", id="empty-token"),
    pytest.param("test-key", id="no-scheme"),
]


@pytest.mark.parametrize("authorization", BAD_AUTH)
async def test_bad_credentials_get_401(api: Api, emu: Emulator, authorization: str | None) -> None:
    """A missing or invalid bearer token is answered 401 on both endpoints."""
    run_id = emu.create_run()
    path = api.style.get.replace("{id}", run_id)
    for route, spec_path in ((path, api.style.get), (api.style.list, api.style.list)):
        reply = await api.request("GET", route, spec_path, authorization)
        assert reply.status == 401
        assert reply.headers["WWW-Authenticate"] == "Bearer"


async def test_bearer_scheme_is_case_insensitive(api: Api, emu: Emulator) -> None:
    """The auth scheme matches case-insensitively, as HTTP says."""
    run_id = emu.create_run()
    assert (await api.get(run_id, authorization="bearer  test-key")).status == 200


@pytest.mark.parametrize(
    "run_id",
    [
        pytest.param("abc", id="short"),
        pytest.param("0" * 23, id="23-chars"),
        pytest.param("0" * 25, id="25-chars"),
        pytest.param("g" * 24, id="not-hex"),
        pytest.param("65f8a9d2c1e4b5a6f7e8d9c-", id="punctuation"),
    ],
)
async def test_malformed_run_id_gets_400(api: Api, run_id: str) -> None:
    """A run id that is not 24 hex characters is answered 400."""
    reply = await api.get(run_id)
    assert (reply.status, reply.body) == (400, {"error": "Malformed run id"})


async def test_run_id_hex_is_case_insensitive(api: Api, emu: Emulator) -> None:
    """An upper-case spelling of a run id finds the same run."""
    run_id = emu.create_run()
    assert HEX24.fullmatch(run_id)
    reply = await api.get(run_id.upper())
    assert (reply.status, reply.body["id"]) == (200, run_id)


async def test_other_keys_run_and_unknown_ids_get_404(api: Api, emu: Emulator) -> None:
    """A run owned by another key looks exactly like a run that does not exist."""
    mine = emu.create_run(api_key=KEY)
    theirs = emu.create_run(api_key=OTHER)
    assert (await api.get(mine)).status == 200
    assert (await api.get(theirs, key=OTHER)).status == 200
    for run_id in (theirs, "65f8a9d2c1e4b5a6f7e8d9c0"):
        reply = await api.get(run_id)
        assert (reply.status, reply.body) == (404, {"error": "Run not found"})


async def test_include_events_must_be_a_boolean(api: Api, emu: Emulator) -> None:
    """includeEvents accepts true/false (and 1/0), anything else is a 400."""
    run_id = emu.create_run()
    assert "liveEvents" in (await api.get(run_id, includeEvents="TRUE")).body
    assert "liveEvents" in (await api.get(run_id, includeEvents="1")).body
    assert "liveEvents" not in (await api.get(run_id, includeEvents="0")).body
    assert (await api.get(run_id, includeEvents="maybe")).status == 400


async def test_unknown_paths_and_methods_answer_json(api: Api, emu: Emulator) -> None:
    """Unknown paths get a JSON 404 and other methods a JSON 405."""
    run_id = emu.create_run()
    assert (await api.request("GET", "/nope", None, f"Bearer {KEY}")).status == 404
    path = api.style.get.replace("{id}", run_id)
    for route in (path, api.style.list):
        # PUT, not POST: POST on the v1 list path submits a run (tests/test_submit.py).
        reply = await api.request("PUT", route, None, f"Bearer {KEY}")
        assert reply.status == 405
        assert reply.headers["Allow"] == "GET"


# -- listing runs -------------------------------------------------------------------------


async def test_list_is_newest_first_with_id_tie_break(api: Api, emu: Emulator) -> None:
    """Rows come createdAt descending, ties broken by id descending."""
    ids = [emu.create_run(created_at=T0 - (i % 3)) for i in range(9)]
    emu.create_run(api_key=OTHER)
    body = (await api.list()).body
    listed = [row["id"] for row in body["batches"]]
    by_time = {0: ids[0::3], 1: ids[1::3], 2: ids[2::3]}
    expected = [i for age in (0, 1, 2) for i in sorted(by_time[age], reverse=True)]
    assert listed == expected
    assert listed == emu.run_ids(KEY)
    assert body["total"] == 9
    assert body["hasMore"] is False
    stamps = [row["createdAt"] for row in body["batches"]]
    assert stamps == sorted(stamps, reverse=True)
    assert len(emu.run_ids()) == 10
    assert emu.run_ids(OTHER)[0] in emu.run_ids()


@pytest.mark.parametrize(
    ("limit", "size"),
    [
        pytest.param(None, 20, id="default-20"),
        pytest.param("0", 1, id="0-clamps-to-1"),
        pytest.param("1", 1, id="1"),
        pytest.param("7", 7, id="7"),
        pytest.param("100", 100, id="100"),
        pytest.param("500", 100, id="500-clamps-to-100"),
    ],
)
async def test_list_limit_is_clamped(api: Api, emu: Emulator, limit: str | None, size: int) -> None:
    """limit defaults to 20 and is clamped into 1..100."""
    emu.populate(120)
    params = {} if limit is None else {"limit": limit}
    body = (await api.list(**params)).body
    assert len(body["batches"]) == size
    assert body["total"] == 120
    assert body["hasMore"] is True


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"limit": "-1"}, id="negative-limit"),
        pytest.param({"limit": "ten"}, id="word-limit"),
        pytest.param({"limit": "1.5"}, id="float-limit"),
        pytest.param({"skip": "-1"}, id="negative-skip"),
        pytest.param({"skip": "x"}, id="word-skip"),
        pytest.param({"skip": ""}, id="empty-skip"),
        pytest.param({"status": "failed"}, id="failed-filter"),
        pytest.param({"status": "PROCESSING"}, id="upper-case-filter"),
    ],
)
async def test_list_rejects_bad_parameters(api: Api, params: dict[str, str]) -> None:
    """Negative or non-integer limit/skip and unknown status filters are 400s."""
    reply = await api.list(**params)
    assert reply.status == 400
    assert next(iter(params)) in reply.body["error"]


async def test_list_pages_with_skip_and_has_more(api: Api, emu: Emulator) -> None:
    """skip walks the pages and hasMore is skip + limit < total."""
    emu.populate(25)
    seen: list[str] = []
    pages = []
    for skip in (0, 10, 20, 30):
        body = (await api.list(limit="10", skip=str(skip))).body
        pages.append((len(body["batches"]), body["hasMore"], body["total"]))
        seen += [row["id"] for row in body["batches"]]
    assert pages == [(10, True, 25), (10, True, 25), (5, False, 25), (0, False, 25)]
    assert seen == emu.run_ids(KEY)
    assert (await api.list(limit="5", skip="20")).body["hasMore"] is False


async def test_list_filters_by_status(api: Api, emu: Emulator, manual: ManualClock) -> None:
    """status=processing and status=completed return only runs in that state."""
    done = [emu.create_run(durations=[1.0]) for _ in range(3)]
    failed = emu.create_run(durations=[1.0], fail_with="Run aborted: browser pool unavailable")
    manual.advance(1.0)
    running = [emu.create_run(durations=[5.0]) for _ in range(2)]
    for status, expected in (("processing", running), ("completed", done)):
        body = (await api.list(status=status)).body
        assert {row["id"] for row in body["batches"]} == set(expected)
        assert body["total"] == len(expected)
        assert {row["status"] for row in body["batches"]} == {status}
    everything = (await api.list()).body
    assert everything["total"] == 6
    assert failed in {row["id"] for row in everything["batches"]}


async def test_list_rows_stub_the_first_task_until_the_run_finishes(
    api: Api, emu: Emulator, manual: ManualClock
) -> None:
    """A processing row holds a {url, instruction} stub then nulls; a finished row, full results."""
    run_id = emu.create_run(durations=[1.0, 2.0, 3.0], event_bytes=50_000)
    manual.advance(1.5)
    row = (await api.list()).body["batches"][0]
    full = (await api.get(run_id)).body
    first = full["results"][0]
    assert row["results"] == [
        {"url": first["url"], "instruction": first["instruction"]},
        None,
        None,
    ]
    assert (row["completed"], row["status"]) == (1, "processing")
    assert row["totalCreditsUsed"] == full["totalCreditsUsed"]
    assert "liveEvents" not in row
    assert "completedAt" not in row
    manual.advance(5.0)
    row = (await api.list(status="completed")).body["batches"][0]
    assert row == (await api.get(run_id)).body
    assert all(r is not None and "events" not in r for r in row["results"])


async def test_list_shows_only_the_callers_runs(api: Api, emu: Emulator) -> None:
    """Each key lists its own runs only."""
    mine = emu.populate(4)
    theirs = emu.populate(3, api_key=OTHER)
    assert {r["id"] for r in (await api.list()).body["batches"]} == set(mine)
    assert {r["id"] for r in (await api.list(key=OTHER)).body["batches"]} == set(theirs)


# -- hooks, counters, determinism ---------------------------------------------------------


async def test_before_request_hook_lets_tests_churn_runs(api: Api, emu: Emulator) -> None:
    """The hook runs before each request, so runs created there show up in that very page."""
    emu.populate(5)
    calls: list[str] = []

    def churn(route: str, request: web.Request) -> None:
        calls.append(route)
        if route == "list":
            emu.create_run(created_at=T0 + len(calls))

    emu.before_request = churn
    first = (await api.list(limit="3")).body
    second = (await api.list(limit="3", skip="3")).body
    await api.get(first["batches"][0]["id"])
    assert calls == ["list", "list", "get"]
    assert (first["total"], second["total"]) == (6, 7)
    # The run created before the second page pushed the first page's rows down by one.
    assert second["batches"][0]["id"] == first["batches"][-1]["id"]


async def test_request_counters(api: Api, emu: Emulator) -> None:
    """request_count counts every answer; requests_by_route splits get and list."""
    run_id = emu.create_run()
    await api.get(run_id)
    await api.get(run_id, key=None)
    await api.list()
    await api.request("GET", "/elsewhere", None, None)
    assert emu.request_count == 4
    assert emu.requests_by_route == {"get": 2, "list": 1}


def test_same_seed_gives_the_same_runs() -> None:
    """Ids and content are a function of the seed and the order of creation."""

    def make(seed: int) -> tuple[list[str], list[bytes]]:
        clock = ManualClock(start=T0)
        emu = Emulator(clock=clock, seed=seed)
        ids = emu.populate(20)
        clock.advance(1000.0)
        bodies = [emu.render_run("test-key", run_id, True) or b"" for run_id in ids]
        return ids, bodies

    a, b, c = make(3), make(3), make(4)
    assert a == b
    assert not set(a[0]) & set(c[0])
    assert all(HEX24.fullmatch(run_id) for run_id in a[0])
    assert len(set(a[0])) == 20


def test_populate_mixes_states_and_statuses() -> None:
    """populate makes finished, processing and failed runs with every task status."""
    clock = ManualClock(start=T0)
    emu = Emulator(clock=clock, seed=11)
    ids = emu.populate(120, max_duration=30.0)
    assert len(set(ids)) == 120
    assert set(emu.run_ids()) == set(ids)
    bodies = [msgspec.json.decode(emu.render_run("test-key", i, False) or b"") for i in ids]
    assert {b["status"] for b in bodies} == {"processing", "completed", "failed"}
    statuses = {r["status"] for b in bodies for r in b["results"]}
    assert statuses >= {"SUCCESS", "PENDING", *FAILURES}
    created = [b["createdAt"] for b in bodies]
    assert max(created) <= "2026-04-12T13:20:00.000Z"
    assert min(created) >= "2026-04-12T13:19:00.000Z"
    assert "runs=120" in repr(emu)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"api_key": "nobody"}, id="unknown-key"),
        pytest.param({"durations": [1.0], "statuses": ["SUCCESS"] * 2}, id="lengths-disagree"),
        pytest.param({"n_tasks": 2, "durations": [1.0]}, id="count-disagrees"),
        pytest.param({"n_tasks": 0}, id="no-tasks"),
        pytest.param({"tasks": []}, id="empty-tasks"),
        pytest.param({"statuses": ["PENDING"]}, id="pending-is-not-final"),
        pytest.param({"durations": [-1.0]}, id="negative-duration"),
        pytest.param({"event_bytes": -1}, id="negative-event-bytes"),
        pytest.param(
            {"tasks": [TaskPlan("u", "i", {}, 1.0)], "n_tasks": 1}, id="tasks-and-n-tasks"
        ),
    ],
)
def test_create_run_rejects_impossible_runs(kwargs: dict[str, Any]) -> None:
    """Arguments that no real run could have raise ValueError."""
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        Emulator().create_run(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"status": "ERROR", "credits": 0.5}, id="billed-failure"),
        pytest.param({"status": "ERROR", "data": {"a": 1}}, id="failure-with-data"),
        pytest.param({"credits": 0.05}, id="success-below-floor"),
        pytest.param({"error": "boom"}, id="success-with-error"),
    ],
)
def test_task_plan_rejects_contradictions(kwargs: dict[str, Any]) -> None:
    """A TaskPlan that breaks the billing or error rules raises ValueError."""
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        TaskPlan("https://example.com", "Extract.", {}, 1.0, **kwargs)


def test_emulator_rejects_bad_keys_and_durations() -> None:
    """Keys must be distinct and non-empty; populate needs a positive max_duration."""
    for keys in ((), ("",), ("a", "a")):
        with pytest.raises(ValueError, match="api_keys"):
            Emulator(api_keys=keys)
    assert Emulator(api_keys="solo").api_keys == ("solo",)
    with pytest.raises(ValueError, match="max_duration"):
        Emulator().populate(1, max_duration=0)


# -- serving ------------------------------------------------------------------------------


async def test_serve_defaults_to_a_fresh_emulator_on_loopback() -> None:
    """serve() with no emulator serves one with the key test-key on a free loopback port."""
    async with serve() as server, aiohttp.ClientSession() as http:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.base_url)
        assert server.api_key == "test-key"
        assert server.port > 0
        assert server.emulator.app is not server.emulator.app  # built on each read, never cached
        headers = {"Authorization": f"Bearer {server.api_key}"}
        async with http.get(f"{server.base_url}/list-browser-agents", headers=headers) as resp:
            assert resp.status == 200
            assert await resp.json() == {"batches": [], "total": 0, "hasMore": False}


def test_an_emulator_can_be_served_from_two_event_loops() -> None:
    """The same emulator can be served again from a new event loop (e.g. another test)."""
    import asyncio

    emu = Emulator()

    async def once() -> int:
        async with (
            serve(emu) as server,
            aiohttp.ClientSession() as http,
            http.get(f"{server.base_url}/list-browser-agents") as resp,
        ):
            return resp.status

    assert asyncio.run(once()) == 401
    assert asyncio.run(once()) == 401
    assert emu.request_count == 2


@pytest.fixture
def child_env() -> dict[str, str]:
    """An environment in which a child Python imports this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.mark.parametrize(
    "signum",
    [pytest.param(signal.SIGINT, id="ctrl-c"), pytest.param(signal.SIGTERM, id="sigterm")],
)
async def test_module_entry_serves_until_interrupted(
    child_env: dict[str, str], signum: signal.Signals
) -> None:
    """python -m asyncclient.testing prints its URL, serves, and exits 0 on Ctrl-C or SIGTERM."""
    command = [
        sys.executable,
        "-m",
        "asyncclient.testing",
        "--port",
        "0",
        "--api-key",
        "demo-key",
        "--runs",
        "7",
        "--seed",
        "3",
        "--speed",
        "10",
    ]
    async with await anyio.open_process(command, env=child_env) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        line = b""
        with anyio.fail_after(20):
            while not line.endswith(b"\n"):
                line += await proc.stdout.receive()
        base_url = line.decode().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base_url)
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": "Bearer demo-key"}
            async with http.get(f"{base_url}/api/v1/browser-agents", headers=headers) as resp:
                assert resp.status == 200
                page = await resp.json()
        VALIDATORS[V1.list].validate(page)
        assert page["total"] == 7
        proc.send_signal(signum)
        with anyio.fail_after(20):
            code = await proc.wait()
        err = b""
        try:
            while True:
                err += await proc.stderr.receive()
        except anyio.EndOfStream:
            pass
        assert code == 0, err.decode()
        assert b"Traceback" not in err


def test_module_entry_rejects_a_non_positive_speed(capsys: pytest.CaptureFixture[str]) -> None:
    """--speed 0 is a usage error (exit status 2)."""
    with pytest.raises(SystemExit) as exc:
        entry.main(["--speed", "0"])
    assert exc.value.code == 2
    assert "--speed" in capsys.readouterr().err


def test_module_entry_populates_and_exits_0_on_interrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    """main() builds the emulator from its options and returns 0 after Ctrl-C."""
    seen: list[tuple[Emulator, str, int]] = []

    async def interrupted(emulator: Emulator, host: str, port: int) -> None:
        seen.append((emulator, host, port))
        raise KeyboardInterrupt

    monkeypatch.setattr(entry, "_serve_forever", interrupted)
    argv = ["--port", "0", "--api-key", "a", "--api-key", "b", "--runs", "5", "--seed", "2"]
    assert entry.main(argv) == 0
    [(emulator, host, port)] = seen
    assert (host, port) == ("127.0.0.1", 0)
    assert emulator.api_keys == ("a", "b")
    assert len(emulator.run_ids("a")) == 5
    assert isinstance(emulator.clock, RealClock)


async def test_serve_forever_prints_its_url_and_stops_when_cancelled(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The entry's server loop prints one URL line, serves, and cleans up when cancelled."""
    before = signal.getsignal(signal.SIGTERM)
    emu = Emulator(api_keys=("demo-key",))
    emu.populate(3)
    async with anyio.create_task_group() as tg:
        tg.start_soon(entry._serve_forever, emu, "127.0.0.1", 0)
        out = ""
        with anyio.fail_after(10):
            while not out.endswith("\n"):
                await anyio.sleep(0.01)
                out += capsys.readouterr().out
        base_url = out.strip()
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{base_url}/list-browser-agents", headers={"Authorization": "Bearer demo-key"}
            ) as resp,
        ):
            assert (await resp.json())["total"] == 3
        tg.cancel_scope.cancel()
    assert signal.getsignal(signal.SIGTERM) == before


# -- the package's shape ------------------------------------------------------------------

TESTING = ROOT / "asyncclient" / "testing"
# asyncclient/testing/ bottom to top: a module imports only from those listed before it.
LAYERS = (
    "_clock",
    "_routes",
    "_accounts",
    "_samples",
    "_timeline",
    "_examples",
    "_responses",
    "_fault",
    "_state",
    "_index",
    "_submission",
    "_fault_spec",
    "_fault_answers",
    "_faults",
    "_ratelimit",
    "_emulator",
    "_app",
    "_server",
    "__main__",
    "__init__",
)
# The one import that runs up the stack, on use: Emulator.app builds an application.
UPWARD_ON_USE = {("_emulator", "_app")}


def _testing_modules() -> dict[str, ast.Module]:
    return {path.stem: ast.parse(path.read_text()) for path in sorted(TESTING.glob("*.py"))}


def _type_checking_blocks(tree: ast.Module) -> set[int]:
    """The ids of the nodes under ``if TYPE_CHECKING:`` (imports for annotations only)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    return skipped


def _imports(tree: ast.Module, *, module_level: bool) -> set[str]:
    """The sibling modules a module imports when it runs (annotation-only imports aside)."""
    skipped = _type_checking_blocks(tree)
    nodes = tree.body if module_level else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and id(node) not in skipped:
            # ``from . import _x`` imports the module _x; ``from ._x import y``, _x.
            found.update([node.module] if node.module else [a.name for a in node.names])
    return found


def test_testing_modules_are_all_on_the_stack() -> None:
    """Every module of asyncclient.testing has its place in the layering checked below."""
    assert sorted(_testing_modules()) == sorted(LAYERS)


def test_testing_is_a_plain_stack_with_no_import_circle() -> None:
    """Each testing module imports at load time only modules below it, so there is no circle."""
    upward = []
    for name, tree in _testing_modules().items():
        for target in _imports(tree, module_level=True):
            if LAYERS.index(target) >= LAYERS.index(name):
                upward.append((name, target))
    assert upward == []


def test_the_only_import_on_use_is_emulator_app() -> None:
    """Besides load-time imports, only Emulator.app imports (the HTTP layer, when read)."""
    on_use: set[tuple[str, str]] = set()
    for name, tree in _testing_modules().items():
        later = _imports(tree, module_level=False) - _imports(tree, module_level=True)
        on_use.update((name, target) for target in later)
    assert on_use == UPWARD_ON_USE


# Imports each module first, with nothing of asyncclient loaded before it; prints what fails.
_IMPORT_EACH_FIRST = """
import importlib, sys, traceback
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "asyncclient" or m.startswith("asyncclient.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module("asyncclient.testing." + name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc(limit=1).splitlines()[-1])
print("\\n".join(failed))
"""


def test_each_testing_module_can_be_imported_first() -> None:
    """Any testing module can be the first one imported: no order of imports meets a circle."""
    modules = [name for name in LAYERS if name != "__init__"]
    done = subprocess.run(  # noqa: S603 - this interpreter, our own script
        [sys.executable, "-c", _IMPORT_EACH_FIRST, *modules],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "", done.stdout


def _own_private_names(tree: ast.Module) -> set[str]:
    """The underscored names a module defines: functions, classes, attributes and slots."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


def test_no_testing_module_reaches_into_another_modules_private_state() -> None:
    """A module reads and writes only its own underscored names: the HTTP layer goes through
    the emulator's named methods, and no private name is imported from a sibling."""
    reaching = []
    for name, tree in _testing_modules().items():
        own = _own_private_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                reaching += [(name, a.name) for a in node.names if a.name.startswith("_")]
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                private = not node.attr.startswith("__")
                if private and node.attr not in own:
                    reaching.append((name, node.attr))
    assert reaching == []
