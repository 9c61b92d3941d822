"""msgspec Structs for every payload the API returns, and their Decoders (built once).

Wire names are camelCase, Python names snake_case. Every field but the run id has a default, unknown
fields are ignored, and statuses and event types are kept as plain strings so a value the API adds
tomorrow decodes instead of failing. The :class:`RunStatus`, :class:`TaskStatus` and
:class:`EventType` enums name the values known today; they compare equal to the strings.

Structs are created with ``gc=False``: decoded payloads hold no reference cycles, and keeping
hundreds of thousands of event objects out of the cyclic garbage collector is what makes large
``includeEvents`` payloads decode fast. Do not build cycles through them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import msgspec

__all__ = [
    "CREDIT_USD",
    "DoneEvent",
    "EventType",
    "QueueStatus",
    "Run",
    "RunPage",
    "RunStatus",
    "RunnerEvent",
    "TaskEvent",
    "TaskResult",
    "TaskResultEvent",
    "TaskStatus",
]

CREDIT_USD = 0.10
"""What one credit costs in US dollars, per the API documentation."""


class RunStatus(str, enum.Enum):
    """Run states known today. ``Run.status`` is a plain ``str`` and may hold others."""

    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


class TaskStatus(str, enum.Enum):
    """Task states known today. ``TaskResult.status`` is a plain ``str`` and may hold others."""

    SUCCESS = "SUCCESS"
    PENDING = "PENDING"
    ERROR = "ERROR"
    TIMEOUT = "TIMEOUT"
    BLOCKED = "BLOCKED"
    CAPTCHA_FAILED = "CAPTCHA_FAILED"
    LOOP = "LOOP"
    NO_TARGET = "NO_TARGET"


class EventType(str, enum.Enum):
    """Timeline event types known today. ``RunnerEvent.type`` may hold others."""

    NAVIGATION = "navigation"
    PLAN = "plan"
    ACTION = "action"
    SCREENSHOT = "screenshot"
    VALIDATION = "validation"
    DONE = "done"
    ERROR = "error"


# .value, not the members: a str-mixin member does not hash as its string on every Python.
_TERMINAL_RUN_STATUSES = frozenset({RunStatus.COMPLETED.value, RunStatus.FAILED.value})
_UNFAILED_TASK_STATUSES = frozenset({TaskStatus.SUCCESS.value, TaskStatus.PENDING.value})
_EMPTY_RAW = msgspec.Raw(b"null")


class RunnerEvent(msgspec.Struct, gc=False, omit_defaults=True):
    """One step of a task's timeline: ``{type, data, ts?}``.

    The event's ``data`` is kept as undecoded JSON (:attr:`raw_data`) until you ask for it through
    :attr:`data`: timelines run to tens of megabytes and most callers store them as they came.

    Attributes:
        type: ``navigation``, ``plan``, ``action``, ``screenshot``, ``validation``, ``done``,
            ``error``, or a type added later.
        raw_data: the event's ``data`` object as raw JSON bytes (re-encodes verbatim).
        ts: when the step happened, if the API said.
    """

    type: str = ""
    raw_data: msgspec.Raw = msgspec.field(default=_EMPTY_RAW, name="data")
    ts: datetime | None = None

    @property
    def data(self) -> Any:
        """The event's ``data`` decoded to Python objects (decoded on each access)."""
        return msgspec.json.decode(self.raw_data)


class TaskResult(msgspec.Struct, rename="camel", gc=False):
    """One task of a run: a finished result, or a ``PENDING`` stub while it runs.

    Attributes:
        url: the page the task started from.
        instruction: what the agent was asked to do.
        input: the task's input values.
        status: ``SUCCESS``, ``PENDING``, ``ERROR``, ``TIMEOUT``, ``BLOCKED``,
            ``CAPTCHA_FAILED``, ``LOOP``, ``NO_TARGET``, or a status added later.
        data: the extracted data (any JSON); ``None`` without an output schema or on failure.
        credits_used: credits billed for this task (0 for every failure).
        duration_ms: wall-clock runtime in milliseconds.
        error: the failure reason when the status is not ``SUCCESS``.
        events: the task's timeline, only when fetched with ``include_events=True``.
    """

    url: str = ""
    instruction: str = ""
    input: dict[str, str] = msgspec.field(default_factory=dict)
    status: str = TaskStatus.PENDING.value
    data: Any = None
    credits_used: float = 0.0
    duration_ms: int | None = None
    error: str | None = None
    events: list[RunnerEvent] | None = None

    @property
    def is_pending(self) -> bool:
        """True while the task has no result yet (a ``PENDING`` stub)."""
        return self.status == TaskStatus.PENDING

    @property
    def succeeded(self) -> bool:
        """True when the task finished with ``SUCCESS``."""
        return self.status == TaskStatus.SUCCESS

    @property
    def failed(self) -> bool:
        """True when the task finished with any status other than ``SUCCESS``."""
        return self.status not in _UNFAILED_TASK_STATUSES


