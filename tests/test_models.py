"""Decoding the API's payloads into Structs: documented examples, forward compatibility, helpers."""

from __future__ import annotations

import os
import sys
from datetime import datetime, timezone
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest

from asyncclient import EventType, Run, RunnerEvent, RunPage, RunStatus, TaskResult, TaskStatus
from asyncclient._models import run_decoder, run_page_decoder
from asyncclient.testing import Emulator, ManualClock, serve
from asyncclient.testing import _examples as docs

# The API pages' example bodies (get-run.md, list-runs.md, list-runs-v1.txt), from the one copy
# the emulator serves (asyncclient/testing/_examples.py).
GET_RUN_PROCESSING = msgspec.json.encode(docs.GET_RUN_EXAMPLE)
GET_RUN_WITH_EVENTS = msgspec.json.encode(docs.GET_RUN_EVENTS_EXAMPLE)
LIST_RUNS_V1_GENERATED = msgspec.json.encode(docs.LIST_RUNS_SCHEMA_EXAMPLE)


def _elided(page: dict[str, Any]) -> dict[str, Any]:
    """A list page as list-runs.md prints it: every result after a row's first is ``{...}``."""
    rows = [
        {**row, "results": [row["results"][0], *({"...": "..."} for _ in row["results"][1:])]}
        for row in page["batches"]
    ]
    return {**page, "batches": rows}


LIST_RUNS_EXAMPLE = msgspec.json.encode(_elided(docs.LIST_RUNS_EXAMPLE))
"""The list page's example with its elisions (``{"...": "..."}``) as the page prints them."""

# A processing run's list row, as list-runs.md describes it: a stub at 0, null elsewhere.
LIST_ROW_PROCESSING = b"""{
  "batches": [
    {
      "id": "65f8a9d2c1e4b5a6f7e8d9c1",
      "total": 3,
      "completed": 1,
      "results": [
        {"url": "https://example.com", "instruction": "Extract the heading."}, null, null
      ],
      "totalCreditsUsed": 0.11,
      "status": "processing",
      "createdAt": "2026-04-16T18:22:10.224Z"
    },
    {
      "id": "65f8a9d2c1e4b5a6f7e8d9c2",
      "total": 1,
      "completed": 1,
      "results": [
        {"url": "https://a.example", "status": "ERROR", "error": "blocked", "creditsUsed": 0}
      ],
      "totalCreditsUsed": 0,
      "status": "failed",
      "createdAt": "2026-04-16T18:20:00.000Z",
      "completedAt": "2026-04-16T18:21:00.000Z",
      "error": "the browser crashed"
    }
  ],
  "total": 2,
  "hasMore": false
}"""

# A processing run fetched with includeEvents=true: one finished task, two running.
PROCESSING_WITH_LIVE_EVENTS = b"""{
  "id": "0123456789abcdef01234567",
  "total": 3,
  "completed": 1,
  "results": [
    {"url": "https://a.example", "instruction": "i0", "input": {"q": "x"}, "status": "SUCCESS",
     "data": [1, 2], "creditsUsed": 0.2, "durationMs": 1000,
     "events": [{"type": "navigation", "data": {"url": "https://a.example"},
                 "ts": "2026-04-16T18:22:11.000Z"},
                {"type": "done", "data": {"status": "SUCCESS"}}]},
    {"url": "https://b.example", "instruction": "i1", "input": {}, "status": "PENDING"},
    {"url": "https://c.example", "instruction": "i2", "input": {"k": "v"}, "status": "PENDING"}
  ],
  "totalCreditsUsed": 0.2,
  "status": "processing",
  "createdAt": "2026-04-16T18:22:10.224Z",
  "liveEvents": [
    [],
    [{"type": "navigation", "data": {"url": "https://b.example"}}],
    [{"type": "navigation", "data": {"url": "https://c.example"}},
     {"type": "plan", "data": {"reasoning": "r", "steps": ["s1"]}}]
  ]
}"""


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _task(body: str) -> TaskResult:
    run = run_decoder.decode(
        b'{"id": "0123456789abcdef01234567", "results": [' + body.encode() + b"]}"
    )
    task = run.results[0]
    assert task is not None
    return task


