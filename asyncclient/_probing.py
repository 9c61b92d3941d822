"""What a watch does while the API is down: hold its runs, probe, and release them gently.

Every outcome of a watch's requests feeds an :class:`~._outage.OutageTracker`. While it says the
API is down, runs are held (only their deadlines wake them), no run is charged a failure, and a
probe task sends one request per capped interval, a GET of the run waiting longest or (every
other time) a one-row list page, so one run failing on its own cannot pass for an outage for long.
The first answer releases the runs, spread over one capped interval. The poller reports to an
:class:`OutageProber`; the prober knows the runs only through their schedule.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Mapping

import anyio

from ._config import PollPolicy
from ._exceptions import APIUnavailableError, AuthenticationError, PredevError, is_outage
from ._outage import OutageTracker
from ._scanning import Scanner
from ._scheduling import RunSchedule, Watched
from ._testing_switch import scaled

__all__ = ["OutageProber"]

logger = logging.getLogger("asyncclient")


class OutageProber:
    """A watch's conduct through outages of the API.

    Args:
        tracker: what the watch knows of the API's state.
        policy: the watch's polling policy (``max_delay`` is the probe interval).
        runs: the watch's undelivered runs, by id.
        schedule: when each run is next due.
        scanner: the watch's list scans, if it has a list endpoint.
        poll: polls one run as a probe (sent even while the API is down).
        abort: stops the whole watch with an error.
    """

    __slots__ = (
        "_abort",
        "_began",
        "_policy",
        "_poll",
        "_runs",
        "_scanner",
        "_schedule",
        "tracker",
    )

    def __init__(
        self,
        tracker: OutageTracker,
        policy: PollPolicy,
        *,
        runs: Mapping[str, Watched],
        schedule: RunSchedule,
        scanner: Scanner | None,
        poll: Callable[[Watched], Awaitable[None]],
        abort: Callable[[PredevError], None],
    ) -> None:
        self.tracker = tracker
        self._policy = policy
        self._runs = runs
        self._schedule = schedule
        self._scanner = scanner
        self._poll = poll
        self._abort = abort
        self._began = anyio.Event()

    def __repr__(self) -> str:
        return f"<OutageProber down={self.tracker.down} probes={self.tracker.probes}>"

    def answered(self) -> None:
        """A request got an answer: an outage under way is over."""
        seconds = self.tracker.answered()
        if seconds is not None:
            self._ended(seconds)

    def failed(self, error: PredevError, sent_at: float) -> bool:
        """A request sent at ``sent_at`` failed transiently; an outage may begin.

        Returns:
            Whether the failure counts against its run (see :meth:`OutageTracker.failed`).
        """
        charged, began = self.tracker.failed(error, sent_at)
        if began:
            self._begin(error)
        return charged

    def hold(self, watched: Watched) -> None:
        """Park a run for the outage: only its deadline (or the outage's end) wakes it."""
        if watched.delivered:
            return
        # To the back of the probe order, so that probes go round the runs.
        watched.natural_due = self._schedule.now() + self._policy.max_delay
        self._schedule.park(watched)

    def _begin(self, error: PredevError) -> None:
        """Every recent request failed: hold every run; from now on one probe per interval."""
        logger.warning(
            "the API is unreachable (%s); probing every %g s until it answers",
            error,
            self._policy.max_delay,
        )
        for watched in self._runs.values():
            if not watched.in_flight:
                self._schedule.park(watched)
        self._began.set()

    async def _until_down(self) -> None:
        if self._began.is_set():
            self._began = anyio.Event()
        await self._began.wait()

    async def probe_loop(self) -> None:
        """The probe task: while the API is down, one request per interval and nothing else."""
        tracker = self.tracker
        while True:
            if not tracker.down:
                await self._until_down()
                continue
            delay = tracker.next_probe_at - self._schedule.now()
            if delay > 0:
                await anyio.sleep(delay)
                continue  # the outage may have ended meanwhile
            probes = tracker.claim_probe()
            waiting = [w for w in self._runs.values() if not w.in_flight]
            if self._scanner is not None and (probes % 2 == 0 or not waiting):
                await self._probe_list(self._scanner)
            elif waiting:
                watched = min(waiting, key=lambda w: w.natural_due)
                watched.in_flight = True
                try:
                    await self._poll(watched)
                finally:
                    watched.in_flight = False

    async def _probe_list(self, scanner: Scanner) -> None:
        """One row of the list: answers when the API is up, whatever any one run does."""
        sent_at = self._schedule.now()
        try:
            await scanner.probe()
        except AuthenticationError as error:
            self._abort(error)
        except PredevError as error:
            if is_outage(error):
                self.tracker.failed(error, sent_at)
            else:
                self.answered()
        else:
            self.answered()

    def _ended(self, seconds: float) -> None:
        """The API answers again: release the runs over one capped interval, not all at once."""
        logger.info("the API answers again, after %.1f s unreachable", seconds)
        now = self._schedule.now()
        spread = scaled(self._policy.max_delay)
        scanner = self._scanner
        watching = scanner is not None and scanner.watching
        for watched in self._runs.values():
            if watched.in_flight or watched.due <= now:
                continue
            # The healthy cadence: each run once per capped interval, so no storm.
            watched.natural_due = now + spread * random.random()
            if not watching:
                self._schedule.put(watched, min(watched.natural_due, watched.deadline))
        if scanner is not None and self._policy.strategy != "per-run":
            scanner.wake()  # one scan finds what finished meanwhile

    async def give_up_after(self, max_outage: float) -> None:
        """Stop the watch with APIUnavailableError once an outage outlasts ``max_outage``."""
        tracker = self.tracker
        while True:
            since = tracker.down_since
            if since is None:
                await self._until_down()
                continue
            remaining = since + max_outage - self._schedule.now()
            if remaining <= 0:
                last = tracker.last_error
                error = APIUnavailableError(self._schedule.now() - since, last)
                error.__cause__ = last
                self._abort(error)
                return
            await anyio.sleep(remaining)
