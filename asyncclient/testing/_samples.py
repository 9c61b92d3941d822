"""Deterministic sample content for generated tasks: sites, instructions, inputs, outputs.

Everything here is drawn from a ``random.Random`` the caller seeds, so the same emulator
seed always yields the same runs.
"""

from __future__ import annotations

import random
from typing import Any

__all__ = [
    "FAILURE_STATUSES",
    "RUN_FAILURES",
    "default_error",
    "sample_data",
    "sample_status",
    "sample_task",
]

FAILURE_STATUSES: tuple[str, ...] = (
    "ERROR",
    "TIMEOUT",
    "BLOCKED",
    "CAPTCHA_FAILED",
    "LOOP",
    "NO_TARGET",
)

_ERRORS: dict[str, str] = {
    "ERROR": "Unhandled exception while executing step: element detached from DOM",
    "TIMEOUT": "Task exceeded the 300 s time limit before reaching its goal",
    "BLOCKED": "Site blocked automated access (HTTP 403 from bot protection)",
    "CAPTCHA_FAILED": "CAPTCHA challenge could not be solved after 3 attempts",
    "LOOP": "Agent repeated the same action 5 times without progress",
    "NO_TARGET": "Could not find the element the instruction refers to",
}

RUN_FAILURES: tuple[str, ...] = (
    "Run aborted: browser pool unavailable",
    "Run aborted: sandbox provider outage",
    "Run aborted: cancelled by the account owner",
)

_SITES: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("https://example.com", "Extract the heading.", {}),
    ("https://news.ycombinator.com", "Extract the top 5 story titles.", {}),
    ("https://www.reddit.com/r/programming", "Extract the top 5 post titles.", {}),
    ("https://github.com/trending", "List the trending repositories for today.", {}),
    (
        "https://www.wikipedia.org",
        "Search for the given topic and return the first paragraph.",
        {"topic": "Asynchronous I/O"},
    ),
    (
        "https://www.amazon.com",
        "Find the price of the product.",
        {"product": "USB-C charging cable, 2 m"},
    ),
    (
        "https://www.booking.com",
        "Find the cheapest hotel for the dates.",
        {"city": "Lisbon", "checkIn": "2026-05-02", "checkOut": "2026-05-05"},
    ),
    ("https://pypi.org/project/msgspec/", "Extract the latest version and release date.", {}),
    (
        "https://www.linkedin.com/jobs",
        "Collect the titles of the first 10 job postings.",
        {"keywords": "python backend", "location": "Remote"},
    ),
    ("https://docs.python.org/3/", "Return the titles of the tutorial sections.", {}),
    (
        "https://www.google.com/maps",
        "Find the opening hours of the place.",
        {"place": "Blue Bottle Coffee, Oakland"},
    ),
    ("https://status.aws.amazon.com", "Report any service with an open incident.", {}),
)

_WORDS: tuple[str, ...] = (
    "async",
    "browser",
    "agent",
    "python",
    "release",
    "pricing",
    "latency",
    "cluster",
    "schema",
    "runtime",
    "network",
    "storage",
)


def sample_task(rng: random.Random) -> tuple[str, str, dict[str, str]]:
    """Pick a ``(url, instruction, input)`` triple.

    Args:
        rng: The source of randomness.

    Returns:
        The task's URL, instruction and input variables (a fresh dict).
    """
    url, instruction, inputs = rng.choice(_SITES)
    return url, instruction, dict(inputs)


def sample_status(rng: random.Random) -> str:
    """Pick a final task status: mostly ``SUCCESS``, sometimes one of the failure modes.

    Args:
        rng: The source of randomness.

    Returns:
        The status.
    """
    if rng.random() < 0.82:
        return "SUCCESS"
    return rng.choice(FAILURE_STATUSES)


def sample_data(rng: random.Random) -> Any:
    """Make the extracted data of a successful task (``None`` when it had no output schema).

    Args:
        rng: The source of randomness.

    Returns:
        A JSON-compatible value.
    """
    kind = rng.randrange(5)
    if kind == 0:
        return None
    if kind == 1:
        return {"heading": f"Example {rng.choice(_WORDS).title()} Domain"}
    if kind == 2:
        n = rng.randrange(1, 6)
        return {"items": [f"{rng.choice(_WORDS)} {rng.choice(_WORDS)} #{i + 1}" for i in range(n)]}
    if kind == 3:
        return {
            "price": round(rng.uniform(3, 300), 2),
            "currency": "USD",
            "inStock": rng.random() < 0.8,
        }
    return [{"title": rng.choice(_WORDS), "score": rng.randrange(1000)} for _ in range(3)]


def default_error(status: str) -> str:
    """Return the failure reason reported for a non-``SUCCESS`` status.

    Args:
        status: A task status.

    Returns:
        A human-readable reason.
    """
    return _ERRORS.get(status, f"Task ended with status {status}")
