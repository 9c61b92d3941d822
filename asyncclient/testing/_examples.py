"""The API documentation's own example run, answered exactly as the documentation prints it.

The pages "Task Status" (``GET /browser-agent/{id}``) and "List Tasks"
(``GET /list-browser-agents``) show one run, ``65f8a9d2c1e4b5a6f7e8d9c0``, in three snapshots
taken at different moments:

- without ``includeEvents`` it is still ``processing``, two of its three tasks done
  (:data:`GET_RUN_EXAMPLE`);
- with ``includeEvents=true`` it is ``completed``, one task with its timeline
  (:data:`GET_RUN_EVENTS_EXAMPLE`);
- in the list it is ``completed``, three tasks, 0.41 credits (:data:`LIST_RUNS_EXAMPLE`).

:meth:`Emulator.add_docs_example` stores that run so that each of the three requests gets the
body its page prints, which lets the documentation's ``curl`` lines and quick start run against
the emulator as written. The snapshots disagree with each other, as the pages do, and never
change: the example run is a fixture to read, not a run to watch (without events it stays
``processing`` for ever).

The payloads are copied from the pages (``/work/shared`` is not on users' machines). The list
example elides its second and third results (``{"...": "..."}``); they are filled in here from
the first snapshot, with the third task finished for the remaining 0.12 credits.
"""

from __future__ import annotations

import calendar
import time
from typing import Any

import msgspec

from ._state import RunState, TaskPlan

__all__ = [
    "EXAMPLE_RUN_ID",
    "GET_RUN_EVENTS_EXAMPLE",
    "GET_RUN_EXAMPLE",
    "LIST_RUNS_EXAMPLE",
    "LIST_RUNS_SCHEMA_EXAMPLE",
    "ExampleRun",
]

EXAMPLE_RUN_ID = "65f8a9d2c1e4b5a6f7e8d9c0"
"""The run id every example of the API documentation uses."""

_CREATED = "2026-04-16T18:22:10.224Z"
_COMPLETED = "2026-04-16T18:23:07.918Z"

_EXAMPLE_COM: dict[str, Any] = {
    "url": "https://example.com",
    "instruction": "Extract the heading.",
    "status": "SUCCESS",
    "data": {"heading": "Example Domain"},
    "creditsUsed": 0.11,
    "durationMs": 4820,
}
_HACKER_NEWS: dict[str, Any] = {
    "url": "https://news.ycombinator.com",
    "instruction": "Extract the top 5 story titles.",
    "status": "SUCCESS",
    "data": {"stories": ["...", "..."]},
    "creditsUsed": 0.18,
    "durationMs": 8132,
}
_REDDIT_PENDING: dict[str, Any] = {
    "url": "https://www.reddit.com/r/programming",
    "instruction": "Extract the top 5 post titles.",
    "status": "PENDING",
}
# Not on the pages: the list example elides this result. Its credits are what the list's 0.41
# total leaves; its duration ends the run at the list example's completedAt.
_REDDIT_DONE: dict[str, Any] = {
    "url": "https://www.reddit.com/r/programming",
    "instruction": "Extract the top 5 post titles.",
    "status": "SUCCESS",
    "data": {"posts": ["...", "..."]},
    "creditsUsed": 0.12,
    "durationMs": 57694,
}

GET_RUN_EXAMPLE: dict[str, Any] = {
    "id": EXAMPLE_RUN_ID,
    "total": 3,
    "completed": 2,
    "results": [_EXAMPLE_COM, _HACKER_NEWS, _REDDIT_PENDING],
    "totalCreditsUsed": 0.29,
    "status": "processing",
    "createdAt": _CREATED,
}
"""Task Status, "Example — polling an async run": the body of ``GET /browser-agent/{id}``."""

GET_RUN_EVENTS_EXAMPLE: dict[str, Any] = {
    "id": EXAMPLE_RUN_ID,
    "total": 1,
    "completed": 1,
    "status": "completed",
    "results": [
        {
            "url": "https://example.com",
            "status": "SUCCESS",
            "data": {"heading": "Example Domain"},
            "creditsUsed": 0.11,
            "durationMs": 4820,
            "events": [
                {"type": "navigation", "data": {"url": "https://example.com"}},
                {"type": "plan", "data": {"reasoning": "The heading is the <h1>..."}},
                {"type": "screenshot", "data": {"url": "https://cdn.pre.dev/screenshots/..."}},
                {"type": "action", "data": {"action": "extract", "selector": "h1"}},
                {"type": "validation", "data": {"passed": True}},
                {"type": "done", "data": {"status": "SUCCESS"}},
            ],
        }
    ],
}
"""Task Status, "Example — full timeline for one task": the body with ``includeEvents=true``."""

