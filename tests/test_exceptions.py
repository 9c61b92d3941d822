"""The error tree: what each error carries, and that errors survive pickling."""

from __future__ import annotations

import pickle

import pytest

from asyncclient import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    NotFoundError,
    PaymentRequiredError,
    PredevError,
    RateLimitError,
    ResponseDecodeError,
    WalkStalledError,
    WatchTimeoutError,
)

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
