"""Chaos for the emulator: failures injected in front of the API, per route and per rate.

Every emulator has a :class:`Faults` at :attr:`Emulator.faults <asyncclient.testing.Emulator>`.
Add a :class:`Fault` and a share of the requests fails the way networks, proxies and busy
services fail::

    emu.faults.add(Fault("status", status=503, rate=0.2))          # 20 % 503s with a JSON body
    emu.faults.add(Fault("reset", rate=0.05))                      # 5 % connections reset
    emu.faults.add(Fault("status", status=429, retry_after="2", times=1))
    emu.faults.outage(5.0)                                         # everything 503 for 5 s
    emu.faults.outage(120.0, form="refused", start=30.0)           # port closed, in 30 s
    emu.faults.outage(60.0, form="blackhole")                      # nothing answered for 60 s

The kinds:

========== =====================================================================================
kind       what the client sees
========== =====================================================================================
status     ``status`` with a JSON error body ``{"error", "code"?}`` and, when set, the raw
           ``Retry-After`` / ``retry-after-ms`` headers (429s, 503s)
reset      the connection dropped (TCP reset) after the request arrived, before any answer;
           aiohttp's client silently retries an idempotent request once on a reset, so an
           aiohttp-based client sees the error only when that second try is reset too
truncate   the real answer's headers with its full ``Content-Length``, half the body, then the
           connection closed
trickle    the real answer, sent ``chunk_size`` bytes at a time with ``delay`` seconds between
stall      nothing for ``delay`` seconds (past a client's read timeout, say), then the real
           answer if the client is still there
not_json   ``200`` with ``Content-Type: application/json`` and a body that is not JSON
html       ``status`` (502, 503, ...) with an HTML error page, as a proxy in front would send
blackhole  the connection accepted and the request read, then nothing: no answer ever, until the
           client gives up (its timeout) or the fault ends (the connection is then cut)
refused    (an outage form only, see :meth:`Faults.outage`) the listener closed, open
           connections cut, new ones refused; reopened on the same port when it ends
========== =====================================================================================

``truncate`` and ``trickle`` act on plain answers; a streamed (Server-Sent Events) answer passes
through them unchanged.

Faults act in front of the API, like the network or a proxy: a request a fault answers by itself
(``status``, ``reset``, ``not_json``, ``html``) never reaches the emulator, so it is not in
:attr:`Emulator.request_count` and ``before_request`` is not called for it. :attr:`Faults.requests`
and :attr:`Faults.on_request` see every request. Which request fails is drawn from a
``random.Random`` seeded with the emulator's seed, so a run of the same requests in the same order
fails the same way every time.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import math
import random
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ._routes import route_name

__all__ = ["Fault", "FaultKind", "Faults"]

FaultKind = Literal[
    "status", "reset", "truncate", "trickle", "stall", "not_json", "html", "blackhole", "refused"
]
"""The kinds of failure a :class:`Fault` injects."""

FaultRoute = Literal["get", "list", "submit", "status", "*"]

OutageForm = Literal["status", "refused", "blackhole"]
"""How an outage looks from outside: error answers, a closed port, or a black hole."""
_OUTAGE_FORMS: frozenset[str] = frozenset(get_args(OutageForm))

_KINDS: frozenset[str] = frozenset(get_args(FaultKind))
_ROUTES: frozenset[str] = frozenset(get_args(FaultRoute))
_ROUTE_NAMES: dict[str, FaultRoute] = {
    "get": "get",
    "list": "list",
    "submit": "submit",
    "status": "status",
}
# A stalled request checks this often whether its client has hung up.
_STALL_TICK = 0.01
# A black-holed request checks this often whether its client or its fault has gone.
_HOLD_TICK = 0.005
_NOT_JSON = b"<<upstream answered OK but this is not JSON>>"
_HTML = (
    "<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
# The command-line syntax: kinds without a value, kinds with a delay and its default.
_PLAIN_KINDS: dict[str, FaultKind] = {
    "reset": "reset",
    "truncate": "truncate",
    "not_json": "not_json",
    "blackhole": "blackhole",
}
_TIMED_KINDS: dict[str, FaultKind] = {"trickle": "trickle", "stall": "stall"}
_SPEC_DELAYS = {"trickle": 0.05, "stall": 65.0}


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
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {sorted(_KINDS)}, got {self.kind!r}")
        if self.route not in _ROUTES:
            raise ValueError(f"route must be one of {sorted(_ROUTES)}, got {self.route!r}")
        if isinstance(self.status, bool) or not isinstance(self.status, int):
            raise ValueError(f"status must be an int, got {type(self.status).__name__}")
        if not 400 <= self.status <= 599:
            raise ValueError(f"status must be an error status, 400..599, got {self.status}")
        _check_header("retry_after", self.retry_after)
        _check_header("retry_after_ms", self.retry_after_ms)
        if self.code is not None and not isinstance(self.code, str):
            raise ValueError(f"code must be a str or None, got {type(self.code).__name__}")
        for name in ("delay", "rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {type(value).__name__}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
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


class _Active:
    """A fault in force: how many more times it may strike, from when and until when."""

    __slots__ = ("fault", "left", "start", "until")

    def __init__(self, fault: Fault, until: float | None = None, start: float = 0.0) -> None:
        self.fault = fault
        self.left = fault.times
        self.until = until
        self.start = start


class Faults:
    """The faults in force on one emulator, and what they did.

    Faults are tried in the order they were added (outages first); the first one whose route
    matches and whose draw succeeds answers the request.

    Attributes:
        injected: How many times each kind was injected (``"status"``, ``"reset"``, ...).
        requests: Every request that came through, faulted or not.
        on_request: Called with the route (``"get"``, ``"list"``, ``"submit"``, ``"status"`` or
            ``"other"``), the request and the fault chosen for it (``None`` when none), for every
            request, before the fault acts: tests use it to time arrivals, faulted ones included.
    """

    def __init__(self, seed: int | str = 0) -> None:
        """Create an empty set of faults.

        Args:
            seed: Seeds the draws that decide which requests fail.
        """
        self._rng = random.Random(f"asyncclient.testing.faults:{seed}")
        self._active: list[_Active] = []
        self.injected: Counter[str] = Counter()
        self.requests = 0
        self.on_request: Callable[[str, web.Request, Fault | None], None] | None = None
        self.middleware: Middleware = _make_middleware(self)
        """The ``aiohttp.web`` middleware that injects these faults (``build_app`` adds it)."""
        # The servers of this emulator, told when an outage is added or removed.
        self._watchers: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"<Faults active={len(self.active)} injected={sum(self.injected.values())}>"

    @property
    def active(self) -> tuple[Fault, ...]:
        """The faults in force now, in the order they are tried."""
        now = time.monotonic()
        self._expire(now)
        return tuple(entry.fault for entry in self._active if entry.start <= now)

    @property
    def refusing(self) -> bool:
        """Whether a ``"refused"`` outage is in force now (the listener is to be closed)."""
        now = time.monotonic()
        return any(
            entry.fault.kind == "refused" and entry.start <= now < (entry.until or math.inf)
            for entry in self._active
        )

    def next_change(self) -> float:
        """When (``time.monotonic()``) a ``"refused"`` outage next begins or ends; inf if never."""
        now = time.monotonic()
        moments = [
            moment
            for entry in self._active
            if entry.fault.kind == "refused"
            for moment in (entry.start, entry.until or math.inf)
            if moment > now
        ]
        return min(moments, default=math.inf)

    def in_force(self, fault: Fault) -> bool:
        """Whether ``fault`` (as returned by :meth:`add` or :meth:`outage`) is in force now.

        Args:
            fault: The fault.

        Returns:
            True while it is active and its outage, if it is one, has begun and not ended.
        """
        return any(active is fault for active in self.active)

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever an outage is added or removed (a server follows them).

        Args:
            callback: Called with no arguments, on the thread that changed the faults.
        """
        self._watchers.append(callback)

    def unwatch(self, callback: Callable[[], None]) -> None:
        """Stop calling ``callback`` (a no-op if it is not watching).

        Args:
            callback: A callback passed to :meth:`watch`.
        """
        with contextlib.suppress(ValueError):
            self._watchers.remove(callback)

    def _notify(self) -> None:
        for watcher in list(self._watchers):
            watcher()

    def add(self, fault: Fault) -> Fault:
        """Put a fault in force.

        Args:
            fault: The fault.

        Returns:
            The same fault, to :meth:`remove` it later.

        Raises:
            ValueError: If ``fault`` is not a :class:`Fault`.
        """
        if not isinstance(fault, Fault):
            raise ValueError(f"expected a Fault, got {type(fault).__name__}")
        if fault.kind == "refused":
            raise ValueError(
                "refused connections close the whole listener: use "
                "Faults.outage(seconds, form='refused')"
            )
        self._active.append(_Active(fault))
        return fault

    def add_spec(self, spec: str) -> list[Fault]:
        """Put in force the faults of a command-line spec such as ``"503:0.2,reset:0.05"``.

        The spec is a comma-separated list of ``[ROUTE/]WHAT[=VALUE]:RATE``, where ``ROUTE`` is
        ``get``, ``list``, ``submit`` or ``status`` (every route when omitted), ``RATE`` a
        probability in 0..1 and ``WHAT`` one of:

        * an HTTP status, 400..599: a JSON error; ``=VALUE`` is its ``Retry-After`` (``429=2``);
        * ``reset``, ``truncate``, ``not_json``, ``blackhole``;
        * ``trickle[=SECONDS]`` between 64-byte chunks (0.05), ``stall[=SECONDS]`` (65);
        * ``html[=STATUS]``: a proxy's HTML error page (502).

        Args:
            spec: The spec.

        Returns:
            The faults added, in order.

        Raises:
            ValueError: If the spec does not parse (nothing is added then).
        """
        faults = _parse_spec(spec)
        for fault in faults:
            self.add(fault)
        return faults

    def remove(self, fault: Fault) -> bool:
        """Retire a fault that :meth:`add` or :meth:`outage` returned.

        Args:
            fault: The fault.

        Returns:
            Whether it was still in force.
        """
        for index, entry in enumerate(self._active):
            if entry.fault is fault:
                del self._active[index]
                self._notify()
                return True
        return False

    def clear(self) -> None:
        """Retire every fault, outages included (the counters are kept)."""
        self._active.clear()
        self._notify()

    def outage(
        self,
        seconds: float,
        status: int = 503,
        *,
        form: OutageForm = "status",
        start: float = 0.0,
    ) -> Fault:
        """Make the whole API unavailable for ``seconds`` of real (monotonic) time.

        Outages come before every other fault. In the ``"refused"`` form every server of this
        emulator (:func:`serve`) closes its listening socket and cuts its open connections, so
        connecting fails at once, and listens again on the same port when the outage ends.

        Args:
            seconds: How long the outage lasts, from its start.
            status: The status every request gets meanwhile (the ``"status"`` form).
            form: ``"status"`` (every request answered ``status``), ``"refused"`` (the port
                closed) or ``"blackhole"`` (connections accepted, nothing ever answered; held
                requests are cut when the outage ends).
            start: Seconds from now until it begins: outages on a schedule.

        Returns:
            The outage's fault, to end it early with :meth:`remove`.

        Raises:
            ValueError: If ``seconds`` or ``start`` is negative or not finite, ``status`` is not
                400..599 or ``form`` is unknown.
        """
        for name, value in (("seconds", seconds), ("start", start)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {type(value).__name__}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        if form not in _OUTAGE_FORMS:
            raise ValueError(f"form must be one of {sorted(_OUTAGE_FORMS)}, got {form!r}")
        fault = Fault("status", status=status) if form == "status" else Fault(form)
        begins = time.monotonic() + start
        outages = sum(1 for entry in self._active if entry.until is not None)
        self._active.insert(outages, _Active(fault, until=begins + seconds, start=begins))
        self._notify()
        return fault

    def _expire(self, now: float) -> None:
        if any(entry.until is not None and now >= entry.until for entry in self._active):
            self._active = [e for e in self._active if e.until is None or now < e.until]

    def _draw(self, route: str) -> Fault | None:
        """Choose the fault for one request of ``route``, or ``None``."""
        if not self._active:
            return None
        now = time.monotonic()
        self._expire(now)
        for entry in self._active:
            fault = entry.fault
            if entry.start > now:
                continue  # a scheduled outage, not begun yet
            if fault.route != "*" and fault.route != route:
                continue
            if fault.rate < 1.0 and self._rng.random() >= fault.rate:
                continue
            if entry.left is not None:
                entry.left -= 1
                if entry.left <= 0:
                    self._active.remove(entry)
            self.injected[fault.kind] += 1
            return fault
        return None


def _route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else ""
    return route_name(canonical, request.method) or "other"


def _make_middleware(faults: Faults) -> Middleware:
    @web.middleware
    async def inject_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
        faults.requests += 1
        route = _route_of(request)
        fault = faults._draw(route)
        if faults.on_request is not None:
            faults.on_request(route, request, fault)
        if fault is None:
            return await handler(request)
        return await _act(fault, request, handler, faults)

    return inject_faults


async def _act(
    fault: Fault, request: web.Request, handler: Handler, faults: Faults
) -> web.StreamResponse:
    kind = fault.kind
    if kind == "status":
        return _status_response(fault)
    if kind == "html":
        phrase = _phrase(fault.status)
        text = _HTML.format(status=fault.status, phrase=phrase)
        return web.Response(status=fault.status, text=text, content_type="text/html")
    if kind == "not_json":
        return web.Response(status=200, body=_NOT_JSON, content_type="application/json")
    if kind == "blackhole":
        # Read, never answered: the client waits for its timeout. When the fault ends, the
        # connection is cut, as when a hung machine comes back.
        while faults.in_force(fault):
            if _client_gone(request):
                return web.Response(status=500)
            await asyncio.sleep(_HOLD_TICK)
        _reset(request)
        return web.Response(status=500)
    if kind in ("reset", "refused"):
        # "refused": a request that slipped in as the listener closed is cut like the rest.
        _reset(request)
        # Never reaches the wire: writing to the aborted transport fails, and aiohttp treats
        # that as the client having gone away.
        return web.Response(status=500)
    if kind == "stall":
        deadline = time.monotonic() + fault.delay
        while (remaining := deadline - time.monotonic()) > 0:
            if _client_gone(request):
                return web.Response(status=500)
            await asyncio.sleep(min(remaining, _STALL_TICK))
        if _client_gone(request):
            return web.Response(status=500)
        return await handler(request)
    # truncate, trickle: the real answer, delivered badly.
    response = await handler(request)
    body = response.body if isinstance(response, web.Response) else None
    if not isinstance(body, bytes) or not body:
        return response
    stream = web.StreamResponse(status=response.status, reason=response.reason)
    for name, value in response.headers.items():
        if name.lower() not in ("content-length", "transfer-encoding"):
            stream.headers.add(name, value)
    stream.content_length = len(body)
    try:
        await stream.prepare(request)
        if kind == "truncate":
            await stream.write(body[: len(body) // 2])
            transport = request.transport
            if transport is not None:
                transport.close()
            return stream
        size = fault.chunk_size
        for start in range(0, len(body), size):
            if start:
                await asyncio.sleep(fault.delay)
            await stream.write(body[start : start + size])
    except ConnectionError:
        pass  # the client hung up mid-body; aiohttp ignores the rest of the answer
    return stream


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _status_response(fault: Fault) -> web.Response:
    status = fault.status
    code = fault.code if fault.code is not None else ("RATE_LIMITED" if status == 429 else None)
    payload: dict[str, str] = {"error": _phrase(status)}
    if code is not None:
        payload["code"] = code
    headers: dict[str, str] = {}
    if fault.retry_after is not None:
        headers["Retry-After"] = fault.retry_after
    if fault.retry_after_ms is not None:
        headers["retry-after-ms"] = fault.retry_after_ms
    return web.Response(
        status=status,
        body=msgspec.json.encode(payload),
        content_type="application/json",
        headers=headers,
    )


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _reset(request: web.Request) -> None:
    """Drop the connection with a TCP reset, not a polite close."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # A socket type without SO_LINGER is closed plainly.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


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


def _parse_spec(spec: str) -> list[Fault]:
    if not isinstance(spec, str):
        raise ValueError(f"a fault spec is a str, got {type(spec).__name__}")
    items = [item.strip() for item in spec.split(",")]
    if not any(items):
        raise ValueError("the fault spec is empty")
    return [_parse_item(item) for item in items if item]
