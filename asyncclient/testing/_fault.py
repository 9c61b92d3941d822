"""One fault: what goes wrong, on which route, how often (a leaf: imports nothing from the package).

What each kind looks like from the client's side is tabled in the docstring of ``_faults``
(:class:`Faults`, which puts faults in force); ``_fault_answers`` plays them on the wire and
``_fault_spec`` reads them from the command line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = [
    "KINDS",
    "OUTAGE_FORMS",
    "ROUTES",
    "Fault",
    "FaultKind",
    "FaultRoute",
    "OutageForm",
    "check_seconds",
]

FaultKind = Literal[
    "status", "reset", "truncate", "trickle", "stall", "not_json", "html", "blackhole", "refused"
]
"""The kinds of failure a :class:`Fault` injects."""

FaultRoute = Literal["get", "list", "submit", "status", "*"]
"""The route a fault strikes: one of the API's four, or ``"*"`` for every request."""

OutageForm = Literal["status", "refused", "blackhole"]
"""How an outage looks from outside: error answers, a closed port, or a black hole."""

KINDS: frozenset[str] = frozenset(get_args(FaultKind))
ROUTES: frozenset[str] = frozenset(get_args(FaultRoute))
OUTAGE_FORMS: frozenset[str] = frozenset(get_args(OutageForm))


def check_seconds(name: str, value: object) -> None:
    """Reject anything but a finite, non-negative number (a bool is not a number here).

    Args:
        name: The argument's name, for the message.
        value: Its value.

    Raises:
        ValueError: Naming ``name``, if ``value`` is not a finite number >= 0.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")


def _check_header(name: str, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a str or None, got {type(value).__name__}")
    if any(ch in value for ch in "\r\n\0"):
        raise ValueError(f"{name} must not contain CR, LF or NUL")


@dataclass(frozen=True)
class Fault:
    """One kind of failure, injected into a share of the requests of one route or all.

    Two equal faults are still two faults: :meth:`Faults.remove` removes the very object that
    :meth:`Faults.add` returned.

    Attributes:
        kind: What goes wrong (see the module docstring): ``"status"``, ``"reset"``,
            ``"truncate"``, ``"trickle"``, ``"stall"``, ``"not_json"``, ``"html"`` or
            ``"blackhole"``; ``"refused"`` exists only as an outage (:meth:`Faults.outage`).
        status: The HTTP status of a ``"status"`` or ``"html"`` fault, 400..599.
        retry_after: The raw ``Retry-After`` header of a ``"status"`` fault, sent as given:
            ``"2"``, ``"0.5"``, an HTTP date, even ``"garbage"``; ``None`` sends none.
        retry_after_ms: The raw ``retry-after-ms`` header, likewise.
        code: The JSON error ``code`` of a ``"status"`` fault (``"RATE_LIMITED"``,
            ``"QUEUE_FULL"``, ...); ``None`` means ``RATE_LIMITED`` for a 429 and no code
            otherwise.
        delay: Seconds: the pause between chunks of a ``"trickle"``, the length of a
            ``"stall"``.
        chunk_size: Bytes per chunk of a ``"trickle"``.
        route: ``"get"`` (get a run), ``"list"`` (list runs), ``"submit"`` (submit a run),
            ``"status"`` (the queue snapshot) or ``"*"`` (every request, unknown paths too).
        rate: The probability, 0..1, that a request of ``route`` gets this fault.
        times: Inject it at most this many times, then retire it; ``None`` for no limit.

    Raises:
        ValueError: On an unknown kind or route, or a value out of range.
    """

    kind: FaultKind
    status: int = 503
    retry_after: str | None = None
    retry_after_ms: str | None = None
    code: str | None = None
    delay: float = 0.0
    chunk_size: int = 64
    route: FaultRoute = "*"
    rate: float = 1.0
    times: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}, got {self.kind!r}")
        if self.route not in ROUTES:
            raise ValueError(f"route must be one of {sorted(ROUTES)}, got {self.route!r}")
        if isinstance(self.status, bool) or not isinstance(self.status, int):
            raise ValueError(f"status must be an int, got {type(self.status).__name__}")
        if not 400 <= self.status <= 599:
            raise ValueError(f"status must be an error status, 400..599, got {self.status}")
        _check_header("retry_after", self.retry_after)
        _check_header("retry_after_ms", self.retry_after_ms)
        if self.code is not None and not isinstance(self.code, str):
            raise ValueError(f"code must be a str or None, got {type(self.code).__name__}")
        check_seconds("delay", self.delay)
        check_seconds("rate", self.rate)
        if self.rate > 1:
            raise ValueError(f"rate must be a probability in 0..1, got {self.rate!r}")
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int):
            raise ValueError("chunk_size must be an int")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.times is not None and (
            isinstance(self.times, bool) or not isinstance(self.times, int) or self.times < 1
        ):
            raise ValueError(f"times must be None or an int >= 1, got {self.times!r}")
