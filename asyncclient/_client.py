"""The Client: owns the HTTP session, decodes answers into Structs, hands out pagers and watches."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, NoReturn, TypeVar

import aiohttp
import anyio
import anyio.abc
import msgspec
from anyio import AsyncContextManagerMixin

from ._concurrency import owned_task_group
from ._config import PollPolicy, RetryPolicy, Routes
from ._constants import (
    API_KEY_ENV,
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    LIST_PAGE_MAX,
    QUEUE_STATUS_PATH,
)
from ._exceptions import AuthenticationError, PredevError, ResponseDecodeError
from ._harvest import Harvest
from ._models import (
    QueueStatus,
    Run,
    RunPage,
    queue_status_decoder,
    run_decoder,
    run_page_decoder,
)
from ._pagination import RunIterator
from ._polling import RunUpdate, Watcher
from ._ratelimit import RateController
from ._streaming import RunStream
from ._tasks import TaskSpec, encode_submit, validate_concurrency, validate_tasks
from ._transport import DEFAULT_MAX_RESPONSE_BYTES, Body, Transport, body_head
from ._validation import (
    check_bool,
    check_int,
    check_seconds,
    validate_api_key,
    validate_base_url,
    validate_limit,
    validate_run_id,
    validate_skip,
    validate_status_filter,
)

__all__ = ["Client"]

_T = TypeVar("_T")
_WITH_EVENTS: Mapping[str, str] = {"includeEvents": "true"}

logger = logging.getLogger("asyncclient")


class Client(AsyncContextManagerMixin):
    """An async client for the pre.dev browser-agent runs API.

    Use it as an async context manager (``async with Client() as client``), or call
    :meth:`aclose` when done. It opens one HTTP session, inside the running event loop, on first
    use and reuses it for every request.

    Args:
        api_key: the API key; defaults to the ``PREDEV_API_KEY`` environment variable.
        base_url: the API origin; defaults to ``PREDEV_BASE_URL``, then ``https://api.pre.dev``.
            Plain ``http://`` is accepted only for loopback hosts.
        routes: ``"legacy"`` (``/browser-agent/{id}``, ``/list-browser-agents``) or ``"v1"``
            (``/api/v1/browser-agents/{id}``, ``/api/v1/browser-agents``).
        timeout: seconds one request attempt may take, from connecting to the last byte.
        max_retries: retries of a transient failure (overrides ``retry.max_retries``).
        retry: the full :class:`RetryPolicy` (delays, cap on ``Retry-After``).
        poll_policy: the default :class:`PollPolicy` of :meth:`watch` and :meth:`wait`.
        session: your own ``aiohttp.ClientSession``; the client uses it and never closes it.
        trust_env: read proxy settings from the environment (off unless asked).
        max_response_bytes: refuse bodies larger than this (512 MiB by default).
        max_requests_per_second: a fixed ceiling on this client's requests per second (your
            share of the key's rate limit); ``None`` for none. Adaptive pacing, which starts at
            the first 429 ``RATE_LIMITED``, is on either way.
        rate_controller: a :class:`RateController` to pace this client with, shared with other
            clients of the same key (excludes ``max_requests_per_second``); default: a fresh one.

    Raises:
        ValueError: no key, or an argument that is not acceptable (the message names it).
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        routes: str = "legacy",
        timeout: float = 60.0,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        poll_policy: PollPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        trust_env: bool = False,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_requests_per_second: float | None = None,
        rate_controller: RateController | None = None,
    ) -> None:
        if api_key is None:
            api_key = os.environ.get(API_KEY_ENV)
            if api_key is None:
                raise ValueError(f"no API key: pass api_key= or set {API_KEY_ENV}")
        key = validate_api_key(api_key)
        if base_url is None:
            base_url = os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        url = validate_base_url(base_url)
        self._routes = Routes.for_style(routes)
        check_seconds("timeout", timeout)
        retry = retry or RetryPolicy()
        if not isinstance(retry, RetryPolicy):
            raise ValueError("retry must be a RetryPolicy")
        if max_retries is not None:
            retry = replace(retry, max_retries=max_retries)
        if poll_policy is not None and not isinstance(poll_policy, PollPolicy):
            raise ValueError("poll_policy must be a PollPolicy")
        if session is not None and not isinstance(session, aiohttp.ClientSession):
            raise ValueError("session must be an aiohttp.ClientSession")
        check_int("max_response_bytes", max_response_bytes, ge=1)
        if rate_controller is None:
            rate_controller = RateController(max_requests_per_second=max_requests_per_second)
        elif not isinstance(rate_controller, RateController):
            raise ValueError("rate_controller must be a RateController")
        elif max_requests_per_second is not None:
            raise ValueError(
                "pass max_requests_per_second or rate_controller, not both (set the ceiling on "
                "the controller)"
            )
        self._base_url = str(url)
        self._poll_policy = poll_policy or PollPolicy()
        self._max_response_bytes = max_response_bytes
        self._transport = Transport(
            base_url=url,
            api_key=key,
            timeout=float(timeout),
            retry=retry,
            session=session,
            trust_env=bool(trust_env),
            max_response_bytes=max_response_bytes,
            rate=rate_controller,
        )
        self._task_group: anyio.abc.TaskGroup | None = None

    def __repr__(self) -> str:
        return f"<Client base_url={self._base_url!r} routes={self._routes.style!r}>"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Client holds an API key and an open session; it cannot be pickled")

    @property
    def base_url(self) -> str:
        """The API origin requests go to."""
        return self._base_url

    @property
    def routes(self) -> str:
        """``"legacy"`` or ``"v1"``."""
        return self._routes.style

    @property
    def poll_policy(self) -> PollPolicy:
        """The polling policy :meth:`watch` and :meth:`wait` use when they are given none."""
        return self._poll_policy

    @property
    def requests_sent(self) -> int:
        """HTTP requests sent so far, retries included."""
        return self._transport.requests_sent

    @property
    def rate_controller(self) -> RateController:
        """The controller pacing this client: its counters say how often it was throttled."""
        return self._transport.rate

    @property
    def retries(self) -> int:
        """How many of :attr:`requests_sent` were retries."""
        return self._transport.retries

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[Client]:
        """``async with Client(...) as client``: owns the prefetch task group, then closes."""
        try:
            async with owned_task_group() as task_group:
                self._task_group = task_group
                try:
                    yield self
                finally:
                    # Only page prefetches run here; leaving the client stops them.
                    self._task_group = None
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session (unless it was passed in). Safe to call twice."""
        await self._transport.aclose()

    async def get_run(self, run_id: str, *, include_events: bool = False) -> Run:
        """Fetch one run by id.

        Args:
            run_id: the run id, 24 hexadecimal characters.
            include_events: add every task's event timeline (and ``live_events`` while the run
                is processing). Timelines can be megabytes: ask only when you need them.

        Returns:
            The run, decoded.

        Raises:
            ValueError: ``run_id`` is not 24 hexadecimal characters (no request is made).
            NotFoundError: no such run for this key.
            AuthenticationError: the key is missing or invalid.
            APIStatusError: another non-2xx answer, after retries where retrying is safe.
            APIConnectionError: no answer, after retries.
            ResponseDecodeError: the body is not a run.
        """
        run_id = validate_run_id(run_id)
        check_bool("include_events", include_events)
        # _fetch_run's three lines, inline: one coroutine frame less on every call.
        path = self._routes.run_path(run_id)
        params = _WITH_EVENTS if include_events else None
        body = await self._transport.get(path, params)
        return _decode(run_decoder, body, path)

    async def _fetch_run(self, run_id: str, include_events: bool) -> Run:
        """A run by id, already validated (the watch's polls come here)."""
        path = self._routes.run_path(run_id)
        params = _WITH_EVENTS if include_events else None
        body = await self._transport.get(path, params)
        return _decode(run_decoder, body, path)

    async def get_runs(
        self, run_ids: Iterable[str], *, include_events: bool = False, max_in_flight: int = 32
    ) -> list[Run]:
        """Fetch many runs once, as they are now (finished or not), in the order given.

        Finished runs are read from list pages, a hundred a request, when that costs fewer
        requests than a GET each; the rest are got, up to ``max_in_flight`` at once (see "Finished
        runs in bulk" in the README). Unlike :meth:`watch`, it does not wait for processing runs:
        they come back as they are.

        Args:
            run_ids: the run ids (duplicates are fetched once).
            include_events: add every task's event timeline (a GET per run: list rows carry none).
            max_in_flight: GETs open at once, 1..10,000.

        Returns:
            One run per distinct id, in the order the ids were first given.

        Raises:
            ValueError: an id or an argument is not acceptable (before any request).
            NotFoundError: a run does not exist for this key (the first error met stops the
                other fetches and is raised).
            AuthenticationError: the key is missing or invalid.
            APIStatusError: another non-2xx answer, after retries where retrying is safe.
            APIConnectionError: no answer, after retries.
            ResponseDecodeError: a body is not a run.
        """
        if isinstance(run_ids, (str, bytes)):
            raise ValueError("run_ids must be an iterable of run ids, not a single string")
        ids = list(dict.fromkeys(validate_run_id(run_id) for run_id in run_ids))
        check_bool("include_events", include_events)
        check_int("max_in_flight", max_in_flight, ge=1, le=10_000)
        runs: dict[str, Run] = {}
        to_get: list[str] = []

        async def found(row: Run) -> None:
            runs[row.id] = row

        harvest = Harvest(self._fetch_page, ids, rows=not include_events)
        try:
            await harvest.run(found, lambda run_id, finished: to_get.append(run_id))
        except AuthenticationError:
            raise
        except PredevError as error:  # the GETs below settle whatever the pages did not
            logger.debug("reading finished runs from the list failed; getting them: %s", error)
        to_get.extend(harvest.pending)
        limiter = anyio.CapacityLimiter(max_in_flight)
        errors: list[PredevError] = []

        async def fetch(run_id: str, task_group: anyio.abc.TaskGroup) -> None:
            try:
                async with limiter:
                    run = await self._fetch_run(run_id, include_events)
            except PredevError as error:
                errors.append(error)
                task_group.cancel_scope.cancel()
                return
            runs[run_id] = run

        async with anyio.create_task_group() as task_group:
            for run_id in to_get:
                task_group.start_soon(fetch, run_id, task_group)
        if errors:
            raise errors[0]
        return [runs[run_id] for run_id in ids]

    async def list_runs(
        self, *, limit: int = 20, skip: int = 0, status: str | None = None
    ) -> RunPage:
        """Fetch one page of this key's runs, newest first.

        Args:
            limit: page size, 1..100.
            skip: how many runs to skip, 0 or more.
            status: ``"processing"``, ``"completed"`` or ``None`` for all (the API cannot filter on
                ``"failed"``).

        Returns:
            The page: ``runs`` (list rows: a processing run shows task 0 as a stub and ``None``
            for the others), ``total`` and ``has_more``.

        Raises:
            ValueError: an argument is out of range (no request is made).
            AuthenticationError: the key is missing or invalid.
            APIStatusError: another non-2xx answer.
            APIConnectionError: no answer, after retries.
            ResponseDecodeError: the body is not a page of runs.
        """
        limit = validate_limit(limit)
        skip = validate_skip(skip)
        status = validate_status_filter(status)
        return await self._fetch_page(limit, skip, status)

    async def _fetch_page(self, limit: int, skip: int, status: str | None) -> RunPage:
        params = {"limit": str(limit), "skip": str(skip)}
        if status is not None:
            params["status"] = status
        path = self._routes.list_path
        body = await self._transport.get(path, params)
        return _decode(run_page_decoder, body, path)

    def iter_runs(
        self,
        *,
        status: str | None = None,
        page_size: int = LIST_PAGE_MAX,
        limit: int | None = None,
    ) -> RunIterator:
        """Walk every run of this key, newest first, without losing or repeating one.

        ``async for run in client.iter_runs(): ...`` yields list rows; ``.pages()`` yields them a
        page at a time. Each run that exists for the whole walk and matches ``status`` for the
        whole walk is yielded exactly once, even while runs are created or leave the filter:
        the walk follows its last-seen run instead of trusting offsets (see the README). Runs
        created during the walk are not yielded; a run that changes status during a filtered
        walk is yielded at most once. Inside ``async with Client()``, the next page is fetched
        while you consume the current one.

        Args:
            status: ``"processing"``, ``"completed"`` or ``None`` for all.
            page_size: runs per request, 2..100 (default: the API's maximum).
            limit: stop after this many runs (``None``: all).

        Raises:
            ValueError: an argument is out of range (raised here, before any request).
        """
        return RunIterator(
            self._fetch_page,
            status=status,
            page_size=page_size,
            limit=limit,
            task_group=self._task_group,
        )

    def watch(
        self,
        run_ids: Iterable[str],
        *,
        include_events: bool = False,
        progress: bool = False,
        policy: PollPolicy | None = None,
    ) -> Watcher:
        """Watch many runs at once until each is finished; yields one final update per id.

        ``async with client.watch(ids) as watcher: async for update in watcher: ...``. Each run
        is polled at once, then on exponential backoff (1 s, ×1.5, capped at 15 s, jittered); a
        run that answers 404 is retried during ``policy.not_found_grace``; a 401 stops the whole
        watch; any other error is delivered for that run alone, after ``policy.max_failed_polls``
        failed polls of its own. An outage of the API (every request failing, whichever run it
        is for) is ridden out: no run is charged, one probe goes per ``policy.max_delay``, and
        the runs resume when it answers. ``watcher.add(ids)`` adds runs while watching. With
        ``include_events=True`` polls ask for no events while a run is processing; it is fetched
        once more, with events, when it has finished.

        Runs that have already finished are read from list pages, a hundred a request, when
        that costs fewer requests than a GET each (the ids given here, or a batch given to
        ``add()``; not with ``strategy="per-run"``): only a complete row counts as the run, the
        rest are got (see "Finished runs in bulk" in the README).

        Args:
            run_ids: the run ids (duplicates are watched once).
            include_events: deliver finished runs with their event timelines.
            progress: also yield a non-final update whenever a run's ``completed`` count moves.
            policy: the polling policy (default: the client's ``poll_policy``).

        Raises:
            ValueError: an id or an argument is not acceptable (before any request).
            APIUnavailableError: (when leaving the block) the API stayed unreachable for longer
                than ``policy.max_outage``.
        """
        return Watcher(
            self._fetch_run,
            run_ids,
            fetch_page=self._fetch_page,
            include_events=include_events,
            progress=progress,
            policy=policy or self._poll_policy,
        )

    async def wait(
        self,
        run_id: str,
        *,
        include_events: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 - the run's deadline, as users expect
        policy: PollPolicy | None = None,
    ) -> Run:
        """Wait for one run to finish and return it (``completed`` or ``failed``).

        Args:
            run_id: the run id.
            include_events: fetch the finished run with its event timelines.
            timeout: seconds to wait at most (``None``: no limit).
            policy: the polling policy (default: the client's ``poll_policy``).

        Raises:
            WatchTimeoutError: the run was still processing after ``timeout`` seconds.
            NotFoundError: the run does not exist (after ``not_found_grace``).
            APIUnavailableError: the API stayed unreachable for longer than the policy's
                ``max_outage`` (an outage shorter than that is ridden out).
            PredevError: any other error that outlived the retries.
        """
        validate_run_id(run_id)
        if timeout is not None:
            check_seconds("timeout", timeout)
        policy = replace(policy or self._poll_policy, run_timeout=timeout, max_in_flight=1)
        async with self.watch([run_id], include_events=include_events, policy=policy) as watcher:
            update: RunUpdate = await anext(watcher)
        if update.error is not None:
            raise update.error
        assert update.run is not None
        return update.run

    async def submit(
        self, tasks: Iterable[TaskSpec | Mapping[str, Any]], *, concurrency: int | None = None
    ) -> Run:
        """Submit a run and return at once, while it is processing.

        The tasks are checked before anything is sent. A submission bills, so it is never
        retried blindly: only when it provably did not reach the server (the connection was
        refused or could not be made) or the server refused it with a 429 (``RATE_LIMITED``,
        ``QUEUE_FULL``). A timeout, a dropped connection or a 5xx is raised at once, because the
        run may exist: look for it with ``list_runs(status="processing")`` before submitting again.

        Args:
            tasks: :class:`TaskSpec` objects or dicts with the same keys (``url``, and optionally
                ``instruction``, ``input``, ``output``: a JSON Schema for the extracted data).
            concurrency: how many browsers the run may use at once, 1..20 (``None``: the API's
                default, 5).

        Returns:
            The new run: its ``id``, ``total``, ``completed=0``, ``status="processing"``.

        Raises:
            ValueError: no tasks, a task without a usable ``http(s)`` url, an ``output`` that is
                not a JSON object, or ``concurrency`` outside 1..20 (the message names the task).
            BadRequestError: the server refused the batch (``code="BATCH_TOO_LARGE"``: too many
                tasks for one run).
            PaymentRequiredError: ``SUBSCRIPTION_REQUIRED`` or ``INSUFFICIENT_CREDITS``; see its
                ``action_url``.
            RateLimitError: ``RATE_LIMITED`` or ``QUEUE_FULL`` (1000 live tasks per account),
                after the retries.
            AuthenticationError: the key is missing or invalid.
            APIStatusError: another non-2xx answer (a 5xx is not retried).
            APIConnectionError: no answer; the run may or may not exist.
            ResponseDecodeError: the answer is not a run.
        """
        body = encode_submit(validate_tasks(tasks), validate_concurrency(concurrency))
        path = self._routes.submit_path
        answer = await self._transport.post(path, body, retry_unsent_only=True)
        return _decode(run_decoder, answer, path, method="POST")

    async def run(
        self,
        tasks: Iterable[TaskSpec | Mapping[str, Any]],
        *,
        concurrency: int | None = None,
        include_events: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 - the run's deadline, as users expect
    ) -> Run:
        """Submit a run and wait for it to finish: :meth:`submit`, then :meth:`wait`.

        The wait polls on the client's ``poll_policy`` rather than holding a connection open
        for the whole run, so a long run survives a dropped connection or a restarted proxy.

        Args:
            tasks: the tasks, as for :meth:`submit`.
            concurrency: browsers at once, 1..20 (``None``: the API's default).
            include_events: return the finished run with every task's event timeline.
            timeout: seconds to wait for the run after it was submitted (``None``: no limit).

        Returns:
            The finished run (``completed`` or ``failed``).

        Raises:
            ValueError: an argument is not acceptable (nothing is sent).
            WatchTimeoutError: the run was still processing after ``timeout`` seconds; it goes on
                running: its id is the error's ``run_id``.
            PredevError: what :meth:`submit` and :meth:`wait` raise.
        """
        specs = validate_tasks(tasks)
        concurrency = validate_concurrency(concurrency)
        check_bool("include_events", include_events)
        if timeout is not None:
            check_seconds("timeout", timeout)
        submitted = await self.submit(specs, concurrency=concurrency)
        return await self.wait(submitted.id, include_events=include_events, timeout=timeout)

    def stream(
        self, tasks: Iterable[TaskSpec | Mapping[str, Any]], *, concurrency: int | None = None
    ) -> RunStream:
        """Submit a run and watch it live, over one Server-Sent Events connection.

        ``async with client.stream(tasks) as events: async for event in events: ...`` yields a
        :class:`TaskEvent` per step of each task (a screenshot carries its image inline, as
        ``event.event.data["base64"]``), a :class:`TaskResultEvent` as each task finishes, and
        last a :class:`DoneEvent` with the whole run. The submission is sent when the block is
        entered, under the same retry rule as :meth:`submit`; leaving the block closes the
        connection at once, also after a ``break``. The stream has no total timeout; the
        client's ``timeout`` bounds the wait for the answer and each silence between chunks.

        Args:
            tasks: the tasks, as for :meth:`submit`.
            concurrency: browsers at once, 1..20 (``None``: the API's default).

        Returns:
            The stream, to be entered with ``async with``.

        Raises:
            ValueError: an argument is not acceptable (raised here, before anything is sent).

        While entering or iterating, it raises what :meth:`submit` raises; an ``error`` event
        of the stream is raised as the same typed error (``PaymentRequiredError`` with its
        ``action_url``, ``RateLimitError``, ...), and a stream that ends before ``done`` raises
        :class:`APIConnectionError`.
        """
        body = encode_submit(validate_tasks(tasks), validate_concurrency(concurrency), stream=True)
        path = self._routes.submit_path
        transport = self._transport
        return RunStream(
            lambda: transport.open_stream(path, body),
            path=path,
            max_event_size=self._max_response_bytes,
        )

    async def queue_status(self) -> QueueStatus:
        """This account's place in the task queue: running, pending, total and the cap.

        It is read from ``GET /browser-agent-status``, the only documented path, whatever the
        client's ``routes``.

        Returns:
            The snapshot; ``available`` says how many more tasks the queue takes now.

        Raises:
            AuthenticationError: the key is missing or invalid.
            APIStatusError: another non-2xx answer, after retries where retrying is safe.
            APIConnectionError: no answer, after retries.
            ResponseDecodeError: the body is not a queue snapshot.
        """
        body = await self._transport.get(QUEUE_STATUS_PATH)
        return _decode(queue_status_decoder, body, QUEUE_STATUS_PATH)


def _decode(decoder: msgspec.json.Decoder[_T], body: Body, path: str, *, method: str = "GET") -> _T:
    try:
        return decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ResponseDecodeError(
            f"the response is not the JSON the API documents: {exc}",
            method=method,
            path=path,
            body=body_head(body),
        ) from exc