class Run(msgspec.Struct, rename="camel", gc=False):
    """A run (the API's ``BatchResult``): one submission of one or more tasks.

    From :meth:`Client.get_run`, ``results`` holds one :class:`TaskResult` per task (``PENDING``
    stubs while processing). From :meth:`Client.list_runs`, a processing run's ``results`` holds a
    stub for task 0 and ``None`` for the others; get the run by id to see every task.

    Attributes:
        id: the run id, 24 hexadecimal characters.
        total: how many tasks the run has.
        completed: how many tasks have a real result.
        results: per-task results, aligned with the submitted tasks.
        total_credits_used: credits billed so far across the run.
        status: ``processing``, ``completed``, ``failed``, or a status added later.
        created_at: when the run was submitted.
        completed_at: when it stopped processing (``None`` while processing).
        live_events: with ``include_events=True`` while processing, the in-flight timeline of each
            task (``[]`` for finished ones); ``None`` otherwise.
        error: why the run failed, when ``status == "failed"``.
    """

    id: str
    total: int = 0
    completed: int = 0
    results: list[TaskResult | None] = msgspec.field(default_factory=list)
    total_credits_used: float = 0.0
    status: str = RunStatus.PROCESSING.value
    created_at: datetime | None = None
    completed_at: datetime | None = None
    live_events: list[list[RunnerEvent]] | None = None
    error: str | None = None

    @property
    def is_terminal(self) -> bool:
        """True once the run is ``completed`` or ``failed``: it will not change again."""
        return self.status in _TERMINAL_RUN_STATUSES

    @property
    def is_processing(self) -> bool:
        """True while the run is not terminal."""
        return self.status not in _TERMINAL_RUN_STATUSES

    @property
    def tasks(self) -> list[TaskResult]:
        """The task results that are present (skips the ``None`` entries of list rows)."""
        return [task for task in self.results if task is not None]

    @property
    def succeeded_tasks(self) -> list[TaskResult]:
        """Tasks that finished with ``SUCCESS``."""
        return [task for task in self.results if task is not None and task.succeeded]

    @property
    def failed_tasks(self) -> list[TaskResult]:
        """Tasks that finished with a status other than ``SUCCESS`` (errors, timeouts, ...)."""
        return [task for task in self.results if task is not None and task.failed]

    @property
    def pending_tasks(self) -> list[TaskResult]:
        """Tasks that have no result yet."""
        return [task for task in self.results if task is not None and task.is_pending]

    @property
    def cost_usd(self) -> float:
        """What the run has cost so far in US dollars (credits × 0.10)."""
        return round(self.total_credits_used * CREDIT_USD, 6)

    def events(self) -> Iterator[tuple[int, RunnerEvent]]:
        """Every event of the run as ``(task_index, event)``: finished timelines, then live ones."""
        for index, task in enumerate(self.results):
            if task is not None and task.events:
                for event in task.events:
                    yield index, event
        if self.live_events:
            for index, stream in enumerate(self.live_events):
                for event in stream:
                    yield index, event


class RunPage(msgspec.Struct, rename="camel", gc=False):
    """One page of :meth:`Client.list_runs`.

    Attributes:
        runs: the run summaries on this page, newest first (``batches`` on the wire).
        total: how many runs match the filter, ignoring ``limit`` and ``skip``.
        has_more: True when runs remain after this page.
    """

    runs: list[Run] = msgspec.field(default_factory=list, name="batches")
    total: int = 0
    has_more: bool = False

    def __iter__(self) -> Iterator[Run]:
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)


class QueueStatus(msgspec.Struct, rename="camel", gc=False):
    """This key's place in the task queue (``GET /browser-agent-status``).

    Attributes:
        user_id: the account the key belongs to.
        running: tasks running in a browser now.
        claimed: tasks a worker has picked up but not started yet.
        pending: tasks waiting for a browser.
        total: every live (unfinished) task of the account.
        cap: the most live tasks the account may have (1000 today); a submission that would go
            over it is refused with ``QUEUE_FULL``.
    """

    user_id: str = ""
    running: int = 0
    claimed: int = 0
    pending: int = 0
    total: int = 0
    cap: int = 0

    @property
    def available(self) -> int:
        """How many more tasks the queue takes now (``cap - total``, never negative)."""
        return max(0, self.cap - self.total)


class TaskEvent(msgspec.Struct, frozen=True, gc=False):
    """A streamed step of one task's timeline (SSE ``task_event``).

    Attributes:
        task_index: the task's position in the submitted list.
        event: the step; a ``screenshot`` carries the image inline as ``data["base64"]``.
    """

    task_index: int
    event: RunnerEvent


class TaskResultEvent(msgspec.Struct, frozen=True, gc=False):
    """A streamed finished task (SSE ``task_result``).

    Attributes:
        task_index: the task's position in the submitted list.
        result: the task's result.
    """

    task_index: int
    result: TaskResult


class DoneEvent(msgspec.Struct, frozen=True, gc=False):
    """The end of a streamed run (SSE ``done``): the whole run summary, as ``get_run`` gives it.

    Attributes:
        run: the finished run.
    """

    run: Run


class ErrorBody(msgspec.Struct, rename="camel", gc=False):
    """The JSON of an error: a non-2xx answer's body, or an ``error`` event of a stream.

    Internal (not re-exported): the transport and the stream decode it and hand its fields to
    :func:`~asyncclient._exceptions.make_status_error`.
    """

    error: str | None = None
    message: str | None = None
    code: str | None = None
    action_url: str | None = None


run_decoder: msgspec.json.Decoder[Run] = msgspec.json.Decoder(Run)
run_page_decoder: msgspec.json.Decoder[RunPage] = msgspec.json.Decoder(RunPage)
queue_status_decoder: msgspec.json.Decoder[QueueStatus] = msgspec.json.Decoder(QueueStatus)
error_body_decoder: msgspec.json.Decoder[ErrorBody] = msgspec.json.Decoder(ErrorBody)
