"""The session layer: the one module that imports aiohttp.

A request goes out with the key in its ``Authorization`` header and comes back as the body's bytes
for a 2xx, or as one of our errors. Transient failures (connection errors, timeouts, truncated
bodies, 408, 429, 500, 502, 503, 504) are retried with exponential backoff and full jitter; a
``Retry-After`` is honoured up to a cap. Every attempt passes through the client's
:class:`RateController` (``_ratelimit.py``): it takes a token before it is sent and reports its
answer after, so a 429 paces and pauses the whole client, not just the request that saw it. A
request that must not happen twice (a submission, which bills) is retried only when it provably
never left (the connection could not be made) or was refused with a 429. The rules that decide
(which failure is retried, how long to wait, what a retry costs) are :mod:`._retrying`'s; this
module sends, asks them and waits. aiohttp's exceptions never leave it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from functools import partial
from types import TracebackType
from typing import Any, Literal, TypeAlias, TypeVar

import aiohttp
import anyio
import msgspec
from yarl import URL

from ._config import RetryPolicy
from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    PredevError,
    RateLimitError,
    ResponseDecodeError,
    make_status_error,
)
from ._models import error_body_decoder
from ._ratelimit import RateController
from ._retrying import RetryBudget, parse_retry_after, retry_delay, should_retry
from ._testing_switch import scaled
from ._version import __version__

logger = logging.getLogger("asyncclient")

DEFAULT_MAX_RESPONSE_BYTES = 512 * 1024 * 1024
_SMALL_BODY = 256 * 1024
"""Bodies up to this size are read with aiohttp's own ``read()``; larger ones into one buffer."""
_ERROR_BODY_HEAD = 4096
"""How much of a body an error keeps (it shows an excerpt of that)."""
_EVENT_STREAM = "text/event-stream"
_JSON_BODY = {"Content-Type": "application/json"}
_T = TypeVar("_T")

Body: TypeAlias = "bytes | bytearray"
"""A response body: ``bytes`` when small, one ``bytearray`` when large (decoded in place)."""
_Answer: TypeAlias = "tuple[int, Mapping[str, str], Body, _T]"
"""What one attempt gives: status, headers, body (for errors), and what to return on a 2xx."""


class _MappedErrors:
    """Turns aiohttp's errors (and timeouts) raised in its block into ours, ``from`` them.

    The one place this module maps a transport failure, in the shape of httpx's
    ``map_httpcore_exceptions``: a timeout is an :class:`APITimeoutError`, a body cut short and
    any other aiohttp error an :class:`APIConnectionError`; everything else passes through. A
    class rather than a ``@contextmanager`` generator so that a stream builds it once and enters
    it for every chunk, and a success costs no generator.

    Args:
        method: the HTTP method, for the error.
        path: the request path, for the error.
        stream_read_timeout: set for an open stream's reads, whose errors say "stream" and name
            the read timeout.
    """

    __slots__ = ("method", "path", "stream_read_timeout")

    def __init__(self, method: str, path: str, stream_read_timeout: float | None = None) -> None:
        self.method = method
        self.path = path
        self.stream_read_timeout = stream_read_timeout

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> Literal[False]:
        if exc is None:
            return False
        stream = self.stream_read_timeout
        if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
            message = (
                "request timed out"
                if stream is None
                else f"the stream sent nothing for {stream:g} s"
            )
            raise APITimeoutError(message, method=self.method, path=self.path) from exc
        if isinstance(exc, aiohttp.ClientPayloadError):
            cut = "the response body" if stream is None else "the stream"
            message = f"{cut} was cut short"
            raise APIConnectionError(message, method=self.method, path=self.path) from exc
        if isinstance(exc, aiohttp.ClientError):
            failed = "connection failed" if stream is None else "the stream failed"
            raise APIConnectionError(
                f"{failed}: {type(exc).__name__}", method=self.method, path=self.path
            ) from exc
        return False


def body_head(body: Body) -> bytes:
    """The first bytes of a body, as much as an error shows of it (never a copy of all of it)."""
    return bytes(body[:_ERROR_BODY_HEAD])


def _should_retry(error: PredevError, unsent_only: bool) -> bool:
    """:func:`should_retry`, told what only aiohttp knows: whether the request never left.

    A connection that could not be made (``ClientConnectorError``) is the one failure that proves
    the request was never sent.
    """
    never_sent = isinstance(error.__cause__, aiohttp.ClientConnectorError)
    return should_retry(error, unsent_only=unsent_only, never_sent=never_sent)