def test_get_run_processing_example_decodes() -> None:
    """The documented in-progress body decodes with its PENDING stub and no completedAt."""
    run = run_decoder.decode(GET_RUN_PROCESSING)
    assert run.id == "65f8a9d2c1e4b5a6f7e8d9c0"
    assert (run.total, run.completed) == (3, 2)
    assert run.status == RunStatus.PROCESSING
    assert run.total_credits_used == pytest.approx(0.29)
    assert run.created_at == datetime(2026, 4, 16, 18, 22, 10, 224000, tzinfo=timezone.utc)
    assert run.completed_at is None
    assert run.live_events is None
    assert run.error is None
    first, second, stub = run.results
    assert first == TaskResult(
        url="https://example.com",
        instruction="Extract the heading.",
        status="SUCCESS",
        data={"heading": "Example Domain"},
        credits_used=0.11,
        duration_ms=4820,
    )
    assert second is not None
    assert second.data == {"stories": ["...", "..."]}
    assert second.duration_ms == 8132
    assert stub is not None
    assert stub.status == TaskStatus.PENDING
    assert stub.is_pending
    assert stub.url == "https://www.reddit.com/r/programming"
    assert stub.input == {}
    assert stub.data is None
    assert stub.duration_ms is None
    assert stub.events is None


def test_get_run_with_events_example_decodes() -> None:
    """The documented includeEvents body decodes every event with its type and data."""
    run = run_decoder.decode(GET_RUN_WITH_EVENTS)
    assert run.status == RunStatus.COMPLETED
    assert run.is_terminal
    assert run.created_at is None
    (task,) = run.tasks
    assert task.instruction == ""
    assert task.events is not None
    assert [event.type for event in task.events] == [
        "navigation",
        "plan",
        "screenshot",
        "action",
        "validation",
        "done",
    ]
    assert task.events[0].data == {"url": "https://example.com"}
    assert task.events[1].data == {"reasoning": "The heading is the <h1>..."}
    assert task.events[3].data == {"action": "extract", "selector": "h1"}
    assert task.events[4].data == {"passed": True}
    assert task.events[5].data == {"status": "SUCCESS"}
    assert all(event.ts is None for event in task.events)


def test_list_runs_example_decodes() -> None:
    """The documented list envelope decodes: ``batches`` become runs, with total and hasMore."""
    page = run_page_decoder.decode(LIST_RUNS_EXAMPLE)
    assert page.total == 87
    assert page.has_more is True
    assert len(page) == 1
    (run,) = page
    assert run.id == "65f8a9d2c1e4b5a6f7e8d9c0"
    assert run.completed_at == _utc("2026-04-16T18:23:07.918Z")
    assert run.total_credits_used == pytest.approx(0.41)
    assert len(run.results) == 3
    first = run.results[0]
    assert first is not None
    assert first.data == {"heading": "Example Domain"}
    # The doc's placeholder rows ({"...": "..."}) carry no known field: every default applies.
    assert run.results[1] == TaskResult()


def test_list_runs_v1_generated_example_decodes() -> None:
    """The schema-generated v1 example decodes: integer credits, string data, every field set."""
    page = run_page_decoder.decode(LIST_RUNS_V1_GENERATED)
    assert (page.total, page.has_more) == (123, True)
    (run,) = page
    assert run.total_credits_used == 123.0
    assert run.completed_at == _utc("2023-11-07T05:31:56Z")
    assert run.error == "<string>"
    assert run.live_events is not None
    assert run.live_events[0][0].type == EventType.NAVIGATION
    (task,) = run.tasks
    assert task.data == "<unknown>"
    assert task.credits_used == 123.0
    assert task.events is not None
    assert task.events[0].data == {}
    assert [index for index, _ in run.events()] == [0, 0]


