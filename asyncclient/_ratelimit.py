"""Client-side pacing under a rate limit: one :class:`RateController` per client (or per key).

Every HTTP attempt of a client passes through its controller: it takes a token before it is sent
and reports how it was answered. Nothing is paced until the server says so:

- **a fixed ceiling** (``max_requests_per_second``), if the caller sets one, is a token bucket
  from the first request on;
- **adaptive pacing** starts at the first 429 ``RATE_LIMITED``. From then on the client sends at a
  rate it learns with the CUBIC rule of AWS's "adaptive" retry mode (β 0.7, C 0.4, a 0.5 req/s
  floor, the rate capped at twice the measured rate of answers, measured in 0.5 s buckets and
  smoothed with an EWMA of 0.8). Where it departs from AWS, and why:

  - a cut happens at most once per 0.5 s bucket, and not while the pause a ``Retry-After``
    started is running: the answers to requests sent before a cut say nothing about the new
    rate, and a burst of 429s from one moment is one signal, not thirty;
  - a cut starts from the rate the server *admitted* (answers other than 429) over the later
    half of the time since sending last resumed (at most the last second), less 5 %: AWS's
    meter counts a pause as silence, the server's burst as rate, and a fraction of its first
    bucket as a whole one;
  - CUBIC's recovery clock starts when a pause ends, so the client resumes at the cut rate;
  - a throttle after at least ``TRUST_SECONDS`` of paced sending since the last pause *measures*
    the limit: the rate the server admitted meanwhile is the limit, so there is no β cut. The
    rate plateaus at ``ESTIMATE_MARGIN`` under it and holds there for ``HOLD_PAUSES`` times the
    pause the throttle cost, then probes above it with CUBIC's convex part. A probe refused
    within ``PROBE_SPAN`` of its plateau found the limit where it was: the rate goes back to the
    plateau and the next hold is twice as long (up to ``2**MAX_HOLD_DOUBLINGS`` times). A
    throttle while holding means the limit moved under the plateau: it comes down by the
    margin. Why: with an integer ``Retry-After`` every throttle pauses the whole client for at
    least a second, so AWS's rule (cut to 0.7, climb back for ~5 s, probe past the old maximum
    and meet the limit again every 5-10 s) spends about 15 % of a job paused or climbing; a
    measured plateau that is probed rarely spends a few percent. The first throttle, and one
    that comes soon after a pause, know little about the limit and follow AWS's rule;
  - the token bucket holds 20 ms of tokens (AWS: a second's worth), so the client's sends stay
    smooth and the server's own burst absorbs the network's jitter;
- **Retry-After** starts a pause of the whole client (every request waits, not only the refused
  one), for at least what the server asked, up to the retry policy's ``max_retry_after``. After
  the pause the client resumes at the learned rate, not at full speed. A ``Retry-After`` longer
  than ``max_pause`` is not waited for: the call fails at once with :class:`RateLimitError`, and so
  does every call, without sending anything, until what is left of it is under ``max_pause``;
- **QUEUE_FULL** is a capacity signal, not a rate one: it narrows a window on how many submissions
  may be in flight (AIMD: halved at most once per bucket, one wider per success while the window
  is in use), and leaves the rate alone.

Waiting is a FIFO queue in front of a token bucket: only the head of the queue sleeps (for the
time its token needs), and handing the head on wakes exactly one waiter, so ten thousand pollers
cost one timer, not a stampede. A cancelled waiter takes no token and passes the head on. When no
limit is in force, :meth:`RateController.try_acquire` returns ``True`` at once: no await, no lock.
The clock and the sleep are injectable, so the tests run the real logic on a virtual clock.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from types import TracebackType

import anyio

from ._clock import loop_time
from ._exceptions import APIStatusError, RateLimitError
from ._rate_estimates import AdmittedRate, AnswerMeter, Cubic
from ._validation import check_bool, check_number

__all__ = ["RateController"]

MIN_RATE = 0.5
"""The slowest the adaptive rate goes, in requests per second (AWS: ``MIN_FILL_RATE``)."""
MAX_RATE_SCALE = 2.0
"""The learned rate never exceeds this times the measured rate (AWS: ``_MAX_RATE_ADJUST_SCALE``)."""
ESTIMATE_MARGIN = 0.95
"""The plateau after a measured throttle sits this far under the rate the server admitted."""
TRUST_SECONDS = 0.5
"""A throttle after this long of paced sending (since the last pause) measures the limit: the
rate the server admitted over it is the limit, near enough to plateau at."""
HOLD_PAUSES = 5.0
"""After a measured throttle the rate holds its plateau this many times the pause it cost
before it probes above it again: a probe that finds the limit costs a pause, so probing costs at
most about a sixth of the time, and less as the holds double."""
PROBE_SPAN = 1.1
"""A probe refused under this times its plateau found the limit where the plateau was."""
MAX_HOLD_DOUBLINGS = 3
"""Each probe in a row that finds the limit where the plateau was doubles the next hold, up to
``2**MAX_HOLD_DOUBLINGS`` times (a steady limit is probed less and less often)."""
BURST_SECONDS = 0.02
"""The token bucket holds this many seconds of tokens (at least one): sends stay smooth, so the
server's own burst absorbs the jitter of the network instead of our bursts."""
DEFAULT_MAX_PAUSE = 600.0
"""A ``Retry-After`` longer than this fails calls instead of pausing the client."""
WINDOW_DECREASE = 0.5
"""How much one ``QUEUE_FULL`` narrows the submission window."""
_MAX_WINDOW = 10_000
_CODE_QUEUE_FULL = "QUEUE_FULL"
_CODE_RATE_LIMITED = "RATE_LIMITED"


