"""One emulated run: its planned tasks and its JSON bodies at any moment.

A run is fixed at creation: each task has a finish offset (seconds after the run's creation)
and a final status. Its state at time ``t`` follows from the clock alone: the tasks whose
offsets have passed are finished (``bisect`` over the sorted offsets), the others are
pending. Bodies are assembled from per-task fragments encoded once (``msgspec.Raw``); the
bodies of a terminal run never change and are cached whole.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

import msgspec

from ._samples import default_error
from ._timeline import build_timeline, iso_ms

__all__ = ["RunState", "TaskPlan"]

_encode = msgspec.json.encode
_EMPTY = msgspec.Raw(b"[]")
_MIN_SUCCESS_CREDITS = 0.1


@dataclass(frozen=True)
class TaskPlan:
    """The plan of one task in an emulated run.

    Attributes:
        url: The page the agent starts on.
        instruction: What the agent is asked to do.
        input: Variables for the instruction (string to string).
        finish_after: Seconds after the run's creation when the task finishes.
        status: The task's final status: ``SUCCESS`` or a failure mode such as ``ERROR``,
            ``TIMEOUT``, ``BLOCKED``, ``CAPTCHA_FAILED``, ``LOOP``, ``NO_TARGET``. Unknown
            upper-case statuses are allowed, to exercise a client's forward compatibility;
            ``PENDING`` is not a final status.
        data: The extracted data of a successful task (any JSON value); must stay ``None``
            for failures.
        credits: Credits billed; ``0`` means "compute it" for ``SUCCESS`` (at least 0.1) and
            must be ``0`` for failures.
        error: The failure reason; ``None`` picks a default for failures and must stay
            ``None`` for ``SUCCESS``.
    """

    url: str
    instruction: str
    input: dict[str, str]
    finish_after: float
    status: str = "SUCCESS"
    data: Any = None
    credits: float = 0.0
    error: str | None = None

    def __post_init__(self) -> None:
        """Reject plans the real service could never produce."""
        if not self.finish_after >= 0:
            raise ValueError(f"finish_after must be >= 0, got {self.finish_after!r}")
        if not self.status or self.status == "PENDING":
            raise ValueError(f"{self.status!r} is not a final task status")
        if self.status == "SUCCESS":
            if self.error is not None:
                raise ValueError("a SUCCESS task has no error")
            if self.credits and self.credits < _MIN_SUCCESS_CREDITS:
                raise ValueError(f"a SUCCESS task costs at least 0.1 credits, got {self.credits}")
        else:
            if self.credits:
                raise ValueError(f"a {self.status} task is not billed (credits must be 0)")
            if self.data is not None:
                raise ValueError(f"a {self.status} task has no data")


def _success_credits(finish_after: float) -> float:
    # Longer tasks take more steps and cost more; the floor is 0.1 credits.
    return round(_MIN_SUCCESS_CREDITS + min(finish_after, 600.0) * 0.004, 2)


class _Task:
    """One task of a run with its encoded fragments (built on first use)."""

    __slots__ = (
        "credits",
        "data",
        "error",
        "events",
        "finish",
        "index",
        "input",
        "instruction",
        "plain",
        "status",
        "stub",
        "url",
        "with_events",
    )

    def __init__(self, index: int, plan: TaskPlan, abort: str | None, finish: float) -> None:
        self.index = index
        self.url = plan.url
        self.instruction = plan.instruction
        self.input = plan.input
        self.finish = finish
        self.status: str = plan.status if abort is None else "ERROR"
        self.data: Any = plan.data if abort is None else None
        self.error: str | None = None
        self.credits: float = 0
        if abort is not None:
            self.error = abort
        elif plan.status == "SUCCESS":
            self.credits = round(plan.credits, 2) or _success_credits(plan.finish_after)
        else:
            self.error = plan.error or default_error(plan.status)
        self.stub = msgspec.Raw(
            _encode(
                {
                    "url": self.url,
                    "instruction": self.instruction,
                    "input": self.input,
                    "status": "PENDING",
                }
            )
        )
        self.plain: msgspec.Raw | None = None
        self.events: list[bytes] | None = None
        self.with_events: msgspec.Raw | None = None

    def result(self, events: msgspec.Raw | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "url": self.url,
            "instruction": self.instruction,
            "input": self.input,
            "status": self.status,
            "data": self.data,
            "creditsUsed": self.credits,
            "durationMs": round(self.finish * 1000),
        }
        if self.error is not None:
            body["error"] = self.error
        if events is not None:
            body["events"] = events
        return body


class RunState:
    """An emulated run: planned tasks, state at any time, cached encoded bodies."""

    def __init__(
        self,
        *,
        run_id: str,
        api_key: str,
        created_ms: int,
        plans: list[TaskPlan],
        event_bytes: int,
        fail_with: str | None,
        seed: str,
        starts: list[float] | None = None,
    ) -> None:
        """Plan the run.

        Args:
            run_id: The run's id.
            api_key: The key that owns the run.
            created_ms: Creation time in milliseconds since the epoch.
            plans: The tasks (at least one).
            event_bytes: Approximate size of the whole run's event timelines.
            fail_with: If set, the run ends ``failed`` with this error. It fails when its
                middle task (by finish time) would have finished: the tasks done before then
                keep their planned results, the others end ``ERROR`` with this message.
            seed: Seeds the event timelines.
            starts: Each task's start offset in seconds after creation, for a run submitted
                over HTTP (its tasks wait for a free browser); ``None``: every task starts at
                creation.
        """
        if not plans:
            raise ValueError("a run has at least one task")
        self.id = run_id
        self.api_key = api_key
        self.created_ms = created_ms
        self.created_at = created_ms / 1000.0
        self.created_iso = iso_ms(created_ms)
        self.error = fail_with
        self.final_status = "completed" if fail_with is None else "failed"
        self.total = len(plans)
        self.starts = starts
        self._budget = max(1, event_bytes // len(plans))
        self._seed = seed
        order = sorted(range(len(plans)), key=lambda i: (plans[i].finish_after, i))
        aborted: set[int] = set()
        abort_at = 0.0
        if fail_with is not None:
            cut = len(order) // 2
            abort_at = plans[order[cut]].finish_after
            aborted = set(order[cut:])
        self.tasks = [
            _Task(
                i,
                plan,
                fail_with if i in aborted else None,
                abort_at if i in aborted else plan.finish_after,
            )
            for i, plan in enumerate(plans)
        ]
        self._schedule()

    def _schedule(self) -> None:
        """Derive order, offsets and credit sums from the tasks' finish offsets."""
        self._order = sorted(range(self.total), key=lambda i: (self.tasks[i].finish, i))
        self._offsets = [self.tasks[i].finish for i in self._order]
        self._rank = [0] * self.total
        for rank, i in enumerate(self._order):
            self._rank[i] = rank
        credits = [0.0]
        for i in self._order:
            credits.append(credits[-1] + self.tasks[i].credits)
        self._credits = [round(c, 2) for c in credits]
        self.end_offset = self._offsets[-1]
        self.completed_iso = iso_ms(self.created_ms + round(self.end_offset * 1000))
        self._final_plain: bytes | None = None
        self._final_events: bytes | None = None
        self._final_row: msgspec.Raw | None = None
        self._final_stub_row: msgspec.Raw | None = None
        self._snap_k = -1
        self._snap_plain: bytes | None = None
        self._snap_row: msgspec.Raw | None = None

    def finish_by(self, elapsed: float) -> bool:
        """Make every task finish no later than ``elapsed`` seconds after creation.

        Args:
            elapsed: The new latest finish offset.

        Returns:
            Whether anything changed.
        """
        elapsed = max(elapsed, 0.0)
        changed = False
        for task in self.tasks:
            if task.finish > elapsed:
                task.finish = elapsed
                task.plain = task.with_events = None
                task.events = None
                changed = True
        if changed:
            self._schedule()
        return changed

    def live_tasks(self, elapsed: float) -> tuple[int, int]:
        """Count the unfinished tasks ``elapsed`` seconds after creation: ``(running, pending)``.

        A task is pending until its start offset (:attr:`starts`), running until it finishes.
        """
        running = pending = 0
        if elapsed >= self.end_offset:
            return running, pending
        for task in self.tasks:
            if task.finish > elapsed:
                if self.starts is not None and self.starts[task.index] > elapsed:
                    pending += 1
                else:
                    running += 1
        return running, pending

    def status_at(self, now: float) -> str:
        """Return ``processing``, ``completed`` or ``failed`` at time ``now``."""
        if now - self.created_at < self.end_offset:
            return "processing"
        return self.final_status

    # -- fragments --------------------------------------------------------------------------

    def _plain(self, task: _Task) -> msgspec.Raw:
        if task.plain is None:
            task.plain = msgspec.Raw(_encode(task.result(None)))
        return task.plain

    def timeline(self, task: _Task) -> list[bytes]:
        """The encoded events of one task's timeline (built on first use, then kept)."""
        if task.events is None:
            task.events = build_timeline(
                run_id=self.id,
                index=task.index,
                url=task.url,
                status=task.status,
                error=task.error,
                created_ms=self.created_ms,
                finish=task.finish,
                budget=self._budget,
                seed=f"{self._seed}:{task.index}",
            )
        return task.events

    def _with_events(self, task: _Task) -> msgspec.Raw:
        if task.with_events is None:
            events = msgspec.Raw(b"[" + b",".join(self.timeline(task)) + b"]")
            task.with_events = msgspec.Raw(_encode(task.result(events)))
        return task.with_events

    def _live(self, task: _Task, elapsed: float) -> msgspec.Raw:
        events = self.timeline(task)
        n = len(events)
        # Event j happens at finish * (j + 1) / n; the last one ("done") only at the finish.
        seen = min(n - 1, int(n * elapsed / task.finish)) if elapsed > 0 else 0
        return msgspec.Raw(b"[" + b",".join(events[:seen]) + b"]")

    # -- bodies -----------------------------------------------------------------------------

    def _summary(self, k: int, results: list[Any]) -> dict[str, Any]:
        return {
            "id": self.id,
            "total": self.total,
            "completed": k,
            "results": results,
            "totalCreditsUsed": self._credits[k],
        }

    def _terminal(self, results: list[Any]) -> bytes:
        body = self._summary(self.total, results)
        body["status"] = self.final_status
        body["createdAt"] = self.created_iso
        body["completedAt"] = self.completed_iso
        if self.error is not None:
            body["error"] = self.error
        return _encode(body)

    def _terminal_plain(self) -> bytes:
        if self._final_plain is None:
            self._final_plain = self._terminal([self._plain(t) for t in self.tasks])
        return self._final_plain

    def render_get(self, now: float, include_events: bool) -> bytes:
        """Encode the body of ``GET /browser-agent/{id}`` at time ``now``.

        Args:
            now: The current time.
            include_events: Whether the caller asked for ``includeEvents=true``.

        Returns:
            The JSON body.
        """
        elapsed = now - self.created_at
        if elapsed >= self.end_offset:
            if include_events:
                if self._final_events is None:
                    self._final_events = self._terminal([self._with_events(t) for t in self.tasks])
                    # The cached body holds everything now; drop the per-task copies.
                    for task in self.tasks:
                        task.events = None
                        task.with_events = None
                return self._final_events
            return self._terminal_plain()
        k = bisect_right(self._offsets, elapsed)
        rank = self._rank
        if not include_events:
            if k != self._snap_k:
                self._snap_k, self._snap_plain, self._snap_row = k, None, None
            if self._snap_plain is None:
                results = [self._plain(t) if rank[t.index] < k else t.stub for t in self.tasks]
                body = self._summary(k, results)
                body["status"] = "processing"
                body["createdAt"] = self.created_iso
                self._snap_plain = _encode(body)
            return self._snap_plain
        results = []
        live = []
        for task in self.tasks:
            if rank[task.index] < k:
                results.append(self._with_events(task))
                live.append(_EMPTY)
            else:
                results.append(task.stub)
                live.append(self._live(task, elapsed))
        body = self._summary(k, results)
        body["status"] = "processing"
        body["createdAt"] = self.created_iso
        body["liveEvents"] = live
        return _encode(body)

    def _stub_results(self) -> list[Any]:
        first = self.tasks[0]
        return [{"url": first.url, "instruction": first.instruction}, *([None] * (self.total - 1))]

    def render_row(self, now: float, *, stub: bool = False) -> msgspec.Raw:
        """Encode the run's row in a list page at time ``now``.

        Args:
            now: The current time.
            stub: Show a finished run as a processing one shows: task 0 as a
                ``{url, instruction}`` stub and ``null`` for the others (the other reading of
                the list page). A processing run is shown so either way.

        Returns:
            The encoded row, ready to embed in the page.
        """
        elapsed = now - self.created_at
        if elapsed >= self.end_offset:
            if stub:
                if self._final_stub_row is None:
                    self._final_stub_row = msgspec.Raw(self._terminal(self._stub_results()))
                return self._final_stub_row
            if self._final_row is None:
                # A finished run's list row is its full summary, without events.
                self._final_row = msgspec.Raw(self._terminal_plain())
            return self._final_row
        k = bisect_right(self._offsets, elapsed)
        if k != self._snap_k:
            self._snap_k, self._snap_plain, self._snap_row = k, None, None
        if self._snap_row is None:
            body = self._summary(k, self._stub_results())
            body["status"] = "processing"
            body["createdAt"] = self.created_iso
            self._snap_row = msgspec.Raw(_encode(body))
        return self._snap_row