def test_list_row_null_entries_and_failed_run() -> None:
    """List rows keep ``null`` results as ``None``; a failed row carries its error."""
    page = run_page_decoder.decode(LIST_ROW_PROCESSING)
    processing, failed = page.runs
    assert processing.results[1:] == [None, None]
    assert len(processing.results) == processing.total == 3
    stub = processing.results[0]
    assert stub is not None
    assert (stub.url, stub.instruction) == ("https://example.com", "Extract the heading.")
    assert processing.tasks == [stub]
    assert processing.is_processing
    assert failed.status == RunStatus.FAILED
    assert failed.error == "the browser crashed"
    assert failed.is_terminal
    assert [task.error for task in failed.failed_tasks] == ["blocked"]
    assert page.has_more is False


def test_live_events_decode_aligned_with_results() -> None:
    """``liveEvents`` decodes per task: ``[]`` for finished tasks, the stream for running ones."""
    run = run_decoder.decode(PROCESSING_WITH_LIVE_EVENTS)
    assert run.live_events is not None
    assert [len(stream) for stream in run.live_events] == [0, 1, 2]
    assert run.live_events[2][1].type == EventType.PLAN
    assert run.live_events[2][1].data == {"reasoning": "r", "steps": ["s1"]}
    first = run.results[0]
    assert first is not None
    assert first.events is not None
    assert first.events[0].ts == _utc("2026-04-16T18:22:11.000Z")
    assert first.input == {"q": "x"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param('{"a": {"b": [1, 2]}}', {"a": {"b": [1, 2]}}, id="object"),
        pytest.param('[1, "two", null]', [1, "two", None], id="list"),
        pytest.param('"just text"', "just text", id="string"),
        pytest.param("42", 42, id="integer"),
        pytest.param("3.5", 3.5, id="float"),
        pytest.param("true", True, id="bool"),
        pytest.param("null", None, id="null"),
    ],
)
def test_task_data_is_any_json(raw: str, expected: Any) -> None:
    """A task's ``data`` and an event's ``data`` may be any JSON value."""
    task = _task(
        f'{{"status": "SUCCESS", "data": {raw}, "events": [{{"type": "x", "data": {raw}}}]}}'
    )
    assert task.data == expected
    assert task.events is not None
    assert task.events[0].data == expected


def test_task_without_data_field_has_none() -> None:
    """A task that sends no ``data`` at all reads as ``None`` (no output schema, or failed)."""
    assert _task('{"status": "TIMEOUT", "error": "took too long"}').data is None


def test_unknown_fields_are_ignored() -> None:
    """Fields the API adds later, at every level, do not break decoding."""
    body = b"""{
      "id": "0123456789abcdef01234567", "brandNew": {"nested": [1]}, "status": "completed",
      "results": [{"url": "u", "status": "SUCCESS", "futureField": 1,
                   "events": [{"type": "done", "data": {}, "sandbox": "x", "tokens": 9}]}],
      "liveEvents": null
    }"""
    run = run_decoder.decode(body)
    assert run.status == "completed"
    task = run.results[0]
    assert task is not None
    assert task.events == [RunnerEvent(type="done", raw_data=msgspec.Raw(b"{}"))]
    page = run_page_decoder.decode(b'{"batches": [], "total": 0, "hasMore": false, "next": "x"}')
    assert page.runs == []


def test_unknown_values_are_kept_as_strings() -> None:
    """Unknown statuses and event types are kept verbatim as ``str``, known ones equal the enums."""
    run = run_decoder.decode(
        b'{"id": "0123456789abcdef01234567", "status": "cancelled", "results": ['
        b'{"status": "RATE_LIMITED", "events": [{"type": "hover", "data": {"x": 1}}]},'
        b'{"status": "CAPTCHA_FAILED", "events": [{"type": "screenshot"}]}]}'
    )
    assert run.status == "cancelled"
    assert type(run.status) is str
    new, known = run.results
    assert new is not None
    assert known is not None
    assert new.status == "RATE_LIMITED"
    assert new.failed
    assert not new.succeeded
    assert not new.is_pending
    assert new.events is not None
    assert new.events[0].type == "hover"
    assert known.status == TaskStatus.CAPTCHA_FAILED
    assert known.events is not None
    assert known.events[0].type == EventType.SCREENSHOT
    assert known.events[0].data is None


