"""Reading, admitting and planning a submission: what a POST body asks for (no HTTP, no emulator).

A body is ``{"tasks": [...], "concurrency"?, "async"?, "stream"?}``; :func:`read_submission`
checks it in the service's order, :func:`account_refusal` and :func:`rate_limited` say no on
the account's behalf, and :func:`plan_tasks` plans its tasks ``concurrency`` at a time (5 by
default): each takes the first free browser, in order. :class:`Refusal` is how the emulator
says no to a submission; the HTTP layer maps it to a response.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec

from ._accounts import CREDITS_URL, SUBSCRIBE_URL, Account
from ._samples import sample_status
from ._state import TaskPlan

__all__ = [
    "MIN_TASK_CREDITS",
    "Mode",
    "Refusal",
    "Submission",
    "account_refusal",
    "plan_tasks",
    "rate_limited",
    "read_submission",
]

Mode = Literal["async", "stream", "block"]
"""How a submission is answered: at once, as Server-Sent Events, or once the run is over."""

MIN_TASK_CREDITS = 0.1
"""Credits a key needs per submitted task."""
_MAX_CONCURRENCY = 20
_DEFAULT_CONCURRENCY = 5
_WORDS = ("alpha", "browser", "cluster", "delta", "example", "python", "release", "schema")


@dataclass(frozen=True)
class Refusal:
    """A submission the emulator turned down: the answer's status and error body."""

    status: int
    message: str
    code: str | None = None
    action_url: str | None = None
    retry_after: int | None = None


@dataclass(frozen=True)
class Submission:
    """A submission that passed its checks."""

    tasks: list[dict[str, Any]]
    concurrency: int
    mode: Mode


def _check_task(index: int, task: object) -> str | None:
    where = f"tasks[{index}]"
    if not isinstance(task, dict):
        return f"{where} must be an object"
    url = task.get("url")
    if not isinstance(url, str) or not url:
        return f"{where}.url is required"
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"{where}.url is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{where}.url must be an http(s) URL"
    instruction = task.get("instruction")
    if instruction is not None and not isinstance(instruction, str):
        return f"{where}.instruction must be a string"
    inputs = task.get("input")
    if inputs is not None and (
        not isinstance(inputs, dict) or not all(isinstance(v, str) for v in inputs.values())
    ):
        return f"{where}.input must be an object of strings"
    output = task.get("output")
    if output is not None and not isinstance(output, dict):
        return f"{where}.output must be a JSON Schema object"
    return None


def read_submission(raw: bytes) -> Submission | str:
    """The submission in ``raw``, or what is wrong with it."""
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return "The body must be JSON"
    if not isinstance(body, dict):
        return "The body must be a JSON object"
    tasks = body.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        return "tasks must be a non-empty array"
    for index, task in enumerate(tasks):
        problem = _check_task(index, task)
        if problem is not None:
            return problem
    concurrency = body.get("concurrency", _DEFAULT_CONCURRENCY)
    if (
        isinstance(concurrency, bool)
        or not isinstance(concurrency, int)
        or not 1 <= concurrency <= _MAX_CONCURRENCY
    ):
        return f"concurrency must be an integer from 1 to {_MAX_CONCURRENCY}"
    flags = {}
    for name in ("async", "stream"):
        value = body.get(name, False)
        if not isinstance(value, bool):
            return f"{name} must be a boolean"
        flags[name] = value
    if flags["async"] and flags["stream"]:
        return "async and stream cannot both be set"
    mode: Mode = "async" if flags["async"] else "stream" if flags["stream"] else "block"
    return Submission(tasks, concurrency, mode)


def rate_limited(retry_after: int) -> Refusal:
    """The refusal of a submission over its key's rate limit (:meth:`Account.admit`).

    Args:
        retry_after: Whole seconds until a submission would be admitted.

    Returns:
        A 429 ``RATE_LIMITED`` with that ``Retry-After``.
    """
    return Refusal(
        429, "Too many requests: back off and retry", code="RATE_LIMITED", retry_after=retry_after
    )


def account_refusal(account: Account, count: int) -> Refusal | None:
    """Whether the account can pay for ``count`` tasks: its subscription, then its credits.

    Args:
        account: The key's account.
        count: The tasks submitted.

    Returns:
        ``None`` if it can; else a 402 ``SUBSCRIPTION_REQUIRED`` or ``INSUFFICIENT_CREDITS``.
    """
    if not account.subscribed:
        return Refusal(
            402,
            "Trial limit reached: subscribe to run more tasks",
            code="SUBSCRIPTION_REQUIRED",
            action_url=SUBSCRIBE_URL,
        )
    needed = round(count * MIN_TASK_CREDITS, 2)
    if account.credits is not None and account.credits < needed:
        return Refusal(
            402,
            f"Insufficient credits: {count} tasks need at least {needed}, "
            f"the balance is {account.credits}",
            code="INSUFFICIENT_CREDITS",
            action_url=CREDITS_URL,
        )
    return None


# -- planning a submitted run -------------------------------------------------------------


def _sample_from_schema(schema: Any, rng: random.Random, depth: int = 0) -> Any:
    """A value shaped like a (simple) JSON Schema: what an agent would have extracted."""
    if not isinstance(schema, dict) or depth > 8:
        return None
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return rng.choice(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    properties = schema.get("properties")
    if kind == "object" or isinstance(properties, dict):
        if not isinstance(properties, dict):
            return {}
        return {name: _sample_from_schema(sub, rng, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        return [_sample_from_schema(schema.get("items"), rng, depth + 1) for _ in range(3)]
    if kind == "string":
        return f"{rng.choice(_WORDS)} {rng.choice(_WORDS)}"
    if kind == "integer":
        return rng.randrange(1000)
    if kind == "number":
        return round(rng.uniform(0, 1000), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    return None


def plan_tasks(
    tasks: list[dict[str, Any]],
    concurrency: int,
    *,
    rng: random.Random,
    plan_task: Callable[[int, Mapping[str, Any]], float | TaskPlan] | None,
) -> tuple[list[TaskPlan], list[float]]:
    """Plan each task and lay the tasks out on ``concurrency`` browsers.

    Args:
        tasks: The submitted tasks (already checked).
        concurrency: How many browsers the run gets.
        rng: Draws the durations, statuses and data of tasks ``plan_task`` leaves alone.
        plan_task: :attr:`Emulator.plan_task`, or ``None``.

    Returns:
        The plans (finish offsets from the run's creation) and each task's start offset.
    """
    browsers = [0.0] * concurrency
    plans: list[TaskPlan] = []
    starts: list[float] = []
    for index, task in enumerate(tasks):
        url: str = task["url"]
        instruction: str = task.get("instruction") or ""
        inputs: dict[str, str] = task.get("input") or {}
        output = task.get("output")
        planned = plan_task(index, task) if plan_task is not None else None
        if isinstance(planned, TaskPlan):
            plan = planned
        else:
            duration = float(planned) if planned is not None else round(rng.uniform(2.0, 20.0), 3)
            status = "SUCCESS" if planned is not None else sample_status(rng)
            data = _sample_from_schema(output, rng) if status == "SUCCESS" and output else None
            plan = TaskPlan(url, instruction, inputs, duration, status, data)
        start = heapq.heappop(browsers)
        finish = start + plan.finish_after
        heapq.heappush(browsers, finish)
        plans.append(replace(plan, finish_after=finish))
        starts.append(start)
    return plans, starts
