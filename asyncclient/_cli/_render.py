"""What the commands print: run descriptions, tables on stdout, the progress bar on stderr.

Progress goes to stderr, only when stderr is a terminal, and only with ``rich`` installed
(``pip install asyncclient[cli]``); without it every command still works, in plain text.
"""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any

import msgspec

from .._models import CREDIT_USD, Run, RunnerEvent, TaskResult

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

__all__ = [
    "ProgressBar",
    "Table",
    "Tally",
    "compact",
    "describe_event",
    "describe_run",
    "describe_task",
    "format_seconds",
    "format_when",
    "has_rich",
    "short",
    "write_bytes",
]


def describe_run(run: Run, *, events: bool) -> Iterator[str]:
    """A readable summary of a run, one line at a time."""
    credits = run.total_credits_used
    yield (
        f"run {run.id}  {run.status}  {run.completed}/{run.total} tasks  "
        f"{credits:.2f} credits (${credits * CREDIT_USD:.2f})"
    )
    if run.created_at is not None:
        yield f"created   {format_when(run.created_at)}"
    if run.completed_at is not None:
        took = ""
        if run.created_at is not None:
            took = f"  (took {format_seconds((run.completed_at - run.created_at).total_seconds())})"
        yield f"finished  {format_when(run.completed_at)}{took}"
    if run.error:
        yield f"error     {run.error}"
    for index, task in enumerate(run.results):
        yield ""
        if task is None:
            yield f"task {index}  (not in this listing)"
            continue
        yield from describe_task(index, task)
        timeline = task.events or []
        if events and run.live_events and index < len(run.live_events):
            timeline = timeline or run.live_events[index]
        if events and timeline:
            yield "  events"
            for event in timeline:
                yield "    " + describe_event(event, run.created_at)


def describe_task(index: int, task: TaskResult) -> Iterator[str]:
    head = f"task {index}  {task.status}"
    if not task.is_pending:
        head += f"  {task.credits_used:.2f} credits"
        if task.duration_ms is not None:
            head += f"  {format_seconds(task.duration_ms / 1000)}"
    yield head
    yield f"  url          {task.url}"
    if task.instruction:
        yield f"  instruction  {short(task.instruction)}"
    if task.input:
        yield f"  input        {short(compact(task.input))}"
    if task.data is not None:
        yield f"  data         {short(compact(task.data))}"
    if task.error:
        yield f"  error        {task.error}"


def describe_event(event: RunnerEvent, origin: datetime | None) -> str:
    when = ""
    if event.ts is not None:
        try:
            when = (
                f"+{(event.ts - origin).total_seconds():.3f}s" if origin else format_when(event.ts)
            )
        except TypeError:  # one of the two without a time zone
            when = format_when(event.ts)
    try:
        data = event.data
    except msgspec.DecodeError:
        data = None
    return f"{when:>10}  {event.type:<11} {short(_event_summary(event.type, data), 100)}"


def _event_summary(kind: str, data: Any) -> str:
    """The notable fields of an event's data, per the documented event types."""
    if not isinstance(data, dict):
        return "" if data is None else compact(data)
    if kind in ("navigation", "screenshot") and "url" in data:
        return str(data["url"])
    if kind == "plan":
        steps = data.get("steps")
        if isinstance(steps, list) and steps:
            return "steps: " + "; ".join(str(step) for step in steps)
        return str(data.get("reasoning", ""))
    if kind == "action":
        parts = [str(data.get(name)) for name in ("action", "selector") if data.get(name)]
        if data.get("text"):
            parts.append(compact(data["text"]))
        return " ".join(parts)
    if kind == "validation":
        verdict = "passed" if data.get("passed") else "failed"
        errors = data.get("errors")
        return f"{verdict}: {compact(errors)}" if errors else verdict
    if kind == "done" and "status" in data:
        return str(data["status"])
    if kind == "error" and "message" in data:
        return str(data["message"])
    return compact(data)


def compact(value: object) -> str:
    return msgspec.json.encode(value).decode()


