"""A streamed run: the SSE answer of a ``"stream": true`` submission, as typed events.

Bytes from the transport go through the SSE parser; each ``task_event``, ``task_result`` and
``done`` is decoded into its Struct, an ``error`` event becomes the same typed error a REST answer
with that ``code`` raises, and any other event type (a heartbeat, a type added later) is skipped.
The stream owns one HTTP response and closes it when its ``async with`` block ends.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime

import msgspec
from anyio import AsyncContextManagerMixin

from ._exceptions import APIConnectionError, PredevError, ResponseDecodeError, make_status_error
from ._models import (
    DoneEvent,
    ErrorBody,
    Run,
    RunnerEvent,
    TaskEvent,
    TaskResult,
    TaskResultEvent,
    error_body_decoder,
    run_decoder,
)
from ._sse import ServerSentEvent, SSEDecoder

__all__ = ["RunStream", "StreamEvent"]

StreamEvent = TaskEvent | TaskResultEvent | DoneEvent
"""What a :class:`RunStream` yields."""

OpenStream = Callable[[], AbstractAsyncContextManager[AsyncIterator[bytes]]]

_NULL = msgspec.Raw(b"null")


class _TaskEventWire(msgspec.Struct, rename="camel", gc=False):
    task_index: int
    type: str = ""
    raw_data: msgspec.Raw = msgspec.field(default=_NULL, name="data")
    ts: datetime | None = None


class _TaskIndex(msgspec.Struct, rename="camel", gc=False):
    task_index: int


_task_event_decoder = msgspec.json.Decoder(_TaskEventWire)
_task_index_decoder = msgspec.json.Decoder(_TaskIndex)
_task_result_decoder = msgspec.json.Decoder(TaskResult)


class RunStream(AsyncContextManagerMixin):
    """A run submitted in stream mode; use through :meth:`Client.stream`.

    ``async with client.stream(tasks) as events: async for event in events: ...`` yields
    :class:`TaskEvent`, :class:`TaskResultEvent` and, last, one :class:`DoneEvent`, as the run
    progresses. The submission is sent when the block is entered; leaving the block closes the
    connection, also when you stop early (``break``, an exception, a cancellation). The run
    itself goes on on the server: follow it with :meth:`Client.wait` if you stopped early.

    Attributes:
        run: the finished run, once the ``done`` event has arrived (``None`` before).
    """

    def __init__(self, open_stream: OpenStream, *, path: str, max_event_size: int | None) -> None:
        self._open_stream = open_stream
        self._path = path
        self._decoder = SSEDecoder(max_event_size=max_event_size)
        self._chunks: AsyncIterator[bytes] | None = None
        self._queue: deque[StreamEvent | PredevError] = deque()
        self._entered = False
        self._finished = False
        self.run: Run | None = None

    def __repr__(self) -> str:
        state = "done" if self.run is not None else "open" if self._chunks else "not open"
        return f"<RunStream {self._path} {state}>"

    @property
    def last_event_id(self) -> str:
        """The last ``id`` the server gave an event (``""`` if none)."""
        return self._decoder.last_event_id

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[RunStream]:
        """``async with client.stream(...) as events``: sends the submission, holds the answer."""
        if self._entered:
            raise RuntimeError("a stream can be entered once")
        self._entered = True
        async with self._open_stream() as chunks:
            self._chunks = chunks
            try:
                yield self
            finally:
                self._chunks = None
                self._finished = True

    def __aiter__(self) -> RunStream:
        return self

    async def __anext__(self) -> StreamEvent:
        while not self._queue:
            if self._finished:
                raise StopAsyncIteration
            if self._chunks is None:
                raise RuntimeError(
                    "iterate a stream inside `async with client.stream(...) as events`"
                )
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                self._finished = True
                self._decoder.close()
                raise APIConnectionError(
                    "the stream ended before the run's done event", method="POST", path=self._path
                ) from None
            try:
                events = self._decoder.feed(chunk)
            except ValueError as exc:
                self._finished = True
                raise ResponseDecodeError(str(exc), method="POST", path=self._path) from exc
            for sse in events:
                if self._take(sse):
                    break  # nothing after done or error counts
        item = self._queue.popleft()
        if isinstance(item, PredevError):
            raise item
        return item

    def _take(self, sse: ServerSentEvent) -> bool:
        """Queue what ``sse`` stands for; return whether the stream is over."""
        kind = sse.event
        try:
            if kind == "task_event":
                wire = _task_event_decoder.decode(sse.data)
                event = RunnerEvent(type=wire.type, raw_data=wire.raw_data, ts=wire.ts)
                self._queue.append(TaskEvent(task_index=wire.task_index, event=event))
            elif kind == "task_result":
                index = _task_index_decoder.decode(sse.data).task_index
                result = _task_result_decoder.decode(sse.data)
                self._queue.append(TaskResultEvent(task_index=index, result=result))
            elif kind == "done":
                run = run_decoder.decode(sse.data)
                self.run = run
                self._finished = True
                self._queue.append(DoneEvent(run=run))
            elif kind == "error":
                self._finished = True
                self._queue.append(self._error(sse.data))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._finished = True
            self._queue.append(
                ResponseDecodeError(
                    f"the {kind} event is not the JSON the API documents: {exc}",
                    method="POST",
                    path=self._path,
                    body=sse.data.encode(),
                )
            )
        return self._finished

    def _error(self, data: str) -> PredevError:
        body = data.encode()
        try:
            parsed = error_body_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            parsed = ErrorBody(error=data.strip()[:200] or None)
        return make_status_error(200, method="POST", path=self._path, body=parsed, raw=body)
