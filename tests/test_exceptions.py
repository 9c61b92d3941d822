"""The error tree: what each error carries, and that errors survive pickling."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from asyncclient import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PaymentRequiredError,
    PredevError,
    RateLimitError,
    ResponseDecodeError,
    ServerError,
    WalkStalledError,
    WatchTimeoutError,
)
from asyncclient._exceptions import is_outage, is_transient, make_status_error
from asyncclient._models import ErrorBody

CASES = [
    pytest.param(
        RateLimitError(
            status=429,
            method="GET",
            path="/browser-agent/x",
            message="slow down",
            code="RATE_LIMITED",
            retry_after=2.5,
        ),
        id="rate-limit",
    ),
    pytest.param(
        PaymentRequiredError(
            status=402,
            method="GET",
            path="/p",
            message="Out of credits",
            code="INSUFFICIENT_CREDITS",
            action_url="https://pre.dev/credits",
            request_id="req-1",
            body=b'{"error": "Out of credits"}',
        ),
        id="payment",
    ),
    pytest.param(NotFoundError(status=404, method="GET", path="/p", message="gone"), id="404"),
    pytest.param(APITimeoutError("timed out", method="GET", path="/p"), id="timeout"),
    pytest.param(APIConnectionError("reset", method="GET", path="/p"), id="connection"),
    pytest.param(ResponseDecodeError("bad", method="GET", path="/p", body=b"<html>"), id="decode"),
    pytest.param(WatchTimeoutError("0" * 24, "late"), id="watch-timeout"),
    pytest.param(WalkStalledError("list moves too fast"), id="walk-stalled"),
]


@pytest.mark.parametrize("error", CASES)
def test_errors_survive_pickling(error: PredevError) -> None:
    """An error pickled and unpickled (e.g. across a process pool) keeps its type and fields."""
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.__dict__ == error.__dict__


def test_status_error_message_names_status_method_path_and_code() -> None:
    """A status error's message says what a person needs to act on it."""
    error = APIStatusError(
        status=503, method="GET", path="/list-browser-agents", message="busy", code="X"
    )
    assert str(error) == "503 GET /list-browser-agents: busy [X]"
    assert isinstance(RateLimitError(status=429, method="G", path="/", message="m"), APIStatusError)
    assert isinstance(WatchTimeoutError("0" * 24, "late"), TimeoutError)


@pytest.mark.parametrize(
    ("status", "body", "expected", "message", "final_status"),
    [
        pytest.param(400, ErrorBody(error="bad"), BadRequestError, "bad", 400, id="400"),
        pytest.param(401, None, AuthenticationError, "raw text", 401, id="401-not-json"),
        pytest.param(402, ErrorBody(message="pay"), PaymentRequiredError, "pay", 402, id="402"),
        pytest.param(404, ErrorBody(), NotFoundError, "raw text", 404, id="404-no-message"),
        pytest.param(409, ErrorBody(error="x"), APIStatusError, "x", 409, id="409-plain"),
        pytest.param(503, None, ServerError, "raw text", 503, id="5xx"),
        pytest.param(
            302,
            None,
            APIStatusError,
            "unexpected redirect (redirects are not followed)",
            302,
            id="redirect",
        ),
        pytest.param(
            200,
            ErrorBody(code="QUEUE_FULL"),
            RateLimitError,
            "the run failed",
            429,
            id="stream-known-code",
        ),
        pytest.param(
            200,
            ErrorBody(error="boom", code="NEW"),
            APIStatusError,
            "boom",
            200,
            id="stream-unknown-code",
        ),
    ],
)
def test_make_status_error_picks_the_class_status_and_message(
    status: int,
    body: ErrorBody | None,
    expected: type[APIStatusError],
    message: str,
    final_status: int,
) -> None:
    """One factory turns a status (or a stream's error code) into the documented error class."""
    error = make_status_error(
        status, method="GET", path="/p", body=body, raw=b"raw text", request_id="req-1"
    )
    assert type(error) is expected
    assert (error.status, error.message, error.request_id) == (final_status, message, "req-1")


def test_make_status_error_gives_a_429_its_retry_after() -> None:
    """A 429 carries the Retry-After the transport parsed, for the caller to honour."""
    error = make_status_error(429, method="GET", path="/p", body=None, raw=b"", retry_after=1.5)
    assert isinstance(error, RateLimitError)
    assert error.retry_after == 1.5


_FACTORY: dict[str, Any] = {"method": "G", "path": "/", "body": None, "raw": b""}


@pytest.mark.parametrize(
    ("error", "transient", "outage"),
    [
        pytest.param(APIConnectionError("refused", method="G", path="/"), True, True, id="conn"),
        pytest.param(APITimeoutError("slow", method="G", path="/"), True, True, id="timeout"),
        pytest.param(make_status_error(408, **_FACTORY), True, True, id="408"),
        pytest.param(make_status_error(429, **_FACTORY), True, False, id="429"),
        pytest.param(make_status_error(500, **_FACTORY), True, True, id="500"),
        pytest.param(make_status_error(504, **_FACTORY), True, True, id="504"),
        pytest.param(make_status_error(501, **_FACTORY), False, False, id="501"),
        pytest.param(make_status_error(400, **_FACTORY), False, False, id="400"),
        pytest.param(make_status_error(404, **_FACTORY), False, False, id="404"),
        pytest.param(ResponseDecodeError("bad", method="G", path="/"), False, False, id="decode"),
        pytest.param(ValueError("not ours"), False, False, id="foreign"),
    ],
)
def test_transient_is_defined_once(error: Exception, transient: bool, outage: bool) -> None:
    """No answer, 408, 429 and the retried 5xx may pass; to the outage tracker a 429 answers."""
    assert is_transient(error) is transient
    assert is_outage(error) is outage
