"""The API documentation's example payloads, and the example run the emulator answers with them.

The pages "Task Status" (``GET /browser-agent/{id}``) and "List Tasks"
(``GET /list-browser-agents``) show one run, ``65f8a9d2c1e4b5a6f7e8d9c0``, in three snapshots
taken at different moments:

- without ``includeEvents`` it is still ``processing``, two of its three tasks done
  (:data:`GET_RUN_EXAMPLE`);
- with ``includeEvents=true`` it is ``completed``, one task with its timeline
  (:data:`GET_RUN_EVENTS_EXAMPLE`);
- in the list it is ``completed``, three tasks, 0.41 credits (:data:`LIST_RUNS_EXAMPLE`).

:meth:`Emulator.add_docs_example` makes ``GET`` of that id answer the first two bodies, so the
documentation's ``curl`` lines and quick start print what the pages print. The two snapshots
disagree, as the pages do, and never change, so the run is kept out of the list: walking or
watching a key's runs never meets a run that stays ``processing`` for ever.

The payloads are copied from the pages (``/work/shared`` is not on users' machines); the tests
decode every one of them. The list example elides its second and third results
(``{"...": "..."}``); they are filled in here from the first snapshot, with the third task
finished for the remaining 0.12 credits.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "EXAMPLE_RUN_ID",
    "GET_RUN_EVENTS_EXAMPLE",
    "GET_RUN_EXAMPLE",
    "LIST_RUNS_EXAMPLE",
    "LIST_RUNS_SCHEMA_EXAMPLE",
    "example_bodies",
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


def example_bodies() -> tuple[bytes, bytes]:
    """Return the encoded bodies of the example run: ``(without events, with events)``."""
    return msgspec.json.encode(GET_RUN_EXAMPLE), msgspec.json.encode(GET_RUN_EVENTS_EXAMPLE)
