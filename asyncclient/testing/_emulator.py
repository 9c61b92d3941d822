"""The emulator: API keys, the runs each key owns, and the queries the HTTP layer answers.

It sits below the HTTP layer: ``_app`` reads and submits through named methods
(:meth:`Emulator.authorize`, :meth:`~Emulator.render_run`, :meth:`~Emulator.render_list`,
:meth:`~Emulator.live_tasks`, :meth:`~Emulator.submit`) and never its underscored state. The
one import back up is :attr:`Emulator.app`, which builds an application when read.
"""

from __future__ import annotations

import hashlib
import math
import random
from bisect import insort
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from ._accounts import MAX_BATCH, QUEUE_CAP, Account
from ._clock import Clock, RealClock
from ._examples import EXAMPLE_RUN_ID, example_bodies
from ._faults import Faults
from ._index import FilteredRuns, ProcessingRuns, order_key
from ._ratelimit import RateLimits
from ._samples import RUN_FAILURES, sample_data, sample_status, sample_task
from ._state import RunState, TaskPlan
from ._submission import (
    Mode,
    Refusal,
    account_refusal,
    plan_tasks,
    rate_limited,
    read_submission,
)

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["Emulator"]

_EVENT_BYTES_PER_TASK = 4_000  # the event timeline a submitted task gets

_encode = msgspec.json.encode


ListRows = Literal["summary", "stub"]
_LIST_ROWS = ("summary", "stub")


def object_id(seconds: float, random_part: bytes, counter: int) -> str:
    """A Mongo ObjectId as 24 hex characters: 4-byte creation time, 5 random bytes, counter.

    Args:
        seconds: The creation time, seconds since the epoch (whole seconds are kept, modulo
            2**32 as the format does).
        random_part: At least 5 bytes; the first 5 are used.
        counter: The counter (its low 3 bytes are used).

    Returns:
        The id, lowercase hex.
    """
    when = math.floor(seconds) & 0xFFFFFFFF
    return f"{when:08x}{random_part[:5].hex()}{counter & 0xFFFFFF:06x}"


