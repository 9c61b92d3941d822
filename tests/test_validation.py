"""The argument checks every option and call goes through, read as tables of bounds."""

from __future__ import annotations

import re
from typing import Any

import pytest

from asyncclient import RunStatus
from asyncclient._validation import (
    check_bool,
    check_int,
    check_number,
    check_printable,
    check_seconds,
    is_loopback_host,
    validate_api_key,
    validate_base_url,
    validate_status_filter,
)

KEY = "sk-test-SECRET-5f2b9c"


@pytest.mark.parametrize(
    ("value", "bounds", "message"),
    [
        pytest.param(0, {"ge": 1}, "n must be in 1 or more, got 0", id="below-open-range"),
        pytest.param(101, {"ge": 1, "le": 100}, "n must be in 1..100, got 101", id="above-range"),
        pytest.param(True, {"ge": 0}, "n must be an integer, got bool", id="bool"),
        pytest.param(1.0, {"ge": 0}, "n must be an integer, got float", id="float"),
        pytest.param("3", {"ge": 0}, "n must be an integer, got str", id="str"),
    ],
)
def test_check_int_refuses(value: object, bounds: dict[str, int], message: str) -> None:
    """An int outside its inclusive bounds, or anything not an int, is refused by name."""
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        check_int("n", value, **bounds)


@pytest.mark.parametrize(
    ("value", "bounds"),
    [
        pytest.param(1, {"ge": 1}, id="lower-bound-inclusive"),
        pytest.param(100, {"ge": 1, "le": 100}, id="upper-bound-inclusive"),
        pytest.param(10**30, {"ge": 0}, id="no-upper-bound"),
    ],
)
def test_check_int_accepts(value: int, bounds: dict[str, int]) -> None:
    """Both bounds are inclusive, and without ``le`` there is no upper bound."""
    assert check_int("n", value, **bounds) == value


@pytest.mark.parametrize(
    ("value", "bounds", "message"),
    [
        pytest.param(0, {"gt": 0}, "x must be > 0, got 0", id="gt-excludes-its-bound"),
        pytest.param(-0.5, {"ge": 0}, "x must be >= 0, got -0.5", id="ge-below"),
        pytest.param(0.99, {"ge": 1.0}, "x must be >= 1.0, got 0.99", id="ge-one"),
        pytest.param(float("nan"), {"ge": 0}, "x must be finite, got nan", id="nan"),
        pytest.param(float("inf"), {"gt": 0}, "x must be finite, got inf", id="inf"),
        pytest.param(10**400, {"gt": 0}, f"x is too large, got {10**400!r}", id="huge-int"),
        pytest.param(False, {"ge": 0}, "x must be a number, got bool", id="bool"),
        pytest.param("1", {"ge": 0}, "x must be a number, got str", id="str"),
        pytest.param(None, {"ge": 0}, "x must be a number, got NoneType", id="none"),
    ],
)
def test_check_number_refuses(value: object, bounds: dict[str, float], message: str) -> None:
    """``gt`` and ``ge`` bounds read as written; non-finite and non-numbers are refused."""
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        check_number("x", value, **bounds)


@pytest.mark.parametrize(
    ("value", "bounds", "expected"),
    [
        pytest.param(0, {"ge": 0}, 0.0, id="ge-includes-its-bound"),
        pytest.param(1, {"ge": 1.0}, 1.0, id="ge-one-inclusive"),
        pytest.param(1e-9, {"gt": 0}, 1e-9, id="just-above-gt"),
        pytest.param(-3, {}, -3.0, id="unbounded"),
    ],
)
def test_check_number_accepts(value: float, bounds: dict[str, float], expected: float) -> None:
    """An accepted number comes back as a float."""
    result = check_number("x", value, **bounds)
    assert result == expected
    assert type(result) is float


@pytest.mark.parametrize(
    ("value", "optional", "expected"),
    [
        pytest.param(0.5, False, 0.5, id="positive"),
        pytest.param(2, False, 2.0, id="int"),
        pytest.param(None, True, None, id="none-when-optional"),
    ],
)
def test_check_seconds_accepts(value: float | None, optional: bool, expected: float | None) -> None:
    """A positive duration is accepted; ``None`` means "no limit" only where that is allowed."""
    assert check_seconds("timeout", value, optional=optional) == expected