def test_event_data_is_lazy_raw_json() -> None:
    """An event keeps its ``data`` as the exact raw JSON bytes until ``.data`` decodes them."""
    raw = b'{ "url":  "https://cdn.pre.dev/a.png", "n": [1, 2] }'
    run = run_decoder.decode(
        b'{"id": "0123456789abcdef01234567", "results": [{"events": ['
        + b'{"type": "screenshot", "data": '
        + raw
        + b"}]}]}"
    )
    task = run.results[0]
    assert task is not None
    assert task.events is not None
    event = task.events[0]
    assert isinstance(event.raw_data, msgspec.Raw)
    assert bytes(event.raw_data) == raw
    decoded = event.data
    assert decoded == {"url": "https://cdn.pre.dev/a.png", "n": [1, 2]}
    # Each access decodes afresh: mutating one result does not change the event.
    decoded["n"].append(3)
    assert event.data["n"] == [1, 2]


@pytest.mark.parametrize(
    ("status", "terminal"),
    [
        pytest.param("processing", False, id="processing"),
        pytest.param("completed", True, id="completed"),
        pytest.param("failed", True, id="failed"),
        pytest.param("queued", False, id="unknown"),
    ],
)
def test_is_terminal_and_is_processing(status: str, terminal: bool) -> None:
    """Only ``completed`` and ``failed`` are terminal; anything else is still processing."""
    run = Run(id="0123456789abcdef01234567", status=status)
    assert run.is_terminal is terminal
    assert run.is_processing is not terminal


def test_task_helpers_split_results() -> None:
    """``tasks``, ``succeeded_tasks``, ``failed_tasks`` and ``pending_tasks`` partition results."""
    ok = TaskResult(url="ok", status="SUCCESS", credits_used=0.2)
    blocked = TaskResult(url="blocked", status="BLOCKED", error="403")
    timeout = TaskResult(url="timeout", status="TIMEOUT", error="slow")
    pending = TaskResult(url="pending")
    run = Run(id="0123456789abcdef01234567", results=[ok, None, blocked, pending, timeout, None])
    assert run.tasks == [ok, blocked, pending, timeout]
    assert run.succeeded_tasks == [ok]
    assert run.failed_tasks == [blocked, timeout]
    assert run.pending_tasks == [pending]


@pytest.mark.parametrize(
    ("credits", "usd"),
    [
        pytest.param(0.0, 0.0, id="zero"),
        pytest.param(0.29, 0.029, id="doc-processing-example"),
        pytest.param(0.41, 0.041, id="doc-list-example"),
        pytest.param(12.0, 1.2, id="whole"),
        pytest.param(0.1 + 0.2, 0.03, id="float-noise"),
    ],
)
def test_cost_usd(credits: float, usd: float) -> None:
    """``cost_usd`` is credits × $0.10, rounded so float noise does not show."""
    assert Run(id="0123456789abcdef01234567", total_credits_used=credits).cost_usd == usd


def test_events_yields_finished_then_live_with_task_index() -> None:
    """``events()`` yields ``(task_index, event)`` for finished timelines, then live streams."""
    run = run_decoder.decode(PROCESSING_WITH_LIVE_EVENTS)
    seen = [(index, event.type) for index, event in run.events()]
    assert seen == [
        (0, "navigation"),
        (0, "done"),
        (1, "navigation"),
        (2, "navigation"),
        (2, "plan"),
    ]


def test_events_empty_without_timelines() -> None:
    """A run fetched without events yields no events (and list rows with ``None`` are skipped)."""
    assert list(run_decoder.decode(GET_RUN_PROCESSING).events()) == []
    page = run_page_decoder.decode(LIST_ROW_PROCESSING)
    assert [list(run.events()) for run in page] == [[], []]


def test_run_page_iterates_and_has_length() -> None:
    """A ``RunPage`` iterates its runs in order and ``len()`` counts them."""
    page = run_page_decoder.decode(LIST_ROW_PROCESSING)
    assert len(page) == 2
    assert [run.id for run in page] == ["65f8a9d2c1e4b5a6f7e8d9c1", "65f8a9d2c1e4b5a6f7e8d9c2"]
    assert list(page) == page.runs
    assert page.total == 2
    empty = RunPage()
    assert (len(empty), list(empty), empty.total, empty.has_more) == (0, [], 0, False)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(GET_RUN_PROCESSING, id="processing"),
        pytest.param(GET_RUN_WITH_EVENTS, id="with-events"),
        pytest.param(PROCESSING_WITH_LIVE_EVENTS, id="live-events"),
    ],
)
def test_run_round_trips_through_msgspec(body: bytes) -> None:
    """Encoding a decoded run and decoding it again gives an equal ``Run``."""
    run = run_decoder.decode(body)
    again = run_decoder.decode(msgspec.json.encode(run))
    assert again == run