class Emulator:
    """An in-memory pre.dev browser-agent runs API, served by :attr:`app`.

    Runs progress on :attr:`clock`: each task finishes at its planned offset after the run's
    creation, so a test moves a :class:`ManualClock` forward instead of sleeping.

    Attributes:
        api_keys: The keys the emulator accepts; each owns its own runs.
        clock: The time source.
        seed: Seeds ids, generated tasks and event timelines.
        request_count: Requests answered so far, on any route and with any status.
        requests_by_route: Requests answered per route: ``"get"``, ``"list"``, ``"submit"``
            and ``"status"``.
        before_request: Called with the route name (``"get"``, ``"list"``, ``"submit"`` or
            ``"status"``) and the request at the start of each request to those routes, before
            anything is checked: tests use it to create or finish runs between page requests,
            or raise an ``aiohttp.web.HTTPException`` to answer with it instead.
        plan_task: Plans each task of a submitted run: called with the task's index and its
            JSON object, it returns how many seconds the task runs once a browser picks it up
            (a ``SUCCESS``), or a whole :class:`TaskPlan` whose ``finish_after`` is that
            duration. ``None`` (the default) draws both from the seed.
        queue_cap: The most live (unfinished) tasks one key may have; a submission that would
            go over it is answered 429 ``QUEUE_FULL``.
        max_batch: The most tasks one submission may hold (400 ``BATCH_TOO_LARGE`` above).
        streams_open: Streamed submissions being answered right now.
        stream_disconnects: Streams that ended because the client left before ``done``.
        faults: The failures injected in front of the API (none until some are added), drawn
            with a generator seeded from :attr:`seed`; see :class:`Faults`.
        list_rows: How a finished run shows in a list page. ``"summary"`` (the default, as
            the list page's own example shows a completed row): its whole summary, every
            task's result without events, as ``GET`` answers it. ``"stub"`` (the other
            reading of the page's field table): task 0 as a ``{url, instruction}`` stub and
            ``null`` for the others, even once finished. A processing run is a stub and
            ``null`` entries either way.
        rate_limits: Per-key rate limits (429 ``RATE_LIMITED`` with ``Retry-After``) and a
            latency added to every answer, in front of the faults (none until set); see
            :class:`RateLimits`.
    """

    def __init__(
        self,
        api_keys: Sequence[str] = ("test-key",),
        *,
        clock: Clock | None = None,
        seed: int = 0,
    ) -> None:
        """Create an emulator with no runs.

        Args:
            api_keys: The accepted API keys (at least one); the first is the default owner
                of new runs.
            clock: The time source; defaults to real time (:class:`RealClock`).
            seed: Seeds ids, generated tasks and event timelines.

        Raises:
            ValueError: If no key is given, or a key is empty or repeated.
        """
        keys = (api_keys,) if isinstance(api_keys, str) else tuple(api_keys)
        if not keys or not all(keys) or len(set(keys)) != len(keys):
            raise ValueError("api_keys must be one or more distinct, non-empty strings")
        self.api_keys: tuple[str, ...] = keys
        self.clock: Clock = clock if clock is not None else RealClock()
        self.seed = seed
        self.request_count = 0
        self.requests_by_route: Counter[str] = Counter()
        self.before_request: Callable[[str, web.Request], None] | None = None
        self.faults = Faults(seed)
        self.rate_limits = RateLimits(self.authorize, seed=seed)
        self.plan_task: Callable[[int, Mapping[str, Any]], float | TaskPlan] | None = None
        self.queue_cap = QUEUE_CAP
        self.max_batch = MAX_BATCH
        self.streams_open = 0
        self.stream_disconnects = 0
        self._list_rows: ListRows = "summary"
        self._version = 0
        self._filtered: dict[tuple[str, str], FilteredRuns] = {}
        self._accounts: dict[str, Account] = {}
        self._submitted = 0  # runs submitted over HTTP: seeds each submission's plans
        self._runs: dict[str, RunState] = {}
        # Per key, runs sorted by (createdAt, id) ascending; pages read it from the end.
        self._by_key: dict[str, list[RunState]] = {key: [] for key in keys}
        # Per key, the runs processing (a scan's pages cost their rows, not the account).
        self._processing: dict[str, ProcessingRuns] = {key: ProcessingRuns() for key in keys}
        self._auth: dict[str, str] = {f"Bearer {key}": key for key in keys}
        # (key, run id) -> the docs' example bodies, without and with events (add_docs_example).
        self._docs_examples: dict[tuple[str, str], tuple[bytes, bytes]] = {}
        self._counter = 0

    @property
    def list_rows(self) -> ListRows:
        """``"summary"`` or ``"stub"``: how finished runs show in list pages (see the class)."""
        return self._list_rows

    @list_rows.setter
    def list_rows(self, value: ListRows) -> None:
        if value not in _LIST_ROWS:
            raise ValueError(f"list_rows must be 'summary' or 'stub', got {value!r}")
        self._list_rows = value

    @property
    def app(self) -> web.Application:
        """A new ``aiohttp.web`` application serving this emulator (``build_app(self)``).

        Each access builds another application: :func:`serve` builds its own, so keep the
        one you read if you add routes to it and run it yourself.
        """
        from ._app import build_app  # the HTTP layer sits above the state: import on use

        return build_app(self)

    # -- making runs ------------------------------------------------------------------------

    def _next(self, id_time: float) -> tuple[str, random.Random]:
        """Return a fresh ObjectId (its time ``id_time``) and the run's content generator."""
        while True:
            self._counter += 1
            tag = f"{self.seed}:{self._counter}"
            noise = hashlib.sha256(f"asyncclient.testing:{tag}".encode()).digest()
            run_id = object_id(id_time, noise, self._counter)
            if run_id not in self._runs:
                return run_id, random.Random(tag)

    def create_run(
        self,
        api_key: str | None = None,
        *,
        tasks: Sequence[TaskPlan] | None = None,
        n_tasks: int | None = None,
        durations: Sequence[float] | None = None,
        statuses: Sequence[str] | None = None,
        event_bytes: int = 4_000,
        fail_with: str | None = None,
        created_at: float | None = None,
        id_time: float | None = None,
    ) -> str:
        """Create a run.

        Args:
            api_key: The owner; defaults to the first key.
            tasks: The tasks, fully specified. Excludes ``n_tasks``, ``durations`` and
                ``statuses``.
            n_tasks: How many tasks to generate (default 3, or the length of ``durations``
                or ``statuses``).
            durations: Each generated task's finish offset in seconds after creation;
                generated from the seed when omitted.
            statuses: Each generated task's final status; mostly ``SUCCESS`` when omitted.
            event_bytes: Approximate size of the run's whole event timeline (what
                ``includeEvents=true`` adds), from a few KB to tens of MB.
            fail_with: If set, the run ends ``failed`` with this error. It fails when its
                middle task (by finish time) would have finished: the tasks done before then
                keep their planned results, the others end ``ERROR`` with this message.
            created_at: Creation time in seconds since the epoch; defaults to now.
            id_time: The time written in the id's first four bytes, in seconds since the
                epoch; defaults to the creation time. Another value makes an id whose time
                disagrees with its ``createdAt``, as the API documentation's own example does.

        Returns:
            The new run's id: a Mongo ObjectId (24 lowercase hex characters) whose first four
            bytes are ``id_time``.

        Raises:
            ValueError: On an unknown key or inconsistent arguments.
        """
        key = self._key(api_key)
        when = self.clock() if created_at is None else created_at
        run_id, rng = self._next(when if id_time is None else id_time)
        if tasks is not None:
            if n_tasks is not None or durations is not None or statuses is not None:
                raise ValueError("pass either tasks or n_tasks/durations/statuses, not both")
            plans = list(tasks)
        else:
            plans = self._generate(rng, n_tasks, durations, statuses)
        if event_bytes < 0:
            raise ValueError(f"event_bytes must be >= 0, got {event_bytes!r}")
        return self._add(run_id, key, when, plans, event_bytes, fail_with=fail_with).id

    def _add(
        self,
        run_id: str,
        api_key: str,
        created_at: float,
        plans: list[TaskPlan],
        event_bytes: int,
        *,
        fail_with: str | None = None,
        starts: list[float] | None = None,
    ) -> RunState:
        """Plan a run and index it: by id, in its key's list and among the processing."""
        run = RunState(
            run_id=run_id,
            api_key=api_key,
            created_ms=round(created_at * 1000),
            plans=plans,
            event_bytes=event_bytes,
            fail_with=fail_with,
            seed=f"{self.seed}:{run_id}",
            starts=starts,
        )
        self._runs[run_id] = run
        insort(self._by_key[api_key], run, key=order_key)
        self._processing[api_key].add(run)
        self._version += 1
        return run

    def add_docs_example(self, api_key: str | None = None) -> str:
        """Make the API documentation's example run, ``65f8a9d2c1e4b5a6f7e8d9c0``, answer.

        ``GET`` of that id then answers what the "Task Status" page prints: without events its
        ``processing`` snapshot, with ``includeEvents=true`` its ``completed`` one with the
        timeline. Both never change, so the run is not in the list, and watching it never ends.
        ``asyncclient emulator`` adds it for its first key.

        Args:
            api_key: The owner; defaults to the first key.

        Returns:
            The run's id.

        Raises:
            ValueError: On an unknown key.
        """
        self._docs_examples[self._key(api_key), EXAMPLE_RUN_ID] = example_bodies()
        return EXAMPLE_RUN_ID

    def _key(self, api_key: str | None) -> str:
        if api_key is None:
            return self.api_keys[0]
        if api_key not in self._by_key:
            raise ValueError(f"unknown API key {api_key!r}; known keys: {self.api_keys!r}")
        return api_key

    @staticmethod
    def _generate(
        rng: random.Random,
        n_tasks: int | None,
        durations: Sequence[float] | None,
        statuses: Sequence[str] | None,
    ) -> list[TaskPlan]:
        sizes = {len(x) for x in (durations, statuses) if x is not None}
        if n_tasks is not None:
            sizes.add(n_tasks)
        if len(sizes) > 1:
            raise ValueError(f"n_tasks, durations and statuses disagree on the count: {sizes}")
        count = sizes.pop() if sizes else 3
        if count < 1:
            raise ValueError("a run has at least one task")
        plans = []
        for i in range(count):
            url, instruction, inputs = sample_task(rng)
            finish = durations[i] if durations is not None else round(rng.uniform(2.0, 20.0), 3)
            status = statuses[i] if statuses is not None else sample_status(rng)
            data = sample_data(rng) if status == "SUCCESS" else None
            plans.append(TaskPlan(url, instruction, inputs, float(finish), status, data))
        return plans

    def populate(
        self,
        n: int = 100,
        *,
        api_key: str | None = None,
        max_duration: float = 60.0,
        event_bytes: int = 4_000,
    ) -> list[str]:
        """Create many varied runs, as if the key had been busy for a while.

        Runs have 1 to 10 tasks lasting up to ``max_duration`` seconds, mostly successful
        with every failure mode in the mix; about one in twelve ends ``failed``. Creation
        times are spread over the last ``2 * max_duration`` seconds, so some runs are already
        finished and others are still processing.

        Args:
            n: How many runs to create.
            api_key: The owner; defaults to the first key.
            max_duration: The longest task, in seconds.
            event_bytes: Approximate size of each run's event timeline.

        Returns:
            The new ids, in creation order.

        Raises:
            ValueError: On an unknown key or a non-positive ``max_duration``.
        """
        key = self._key(api_key)
        if not max_duration > 0:
            raise ValueError(f"max_duration must be positive, got {max_duration!r}")
        now = self.clock()
        rng = random.Random(f"populate:{self.seed}:{self._counter}")
        ids = []
        for i in range(n):
            n_tasks = rng.choice((1, 1, 2, 3, 3, 4, 5, 6, 8, 10))
            durations = [round(rng.uniform(0.1, 1.0) * max_duration, 3) for _ in range(n_tasks)]
            fail_with = rng.choice(RUN_FAILURES) if i % 12 == 11 else None
            ids.append(
                self.create_run(
                    key,
                    durations=durations,
                    event_bytes=event_bytes,
                    fail_with=fail_with,
                    created_at=now - rng.uniform(0.0, 2.0 * max_duration),
                )
            )
        return ids

    def finish_run(self, run_id: str) -> None:
        """Make every unfinished task of a run finish now, with its planned status.

        Args:
            run_id: The run.

        Raises:
            KeyError: If there is no such run.
        """
        run = self._runs[run_id]
        if run.finish_by(self.clock() - run.created_at):
            self._processing[run.api_key].moved(run)
            self._version += 1

    def set_account(
        self,
        api_key: str | None = None,
        *,
        subscribed: bool = True,
        credits: float | None = None,
        rate_limit: tuple[int, float] | None = None,
    ) -> None:
        """Set the account state behind a key, which submissions are checked against.

        Args:
            api_key: The key; defaults to the first key.
            subscribed: ``False`` answers every submission 402 ``SUBSCRIPTION_REQUIRED``.
            credits: The balance; a submission needing more (0.1 credit per task at least) is
                answered 402 ``INSUFFICIENT_CREDITS``. ``None`` for no limit. The balance is
                not drawn down.
            rate_limit: ``(submissions, seconds)``: more submissions than that within that many
                seconds of the emulator's clock are answered 429 ``RATE_LIMITED``, with a
                ``Retry-After``. ``None`` for no limit.

        Raises:
            ValueError: On an unknown key or a value out of range.
        """
        key = self._key(api_key)
        if credits is not None and not credits >= 0:
            raise ValueError(f"credits must be >= 0 or None, got {credits!r}")
        if rate_limit is not None:
            count, window = rate_limit
            if not (isinstance(count, int) and count >= 1 and window > 0):
                raise ValueError(f"rate_limit must be (count >= 1, seconds > 0), got {rate_limit}")
        self._accounts[key] = Account(
            subscribed=bool(subscribed), credits=credits, rate_limit=rate_limit
        )

    def run_ids(self, api_key: str | None = None) -> list[str]:
        """Return run ids, newest first (``createdAt`` descending, then id descending).

        Args:
            api_key: Only this key's runs; ``None`` for every key's.

        Returns:
            The ids.
        """
        if api_key is not None:
            runs = self._by_key[self._key(api_key)]
        else:
            runs = sorted(self._runs.values(), key=order_key)
        return [run.id for run in reversed(runs)]

    # -- answering requests (called by the HTTP layer) ---------------------------------------

    def authorize(self, header: str | None) -> str | None:
        """The API key an ``Authorization`` header authenticates as.

        Args:
            header: The header's value, or ``None`` when the request has none.

        Returns:
            The key, or ``None`` if the header names no key of this emulator.
        """
        if header is None:
            return None
        key = self._auth.get(header)
        if key is not None:
            return key
        # The scheme is case-insensitive and the separator may be any run of spaces.
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token in self._by_key:
            return token
        return None

    def render_run(self, api_key: str, run_id: str, include_events: bool) -> bytes | None:
        """The body of ``GET`` one run, as ``api_key`` sees it now.

        Args:
            api_key: The caller's key (another key's run looks like no run at all).
            run_id: The run's id, in either case.
            include_events: Whether each task carries its event timeline.

        Returns:
            The encoded body, or ``None`` if the key has no such run.
        """
        run = self._runs.get(run_id) or self._runs.get(run_id.lower())
        if run is None or run.api_key != api_key:
            example = self._docs_examples.get((api_key, run_id.lower()))
            return None if example is None else example[include_events]
        return run.render_get(self.clock(), include_events)

    def live_tasks(self, api_key: str, now: float) -> tuple[int, int]:
        """Count a key's unfinished tasks.

        Args:
            api_key: The key.
            now: The time to count at, in seconds since the epoch.

        Returns:
            ``(running, pending)``: pending tasks wait for a free browser of their run.
        """
        running = pending = 0
        for run in self._by_key[api_key]:
            run_running, run_pending = run.live_tasks(now - run.created_at)
            running += run_running
            pending += run_pending
        return running, pending

    def submit(self, api_key: str, body: bytes) -> tuple[RunState, Mode] | Refusal:
        """Submit a run as the service would: every check, then the run, planned.

        Checks run in this order: the key's rate limit (429 ``RATE_LIMITED``), the body
        (400), the batch size (400 ``BATCH_TOO_LARGE``), the account (402
        ``SUBSCRIPTION_REQUIRED`` / ``INSUFFICIENT_CREDITS``), then the queue cap (429
        ``QUEUE_FULL``).

        Args:
            api_key: The authenticated key.
            body: The request body.

        Returns:
            The new run and how to answer it, or why it was refused.
        """
        account = self._accounts.get(api_key)
        now = self.clock()
        wait = None if account is None else account.admit(now)
        if wait is not None:
            return rate_limited(wait)
        submission = read_submission(body)
        if isinstance(submission, str):
            return Refusal(400, submission)
        count = len(submission.tasks)
        if count > self.max_batch:
            return Refusal(
                400,
                f"A batch holds at most {self.max_batch} tasks, got {count}",
                code="BATCH_TOO_LARGE",
            )
        refusal = None if account is None else account_refusal(account, count)
        if refusal is not None:
            return refusal
        running, pending = self.live_tasks(api_key, now)
        if running + pending + count > self.queue_cap:
            return Refusal(
                429,
                f"Too many live tasks: {running + pending} of {self.queue_cap} in use; "
                "wait for in-flight tasks to drain",
                code="QUEUE_FULL",
            )
        rng = random.Random(f"asyncclient.testing:submit:{self.seed}:{self._submitted}")
        plans, starts = plan_tasks(
            submission.tasks, submission.concurrency, rng=rng, plan_task=self.plan_task
        )
        self._submitted += 1
        run_id, _ = self._next(now)
        run = self._add(run_id, api_key, now, plans, _EVENT_BYTES_PER_TASK * count, starts=starts)
        return run, submission.mode

    def _matching(self, api_key: str, status: str, now: float) -> list[RunState]:
        """A key's runs in ``status`` at ``now``, oldest first.

        The filtered list is kept until a run is created or finished early, or the clock
        reaches the next time a run changes status (or goes back before the last one), so a
        walk over a large account costs each page its own rows, not the whole account.
        """
        if status == "processing":
            return self._processing[api_key].at(now, self._by_key[api_key])
        cache_key = (api_key, status)
        cached = self._filtered.get(cache_key)
        if cached is not None and cached.holds(now, self._version):
            return cached.runs
        filtered = FilteredRuns.filter(self._by_key[api_key], status, now, self._version)
        self._filtered[cache_key] = filtered
        return filtered.runs

    def render_list(self, api_key: str, limit: int, skip: int, status: str | None) -> bytes:
        """The body of one list page, as ``api_key`` sees it now.

        The body is a camelCase dict written by hand, independent of the client's Structs:
        the emulator is the oracle the client is tested against.

        Args:
            api_key: The caller's key.
            limit: Rows on the page (already clamped into 1..100).
            skip: Rows skipped from the newest.
            status: ``"processing"``, ``"completed"`` or ``None`` for every run.

        Returns:
            The encoded page.
        """
        now = self.clock()
        runs = self._by_key[api_key] if status is None else self._matching(api_key, status, now)
        total = len(runs)
        end = total - skip
        page = runs[max(0, end - limit) : end][::-1] if end > 0 else []
        stub = self._list_rows == "stub"
        return _encode(
            {
                "batches": [run.render_row(now, stub=stub) for run in page],
                "total": total,
                "hasMore": skip + limit < total,
            }
        )

    def __repr__(self) -> str:
        return f"Emulator(keys={len(self.api_keys)}, runs={len(self._runs)}, seed={self.seed})"