@pytest.mark.parametrize(
    ("value", "optional", "message"),
    [
        pytest.param(0, True, "timeout must be > 0, got 0", id="zero"),
        pytest.param(-1, False, "timeout must be > 0, got -1", id="negative"),
        pytest.param(None, False, "timeout must be a number, got NoneType", id="none-required"),
    ],
)
def test_check_seconds_refuses(value: object, optional: bool, message: str) -> None:
    """A duration of zero or less, or a missing one where it is required, is refused."""
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        check_seconds("timeout", value, optional=optional)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("false", id="truthy-string"),
        pytest.param(1, id="int"),
        pytest.param(None, id="none"),
    ],
)
def test_check_bool_refuses_what_only_looks_like_a_bool(value: object) -> None:
    """Only a real bool passes: ``"false"`` is not silently read as true."""
    with pytest.raises(ValueError, match=r"^include_events must be a bool$"):
        check_bool("include_events", value)


def test_check_bool_accepts_both_bools() -> None:
    """``True`` and ``False`` come back as themselves."""
    assert (check_bool("flag", True), check_bool("flag", False)) == (True, False)


@pytest.mark.parametrize(
    ("value", "shown", "message"),
    [
        pytest.param("a b", None, "s contains whitespace or control characters", id="space"),
        pytest.param("a\x00b", None, "s contains whitespace or control characters", id="nul"),
        pytest.param(
            "a\tb", "'a\\tb'", "s contains whitespace or control characters: 'a\\tb'", id="shown"
        ),
    ],
)
def test_check_printable_refuses(value: str, shown: str | None, message: str) -> None:
    """Whitespace or a control character is refused; the value appears only when ``shown``."""
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        check_printable("s", value, shown=shown)


@pytest.mark.parametrize(
    "api_key",
    [
        pytest.param(KEY + " ", id="trailing-space"),
        pytest.param(KEY + "\n", id="newline"),
        pytest.param(KEY + "\x7f", id="delete"),
    ],
)
def test_validate_api_key_never_shows_the_key(api_key: str) -> None:
    """A key with whitespace or control characters is refused without echoing it."""
    with pytest.raises(ValueError, match="api_key contains whitespace") as info:
        validate_api_key(api_key)
    assert KEY not in str(info.value)


@pytest.mark.parametrize(
    ("base_url", "message"),
    [
        pytest.param("", "base_url is empty", id="empty"),
        pytest.param(
            "https://api .pre.dev", "base_url contains whitespace or control characters", id="space"
        ),
    ],
)
def test_validate_base_url_says_which_problem(base_url: str, message: str) -> None:
    """An empty base URL and one with whitespace are refused with different reasons."""
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        validate_base_url(base_url)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        pytest.param("localhost", True, id="localhost"),
        pytest.param("LOCALHOST.", True, id="localhost-fqdn-upper"),
        pytest.param("127.8.9.10", True, id="127-slash-8"),
        pytest.param("[::1]", True, id="ipv6-bracketed"),
        pytest.param("::ffff:127.0.0.1", True, id="ipv4-mapped"),
        pytest.param("localhost.evil.com", False, id="localhost-prefix"),
        pytest.param("128.0.0.1", False, id="outside-127"),
        pytest.param("::ffff:10.0.0.1", False, id="ipv4-mapped-private"),
        pytest.param("example.com", False, id="name"),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    """Only localhost, 127.0.0.0/8 and ::1 (however spelled) count as loopback."""
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(None, None, id="none"),
        pytest.param("processing", "processing", id="processing-str"),
        pytest.param(RunStatus.COMPLETED, "completed", id="completed-member"),
    ],
)
def test_validate_status_filter_accepts(status: Any, expected: str | None) -> None:
    """The filters the list endpoint has, as strings or RunStatus members, come back as str."""
    assert validate_status_filter(status) == expected


def test_validate_status_filter_names_the_missing_failed_filter() -> None:
    """``failed`` is refused with a message saying the API cannot filter on it."""
    message = (
        "status must be None, 'processing' or 'completed' (the API cannot filter on 'failed'), "
        "got <RunStatus.FAILED: 'failed'>"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        validate_status_filter(RunStatus.FAILED)
