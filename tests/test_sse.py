"""The SSE parser (split anywhere, every line end, every field) and a run stream on the wire."""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator, Sequence
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
from asyncclient._sse import ServerSentEvent, SSEDecoder

pytestmark = pytest.mark.anyio

TASKS = [{"url": "https://example.com", "instruction": "Extract the heading."}]
RUN_ID = "65f8a9d2c1e4b5a6f7e8d9c0"

# Every rule in one stream: a BOM, comments, every line end, multi-line data, a field without a
# colon, a value whose second leading space is kept, id and retry, an unknown field, an event
# without data, and multi-byte UTF-8 (2, 3 and 4 bytes) for splits inside a character.
SAMPLE = (
    b"\xef\xbb\xbf: a comment first\r\n"
    b"retry: 2500\n"
    b"event: task_event\r\n"
    b"id: 1\r\n"
    b'data: {"a":\r\n'
    b"data:  1}\r\n"
    b"\r\n"
    b"data\n"
    b"\n"
    b"event: only-a-type\rid: 2\r\r"
    b":keep-alive\n\n"
    b"unknown: field\n"
    b"data: caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\r"
    b"data:tail\r\n"
    b"\r\n"
    b"id: 3\x00\n"
    b"retry: 3s\n"
    b"event: done\n"
    b"data: end\n"
    b"\n"
    b"data: cut off"
)
EXPECTED = [
    ServerSentEvent("task_event", '{"a":\n 1}', "1", 2500),
    ServerSentEvent("message", "", "1", None),
    ServerSentEvent("message", "café € 😀\ntail", "2", None),
    ServerSentEvent("done", "end", "2", None),
]


def parse(
    chunks: Sequence[bytes], *, max_event_size: int | None = None
) -> tuple[list[ServerSentEvent], bool]:
    """Feed ``chunks`` in order; return the events and whether the end cut an event off."""
    decoder = SSEDecoder(max_event_size=max_event_size)
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    return events, decoder.close()


# -- the parser ---------------------------------------------------------------------------------


def test_sample_stream_in_one_chunk() -> None:
    """The sample stream parses into exactly the events the standard says, the cut-off one lost."""
    events, cut = parse([SAMPLE])
    assert events == EXPECTED
    assert cut is True


@pytest.mark.parametrize("offset", range(1, len(SAMPLE)))
def test_split_at_every_byte_offset(offset: int) -> None:
    """Splitting the stream in two anywhere (mid-character, mid-CRLF) changes nothing."""
    assert parse([SAMPLE[:offset], SAMPLE[offset:]]) == (EXPECTED, True)


def test_one_byte_at_a_time() -> None:
    """A stream that arrives one byte per chunk parses the same."""
    assert parse([SAMPLE[i : i + 1] for i in range(len(SAMPLE))]) == (EXPECTED, True)