class _Waiter:
    __slots__ = ("done", "event")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.done = False


class _Queue:
    """FIFO waiters with lazy removal: a cancelled waiter is skipped when the head moves on."""

    __slots__ = ("live", "waiters")

    def __init__(self) -> None:
        self.waiters: deque[_Waiter] = deque()
        self.live = 0

    def join(self) -> tuple[_Waiter, bool]:
        """Queue a waiter; ``True`` when it is the head at once."""
        waiters = self.waiters
        while waiters and waiters[0].done:
            waiters.popleft()
        waiter = _Waiter()
        waiters.append(waiter)
        self.live += 1
        return waiter, len(waiters) == 1

    def leave(self, waiter: _Waiter) -> None:
        """Take ``waiter`` out (served or cancelled); if it was the head, wake the next one."""
        waiter.done = True
        self.live -= 1
        waiters = self.waiters
        if waiters and waiters[0] is waiter:
            waiters.popleft()
            while waiters and waiters[0].done:
                waiters.popleft()
            if waiters:
                waiters[0].event.set()

    def wake_head(self) -> None:
        waiters = self.waiters
        while waiters and waiters[0].done:
            waiters.popleft()
        if waiters:
            waiters[0].event.set()


class RateController:
    """Paces the HTTP attempts of one client (or of several clients sharing one API key).

    Every request, retry and poll of a client takes a token here before it is sent. With the
    defaults nothing is paced until the server answers 429 ``RATE_LIMITED``; then the client
    sends at a rate it learns (AWS adaptive mode's CUBIC rule), cutting on throttles and probing
    back up. Pass one controller to several clients that use the same key
    (``Client(rate_controller=controller)``) so they share what it learned: several processes
    (workers) on one key each learn on their own, without configuration.

    Args:
        max_requests_per_second: a fixed ceiling on requests per second (``None``: none). Set it
            to your share of the key's limit, for example the limit divided by the number of
            workers.
        adaptive: learn the rate from 429 ``RATE_LIMITED`` answers (on by default).
        max_pause: seconds; a ``Retry-After`` longer than this is not waited for: calls fail at
            once with :class:`RateLimitError` (its ``retry_after`` says how long is left),
            sending nothing, while more than ``max_pause`` of it is left. ``math.inf`` turns
            this off.
        clock: the monotonic clock, in seconds: the event loop's by default (tests pass a
            virtual one).
        sleep: how to wait (tests pass one that moves the virtual clock).

    Attributes:
        throttles: 429 answers seen, by ``code`` (``"RATE_LIMITED"``, ``"QUEUE_FULL"``; a 429
            without a code counts as ``"RATE_LIMITED"``).
        answers: answers seen (any status).
        cuts: how many times the adaptive rate was cut.
        waits: how many attempts had to wait for a token, a pause or a submission slot.
        waited: seconds those attempts spent waiting, summed.

    Raises:
        ValueError: an argument is out of range.
    """

    def __init__(
        self,
        *,
        max_requests_per_second: float | None = None,
        adaptive: bool = True,
        max_pause: float = DEFAULT_MAX_PAUSE,
        clock: Callable[[], float] = loop_time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        if max_requests_per_second is not None:
            max_requests_per_second = check_number(
                "max_requests_per_second", max_requests_per_second, gt=0
            )
        check_bool("adaptive", adaptive)
        if max_pause != math.inf:  # math.inf: wait for any Retry-After (up to max_retry_after)
            max_pause = check_number("max_pause", max_pause, ge=0)
        self._max_pause = max_pause
        self._ceiling = max_requests_per_second
        self._adaptive = adaptive
        self._clock = clock
        self._sleep = sleep
        now = clock()
        self._cubic = Cubic(start=now)
        self._meter = AnswerMeter(now)
        self._recent = AdmittedRate()
        self._enabled = False  # adaptive pacing in force
        self._learned = math.inf  # the adaptive rate, once enabled
        self._last_cut_bucket = -math.inf
        self._measured_cut = False  # the last cut measured the limit: its pause starts a hold
        self._held = False  # the rate is a plateau (CUBIC's w_max) or a probe above one
        self._holds = 0  # probes in a row that found the limit where the plateau said
        self._resume_at = -math.inf  # the client-wide pause ends here
        self._blocked_retry_after = 0.0
        # The token bucket (used when a ceiling or adaptive pacing is in force).
        self._fill = math.inf
        self._capacity = 1.0
        self._tokens = 0.0
        self._refilled = now
        self._queue = _Queue()
        self._head_scope: anyio.CancelScope | None = None
        self._head_fill = 0.0
        # The submission window (QUEUE_FULL), None until the first QUEUE_FULL.
        self._window: int | None = None
        self._submitting = 0
        self._window_queue = _Queue()
        self._last_window_cut = -math.inf
        self.throttles: Counter[str] = Counter()
        self.answers = 0
        self.cuts = 0
        self.waits = 0
        self.waited = 0.0
        if max_requests_per_second is not None:
            self._set_fill(max_requests_per_second, now)
            self._tokens = self._capacity
        # The fast path reads one attribute: is anything in force?
        self._paced = max_requests_per_second is not None

    def __repr__(self) -> str:
        rate = self.rate
        shown = "unpaced" if rate is None else f"{rate:.1f}/s"
        return f"<RateController {shown} throttles={dict(self.throttles)}>"

    # -- what a user reads ----------------------------------------------------------------------

    @property
    def rate(self) -> float | None:
        """The requests per second in force now (``None``: nothing is paced)."""
        return None if self._fill == math.inf else self._fill

    @property
    def max_requests_per_second(self) -> float | None:
        """The fixed ceiling (``None``: none)."""
        return self._ceiling

    @property
    def measured_rate(self) -> float:
        """Answers per second, as measured (0.5 s buckets, smoothed)."""
        return self._meter.rate

    @property
    def adaptive_pacing(self) -> bool:
        """Whether the learned rate is in force (after the first ``RATE_LIMITED``)."""
        return self._enabled

    @property
    def paused_for(self) -> float:
        """Seconds left of the client-wide pause a ``Retry-After`` started (0: none)."""
        return max(0.0, self._resume_at - self._clock())

    @property
    def submit_window(self) -> int | None:
        """How many submissions may be in flight (``None``: no limit, before any QUEUE_FULL)."""
        return self._window

    # -- the attempt path -----------------------------------------------------------------------

    def try_acquire(self) -> bool:
        """Take a token if one is free now and nobody is queued; never waits.

        Returns:
            ``True``: send now. ``False``: await :meth:`acquire` first.
        """
        if not self._paced:
            return True
        return self._take(self._clock()) == 0.0

    async def acquire(self, method: str = "GET", path: str = "") -> None:
        """Wait, in turn (FIFO), until this attempt may be sent.

        Args:
            method: the request's method (for the error).
            path: the request's path (for the error).

        Raises:
            RateLimitError: the server asked for a pause longer than ``max_pause``.
        """
        queue = self._queue
        waiter, head = queue.join()
        started = self._clock()
        try:
            if not head:
                await waiter.event.wait()
            while True:
                now = self._clock()
                delay = self._take(now, queued=False)
                if delay == 0.0:
                    return
                if now < self._resume_at and self._resume_at - now > self._max_pause:
                    raise self._blocked_error(method, path, self._resume_at - now)
                self._head_fill = self._fill
                with anyio.CancelScope() as scope:
                    self._head_scope = scope
                    try:
                        await self._sleep(delay)
                    finally:
                        self._head_scope = None
        finally:
            queue.leave(waiter)
            self.waits += 1
            self.waited += max(0.0, self._clock() - started)

    def _take(self, now: float, *, queued: bool = True) -> float:
        """Take a token: 0.0 if taken, else the seconds to wait before asking again."""
        if queued and self._queue.live:
            return math.inf  # others are waiting: join the queue behind them
        if now < self._resume_at:
            return self._resume_at - now
        if self._fill == math.inf:
            if self._ceiling is None and not self._enabled:
                self._paced = False  # the pause is over and nothing else is in force
            return 0.0
        elapsed = now - self._refilled
        if elapsed > 0.0:
            self._tokens = min(self._capacity, self._tokens + elapsed * self._fill)
            self._refilled = now
        # A sleep of exactly the deficit can come back a rounding error short of a token.
        if self._tokens >= 1.0 - 1e-9:
            self._tokens = max(0.0, self._tokens - 1.0)
            return 0.0
        return (1.0 - self._tokens) / self._fill

    def _set_fill(self, rate: float, now: float) -> None:
        """Change the bucket's rate (refilled first, so tokens earned at the old rate count)."""
        unpaced = self._fill == math.inf
        if not unpaced:
            elapsed = now - self._refilled
            if elapsed > 0.0:
                self._tokens = min(self._capacity, self._tokens + elapsed * self._fill)
        self._refilled = now
        self._fill = rate
        self._capacity = max(1.0, rate * BURST_SECONDS)
        # Pacing starts with a full bucket (a few milliseconds' worth): a client that has sent
        # little when its first 429 comes must not wait for a token at the floor rate.
        self._tokens = self._capacity if unpaced else min(self._tokens, self._capacity)
        if self._head_scope is not None and rate > self._head_fill * 1.25:
            self._head_scope.cancel()  # the head sleeps for a slower rate: let it look again

    def _pace(self, now: float) -> None:
        rate = self._learned if self._enabled else math.inf
        if self._ceiling is not None:
            rate = min(rate, self._ceiling)
        if rate != self._fill:
            self._set_fill(rate, now)

    def answered(self, error: APIStatusError | None = None) -> bool:
        """Report the answer to an attempt (every answer, so the measured rate is right).

        Args:
            error: ``None`` for a 2xx, else the status error it was turned into.

        Returns:
            ``False`` when the call must fail now instead of retrying: a ``RATE_LIMITED`` whose
            ``Retry-After`` is longer than ``max_pause``.
        """
        now = self._clock()
        self.answers += 1
        measured = self._meter.record(now)
        if error is None or error.status != 429:
            if self._adaptive:
                self._recent.record(now)
            if self._enabled:
                measured = max(measured, self._recent.rate(now, self._resume_at))
                cubic = self._cubic
                # Recovery runs from when sending resumed, not through a pause.
                self._learned = max(
                    MIN_RATE,
                    min(cubic.success(max(now, cubic.last_fail)), MAX_RATE_SCALE * measured),
                )
                self._pace(now)
            return True
        code = error.code or _CODE_RATE_LIMITED
        self.throttles[code] += 1
        if code == _CODE_QUEUE_FULL:
            self._narrow_window(now)
            return True
        retry_after = error.retry_after if isinstance(error, RateLimitError) else None
        if retry_after is not None and retry_after > self._max_pause:
            self._resume_at = max(self._resume_at, now + retry_after)
            self._paced = True
            return False
        if self._adaptive:
            self._throttled(now)
        return True

    def _throttled(self, now: float) -> None:
        bucket = math.floor(now * 2.0) / 2.0
        if bucket <= self._last_cut_bucket or now < self._resume_at:
            return  # the same moment's burst, or requests sent before the pause began
        self._last_cut_bucket = bucket
        self.cuts += 1
        self._paced = True
        recent = self._recent
        since = max(self._resume_at, now if recent.first is None else recent.first)
        self._measured_cut = self._enabled and now - since >= TRUST_SECONDS
        if self._measured_cut:
            # Paced sending met the limit: what the server admitted meanwhile is the limit.
            cubic = self._cubic
            plateau = recent.rate(now, self._resume_at) * ESTIMATE_MARGIN
            if not self._held:
                self._holds = 0
            elif now <= cubic.last_fail:
                # Refused while holding: the plateau itself is over the limit (it moved).
                plateau = min(plateau, cubic.w_max * ESTIMATE_MARGIN)
                self._holds = 0
            elif plateau < cubic.w_max * PROBE_SPAN:
                # A probe above a plateau that held found the limit just above it: back to the
                # plateau, and hold it longer before the next probe (the limit has not moved).
                plateau = cubic.w_max
                self._holds = min(self._holds + 1, MAX_HOLD_DOUBLINGS)
            else:
                self._holds = 0  # the probe went far: the limit rose, plateau at the new one
            self._held = True
            self._learned = cubic.hold(max(MIN_RATE, min(plateau, self._fill)), now)
            self._pace(now)
            return
        self._held = False
        measured = max(self._meter.rate, recent.rate(now, self._resume_at))
        # What was admitted just before a throttle runs a few percent over the limit (the
        # server's refills and the network's bunching): aim the plateau just under it.
        rate = min(measured * ESTIMATE_MARGIN, self._fill) if self._enabled else measured
        cut = self._cubic.throttled(rate, now)
        self._learned = max(MIN_RATE, min(cut, MAX_RATE_SCALE * measured))
        self._enabled = True
        self._pace(now)

    def pause(self, error: RateLimitError, seconds: float) -> bool:
        """Pause every attempt of the client after a ``RATE_LIMITED`` that had a ``Retry-After``.

        Args:
            error: the 429.
            seconds: how long, from now: at least the ``Retry-After`` (the caller's cap applies).

        Returns:
            Whether the client pauses; ``False`` for a ``QUEUE_FULL`` (a capacity signal: only
            that request waits) or a 429 without ``Retry-After`` (the pacing slows the client).
        """
        if error.retry_after is None or error.code == _CODE_QUEUE_FULL:
            return False
        self._resume_at = max(self._resume_at, self._clock() + seconds)
        self._paced = True
        if self._enabled:
            hold = 0.0
            if self._measured_cut:
                self._measured_cut = False  # one hold per throttle, not one per 429 of it
                hold = HOLD_PAUSES * seconds * 2.0**self._holds
            self._cubic.last_fail = max(self._cubic.last_fail, self._resume_at + hold)
        if self._head_scope is not None:
            self._head_scope.cancel()  # the head sleeps for a token: it must wait longer now
        return True

    def _blocked_error(self, method: str, path: str, left: float) -> RateLimitError:
        return RateLimitError(
            status=429,
            method=method,
            path=path,
            message=(
                f"the server asked to wait {left:.0f} s, longer than max_pause="
                f"{self._max_pause:g} s; nothing was sent"
            ),
            code=_CODE_RATE_LIMITED,
            retry_after=left,
        )

    # -- the submission window (QUEUE_FULL) ------------------------------------------------------

    def submission(self) -> _Submission:
        """An async context manager around one submission (all its attempts).

        Before any ``QUEUE_FULL`` it does nothing; after one, it waits (FIFO) for a free slot of
        the submission window, and a success widens the window by one while it is in use.

        Returns:
            The context manager; a waiter cancelled while it waits takes no slot.
        """
        return _Submission(self)

    def _narrow_window(self, now: float) -> None:
        bucket = math.floor(now * 2.0) / 2.0
        if bucket <= self._last_window_cut:
            return
        self._last_window_cut = bucket
        current = self._window if self._window is not None else max(1, self._submitting)
        self._window = max(1, int(min(current, max(1, self._submitting)) * WINDOW_DECREASE))

    def _widen_window(self) -> None:
        window = self._window
        if window is not None and self._submitting * 2 >= window:
            self._window = min(_MAX_WINDOW, window + 1)

    def _slot_free(self) -> bool:
        return self._window is None or self._submitting < self._window


class _Submission:
    __slots__ = ("_controller", "_held")

    def __init__(self, controller: RateController) -> None:
        self._controller = controller
        self._held = False

    async def __aenter__(self) -> None:
        controller = self._controller
        queue = controller._window_queue
        if not queue.live and controller._slot_free():
            controller._submitting += 1
            self._held = True
            return
        waiter, head = queue.join()
        started = controller._clock()
        try:
            if not head:
                await waiter.event.wait()
            while not controller._slot_free():
                # Slots free up when submissions end; they wake the head (see __aexit__).
                waiter.event = anyio.Event()
                await waiter.event.wait()
            controller._submitting += 1
            self._held = True
        finally:
            queue.leave(waiter)
            controller.waits += 1
            controller.waited += max(0.0, controller._clock() - started)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        controller = self._controller
        if self._held:
            self._held = False
            controller._submitting -= 1
            if exc_type is None:
                controller._widen_window()
            controller._window_queue.wake_head()
