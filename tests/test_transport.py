"""Status codes, retries, Retry-After and bad bodies, against a tiny scripted server on loopback."""

from __future__ import annotations

import gzip
import math
import socket
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import anyio
import msgspec
import pytest
from _support import serve_handler
from aiohttp import web

from asyncclient import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    Client,
    NotFoundError,
    PaymentRequiredError,
    RateController,
    RateLimitError,
    ResponseDecodeError,
    RetryPolicy,
    Run,
    ServerError,
)
from asyncclient._testing_switch import current_delay_scale, scaled
from asyncclient.testing import Emulator, EmulatorServer, Fault, set_testing

pytestmark = pytest.mark.anyio

KEY = "sk-test-SECRET-5f2b9c"
RUN_ID = "65f8a9d2c1e4b5a6f7e8d9c0"
RUN_BODY = b'{"id": "65f8a9d2c1e4b5a6f7e8d9c0", "total": 1, "completed": 1, "status": "completed"}'
PAGE_BODY = b'{"batches": [], "total": 0, "hasMore": false}'
JSON = {"Content-Type": "application/json"}

LARGE_EVENTS = [{"type": "plan", "data": {"step": i, "text": "x" * 1000}} for i in range(1000)]
LARGE_BODY = msgspec.json.encode(
    {
        "id": RUN_ID,
        "total": 1,
        "completed": 1,
        "status": "completed",
        "results": [{"status": "SUCCESS", "events": LARGE_EVENTS}],
    }
)
"""A finished run with about 1 MB of timeline: larger than what is read with aiohttp's read()."""


def fast_retry(max_retries: int = 2, max_retry_after: float = 0.05) -> RetryPolicy:
    """The production retry logic with millisecond delays."""
    return RetryPolicy(
        max_retries=max_retries,
        initial_delay=0.001,
        max_delay=0.005,
        max_retry_after=max_retry_after,
    )


@dataclass
class Reply:
    """One scripted answer."""

    status: int = 200
    body: bytes = RUN_BODY
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))
    delay: float = 0.0
    truncate: bool = False
    """Announce the whole body but send only its first bytes, then drop the connection."""
    truncate_after: int = 5
    """How many bytes a truncated body sends before the connection drops."""
    chunked: bool = False
    """Send the body with chunked transfer encoding (no ``Content-Length``), in 64 KiB pieces."""
    gzip: bool = False
    """Send the body gzip-compressed, with ``Content-Encoding`` and the compressed length."""


@dataclass
class ScriptedServer:
    """A loopback server that answers each request with the next scripted reply."""

    base_url: str = ""
    replies: deque[Reply] = field(default_factory=deque)
    received: list[float] = field(default_factory=list)
    requests: list[web.Request] = field(default_factory=list)

    def script(self, *replies: Reply) -> None:
        """Queue replies; once they run out every request gets a 418."""
        self.replies.extend(replies)

    @property
    def count(self) -> int:
        """Requests received so far."""
        return len(self.requests)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.received.append(anyio.current_time())  # the loop's clock, virtual or not
        self.requests.append(request)
        if not self.replies:
            return web.json_response({"error": "script exhausted"}, status=418)
        reply = self.replies.popleft()
        if reply.delay:
            await anyio.sleep(reply.delay)
        if reply.truncate:
            response = web.StreamResponse(status=reply.status, headers=reply.headers)
            response.content_length = len(reply.body) + 100
            await response.prepare(request)
            await response.write(reply.body[: reply.truncate_after])
            assert request.transport is not None
            request.transport.close()
            return response
        if reply.chunked:
            response = web.StreamResponse(status=reply.status, headers=reply.headers)
            response.enable_chunked_encoding()
            await response.prepare(request)
            for start in range(0, len(reply.body), 65536):
                await response.write(reply.body[start : start + 65536])
            await response.write_eof()
            return response
        if reply.gzip:
            headers = {**reply.headers, "Content-Encoding": "gzip"}
            compressed = gzip.compress(reply.body)
            return web.Response(status=reply.status, body=compressed, headers=headers)
        return web.Response(status=reply.status, body=reply.body, headers=reply.headers)


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedServer]:
    """A scripted server on a free loopback port, stopped after the test."""
    server = ScriptedServer()
    async with serve_handler(server.handle) as base_url:
        server.base_url = base_url
        yield server


