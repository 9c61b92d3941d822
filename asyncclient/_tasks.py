"""What a run is made of: typed task specs, checked before anything is sent, and the submit body.

A submission bills, so every argument is checked here and refused with a ``ValueError`` that
names the task (``tasks[3]``) and the problem before a single byte leaves. The server checks
again; the point of checking here is that a typo never costs a request, let alone credits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
from yarl import URL

from ._validation import check_int, check_printable

__all__ = ["MAX_CONCURRENCY", "TaskSpec", "encode_submit", "validate_concurrency", "validate_tasks"]

MAX_CONCURRENCY = 20
"""The most browsers one run may use at once (the API's default is 5)."""

_URL_SHOWN = 80


class TaskSpec(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    """One task to run: a page to start from and what to do there.

    Plain dicts with the same keys (``{"url": ..., "instruction": ...}``) are accepted wherever a
    ``TaskSpec`` is; unknown keys are refused, so a typo such as ``"instructions"`` is caught.

    Attributes:
        url: the page the agent starts on (``http://`` or ``https://``).
        instruction: what the agent should do there.
        input: values the instruction refers to (string to string).
        output: a JSON Schema (a JSON object) the extracted ``data`` must follow; without one
            the task's ``data`` is ``None``.
    """

    url: str
    instruction: str | None = None
    input: dict[str, str] | None = None
    output: dict[str, Any] | None = None


class _SubmitBody(msgspec.Struct, omit_defaults=True):
    tasks: list[TaskSpec]
    concurrency: int | None = None
    async_: bool | None = msgspec.field(default=None, name="async")
    stream: bool | None = None


def validate_concurrency(concurrency: object) -> int | None:
    """``None`` (the API's default) or an ``int`` in 1..20."""
    if concurrency is None:
        return None
    return check_int("concurrency", concurrency, ge=1, le=MAX_CONCURRENCY)


def validate_tasks(tasks: Iterable[TaskSpec | Mapping[str, Any]]) -> list[TaskSpec]:
    """Check every task and return them as :class:`TaskSpec`.

    Raises:
        ValueError: no tasks, or a task that is not acceptable (the message names its index).
    """
    if isinstance(tasks, (str, bytes, bytearray, Mapping, TaskSpec)):
        raise ValueError(
            f"tasks must be a list of tasks (TaskSpec or dict), not a single {type(tasks).__name__}"
        )
    try:
        items = list(tasks)
    except TypeError:
        raise ValueError(
            f"tasks must be a list of tasks (TaskSpec or dict), got {type(tasks).__name__}"
        ) from None
    if not items:
        raise ValueError("tasks is empty: a run needs at least one task")
    return [_validate_task(index, item) for index, item in enumerate(items)]


def _validate_task(index: int, item: object) -> TaskSpec:
    where = f"tasks[{index}]"
    if isinstance(item, Mapping):
        if "url" not in item:
            raise ValueError(f"{where}: a task needs a url")
        _check_output(where, item.get("output"))
        try:
            spec = msgspec.convert(dict(item), TaskSpec)
        except msgspec.ValidationError as exc:
            raise ValueError(f"{where}: {exc}") from None
    elif isinstance(item, TaskSpec):
        spec = item
    else:
        raise ValueError(f"{where}: a task is a TaskSpec or a dict, got {type(item).__name__}")
    # A Struct built in Python is not type-checked at runtime: check every field here.
    _check_url(where, spec.url)
    if spec.instruction is not None and not isinstance(spec.instruction, str):
        raise ValueError(
            f"{where}: instruction must be a str, got {type(spec.instruction).__name__}"
        )
    if spec.input is not None:
        if not isinstance(spec.input, dict):
            raise ValueError(f"{where}: input must be a dict of str to str")
        for key, value in spec.input.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ValueError(
                    f"{where}: input must map str to str, got {key!r}: {type(value).__name__}"
                )
    _check_output(where, spec.output)
    return spec


def _check_output(where: str, output: object) -> None:
    if output is None:
        return
    if not isinstance(output, dict):
        raise ValueError(
            f"{where}: output must be a JSON Schema object (a dict), got {type(output).__name__}"
        )
    try:
        msgspec.json.encode(output)
    except (TypeError, ValueError, msgspec.EncodeError) as exc:
        raise ValueError(f"{where}: output is not JSON: {exc}") from None


def _check_url(where: str, url: object) -> None:
    if not isinstance(url, str):
        raise ValueError(f"{where}: url must be a str, got {type(url).__name__}")
    if not url:
        raise ValueError(f"{where}: a task needs a url (got an empty string)")
    shown = url if len(url) <= _URL_SHOWN else url[:_URL_SHOWN] + "..."
    check_printable(f"{where}: url", url, shown=repr(shown))
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        raise ValueError(f"{where}: url is not a valid URL: {shown!r}") from None
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"{where}: url must start with http:// or https://, got {shown!r}")
    if not parsed.host:
        raise ValueError(f"{where}: url has no host: {shown!r}")


def encode_submit(tasks: list[TaskSpec], concurrency: int | None, *, stream: bool = False) -> bytes:
    """The JSON body of a submission: ``async`` mode, or ``stream`` mode when asked."""
    body = _SubmitBody(
        tasks=tasks,
        concurrency=concurrency,
        async_=None if stream else True,
        stream=True if stream else None,
    )
    return msgspec.json.encode(body)
