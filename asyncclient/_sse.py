"""An incremental Server-Sent Events parser, as the WHATWG HTML standard defines the format.

Bytes go in as they arrive, split anywhere (inside a UTF-8 sequence, between the CR and LF of a
line end); whole events come out. It implements the standard's rules: lines end in CR, LF or CRLF;
a leading byte order mark is dropped; a line starting with ``:`` is a comment; a line without a
colon is a field with an empty value; one space after the colon is stripped; ``data`` lines are
joined with ``\\n``; ``event``, ``id`` (ignored if it holds NUL) and ``retry`` (digits only) are
read and any other field is ignored; a blank line dispatches the event, unless it has no data;
an event cut off by the end of the stream is discarded.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

__all__ = ["SSEDecoder", "ServerSentEvent"]

_LINE_END = re.compile(r"\r\n|\r|\n")
_BOM = "\ufeff"


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event.

    Attributes:
        event: the event type (``"message"`` when the stream named none).
        data: the ``data`` lines, joined with ``\\n``.
        id: the last event id the stream set so far (``""`` if none).
        retry: the reconnection time in milliseconds set inside this event, if any.
    """

    event: str = "message"
    data: str = ""
    id: str = ""
    retry: int | None = None


class SSEDecoder:
    """Turns a byte stream into :class:`ServerSentEvent` objects, one chunk at a time.

    Args:
        max_event_size: refuse an event (or a line) longer than this many characters with a
            ``ValueError``; ``None`` for no limit.

    Attributes:
        last_event_id: the last ``id`` the stream set (it carries over from event to event).
        retry: the last ``retry`` the stream set, in milliseconds, or ``None``.
    """

    def __init__(self, *, max_event_size: int | None = None) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._max = max_event_size
        self._started = False
        self._skip_lf = False
        self._partial: list[str] = []
        self._partial_size = 0
        self._data: list[str] = []
        self._data_size = 0
        self._event = ""
        self._retry: int | None = None
        self.last_event_id = ""
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Parse the next bytes of the stream and return the events they complete, in order.

        Raises:
            ValueError: an event grew beyond ``max_event_size``.
        """
        text = self._utf8.decode(chunk)
        if not text:
            return []
        if not self._started:
            self._started = True
            if text[0] == _BOM:
                text = text[1:]
        if self._skip_lf and text:
            # The previous chunk ended in CR: a LF right here belongs to the same line end.
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
        events: list[ServerSentEvent] = []
        pos = 0
        end = len(text)
        while pos < end:
            match = _LINE_END.search(text, pos)
            if match is None:
                self._partial.append(text[pos:])
                self._partial_size += end - pos
                self._check_size()
                break
            line = text[pos : match.start()]
            if self._partial:
                self._partial.append(line)
                line = "".join(self._partial)
                self._partial.clear()
                self._partial_size = 0
            pos = match.end()
            if pos == end and match.group() == "\r":
                self._skip_lf = True
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def close(self) -> bool:
        """End of stream: discard an event that was never completed by a blank line.

        Returns:
            Whether anything was discarded (the stream was cut off inside an event).
        """
        tail = self._utf8.decode(b"", final=True)
        cut = bool(self._partial or self._data or self._event or tail.strip(_BOM))
        self._partial.clear()
        self._partial_size = 0
        self._reset_event()
        return cut

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return None
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._data_size += len(value) + 1
            self._check_size()
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = self.retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._data:
            self._reset_event()
            return None
        event = ServerSentEvent(
            event=self._event or "message",
            data="\n".join(self._data),
            id=self.last_event_id,
            retry=self._retry,
        )
        self._reset_event()
        return event

    def _reset_event(self) -> None:
        self._data = []
        self._data_size = 0
        self._event = ""
        self._retry = None

    def _check_size(self) -> None:
        if self._max is not None and self._data_size + self._partial_size > self._max:
            raise ValueError(f"a server-sent event exceeds {self._max} characters")