def test_run_page_round_trips_with_wire_names() -> None:
    """An encoded page uses the API's wire names (``batches``, ``hasMore``) and decodes back."""
    page = run_page_decoder.decode(LIST_ROW_PROCESSING)
    encoded = msgspec.json.encode(page)
    wire = msgspec.json.decode(encoded)
    assert set(wire) == {"batches", "total", "hasMore"}
    assert "totalCreditsUsed" in wire["batches"][0]
    assert run_page_decoder.decode(encoded) == page


def test_run_requires_an_id() -> None:
    """A body without a run id is not a run."""
    with pytest.raises(msgspec.ValidationError, match="id"):
        run_decoder.decode(b'{"status": "completed"}')


# -- what msgspec.json.encode(run) writes -------------------------------------------------------

# Every field the SDK knows, with the value it takes when a payload leaves the field out.
_TASK_DEFAULTS: dict[str, Any] = {
    "url": "",
    "instruction": "",
    "input": {},
    "status": "PENDING",
    "data": None,
    "creditsUsed": 0.0,
    "durationMs": None,
    "error": None,
    "events": None,
}
_RUN_DEFAULTS: dict[str, Any] = {
    "total": 0,
    "completed": 0,
    "results": [],
    "totalCreditsUsed": 0.0,
    "status": "processing",
    "createdAt": None,
    "completedAt": None,
    "liveEvents": None,
    "error": None,
}


def _stamp(value: str | None) -> str | None:
    """A timestamp as msgspec writes it: microseconds when the instant has any, then ``Z``."""
    if value is None:
        return None
    return _utc(value).isoformat().replace("+00:00", "Z")


def _event_as_written(event: dict[str, Any]) -> dict[str, Any]:
    written: dict[str, Any] = {k: event[k] for k in ("type", "data") if k in event}
    if "ts" in event:
        written["ts"] = _stamp(event["ts"])
    return written


def _task_as_written(task: dict[str, Any] | None) -> dict[str, Any] | None:
    if task is None:
        return None
    written = {name: task.get(name, default) for name, default in _TASK_DEFAULTS.items()}
    if written["events"] is not None:
        written["events"] = [_event_as_written(e) for e in written["events"]]
    return written


def _run_as_written(run: dict[str, Any]) -> dict[str, Any]:
    """What the README says ``msgspec.json.encode(run)`` writes for a run received as ``run``."""
    written = {"id": run["id"]}
    written |= {name: run.get(name, default) for name, default in _RUN_DEFAULTS.items()}
    written["results"] = [_task_as_written(t) for t in written["results"]]
    written["createdAt"] = _stamp(written["createdAt"])
    written["completedAt"] = _stamp(written["completedAt"])
    if written["liveEvents"] is not None:
        written["liveEvents"] = [[_event_as_written(e) for e in s] for s in written["liveEvents"]]
    return written


def _docs_runs() -> list[Any]:
    """Every run of the API pages' examples, as the pages print it."""
    runs = [
        pytest.param(docs.GET_RUN_EXAMPLE, id="get-run"),
        pytest.param(docs.GET_RUN_EVENTS_EXAMPLE, id="get-run-events"),
        pytest.param(msgspec.json.decode(PROCESSING_WITH_LIVE_EVENTS), id="live-events"),
    ]
    for name, page in [
        ("list-runs", docs.LIST_RUNS_EXAMPLE),
        ("list-runs-elided", msgspec.json.decode(LIST_RUNS_EXAMPLE)),
        ("list-runs-v1-schema", docs.LIST_RUNS_SCHEMA_EXAMPLE),
        ("list-row-processing", msgspec.json.decode(LIST_ROW_PROCESSING)),
    ]:
        runs += [pytest.param(row, id=f"{name}-{i}") for i, row in enumerate(page["batches"])]
    return runs