def client_for(server: ScriptedServer, **kwargs: object) -> Client:
    options: dict[str, object] = {"retry": fast_retry()}
    options.update(kwargs)
    return Client(KEY, base_url=server.base_url, **options)  # type: ignore[arg-type]


# -- errors that are never retried --------------------------------------------------------------


async def test_payment_required_carries_code_and_action_url(scripted: ScriptedServer) -> None:
    """A 402 is a ``PaymentRequiredError`` with the server's code and actionUrl, never retried."""
    body = (
        b'{"error":"Out of credits","code":"INSUFFICIENT_CREDITS",'
        b'"actionUrl":"https://pre.dev/credits"}'
    )
    scripted.script(Reply(402, body, {**JSON, "x-request-id": "req-42"}))
    async with client_for(scripted) as api:
        with pytest.raises(PaymentRequiredError) as info:
            await api.get_run(RUN_ID)
        assert api.retries == 0
    error = info.value
    assert error.status == 402
    assert error.code == "INSUFFICIENT_CREDITS"
    assert error.action_url == "https://pre.dev/credits"
    assert error.message == "Out of credits"
    assert error.request_id == "req-42"
    assert error.path == f"/browser-agent/{RUN_ID}"
    assert "INSUFFICIENT_CREDITS" in str(error)
    assert scripted.count == 1


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        pytest.param(400, BadRequestError, id="400"),
        pytest.param(401, AuthenticationError, id="401"),
        pytest.param(403, APIStatusError, id="403"),
        pytest.param(404, NotFoundError, id="404"),
        pytest.param(409, APIStatusError, id="409"),
        pytest.param(422, APIStatusError, id="422"),
        pytest.param(501, ServerError, id="501"),
    ],
)
async def test_non_transient_statuses_are_not_retried(
    scripted: ScriptedServer, status: int, error_class: type[APIStatusError]
) -> None:
    """Client errors (and 501) raise their typed error after exactly one request."""
    scripted.script(Reply(status, b'{"error": "nope"}'), Reply(200))
    async with client_for(scripted) as api:
        with pytest.raises(error_class) as info:
            await api.list_runs(limit=5)
    assert type(info.value) is error_class
    assert info.value.status == status
    assert info.value.message == "nope"
    assert scripted.count == 1


async def test_error_without_json_body_keeps_an_excerpt(scripted: ScriptedServer) -> None:
    """A non-JSON error body still yields a readable message and a short body excerpt."""
    page = b"<html><body>Bad Gateway from the edge proxy</body></html>" + b" " * 5000
    scripted.script(Reply(403, page, {"Content-Type": "text/html"}))
    async with client_for(scripted) as api:
        with pytest.raises(APIStatusError) as info:
            await api.get_run(RUN_ID)
    error = info.value
    assert "Bad Gateway from the edge proxy" in error.message
    assert error.code is None
    assert len(error.body) < 300


# -- transient statuses -------------------------------------------------------------------------


async def test_rate_limit_with_retry_after_zero_is_retried(scripted: ScriptedServer) -> None:
    """A 429 with ``Retry-After: 0`` is retried at once and the call succeeds."""
    scripted.script(
        Reply(429, b'{"error": "slow down", "code": "RATE_LIMITED"}', {**JSON, "Retry-After": "0"}),
        Reply(200),
    )
    async with client_for(scripted) as api:
        run = await api.get_run(RUN_ID)
        assert (api.requests_sent, api.retries) == (2, 1)
    assert run.id == RUN_ID
    assert scripted.count == 2


TRANSIENT = [
    pytest.param(408, APIStatusError, id="408"),
    pytest.param(429, RateLimitError, id="429"),
    pytest.param(500, ServerError, id="500"),
    pytest.param(502, ServerError, id="502"),
    pytest.param(503, ServerError, id="503"),
    pytest.param(504, ServerError, id="504"),
]


@pytest.mark.parametrize(("status", "error_class"), TRANSIENT)
async def test_transient_statuses_are_retried(
    scripted: ScriptedServer, status: int, error_class: type[APIStatusError]
) -> None:
    """408, 429 and 5xx answered twice then 200: the call succeeds after two retries."""
    scripted.script(Reply(status, b'{"error": "flaky"}'), Reply(status, b"oops"), Reply(200))
    async with client_for(scripted) as api:
        run = await api.get_run(RUN_ID)
        assert api.retries == 2
    assert run == Run(id=RUN_ID, total=1, completed=1, status="completed")
    assert scripted.count == 3


