"""A run stream on the wire: typed events, the error event, and every way a stream can end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
import msgspec
import pytest
from _support import serve_handler
from aiohttp import web
from conftest import FAST_RETRY

from asyncclient import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    BadRequestError,
    Client,
    DoneEvent,
    PaymentRequiredError,
    RateLimitError,
    ResponseDecodeError,
    TaskEvent,
    TaskResultEvent,
)

pytestmark = pytest.mark.anyio

TASKS = [{"url": "https://example.com", "instruction": "Extract the heading."}]
RUN_ID = "65f8a9d2c1e4b5a6f7e8d9c0"


@dataclass
class SSEServer:
    """A loopback server answering each POST with the next scripted stream."""

    base_url: str = ""
    scripts: list[list[bytes | float]] = field(default_factory=list)
    content_type: str = "text/event-stream"
    posts: int = 0
    disconnected: anyio.Event = field(default_factory=anyio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Send the script's chunks (a float pauses that long), then end the stream."""
        self.posts += 1
        script = self.scripts.pop(0)
        response = web.StreamResponse()
        response.content_type = self.content_type
        await response.prepare(request)
        try:
            for item in script:
                if isinstance(item, float):
                    await anyio.sleep(item)
                else:
                    await response.write(item)
        except ConnectionResetError:
            self.disconnected.set()
            return response
        await response.write_eof()
        return response


@pytest.fixture
async def sse_server() -> AsyncIterator[SSEServer]:
    """A scripted SSE server on a free loopback port."""
    server = SSEServer()
    async with serve_handler(server.handle, method="POST") as base_url:
        server.base_url = base_url
        yield server


def frame(event: str, data: object, *, line_end: bytes = b"\n") -> bytes:
    """One SSE frame with JSON data."""
    body = data if isinstance(data, bytes) else msgspec.json.encode(data)
    return b"event: " + event.encode() + line_end + b"data: " + body + line_end + line_end


TASK_EVENT = {
    "taskIndex": 0,
    "type": "screenshot",
    "data": {"url": "https://cdn.pre.dev/s.png", "base64": "iVBORw0KGgo="},
    "ts": "2026-04-16T18:22:10.224Z",
}
TASK_RESULT = {
    "taskIndex": 0,
    "url": "https://example.com",
    "instruction": "Extract the heading.",
    "input": {},
    "status": "SUCCESS",
    "data": {"heading": "Example Domain"},
    "creditsUsed": 0.2,
    "durationMs": 1200,
}
DONE = {
    "id": RUN_ID,
    "total": 1,
    "completed": 1,
    "status": "completed",
    "results": [{k: v for k, v in TASK_RESULT.items() if k != "taskIndex"}],
    "totalCreditsUsed": 0.2,
}


async def collect(client: Client, into: list[object] | None = None) -> list[object]:
    """Every event of one stream (also appended to ``into`` as they come, if given)."""
    seen = [] if into is None else into
    async with client.stream(TASKS) as events:
        async for event in events:
            seen.append(event)
    return seen


@pytest.fixture
async def sse_client(sse_server: SSEServer) -> AsyncIterator[Client]:
    """A client on the scripted SSE server."""
    async with Client("test-key", base_url=sse_server.base_url, retry=FAST_RETRY) as api:
        yield api


async def test_stream_decodes_typed_events_split_anywhere(
    sse_server: SSEServer, sse_client: Client
) -> None:
    """CRLF frames, comments and unknown events, cut into odd chunks, decode into typed events."""
    wire = (
        b": hello\r\n\r\n"
        + frame("task_event", TASK_EVENT, line_end=b"\r\n")
        + b"event: ping\ndata: {}\n\n"
        + frame("task_result", TASK_RESULT, line_end=b"\r")
        + frame("done", DONE)
    )
    sse_server.scripts.append([wire[:5], 0.01, wire[5:77], 0.01, wire[77:78], wire[78:]])
    events = await collect(sse_client)
    assert [type(event) for event in events] == [TaskEvent, TaskResultEvent, DoneEvent]
    first, second, third = events
    assert isinstance(first, TaskEvent)
    assert first.task_index == 0
    assert first.event.type == "screenshot"
    assert first.event.data["base64"] == "iVBORw0KGgo="
    assert first.event.ts is not None
    assert isinstance(second, TaskResultEvent)
    assert (second.task_index, second.result.status) == (0, "SUCCESS")
    assert second.result.data == {"heading": "Example Domain"}
    assert isinstance(third, DoneEvent)
    assert third.run.id == RUN_ID
    assert third.run.is_terminal


@pytest.mark.parametrize(
    ("code", "error_type", "status"),
    [
        pytest.param("SUBSCRIPTION_REQUIRED", PaymentRequiredError, 402, id="subscription"),
        pytest.param("INSUFFICIENT_CREDITS", PaymentRequiredError, 402, id="credits"),
        pytest.param("QUEUE_FULL", RateLimitError, 429, id="queue-full"),
        pytest.param("RATE_LIMITED", RateLimitError, 429, id="rate-limited"),
        pytest.param("BATCH_TOO_LARGE", BadRequestError, 400, id="batch-too-large"),
        pytest.param("SOMETHING_NEW", APIStatusError, 200, id="unknown-code"),
    ],
)
async def test_error_event_mid_stream_is_the_typed_error(
    sse_server: SSEServer,
    sse_client: Client,
    code: str,
    error_type: type[APIStatusError],
    status: int,
) -> None:
    """Events before an ``error`` event are delivered, then it is raised as the REST error."""
    error = {"error": "Out of credits", "code": code, "actionUrl": "https://pre.dev/billing"}
    sse_server.scripts.append([frame("task_event", TASK_EVENT) + frame("error", error)])
    seen: list[object] = []
    with pytest.raises(APIStatusError) as info:
        await collect(sse_client, seen)
    assert [type(event) for event in seen] == [TaskEvent]
    assert type(info.value) is error_type
    assert info.value.status == status
    assert info.value.code == code
    assert info.value.action_url == "https://pre.dev/billing"
    assert info.value.message == "Out of credits"
    assert sse_server.posts == 1