def short(text: str, width: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def format_when(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") + "Z"


def format_seconds(seconds: float) -> str:
    return f"{seconds:.1f} s"


@dataclass
class Tally:
    """How the watched runs ended so far: counts per status (``error`` for unwatchable ones)."""

    statuses: Counter[str] = field(default_factory=Counter)
    credits: float = 0.0

    @property
    def finished(self) -> int:
        return sum(self.statuses.values())

    @property
    def all_completed(self) -> bool:
        return self.statuses["completed"] == self.finished

    def add(self, status: str | None, credits: float) -> None:
        self.statuses[status or "error"] += 1
        self.credits += credits

    def describe(self) -> str:
        order = ["completed", "failed", "error"]
        order += sorted(set(self.statuses) - set(order))
        parts = [f"{self.statuses[name]} {name}" for name in order if self.statuses[name]]
        parts.append(f"{self.credits:.2f} credits")
        return " · ".join(parts)


class Table:
    """Rows on stdout: a rich table on a terminal, else plain columns streamed as they come."""

    def __init__(
        self,
        columns: Sequence[str],
        right: Sequence[bool],
        *,
        widths: Sequence[int] | None = None,
        title: str | None = None,
        header: bool = True,
        enabled: bool = True,
    ) -> None:
        self._columns = columns
        self._header = header
        self._right = right
        self._widths = widths
        self._title = title
        self._enabled = enabled
        self._rows: list[Sequence[str]] = []
        self._rich = enabled and sys.stdout.isatty() and has_rich()
        self._streaming = enabled and not self._rich and widths is not None

    def __enter__(self) -> Table:
        if self._streaming:
            self._print_head()
        return self

    def add(self, row: Sequence[str]) -> None:
        if self._streaming:
            print(self._format(row), flush=True)
        else:
            self._rows.append(row)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None or not self._enabled or self._streaming:
            return
        if self._rich:
            self._print_rich()
            return
        lines = [self._columns, *self._rows] if self._header else self._rows
        self._widths = [
            max((len(cells[i]) for cells in lines), default=0) for i in range(len(self._columns))
        ]
        self._print_head()
        for row in self._rows:
            print(self._format(row))
        sys.stdout.flush()

    def _print_head(self) -> None:
        if self._title:
            print(self._title)
        if self._header:
            print(self._format(self._columns))

    def _format(self, cells: Sequence[str]) -> str:
        assert self._widths is not None
        parts = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, self._widths, self._right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    def _print_rich(self) -> None:
        from rich import box
        from rich.console import Console
        from rich.table import Table as RichTable
        from rich.text import Text

        table = RichTable(
            title=self._title,
            title_justify="left",
            show_header=self._header,
            box=box.SIMPLE_HEAD if self._header else box.ROUNDED,
            pad_edge=not self._header,
            collapse_padding=self._header,
        )
        widths = self._widths or [0] * len(self._columns)
        for name, right, width in zip(self._columns, self._right, widths, strict=True):
            # Ids and timestamps are read whole or not at all: never cut them.
            table.add_column(
                name, justify="right" if right else "left", no_wrap=True, min_width=width
            )
        for row in self._rows:
            table.add_row(*(Text(cell, style=_STATUS_STYLES.get(cell, "")) for cell in row))
        Console().print(table)


_STATUS_STYLES = {"completed": "green", "failed": "red", "processing": "yellow"}


def has_rich() -> bool:
    return importlib.util.find_spec("rich") is not None


def write_bytes(data: bytes) -> None:
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


class ProgressBar:
    """A live progress bar on stderr (rich); does nothing when disabled or without rich."""

    def __init__(self, label: str, total: int, *, enabled: bool) -> None:
        self._label = label
        self._total = total
        self._enabled = enabled
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        # Read by the bar's refresh thread: what to say beside the counts (an outage).
        self.note: Callable[[], str] = str

    def __enter__(self) -> ProgressBar:
        if not self._enabled:
            return self
        try:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                ProgressColumn,
                TextColumn,
                TimeElapsedColumn,
            )
            from rich.text import Text
        except ImportError:
            return self
        owner = self

        class NoteColumn(ProgressColumn):
            def render(self, task: Any) -> Text:
                return Text(owner.note(), style="bold red")

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}", markup=False),
            NoteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(self._label, total=self._total, detail="")
        return self

    def update(self, tally: Tally) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=tally.finished, detail=tally.describe())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