@pytest.mark.parametrize(("status", "error_class"), TRANSIENT)
async def test_transient_statuses_raise_when_retries_run_out(
    scripted: ScriptedServer, status: int, error_class: type[APIStatusError]
) -> None:
    """With ``max_retries=1`` two transient failures raise the typed error after 2 requests."""
    scripted.script(Reply(status, b'{"error": "flaky"}'), Reply(status, b'{"error": "again"}'))
    async with client_for(scripted, max_retries=1) as api:
        with pytest.raises(error_class) as info:
            await api.list_runs(limit=1)
    assert type(info.value) is error_class
    assert info.value.status == status
    assert info.value.message == "again"
    assert scripted.count == 2


async def test_exhausted_rate_limit_reports_retry_after(scripted: ScriptedServer) -> None:
    """A 429 that outlives the retries says how long the server asked to wait."""
    scripted.script(Reply(429, b'{"error":"busy","code":"QUEUE_FULL"}', {"Retry-After": "7"}))
    async with client_for(scripted, max_retries=0) as api:
        with pytest.raises(RateLimitError) as info:
            await api.get_run(RUN_ID)
    assert info.value.retry_after == 7.0
    assert info.value.code == "QUEUE_FULL"
    assert scripted.count == 1


@pytest.mark.virtual_time  # the gap is exact
async def test_long_retry_after_is_capped(scripted: ScriptedServer) -> None:
    """Without ``max_pause``, a long ``Retry-After`` is cut to ``max_retry_after``, not slept."""
    scripted.script(Reply(429, b"{}", {"Retry-After": "3600"}), Reply(200))
    retry = fast_retry(max_retry_after=0.02)
    rate = RateController(max_pause=math.inf)
    async with client_for(scripted, retry=retry, rate_controller=rate) as api:
        with anyio.fail_after(2):
            await api.get_run(RUN_ID)
    first, second = scripted.received
    assert 0.02 <= second - first <= 0.02 + retry.max_delay  # the cap, not an hour


@pytest.mark.virtual_time  # the pause is exact
async def test_rate_limit_pauses_other_requests_of_the_client(scripted: ScriptedServer) -> None:
    """After a 429 with ``Retry-After``, no request of the same client goes out until it passes."""
    scripted.script(Reply(429, b"{}", {"Retry-After": "0.2"}), Reply(200), Reply(200))
    runs: list[Run] = []
    async with client_for(scripted, retry=fast_retry(max_retry_after=1.0)) as api:

        async def fetch() -> None:
            runs.append(await api.get_run(RUN_ID))

        async with anyio.create_task_group() as group:
            group.start_soon(fetch)
            with anyio.fail_after(2):
                # The client counts the retry in the same step that starts its pause.
                while api.retries == 0:
                    await anyio.sleep(0.001)
            second_started = anyio.current_time()
            group.start_soon(fetch)
    assert len(runs) == 2
    first, *later = scripted.received
    assert second_started < first + 0.2  # the second call really overlapped the pause
    assert len(later) == 2
    assert all(t - first >= 0.2 for t in later)


@pytest.mark.virtual_time  # the wait is exact
async def test_retry_after_is_honoured_for_503(scripted: ScriptedServer) -> None:
    """A 503 with ``Retry-After`` waits that long (up to the cap) before the retry."""
    scripted.script(Reply(503, b"{}", {"Retry-After": "0.1"}), Reply(200))
    async with client_for(scripted, retry=fast_retry(max_retry_after=1.0)) as api:
        await api.get_run(RUN_ID)
    first, second = scripted.received
    assert 0.1 <= second - first <= 0.1 + fast_retry().max_delay


async def test_truncated_body_is_retried(scripted: ScriptedServer) -> None:
    """A body cut short by a dropped connection is retried, and the retry's answer is used."""
    scripted.script(Reply(200, truncate=True), Reply(200))
    async with client_for(scripted) as api:
        run = await api.get_run(RUN_ID)
        assert (api.requests_sent, api.retries) == (2, 1)
    assert run.id == RUN_ID