class Transport:
    """Sends requests with the key, retries transient failures, returns bodies as bytes.

    Args:
        base_url: the validated origin (and optional path prefix).
        api_key: the validated key; it goes in one header and nowhere else.
        timeout: seconds one attempt may take, connect to last byte.
        retry: the retry policy.
        session: a caller-owned session, used as is and never closed here.
        trust_env: read proxy settings from the environment (off by default).
        max_response_bytes: bodies larger than this are refused without being read in full.
        rate: the rate controller every attempt passes through (default: a fresh one).
    """

    def __init__(
        self,
        *,
        base_url: URL,
        api_key: str,
        timeout: float,
        retry: RetryPolicy,
        session: aiohttp.ClientSession | None = None,
        trust_env: bool = False,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        rate: RateController | None = None,
    ) -> None:
        self._base = str(base_url)
        # Built once: a request's URL is the origin with its path (no parsing per request).
        self._origin = base_url
        self._prefix = base_url.raw_path.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "User-Agent": f"asyncclient/{__version__}",
        }
        # What each request adds to its session's headers: a session of our own carries ours
        # already (aiohttp copies them in one go instead of merging them one by one); a
        # caller's session gets them with every request.
        self._get_headers: Mapping[str, str] | None = None if session is None else self._headers
        self._post_headers = _JSON_BODY if session is None else {**self._headers, **_JSON_BODY}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._retry = retry
        self._session = session
        self._owns_session = session is None
        self._trust_env = trust_env
        self._max_response_bytes = max_response_bytes
        # Bodies of a known length up to this are read with aiohttp's read(), as they are.
        self._small_body = min(_SMALL_BODY, max_response_bytes)
        self.rate = rate if rate is not None else RateController()
        self._closed = False
        self.budget = (
            RetryBudget(retry.budget, retry.retry_cost) if retry.budget is not None else None
        )
        self.requests_sent = 0
        """How many HTTP requests were sent (attempts, retries included)."""
        self.retries = 0
        """How many of those were retries."""

    def __repr__(self) -> str:
        return f"<Transport base_url={self._base!r}>"

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("this client is closed")
        if self._session is None:
            # Created on first use so it binds to the running loop.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=128, ttl_dns_cache=300),
                headers=self._headers,
                timeout=self._timeout,
                trust_env=self._trust_env,
                # The API keeps no state in cookies (the key is the session): none is stored or
                # sent back, which also spares aiohttp's cookie work on every request.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def aclose(self) -> None:
        """Close the session if this transport created it."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            await session.close()

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Coroutine[Any, Any, Body]:
        """GET ``path`` and return the body of a 2xx answer, retrying transient failures.

        A plain function returning the coroutine to await, so a request runs through no more
        frames than it needs: ``await transport.get(path)``.

        Returns:
            The body: ``bytes``, or for a large body one ``bytearray`` it was read into.

        Raises:
            APIStatusError: (a subclass of) for a non-2xx answer that is not retried or whose
                retries ran out.
            APIConnectionError: when no answer came, after retries.
            ResponseDecodeError: when the body is larger than ``max_response_bytes``.
        """
        attempt = partial(self._send_once, "GET", self._url(path), path, params, None)
        return self._with_retries("GET", path, attempt, unsent_only=False)

    async def post(self, path: str, json_body: bytes, *, retry_unsent_only: bool = True) -> Body:
        """POST a JSON body to ``path`` and return the body of a 2xx answer.

        With ``retry_unsent_only`` (the default: for requests that must not happen twice, such as
        a submission, which bills) a failure is retried only when the request provably never
        reached the server (the connection could not be established) or the server refused it
        with a 429. A timeout, a dropped connection or a 5xx is raised at once: the server may
        have acted on the request. Without it, the failures :meth:`get` retries are retried.

        Raises:
            APIStatusError: (a subclass of) for a non-2xx answer that is not retried or whose
                retries ran out.
            APIConnectionError: when no answer came (after retries, if it was never sent).
            ResponseDecodeError: when the body is larger than ``max_response_bytes``.
        """
        attempt = partial(self._send_once, "POST", self._url(path), path, None, json_body)
        async with self.rate.submission():
            return await self._with_retries("POST", path, attempt, unsent_only=retry_unsent_only)

    @asynccontextmanager
    async def open_stream(
        self, path: str, json_body: bytes, *, read_timeout: float | None = None
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """POST a JSON body and hold the ``text/event-stream`` answer open, as byte chunks.

        Opening follows :meth:`post`'s rule: retried only when never sent, or on a 429. The
        stream has no total timeout; ``read_timeout`` (default: the client's ``timeout``) bounds
        connecting, the wait for the answer and every gap between chunks. Leaving the block
        closes the connection, unless the stream was read to its end.

        Raises:
            APIStatusError: the server refused to open the stream.
            APIConnectionError: no answer, or the stream broke (``APITimeoutError``: silent for
                longer than ``read_timeout``).
            ResponseDecodeError: a 2xx answer that is not an event stream.
        """
        seconds = read_timeout if read_timeout is not None else self._timeout.total or 60.0
        timeout = aiohttp.ClientTimeout(total=None, connect=seconds, sock_read=seconds)
        attempt = partial(self._open_once, self._url(path), path, json_body, timeout)
        async with self.rate.submission():
            response = await self._with_retries("POST", path, attempt, unsent_only=True)
        chunks = _Chunks(response, path, seconds)
        try:
            yield chunks
        finally:
            chunks.close()

    def _url(self, path: str) -> URL:
        return self._origin.with_path(self._prefix + path, encoded=True)

    async def _with_retries(
        self,
        method: str,
        path: str,
        attempt: Callable[[], Awaitable[_Answer[_T]]],
        *,
        unsent_only: bool,
    ) -> _T:
        """Run ``attempt`` until it answers 2xx, retrying what the rule allows.

        Every request of the transport goes through this loop, and every attempt through the
        one ``await attempt()`` below: what must happen before each attempt (the client-wide
        pause after a 429) happens just before it. ``attempt`` gives the status, the headers,
        the body (read for errors) and what to return on success. With ``unsent_only`` only a
        request that never left (the connection could not be made) and a 429 are retried;
        otherwise every transient failure is. Nothing is counted or allocated for retries until
        an attempt fails.
        """
        attempts = 0
        spent = 0
        next_delay: Callable[[], float] | None = None
        rate = self.rate
        while True:
            if not rate.try_acquire():
                await rate.acquire(method, path)
            retry_after: float | None = None
            error: PredevError
            try:
                status, headers, body, result = await attempt()
            except APIConnectionError as exc:
                if not _should_retry(exc, unsent_only):
                    raise  # it may have reached the server: the caller must find out, not us
                error = exc
            else:
                if 200 <= status < 300:
                    rate.answered()
                    budget = self.budget
                    if budget is not None and budget.tokens < budget.capacity:
                        budget.refund(spent or 1)
                    return result
                error = self._status_error(status, method, path, headers, body)
                if not rate.answered(error):
                    raise error  # a Retry-After longer than the controller's max_pause
                if not _should_retry(error, unsent_only):
                    raise error
                retry_after = parse_retry_after(headers)
            # -- the attempt failed and may be retried: from here on, off the hot path --
            if attempts >= self._retry.max_retries:
                raise error
            cost = self._retry_cost(error)
            if cost is None:
                raise error
            spent += cost
            attempts += 1
            if next_delay is None:
                next_delay = self._retry.delays()
            delay = scaled(self._retry_delay(next_delay(), retry_after))
            self.retries += 1
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "retrying %s %s in %.3fs (attempt %d): %s", method, path, delay, attempts, error
                )
            if not (isinstance(error, RateLimitError) and rate.pause(error, delay)):
                await anyio.sleep(delay)  # else the whole client pauses: the retry waits in acquire

    def _retry_cost(self, error: PredevError) -> int | None:
        """Charge one retry to the budget (:meth:`RetryBudget.charge`); free without a budget."""
        budget = self.budget
        return 0 if budget is None else budget.charge(error)

    def _retry_delay(self, backoff_delay: float, retry_after: float | None) -> float:
        """:func:`retry_delay` with this transport's ``RetryPolicy.max_retry_after``."""
        return retry_delay(backoff_delay, retry_after, max_retry_after=self._retry.max_retry_after)

    async def _send_once(
        self,
        method: str,
        url: URL,
        path: str,
        params: Mapping[str, str] | None,
        payload: bytes | None,
    ) -> _Answer[Body]:
        session = self._session if self._session is not None else self._get_session()
        debug = logger.isEnabledFor(logging.DEBUG)
        started = time.perf_counter() if debug else 0.0
        self.requests_sent += 1
        with _MappedErrors(method, path):
            async with session.request(
                method,
                url,
                params=params,
                data=payload,
                headers=self._get_headers if payload is None else self._post_headers,
                allow_redirects=False,
                timeout=self._timeout,
            ) as response:
                length = response.content_length
                if (
                    length is not None
                    and length <= self._small_body
                    and "Content-Encoding" not in response.headers
                ):
                    body: Body = await response.read()
                else:
                    body = await self._read_body(response, method, path)
                status = response.status
                headers = response.headers
        if debug:
            logger.debug(
                "%s %s -> %d (%d bytes, %.1f ms)",
                method,
                path,
                status,
                len(body),
                (time.perf_counter() - started) * 1000,
            )
        return status, headers, body, body

    async def _open_once(
        self, url: URL, path: str, body: bytes, client_timeout: aiohttp.ClientTimeout
    ) -> _Answer[aiohttp.ClientResponse]:
        session = self._get_session()
        started = time.perf_counter()
        self.requests_sent += 1
        headers = {**self._post_headers, "Accept": _EVENT_STREAM}
        response: aiohttp.ClientResponse | None = None
        try:
            with _MappedErrors("POST", path):
                response = await session.request(
                    "POST",
                    url,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=client_timeout,
                )
                status = response.status
                if 200 <= status < 300 and response.content_type == _EVENT_STREAM:
                    if logger.isEnabledFor(logging.DEBUG):
                        logger.debug(
                            "POST %s -> %d (stream open, %.1f ms)",
                            path,
                            status,
                            (time.perf_counter() - started) * 1000,
                        )
                    opened, response = response, None
                    return status, opened.headers, b"", opened
                error_body = await self._read_body(response, "POST", path)
        finally:
            if response is not None:
                response.release()
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("POST %s -> %d (%d bytes, no stream)", path, status, len(error_body))
        if 200 <= status < 300:
            raise ResponseDecodeError(
                f"expected an event stream, got {response.content_type or 'no content type'}",
                method="POST",
                path=path,
                body=body_head(error_body),
            )
        return status, response.headers, error_body, response

    async def _read_body(self, response: aiohttp.ClientResponse, method: str, path: str) -> Body:
        """Read a body into one buffer, never more than ``max_response_bytes``.

        With a ``Content-Length`` (and no content encoding) the buffer is allocated once at that
        size and filled as the chunks arrive: no list of chunks joined at the end, so a 20 MB
        timeline takes 20 MB, not 40. A length over the limit is refused before anything is
        read. Without one (chunked, or compressed, where the length is not the decoded size) the
        buffer grows, and the read stops as soon as it passes the limit. The decoders read the
        ``bytearray`` in place.

        Raises:
            ResponseDecodeError: the body is (or would be) larger than ``max_response_bytes``.
            aiohttp.ClientPayloadError: the body ended before its ``Content-Length``.
        """
        limit = self._max_response_bytes
        length = response.content_length
        if length is not None and length > limit:
            raise ResponseDecodeError(
                f"response body of {length} bytes exceeds max_response_bytes={limit}",
                method=method,
                path=path,
            )
        # Chunk by chunk as aiohttp received them: read() and readany() join what is buffered
        # into new bytes first, which is one more copy of the body.
        chunks = response.content.iter_chunks()
        if length is None or "Content-Encoding" in response.headers:
            grown = bytearray()
            async for chunk, _ in chunks:
                if len(grown) + len(chunk) > limit:
                    raise ResponseDecodeError(
                        f"response body exceeds max_response_bytes={limit}",
                        method=method,
                        path=path,
                    )
                grown += chunk
            return grown
        buffer = bytearray(length)
        filled = 0
        with memoryview(buffer) as view:
            async for chunk, _ in chunks:
                end = filled + len(chunk)
                if end > length:
                    break
                view[filled:end] = chunk
                filled = end
        if filled != length:
            raise aiohttp.ClientPayloadError(
                f"the body does not match its Content-Length of {length} bytes"
            )
        return buffer

    @staticmethod
    def _status_error(
        status: int, method: str, path: str, headers: Mapping[str, str], body: Body
    ) -> APIStatusError:
        try:
            parsed = error_body_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            parsed = None
        return make_status_error(
            status,
            method=method,
            path=path,
            body=parsed,
            raw=body_head(body),
            request_id=headers.get("x-request-id"),
            retry_after=parse_retry_after(headers) if status == 429 else None,
        )


class _Chunks:
    """The body of an open stream, chunk by chunk as it arrives, with aiohttp's errors as ours."""

    def __init__(self, response: aiohttp.ClientResponse, path: str, read_timeout: float) -> None:
        self._response = response
        self._path = path
        self._errors = _MappedErrors("POST", path, stream_read_timeout=read_timeout)
        self.bytes_read = 0

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        with self._errors:
            chunk = await self._response.content.readany()
        if not chunk:
            raise StopAsyncIteration
        self.bytes_read += len(chunk)
        return chunk

    def close(self) -> None:
        """Hand the connection back if the stream was read to its end, else close it."""
        response = self._response
        if response.content.at_eof():
            response.release()
        else:
            response.close()
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("POST %s stream closed after %d bytes", self._path, self.bytes_read)
