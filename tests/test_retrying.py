"""The retry decisions: which failures are retried, how long to wait, what a retry costs."""

from __future__ import annotations

import email.utils

import pytest
from multidict import CIMultiDict

from asyncclient import (
    APIConnectionError,
    APITimeoutError,
    BadRequestError,
    PredevError,
    RateLimitError,
    ServerError,
)
from asyncclient._retrying import RetryBudget, parse_retry_after, retry_delay, should_retry

_CONNECTION = APIConnectionError("connection failed", method="POST", path="/browser-agent")
_TIMEOUT = APITimeoutError("request timed out", method="POST", path="/browser-agent")
_SERVER = ServerError(status=503, method="POST", path="/browser-agent", message="busy")
_RATE = RateLimitError(status=429, method="POST", path="/browser-agent", message="slow down")
_BAD = BadRequestError(status=400, method="POST", path="/browser-agent", message="bad")


# -- which failures are retried -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "unsent_only", "never_sent", "expected"),
    [
        pytest.param(_CONNECTION, False, False, True, id="any-connection-error"),
        pytest.param(_TIMEOUT, False, False, True, id="any-timeout"),
        pytest.param(_SERVER, False, False, True, id="any-503"),
        pytest.param(_RATE, False, False, True, id="any-429"),
        pytest.param(_BAD, False, False, False, id="any-400-never"),
        pytest.param(_CONNECTION, True, True, True, id="unsent-never-left"),
        pytest.param(_CONNECTION, True, False, False, id="unsent-may-have-left"),
        pytest.param(_TIMEOUT, True, False, False, id="unsent-timeout"),
        pytest.param(_SERVER, True, False, False, id="unsent-503"),
        pytest.param(_RATE, True, False, True, id="unsent-429"),
        pytest.param(_BAD, True, True, False, id="unsent-400-never"),
    ],
)
def test_should_retry(
    error: PredevError, unsent_only: bool, never_sent: bool, expected: bool
) -> None:
    """A request that must not happen twice is retried only when it never left, or on a 429."""
    assert should_retry(error, unsent_only=unsent_only, never_sent=never_sent) is expected


# -- how long to wait ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backoff", "retry_after", "expected"),
    [
        pytest.param(0.5, None, 0.5, id="no-header-backoff"),
        pytest.param(0.5, 3.0, 3.0, id="server-asks-longer"),
        pytest.param(2.0, 0.1, 2.0, id="never-below-backoff"),
        pytest.param(0.5, 3600.0, 60.0, id="capped"),
    ],
)
def test_retry_delay(backoff: float, retry_after: float | None, expected: float) -> None:
    """A Retry-After lengthens the backoff's draw up to the cap, and never shortens it."""
    assert retry_delay(backoff, retry_after, max_retry_after=60.0) == expected


# -- what a retry costs -------------------------------------------------------------------------


def test_budget_charges_a_timeout_twice_and_refuses_when_spent() -> None:
    """A retry after a timeout costs twice; once spent, retries are refused and counted."""
    budget = RetryBudget(capacity=15, retry_cost=5)
    assert budget.charge(_TIMEOUT) == 10
    assert budget.charge(_SERVER) == 5
    assert budget.tokens == 0
    assert budget.charge(_SERVER) is None
    assert budget.refused == 1
    budget.refund(100)
    assert budget.tokens == 15


# -- Retry-After parsing ------------------------------------------------------------------------

NOW = 1_776_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({}, None, id="missing"),
        pytest.param({"Retry-After": "120"}, 120.0, id="seconds"),
        pytest.param({"Retry-After": "0"}, 0.0, id="zero"),
        pytest.param({"Retry-After": " 5 "}, 5.0, id="padded"),
        pytest.param({"Retry-After": "1.5"}, 1.5, id="fractional"),
        pytest.param({"RETRY-AFTER": "3"}, 3.0, id="header-case"),
        pytest.param({"Retry-After": "-3"}, 0.0, id="negative"),
        pytest.param({"retry-after-ms": "250"}, 0.25, id="milliseconds"),
        pytest.param({"retry-after-ms": "-10"}, 0.0, id="milliseconds-negative"),
        pytest.param({"retry-after-ms": "100", "Retry-After": "9"}, 0.1, id="milliseconds-win"),
        pytest.param({"retry-after-ms": "soon", "Retry-After": "2"}, 2.0, id="bad-ms-falls-back"),
        pytest.param(
            {"Retry-After": email.utils.formatdate(NOW + 30, usegmt=True)}, 30.0, id="date-future"
        ),
        pytest.param(
            {"Retry-After": email.utils.formatdate(NOW - 30, usegmt=True)}, 0.0, id="date-past"
        ),
        pytest.param({"Retry-After": "Sun, 12 Apr 2026 13:21:00 -0000"}, 60.0, id="date-no-zone"),
        pytest.param({"Retry-After": "soon"}, None, id="garbage"),
        pytest.param({"Retry-After": ""}, None, id="empty"),
        pytest.param({"Retry-After": "inf"}, None, id="infinite"),
        pytest.param({"Retry-After": "nan"}, None, id="nan"),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    """Retry-After is read as seconds, milliseconds or an HTTP date; never negative."""
    result = parse_retry_after(CIMultiDict(headers), now=NOW)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)