async def test_truncated_body_without_retries_is_connection_error(
    scripted: ScriptedServer,
) -> None:
    """With no retries left a cut-short body is an ``APIConnectionError``, not a decode error."""
    scripted.script(Reply(200, truncate=True))
    async with client_for(scripted, max_retries=0) as api:
        with pytest.raises(APIConnectionError, match="cut short") as info:
            await api.get_run(RUN_ID)
    assert isinstance(info.value.__cause__, aiohttp.ClientError)


async def test_connection_refused_is_retried_then_raised() -> None:
    """No server on the port: ``APIConnectionError`` after every retry, from aiohttp's error."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with Client(KEY, base_url=f"http://127.0.0.1:{port}", retry=fast_retry()) as api:
        with pytest.raises(APIConnectionError) as info:
            await api.get_run(RUN_ID)
        assert (api.requests_sent, api.retries) == (3, 2)
    assert isinstance(info.value.__cause__, aiohttp.ClientError)
    assert info.value.path == f"/browser-agent/{RUN_ID}"


@pytest.mark.parametrize(
    "own_session", [pytest.param(False, id="client-session"), pytest.param(True, id="own-session")]
)
async def test_request_timeout_applies(scripted: ScriptedServer, own_session: bool) -> None:
    """An answer slower than ``timeout`` is an ``APITimeoutError``, whoever owns the session."""
    scripted.script(Reply(200, delay=0.15))
    async with aiohttp.ClientSession() as session:
        api = client_for(
            scripted, timeout=0.03, max_retries=0, session=session if own_session else None
        )
        async with api:
            with pytest.raises(APITimeoutError):
                await api.get_run(RUN_ID)
    assert scripted.count == 1


async def test_cancelling_a_request_closes_the_client_cleanly(scripted: ScriptedServer) -> None:
    """A deadline around ``async with Client()`` cancels the request in flight and closes up."""
    scripted.script(Reply(200, delay=0.1))
    with anyio.move_on_after(0.03) as scope:
        async with client_for(scripted) as api:
            await api.get_run(RUN_ID)
    assert scope.cancelled_caught
    assert api.requests_sent == 1
    with pytest.raises(RuntimeError, match="closed"):
        await api.get_run(RUN_ID)


# -- bodies that are not what the API documents -------------------------------------------------


@pytest.mark.parametrize(
    ("body", "call"),
    [
        pytest.param(b"<html><body>maintenance</body></html>", "get", id="html-get"),
        pytest.param(b"<html><body>maintenance</body></html>", "list", id="html-list"),
        pytest.param(b"[1, 2, 3]", "get", id="json-list-get"),
        pytest.param(b"[]", "list", id="json-list-list"),
        pytest.param(b"", "get", id="empty"),
        pytest.param(b'{"status": "completed"}', "get", id="run-without-id"),
        pytest.param(b'{"batches": {"id": "x"}}', "list", id="batches-not-a-list"),
        pytest.param(b'{"id": "65f8a9d2c1e4b5a6f7e8d9c0", "total": "3"}', "get", id="wrong-type"),
        pytest.param(b'{"id": "65f8a9d2c1e4b5a6f7e8d9c0"', "get", id="truncated-json"),
    ],
)
async def test_unexpected_2xx_body_is_decode_error(
    scripted: ScriptedServer, body: bytes, call: str
) -> None:
    """A 200 whose body is not the documented JSON is a ``ResponseDecodeError``, not retried."""
    scripted.script(Reply(200, body, {"Content-Type": "text/html"}))
    async with client_for(scripted) as api:
        request = api.get_run(RUN_ID) if call == "get" else api.list_runs(limit=3)
        with pytest.raises(ResponseDecodeError) as info:
            await request
    assert info.value.body == body.decode()
    assert info.value.method == "GET"
    assert scripted.count == 1


async def test_oversized_body_is_refused(scripted: ScriptedServer) -> None:
    """A body larger than ``max_response_bytes`` is refused with ``ResponseDecodeError``."""
    scripted.script(Reply(200, b'{"id": "' + b"a" * 5000 + b'"}'))
    async with client_for(scripted, max_response_bytes=1000) as api:
        with pytest.raises(ResponseDecodeError, match="max_response_bytes"):
            await api.get_run(RUN_ID)


# -- what every request carries -----------------------------------------------------------------


@pytest.mark.parametrize(
    "own_session", [pytest.param(False, id="client-session"), pytest.param(True, id="own-session")]
)
async def test_every_request_carries_the_key_and_the_client_headers(
    scripted: ScriptedServer, own_session: bool
) -> None:
    """GETs and POSTs send the key, JSON Accept and our User-Agent, whoever owns the session."""
    scripted.script(Reply(200), Reply(200, PAGE_BODY), Reply(200))
    async with aiohttp.ClientSession(headers={"X-Trace": "abc"}) as session:
        api = client_for(scripted, session=session if own_session else None)
        async with api:
            await api.get_run(RUN_ID)
            await api.list_runs(limit=3)
            await api.submit([{"url": "https://example.com"}])
    for request in scripted.requests:
        assert request.headers["Authorization"] == f"Bearer {KEY}"
        assert request.headers["Accept"] == "application/json"
        assert request.headers["User-Agent"].startswith("asyncclient/")
        # A caller's session keeps its own headers beside ours.
        assert ("X-Trace" in request.headers) is own_session
    assert [r.method for r in scripted.requests] == ["GET", "GET", "POST"]
    assert scripted.requests[2].headers["Content-Type"] == "application/json"
    assert "Content-Type" not in scripted.requests[0].headers


async def test_cookies_the_server_sets_are_not_sent_back(scripted: ScriptedServer) -> None:
    """The client's own session keeps no cookies: a ``Set-Cookie`` never comes back."""
    scripted.script(Reply(200, headers={**JSON, "Set-Cookie": "sticky=1; Path=/"}), Reply(200))
    # By name: aiohttp's cookie jar would ignore a cookie from an IP address anyway.
    base_url = scripted.base_url.replace("127.0.0.1", "localhost")
    async with Client(KEY, base_url=base_url, retry=fast_retry()) as api:
        await api.get_run(RUN_ID)
        await api.get_run(RUN_ID)
    assert [r.headers.get("Cookie") for r in scripted.requests] == [None, None]