async def test_events_after_done_are_ignored(sse_server: SSEServer, sse_client: Client) -> None:
    """``done`` ends the iteration; anything the server sends after it is not yielded."""
    sse_server.scripts.append([frame("done", DONE) + frame("task_event", TASK_EVENT)])
    async with sse_client.stream(TASKS) as events:
        assert [type(event) async for event in events] == [DoneEvent]
        assert events.run is not None
        assert events.run.id == RUN_ID


async def test_stream_ending_before_done_is_a_connection_error(
    sse_server: SSEServer, sse_client: Client
) -> None:
    """A stream that ends without ``done`` raises ``APIConnectionError`` after its events."""
    sse_server.scripts.append([frame("task_event", TASK_EVENT) + b"event: done\ndata: {"])
    seen: list[object] = []
    with pytest.raises(APIConnectionError, match="ended before"):
        await collect(sse_client, seen)
    assert len(seen) == 1


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(frame("task_event", b"{not json"), id="not-json"),
        pytest.param(frame("task_event", {"type": "plan"}), id="no-task-index"),
        pytest.param(frame("task_result", {"taskIndex": "zero"}), id="bad-task-index"),
        pytest.param(frame("done", {"total": 1}), id="done-without-id"),
    ],
)
async def test_malformed_event_is_a_decode_error(
    sse_server: SSEServer, sse_client: Client, wire: bytes
) -> None:
    """An event whose JSON is not what the API documents raises ``ResponseDecodeError``."""
    sse_server.scripts.append([wire])
    with pytest.raises(ResponseDecodeError, match="not the JSON"):
        await collect(sse_client)


async def test_a_json_answer_instead_of_a_stream_is_refused(
    sse_server: SSEServer, sse_client: Client
) -> None:
    """A 2xx that is not ``text/event-stream`` is a ``ResponseDecodeError``, not silence."""
    sse_server.content_type = "application/json"
    sse_server.scripts.append([msgspec.json.encode(DONE)])
    with pytest.raises(ResponseDecodeError, match="expected an event stream"):
        await collect(sse_client)
    assert sse_server.posts == 1


async def test_silence_longer_than_the_timeout_is_a_timeout(sse_server: SSEServer) -> None:
    """No bytes for longer than the client's timeout: ``APITimeoutError``; no total limit else."""
    sse_server.scripts.append(
        [b": open\n\n", 0.1, b": still here\n\n", 0.1, frame("done", DONE)],
    )
    async with Client("test-key", base_url=sse_server.base_url, timeout=0.15) as api:
        assert [type(event) for event in await collect(api)] == [DoneEvent]
    sse_server.scripts.append([frame("task_event", TASK_EVENT), 2.0, frame("done", DONE)])
    async with Client("test-key", base_url=sse_server.base_url, timeout=0.15) as api:
        with pytest.raises(APITimeoutError, match="sent nothing"):
            await collect(api)


async def test_an_oversized_event_is_refused(sse_server: SSEServer) -> None:
    """An event larger than ``max_response_bytes`` is a ``ResponseDecodeError``."""
    sse_server.scripts.append([b"event: task_event\ndata: " + b"x" * 5000 + b"\n\n"])
    async with Client("test-key", base_url=sse_server.base_url, max_response_bytes=1000) as api:
        with pytest.raises(ResponseDecodeError, match="exceeds 1000"):
            await collect(api)


async def test_leaving_early_closes_the_connection(
    sse_server: SSEServer, sse_client: Client
) -> None:
    """A ``break`` out of the block closes the connection: the server's next write fails."""
    ticks: list[bytes | float] = [0.02, b": tick\n\n"]
    script = [frame("task_event", TASK_EVENT), *ticks * 200]
    sse_server.scripts.append(script)
    async with sse_client.stream(TASKS) as events:
        async for event in events:
            assert isinstance(event, TaskEvent)
            break
    with anyio.fail_after(2):
        await sse_server.disconnected.wait()


async def test_stream_must_be_entered_once(sse_server: SSEServer, sse_client: Client) -> None:
    """Iterating a stream outside ``async with`` or entering it twice is a ``RuntimeError``."""
    stream = sse_client.stream(TASKS)
    with pytest.raises(RuntimeError, match="async with"):
        await stream.__anext__()
    # Neither making the stream nor the refused iteration sent anything.
    assert sse_client.requests_sent == 0
    sse_server.scripts.append([frame("done", DONE)])
    async with stream:
        assert [type(event) async for event in stream] == [DoneEvent]
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()
    with pytest.raises(RuntimeError, match="entered once"):
        async with stream:
            pass
    assert sse_server.posts == 1
