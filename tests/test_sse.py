"""The SSE parser: split anywhere, every line end, every field, as the HTML standard says."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import pytest

from asyncclient._sse import ServerSentEvent, SSEDecoder

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