# -- large bodies: one buffer, bounded ------------------------------------------------------


def _events_of(run: Run) -> list[object]:
    return [msgspec.json.decode(event.raw_data) for _, event in run.events()]


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(Reply(200, LARGE_BODY), id="content-length"),
        pytest.param(Reply(200, LARGE_BODY, chunked=True), id="chunked"),
        pytest.param(Reply(200, LARGE_BODY, gzip=True), id="gzip"),
    ],
)
async def test_large_body_is_read_whole_and_decoded(scripted: ScriptedServer, reply: Reply) -> None:
    """A megabyte timeline arrives intact, whether sized, chunked or compressed."""
    scripted.script(reply)
    async with client_for(scripted) as api:
        run = await api.get_run(RUN_ID, include_events=True)
    assert run.id == RUN_ID
    assert _events_of(run) == [event["data"] for event in LARGE_EVENTS]
    assert scripted.requests[0].query["includeEvents"] == "true"


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(Reply(200, LARGE_BODY), id="content-length"),
        pytest.param(Reply(200, LARGE_BODY, chunked=True), id="chunked"),
    ],
)
async def test_body_of_exactly_max_response_bytes_is_accepted(
    scripted: ScriptedServer, reply: Reply
) -> None:
    """The limit is inclusive: a body of exactly ``max_response_bytes`` is read and decoded."""
    scripted.script(reply)
    async with client_for(scripted, max_response_bytes=len(LARGE_BODY)) as api:
        run = await api.get_run(RUN_ID, include_events=True)
    assert len(_events_of(run)) == len(LARGE_EVENTS)


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        pytest.param(
            Reply(200, LARGE_BODY), f"of {len(LARGE_BODY)} bytes exceeds", id="content-length"
        ),
        pytest.param(Reply(200, LARGE_BODY, chunked=True), "body exceeds", id="chunked"),
        pytest.param(Reply(200, LARGE_BODY, gzip=True), "body exceeds", id="gzip-decoded-size"),
    ],
)
async def test_large_body_over_the_limit_is_refused_once(
    scripted: ScriptedServer, reply: Reply, message: str
) -> None:
    """One byte over ``max_response_bytes`` is a ``ResponseDecodeError``, and not retried."""
    scripted.script(reply, Reply(200, LARGE_BODY))
    async with client_for(scripted, max_response_bytes=len(LARGE_BODY) - 1) as api:
        with pytest.raises(ResponseDecodeError, match=message) as info:
            await api.get_run(RUN_ID, include_events=True)
        assert api.requests_sent == 1
    assert "max_response_bytes" in str(info.value)
    assert len(info.value.body) < 1000  # an excerpt, not the body


