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

This module keeps the faults in force and draws them (:class:`Faults`, and the middleware in
front of the API); a fault itself is a :class:`Fault` (``_fault``), how each kind answers is
``_fault_answers``, and the command-line syntax is ``_fault_spec``.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections import Counter
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ._clock import loop_time
from ._fault import OUTAGE_FORMS, Fault, FaultKind, OutageForm, check_seconds
from ._fault_answers import answer
from ._fault_spec import parse_spec
from ._routes import request_route

__all__ = ["Fault", "FaultKind", "Faults", "OutageForm"]


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
        now = loop_time()
        self._expire(now)
        return tuple(entry.fault for entry in self._active if entry.start <= now)

    @property
    def refusing(self) -> bool:
        """Whether a ``"refused"`` outage is in force now (the listener is to be closed)."""
        now = loop_time()
        return any(
            entry.fault.kind == "refused" and entry.start <= now < (entry.until or math.inf)
            for entry in self._active
        )

    def next_change(self) -> float:
        """When (event-loop time) a ``"refused"`` outage next begins or ends; inf if never."""
        now = loop_time()
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
        faults = parse_spec(spec)
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
        """Make the whole API unavailable for ``seconds`` of the event loop's time.

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
        check_seconds("seconds", seconds)
        check_seconds("start", start)
        if form not in OUTAGE_FORMS:
            raise ValueError(f"form must be one of {sorted(OUTAGE_FORMS)}, got {form!r}")
        fault = Fault("status", status=status) if form == "status" else Fault(form)
        begins = loop_time() + start
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
        now = loop_time()
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


def _make_middleware(faults: Faults) -> Middleware:
    @web.middleware
    async def inject_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
        faults.requests += 1
        route = request_route(request) or "other"
        fault = faults._draw(route)
        if faults.on_request is not None:
            faults.on_request(route, request, fault)
        if fault is None:
            return await handler(request)
        return await answer(fault, request, handler, faults.in_force)

    return inject_faults