def test_the_list_example_fills_the_pages_elisions_so_that_the_run_adds_up() -> None:
    """The list example's filled-in tasks are done and their credits make the run's total."""
    [row] = docs.LIST_RUNS_EXAMPLE["batches"]
    assert row["completed"] == row["total"] == len(row["results"])
    assert all(task["status"] == "SUCCESS" for task in row["results"])
    assert sum(t["creditsUsed"] for t in row["results"]) == pytest.approx(row["totalCreditsUsed"])
    assert row["results"][0] == docs.GET_RUN_EXAMPLE["results"][0]


@pytest.mark.parametrize("wire", _docs_runs())
def test_encoding_a_run_writes_what_the_readme_says(wire: dict[str, Any]) -> None:
    """encode(run) writes every known field in camelCase, left-out ones at their defaults."""
    run = run_decoder.decode(msgspec.json.encode(wire))
    encoded = msgspec.json.encode(run)
    assert msgspec.json.decode(encoded) == _run_as_written(wire)
    assert run_decoder.decode(encoded) == run


def test_encoding_the_docs_pending_stub_fills_in_the_fields_it_left_out() -> None:
    """The polling example's PENDING stub comes back with input, data, error and events."""
    run = run_decoder.decode(GET_RUN_PROCESSING)
    written = msgspec.json.decode(msgspec.json.encode(run))
    assert written["results"][2] == {
        "url": "https://www.reddit.com/r/programming",
        "instruction": "Extract the top 5 post titles.",
        "input": {},
        "status": "PENDING",
        "data": None,
        "creditsUsed": 0.0,
        "durationMs": None,
        "error": None,
        "events": None,
    }
    assert written["createdAt"] == "2026-04-16T18:22:10.224000Z"
    assert (written["completedAt"], written["liveEvents"], written["error"]) == (None, None, None)


def test_encoding_an_event_leaves_out_a_missing_timestamp() -> None:
    """An event written back keeps type and data, and writes ``ts`` only when it had one."""
    run = run_decoder.decode(GET_RUN_WITH_EVENTS)
    written = msgspec.json.decode(msgspec.json.encode(run))
    assert written["results"][0]["events"][0] == {
        "type": "navigation",
        "data": {"url": "https://example.com"},
    }


@pytest.mark.anyio
async def test_the_clis_json_output_is_what_encoding_the_run_writes() -> None:
    """`runs get --json` and `runs list --json` print runs as the README says encode(run) does."""
    emulator = Emulator(api_keys=("test-key",), clock=ManualClock(start=1_776_000_000.0))
    emulator.add_docs_example()
    emulator.create_run(n_tasks=3, durations=[0.0, 5.0, 9.0], event_bytes=0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDEV_")}
    python = (sys.executable, "-W", "error", "-m", "asyncclient")
    example = docs.EXAMPLE_RUN_ID
    async with serve(emulator) as server:
        env |= {"PREDEV_API_KEY": server.api_key, "PREDEV_BASE_URL": server.base_url}
        with anyio.fail_after(30):
            got = await anyio.run_process([*python, "runs", "get", example, "--json"], env=env)
            events = await anyio.run_process(
                [*python, "runs", "get", example, "--events", "--json"], env=env
            )
            listed = await anyio.run_process([*python, "runs", "list", "--json"], env=env)
            async with (
                aiohttp.ClientSession() as http,
                http.get(
                    f"{server.base_url}/list-browser-agents",
                    headers={"Authorization": f"Bearer {server.api_key}"},
                ) as response,
            ):
                page = await response.json()
    assert msgspec.json.decode(got.stdout) == _run_as_written(docs.GET_RUN_EXAMPLE)
    assert msgspec.json.decode(events.stdout) == _run_as_written(docs.GET_RUN_EVENTS_EXAMPLE)
    [row] = page["batches"]
    assert row["results"][1:] == [None, None]
    assert [msgspec.json.decode(line) for line in listed.stdout.splitlines()] == [
        _run_as_written(row)
    ]
