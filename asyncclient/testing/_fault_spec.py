"""The command line's fault syntax, ``[ROUTE/]WHAT[=VALUE]:RATE,...``, read into :class:`Fault`\\ s.

:meth:`Faults.add_spec <asyncclient.testing.Faults.add_spec>` documents the syntax; this module
only reads it (no state), so ``--faults`` is checked whole before any fault is put in force.
"""

from __future__ import annotations

import math

from ._fault import Fault, FaultKind, FaultRoute

__all__ = ["parse_spec"]

_ROUTE_NAMES: dict[str, FaultRoute] = {
    "get": "get",
    "list": "list",
    "submit": "submit",
    "status": "status",
}
# Kinds without a value, kinds with a delay and its default.
_PLAIN_KINDS: dict[str, FaultKind] = {
    "reset": "reset",
    "truncate": "truncate",
    "not_json": "not_json",
    "blackhole": "blackhole",
}
_TIMED_KINDS: dict[str, FaultKind] = {"trickle": "trickle", "stall": "stall"}
_SPEC_DELAYS = {"trickle": 0.05, "stall": 65.0}


def _parse_rate(item: str, raw: str) -> float:
    try:
        rate = float(raw)
    except ValueError:
        raise ValueError(f"fault {item!r}: rate {raw!r} is not a number") from None
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"fault {item!r}: rate must be in 0..1, got {raw}")
    return rate


def _parse_number(item: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"fault {item!r}: {raw!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"fault {item!r}: seconds must be finite and >= 0, got {raw}")
    return value


def _parse_item(item: str) -> Fault:
    what, sep, raw_rate = item.rpartition(":")
    if not sep or not what:
        raise ValueError(f"fault {item!r}: expected [ROUTE/]WHAT[=VALUE]:RATE")
    rate = _parse_rate(item, raw_rate.strip())
    route: FaultRoute = "*"
    if "/" in what:
        prefix, _, what = what.partition("/")
        if prefix not in _ROUTE_NAMES:
            raise ValueError(
                f"fault {item!r}: route must be one of {', '.join(_ROUTE_NAMES)}, got {prefix!r}"
            )
        route = _ROUTE_NAMES[prefix]
    name, has_value, value = what.strip().partition("=")
    name = name.strip().lower()
    value = value.strip()
    try:
        if name.isdigit():
            return Fault(
                "status", status=int(name), retry_after=value or None, route=route, rate=rate
            )
        if name in _PLAIN_KINDS:
            if has_value:
                raise ValueError(f"{name} takes no value")
            return Fault(_PLAIN_KINDS[name], route=route, rate=rate)
        if name in _TIMED_KINDS:
            delay = _parse_number(item, value) if has_value else _SPEC_DELAYS[name]
            return Fault(_TIMED_KINDS[name], delay=delay, route=route, rate=rate)
        if name == "html":
            status = int(value) if has_value else 502
            return Fault("html", status=status, route=route, rate=rate)
    except ValueError as exc:
        if str(exc).startswith("fault "):
            raise
        raise ValueError(f"fault {item!r}: {exc}") from None
    raise ValueError(
        f"fault {item!r}: unknown kind {name!r} (a status such as 503, or reset, truncate, "
        f"trickle, stall, not_json, html, blackhole)"
    )


def parse_spec(spec: str) -> list[Fault]:
    """The faults of a spec such as ``"503:0.2,reset:0.05"``, in order.

    Args:
        spec: The spec (see :meth:`Faults.add_spec`).

    Returns:
        The faults, not yet in force.

    Raises:
        ValueError: Naming the item that does not parse.
    """
    if not isinstance(spec, str):
        raise ValueError(f"a fault spec is a str, got {type(spec).__name__}")
    items = [item.strip() for item in spec.split(",")]
    if not any(items):
        raise ValueError("the fault spec is empty")
    return [_parse_item(item) for item in items if item]
