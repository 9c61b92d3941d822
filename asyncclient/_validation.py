"""Argument checks: every value a caller passes is checked before any request leaves.

Each check returns the value it accepted (narrowed to its type) or raises a ``ValueError`` that
names the argument and the problem. None of them echoes an API key. Bounds read as written:
``check_number("jitter", v, ge=0)`` accepts 0, ``check_number("timeout", v, gt=0)`` does not.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import re
from typing import Literal, overload

from yarl import URL

from ._constants import LIST_PAGE_MAX
from ._models import RunStatus

__all__ = [
    "RUN_STATUS_FILTERS",
    "check_bool",
    "check_int",
    "check_number",
    "check_printable",
    "check_seconds",
    "is_loopback_host",
    "validate_api_key",
    "validate_base_url",
    "validate_limit",
    "validate_run_id",
    "validate_skip",
    "validate_status_filter",
]

RUN_STATUS_FILTERS = (RunStatus.PROCESSING.value, RunStatus.COMPLETED.value)
"""The statuses the list endpoint filters on (it has no filter for ``failed``)."""

_RUN_ID = re.compile(r"[0-9a-fA-F]{24}")
_RUN_ID_SHOWN = 64


def check_int(name: str, value: object, *, ge: int, le: int | None = None) -> int:
    """An ``int`` (not a ``bool``) in ``ge..le`` (both inclusive; no upper bound without ``le``).

    Raises:
        ValueError: ``value`` is not an ``int``, or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {type(value).__name__}")
    if value < ge or (le is not None and value > le):
        upper = f"..{le}" if le is not None else " or more"
        raise ValueError(f"{name} must be in {ge}{upper}, got {value!r}")
    return value


def check_number(
    name: str, value: object, *, gt: float | None = None, ge: float | None = None
) -> float:
    """A finite ``int`` or ``float`` (not a ``bool``), ``> gt`` and ``>= ge`` when given.

    Raises:
        ValueError: ``value`` is not a number, is infinite or NaN, or is out of range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"{name} is too large, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if gt is not None and not number > gt:
        raise ValueError(f"{name} must be > {gt}, got {value!r}")
    if ge is not None and not number >= ge:
        raise ValueError(f"{name} must be >= {ge}, got {value!r}")
    return number


@overload
def check_seconds(name: str, value: object, *, optional: Literal[False] = ...) -> float: ...


@overload
def check_seconds(name: str, value: object, *, optional: bool) -> float | None: ...


def check_seconds(name: str, value: object, *, optional: bool = False) -> float | None:
    """A duration in seconds: a finite number ``> 0``, or ``None`` when ``optional`` ("no limit").

    Raises:
        ValueError: ``value`` is not a positive finite number (nor ``None`` when allowed).
    """
    if optional and value is None:
        return None
    return check_number(name, value, gt=0)


def check_bool(name: str, value: object) -> bool:
    """A real ``bool``: a truthy string such as ``"false"`` is refused, not read as true.

    Raises:
        ValueError: ``value`` is not a ``bool``.
    """
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool")
    return value


def check_printable(name: str, value: str, *, shown: str | None = None) -> str:
    """``value`` if it holds no whitespace and no control characters.

    Args:
        name: what the message calls the value (``"api_key"``, ``"tasks[3]: url"``).
        value: the string to check.
        shown: how the message may show the value; ``None`` (for secrets) shows nothing.

    Raises:
        ValueError: ``value`` contains whitespace or a character that is not printable.
    """
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        suffix = f": {shown}" if shown is not None else ""
        raise ValueError(f"{name} contains whitespace or control characters{suffix}")
    return value


def validate_run_id(run_id: object) -> str:
    """Return ``run_id`` if it is exactly 24 hexadecimal ASCII characters, else ``ValueError``."""
    if not isinstance(run_id, str):
        raise ValueError(f"run_id must be a str, got {type(run_id).__name__}")
    if not _RUN_ID.fullmatch(run_id):
        shown = run_id if len(run_id) <= _RUN_ID_SHOWN else run_id[:_RUN_ID_SHOWN] + "..."
        raise ValueError(f"run_id must be 24 hexadecimal characters, got {shown!r}")
    return run_id


def validate_limit(limit: object) -> int:
    """A page size in 1..100."""
    return check_int("limit", limit, ge=1, le=LIST_PAGE_MAX)


def validate_skip(skip: object) -> int:
    """An offset of 0 or more."""
    return check_int("skip", skip, ge=0)


def validate_status_filter(status: object) -> str | None:
    """``None``, ``"processing"`` or ``"completed"`` (the API has no ``failed`` filter)."""
    if status is None:
        return None
    value = status.value if isinstance(status, enum.Enum) else status
    if value not in RUN_STATUS_FILTERS:
        allowed = " or ".join(repr(name) for name in RUN_STATUS_FILTERS)
        raise ValueError(
            f"status must be None, {allowed} (the API cannot filter on "
            f"{RunStatus.FAILED.value!r}), got {status!r}"
        )
    return str(value)


def validate_api_key(api_key: object) -> str:
    """A non-empty key without whitespace or control characters. The message never shows it."""
    if not isinstance(api_key, str):
        raise ValueError(f"api_key must be a str, got {type(api_key).__name__}")
    if not api_key:
        raise ValueError("api_key is empty")
    check_printable("api_key", api_key)
    if not api_key.isascii():
        raise ValueError("api_key contains non-ASCII characters")
    return api_key


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, ``127.0.0.0/8`` and ``::1`` (exactly; not ``localhost.evil.com``).

    An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) is judged by its IPv4 address, so the
    answer is the same on every Python (3.13 changed ``is_loopback`` for those addresses).
    """
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def validate_base_url(base_url: object) -> URL:
    """An ``https://`` origin, or ``http://`` to a loopback host.

    No credentials, query or fragment; a trailing slash is dropped.
    """
    if not isinstance(base_url, str):
        raise ValueError(f"base_url must be a str, got {type(base_url).__name__}")
    if not base_url:
        raise ValueError("base_url is empty")
    check_printable("base_url", base_url)
    try:
        url = URL(base_url)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"base_url is not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https"):
        raise ValueError(f"base_url must start with https:// (got scheme {url.scheme!r})")
    if not url.host:
        raise ValueError("base_url has no host")
    if url.user is not None or url.password is not None or "@" in (url.raw_authority or ""):
        raise ValueError("base_url must not contain credentials (user-info)")
    if url.query_string or url.fragment:
        raise ValueError("base_url must not have a query or a fragment")
    if url.scheme == "http" and not is_loopback_host(url.host):
        raise ValueError(
            "base_url uses plain http:// to a non-loopback host; the API key is only sent over "
            "https:// (or http:// to localhost, 127.0.0.0/8, ::1)"
        )
    return url.with_path(url.path.rstrip("/"))