LIST_RUNS_EXAMPLE: dict[str, Any] = {
    "batches": [
        {
            "id": EXAMPLE_RUN_ID,
            "total": 3,
            "completed": 3,
            "results": [_EXAMPLE_COM, _HACKER_NEWS, _REDDIT_DONE],
            "totalCreditsUsed": 0.41,
            "status": "completed",
            "createdAt": _CREATED,
            "completedAt": _COMPLETED,
        }
    ],
    "total": 87,
    "hasMore": True,
}
"""List Tasks, "Example": a page of ``GET /list-browser-agents`` (elided results filled in)."""

LIST_RUNS_SCHEMA_EXAMPLE: dict[str, Any] = {
    "batches": [
        {
            "id": "<string>",
            "total": 123,
            "completed": 123,
            "results": [
                {
                    "url": "<string>",
                    "instruction": "<string>",
                    "input": {},
                    "status": "SUCCESS",
                    "data": "<unknown>",
                    "creditsUsed": 123,
                    "durationMs": 123,
                    "error": "<string>",
                    "events": [{"type": "navigation", "data": {}, "ts": "2023-11-07T05:31:56Z"}],
                }
            ],
            "totalCreditsUsed": 123,
            "status": "processing",
            "createdAt": "2023-11-07T05:31:56Z",
            "completedAt": "2023-11-07T05:31:56Z",
            "liveEvents": [[{"type": "navigation", "data": {}, "ts": "2023-11-07T05:31:56Z"}]],
            "error": "<string>",
        }
    ],
    "total": 123,
    "hasMore": True,
}
"""List Tasks (v1 page): the example generated from the schema, every field filled in."""


def _epoch_ms(iso: str) -> int:
    stamp, _, fraction = iso.rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))
    return seconds * 1000 + int(fraction.ljust(3, "0")[:3])


class ExampleRun(RunState):
    """The documentation's example run: each request gets the body its page prints.

    Its tasks are those of the list example, finished long ago, so queue snapshots and status
    filters see a ``completed`` run; the bodies are the pages' snapshots, whatever the clock.
    """

    def __init__(self, api_key: str) -> None:
        """Store the example run for ``api_key``.

        Args:
            api_key: The key that owns it.
        """
        created_ms = _epoch_ms(_CREATED)
        super().__init__(
            run_id=EXAMPLE_RUN_ID,
            api_key=api_key,
            created_ms=created_ms,
            plans=[
                TaskPlan(
                    url=task["url"],
                    instruction=task["instruction"],
                    input={},
                    finish_after=task["durationMs"] / 1000,
                    status="SUCCESS",
                    data=task["data"],
                    credits=task["creditsUsed"],
                )
                for task in (_EXAMPLE_COM, _HACKER_NEWS, _REDDIT_DONE)
            ],
            event_bytes=0,
            fail_with=None,
            seed="docs-example",
        )
        # Finished whatever the clock says (a ManualClock may start before 2026-04-16).
        self.end_offset = float("-inf")
        self._plain_body = msgspec.json.encode(GET_RUN_EXAMPLE)
        self._events_body = msgspec.json.encode(GET_RUN_EVENTS_EXAMPLE)
        self._row_body = msgspec.Raw(msgspec.json.encode(LIST_RUNS_EXAMPLE["batches"][0]))

    def finish_by(self, elapsed: float) -> bool:
        """Leave the fixture as it is: it is finished already.

        Args:
            elapsed: Ignored.

        Returns:
            False: nothing changed.
        """
        return False

    def status_at(self, now: float) -> str:
        """Return ``completed``, the status of the list example, at any time."""
        return "completed"

    def render_get(self, now: float, include_events: bool) -> bytes:
        """Return the Task Status page's body: with events, or the polling snapshot."""
        return self._events_body if include_events else self._plain_body

    def render_row(self, now: float) -> msgspec.Raw:
        """Return the List Tasks page's row for this run."""
        return self._row_body