def test_random_chunkings_with_empty_chunks() -> None:
    """Random cuts, empty chunks included, always give the same events."""
    rng = random.Random(5)
    for _ in range(300):
        cuts = sorted(rng.randrange(len(SAMPLE) + 1) for _ in range(rng.randrange(1, 12)))
        bounds = [0, *cuts, len(SAMPLE)]
        chunks = [SAMPLE[a:b] for a, b in itertools.pairwise(bounds)]
        assert parse(chunks) == (EXPECTED, True)


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        pytest.param(b"data: a\n\n", [("message", "a")], id="lf"),
        pytest.param(b"data: a\r\n\r\n", [("message", "a")], id="crlf"),
        pytest.param(b"data: a\r\r", [("message", "a")], id="cr"),
        pytest.param(b"data: a\r\ndata: b\rdata: c\n\n", [("message", "a\nb\nc")], id="mixed"),
        pytest.param(b"data:a\n\n", [("message", "a")], id="no-space"),
        pytest.param(b"data:  a\n\n", [("message", " a")], id="one-space-stripped"),
        pytest.param(b"data: a \n\n", [("message", "a ")], id="trailing-space-kept"),
        pytest.param(b"data\n\n", [("message", "")], id="field-without-colon"),
        pytest.param(b"data: a\ndata:\n\n", [("message", "a\n")], id="empty-data-line"),
        pytest.param(b"data: a:b: c\n\n", [("message", "a:b: c")], id="colons-in-value"),
        pytest.param(b": only a comment\n\n", [], id="comment"),
        pytest.param(b":\n\n", [], id="empty-comment"),
        pytest.param(b"event: x\n\n", [], id="no-data-no-event"),
        pytest.param(b"event: x\ndata: 1\n\n", [("x", "1")], id="event-type"),
        pytest.param(b"event:\ndata: 1\n\n", [("message", "1")], id="empty-type"),
        pytest.param(
            b"event: x\ndata: 1\n\ndata: 2\n\n", [("x", "1"), ("message", "2")], id="type-reset"
        ),
        pytest.param(b"event: a\nevent: b\ndata: 1\n\n", [("b", "1")], id="last-type-wins"),
        pytest.param(b"Data: a\n\n", [], id="names-are-case-sensitive"),
        pytest.param(b"data : a\n\n", [], id="space-before-colon"),
        pytest.param(b"\n\n\ndata: a\n\n", [("message", "a")], id="leading-blank-lines"),
        pytest.param(b"\xef\xbb\xbfdata: a\n\n", [("message", "a")], id="bom"),
        pytest.param(
            b"data: a\n\n\xef\xbb\xbfdata: b\n\n", [("message", "a")], id="bom-only-at-start"
        ),
        pytest.param(b"data: \xff\xfe\n\n", [("message", "\ufffd\ufffd")], id="bad-utf8"),
        pytest.param(b"data: a", [], id="unterminated"),
        pytest.param(b"data: a\n", [], id="no-blank-line"),
    ],
)
def test_parser_rules(stream: bytes, expected: list[tuple[str, str]]) -> None:
    """Each rule of the standard, one line of the table each."""
    events, _ = parse([stream])
    assert [(event.event, event.data) for event in events] == expected


@pytest.mark.parametrize(
    ("stream", "ids"),
    [
        pytest.param(b"id: 7\ndata: a\n\ndata: b\n\n", ["7", "7"], id="carries-over"),
        pytest.param(b"id: 7\ndata: a\n\nid\ndata: b\n\n", ["7", ""], id="reset-by-empty-id"),
        pytest.param(b"id: 7\ndata: a\n\nid: 8\0\ndata: b\n\n", ["7", "7"], id="nul-ignored"),
        pytest.param(b"id: 1\n\ndata: a\n\n", ["1"], id="set-without-event"),
    ],
)
def test_last_event_id(stream: bytes, ids: list[str]) -> None:
    """``id`` sets the last event id, which carries over; one holding NUL is ignored."""
    events, _ = parse([stream])
    assert [event.id for event in events] == ids


@pytest.mark.parametrize(
    ("line", "retry"),
    [
        pytest.param(b"retry: 3000", 3000, id="digits"),
        pytest.param(b"retry:0", 0, id="zero"),
        pytest.param(b"retry: 3s", None, id="not-digits"),
        pytest.param(b"retry: -1", None, id="negative"),
        pytest.param(b"retry: 1.5", None, id="fraction"),
        pytest.param("retry: ３".encode(), None, id="non-ascii-digit"),
        pytest.param(b"retry:", None, id="empty"),
    ],
)
def test_retry_field(line: bytes, retry: int | None) -> None:
    """``retry`` is read only when it is ASCII digits; it is kept by the decoder too."""
    decoder = SSEDecoder()
    (event,) = decoder.feed(line + b"\ndata: x\n\n")
    assert event.retry == retry
    assert decoder.retry == retry


def test_a_large_event_arrives_whole() -> None:
    """A multi-megabyte data line fed in 64 KiB chunks comes out as one event."""
    payload = b"x" * 3_000_000
    stream = b"event: task_event\ndata: " + payload + b"\n\n"
    decoder = SSEDecoder()
    events = []
    for start in range(0, len(stream), 65536):
        events.extend(decoder.feed(stream[start : start + 65536]))
    (event,) = events
    assert len(event.data) == len(payload)


@pytest.mark.parametrize(
    "stream",
    [
        pytest.param(b"data: " + b"x" * 200, id="one-long-line"),
        pytest.param(b"data: xxxxx\n" * 40, id="many-data-lines"),
    ],
)
def test_max_event_size(stream: bytes) -> None:
    """An event longer than ``max_event_size`` is refused, however it is built."""
    chunks = [stream[start : start + 7] for start in range(0, len(stream), 7)]
    with pytest.raises(ValueError, match="exceeds 100"):
        parse(chunks, max_event_size=100)


# -- a run stream on the wire -------------------------------------------------------------------


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