async def test_large_body_cut_short_is_retried(scripted: ScriptedServer) -> None:
    """A large body that stops half way is retried, and the retry's whole body is used."""
    half = Reply(200, LARGE_BODY, truncate=True, truncate_after=len(LARGE_BODY) // 2)
    scripted.script(half, Reply(200, LARGE_BODY))
    async with client_for(scripted) as api:
        run = await api.get_run(RUN_ID, include_events=True)
        assert (api.requests_sent, api.retries) == (2, 1)
    assert len(_events_of(run)) == len(LARGE_EVENTS)


async def test_large_body_cut_short_without_retries_is_connection_error(
    scripted: ScriptedServer,
) -> None:
    """With no retries left a large body cut short is an ``APIConnectionError`` from aiohttp's."""
    scripted.script(Reply(200, LARGE_BODY, truncate=True, truncate_after=len(LARGE_BODY) // 2))
    async with client_for(scripted, max_retries=0) as api:
        with pytest.raises(APIConnectionError, match="cut short") as info:
            await api.get_run(RUN_ID, include_events=True)
    assert isinstance(info.value.__cause__, aiohttp.ClientPayloadError)


async def test_large_error_body_keeps_an_excerpt(scripted: ScriptedServer) -> None:
    """A large non-JSON 2xx body is a ``ResponseDecodeError`` whose ``body`` is an excerpt."""
    scripted.script(Reply(200, b"<html>" + b"x" * 1_000_000, {"Content-Type": "text/html"}))
    async with client_for(scripted) as api:
        with pytest.raises(ResponseDecodeError) as info:
            await api.get_run(RUN_ID)
    assert info.value.body.startswith("<html>xxx")
    assert len(info.value.body) < 1000


# -- the testing switch (asyncclient.testing.set_testing) ------------------------------------


def test_set_testing_scales_every_delay_and_none_switches_it_off() -> None:
    """``set_testing(delay_scale=f)`` multiplies each delay by ``f``; ``None`` restores them."""
    assert current_delay_scale() is None
    assert scaled(2.0) == 2.0
    set_testing(delay_scale=0.25)
    try:
        assert current_delay_scale() == 0.25
        assert scaled(2.0) == 0.5
    finally:
        set_testing(delay_scale=None)
    assert current_delay_scale() is None
    assert scaled(2.0) == 2.0


def test_set_testing_as_a_context_manager_restores_the_previous_factor() -> None:
    """Leaving ``with set_testing(...)`` restores the factor before it, even after an error."""
    inside: list[float] = []

    def fail_under_a_smaller_factor() -> None:
        with set_testing(delay_scale=0.01):
            inside.append(scaled(1.0))
            raise RuntimeError("inside")

    with set_testing(delay_scale=0.5):
        with pytest.raises(RuntimeError, match="inside"):
            fail_under_a_smaller_factor()
        assert inside == [pytest.approx(0.01)]
        assert current_delay_scale() == 0.5
    assert current_delay_scale() is None


@pytest.mark.parametrize(
    "bad", [0, -1.0, math.nan, math.inf, "0.1", True], ids=["0", "neg", "nan", "inf", "str", "bool"]
)
def test_a_bad_delay_scale_is_a_value_error_naming_it(bad: object) -> None:
    """A factor that is not a finite number > 0 is refused, and the switch stays as it was."""
    with pytest.raises(ValueError, match="delay_scale"):
        set_testing(delay_scale=bad)  # type: ignore[arg-type]
    assert current_delay_scale() is None


async def test_the_switch_shortens_a_production_backoff_without_changing_the_retries(
    emulator: Emulator, server: EmulatorServer
) -> None:
    """Under the switch, a 30 s backoff policy still retries twice and answers, in milliseconds."""
    run_id = emulator.create_run(durations=[0.0])
    emulator.faults.add(Fault("status", status=503, times=2))
    slow = RetryPolicy(max_retries=2, initial_delay=30.0, max_delay=30.0)
    async with Client(server.api_key, base_url=server.base_url, retry=slow) as client:
        with set_testing(delay_scale=1e-5), anyio.fail_after(20):  # unscaled: 60 s, then a hang
            run = await client.get_run(run_id)
        assert run.id == run_id
        assert client.retries == 2
    assert emulator.faults.injected["status"] == 2
