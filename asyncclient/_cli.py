"""The ``asyncclient`` command line: look at runs, watch many of them, serve the emulator, demo.

::

    asyncclient runs get ID [--events] [--json]
    asyncclient runs list [--status S] [--limit N] [--all] [--json]
    asyncclient runs watch ID... | --ids-file FILE [--events] [--out FILE [--resume]]
        [--max-outage SECONDS]
        [--max-requests-per-second RPS]
    asyncclient emulator [--port P] [--runs N] [--api-key K] [--speed X]
        [--rate-limit RPS [--burst N]] [--latency 10ms]
    asyncclient demo [--runs N] [--seed S]

Exit codes: 0 success (for ``watch``: every run finished ``completed``); 1 a run failed or could
not be fetched; 2 a usage error (bad option, bad id, unreadable file); 3 no API key, or the key
was refused; 4 the API could not be reached (for ``watch``: it stayed unreachable for longer
than ``--max-outage``, 10 minutes by default; shorter outages are ridden out and logged on
stderr); 130 interrupted (Ctrl-C).

Progress goes to stderr, only when stderr is a terminal, and only with ``rich`` installed
(``pip install asyncclient[cli]``); without it every command still works, in plain text.

Commands run on uvloop's event loop where it is installed (``pip install asyncclient[speed]``),
else on asyncio's own. ``ASYNCCLIENT_LOOP=asyncio`` forces asyncio's loop; ``=uvloop`` insists on
uvloop (a usage error without it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import math
import os
import random
import sys
import time
from collections import Counter
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import anyio
import msgspec

from ._client import Client
from ._config import (
    API_KEY_ENV,
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    PollPolicy,
    RetryPolicy,
    validate_api_key,
    validate_run_id,
)
from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    APIUnavailableError,
    AuthenticationError,
    PredevError,
)
from ._models import CREDIT_USD, Run, RunnerEvent, TaskResult
from ._polling import RunUpdate
from ._tasks import TaskSpec
from ._version import __version__
from .testing import TaskPlan

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_CONNECTION = 4
EXIT_INTERRUPTED = 130

_PROG = "asyncclient"
_DEMO_KEY = "demo-key"
_DEMO_INSTRUCTIONS = (
    "Extract the page title.",
    "Extract the top 5 headlines.",
    "Find the pricing table and extract each plan.",
    "Extract the contact email address.",
    "List every product name and price.",
    "Summarise the first paragraph.",
)
_DEMO_TASK_FAILURES = ("ERROR", "TIMEOUT", "BLOCKED", "CAPTCHA_FAILED", "LOOP", "NO_TARGET")
DEFAULT_MAX_OUTAGE = 600.0
"""Seconds ``runs watch`` rides out an unreachable API before it gives up with exit 4."""


class _CliError(Exception):
    """A failure to report as one line on stderr, with its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class _Context:
    """What a command leaves behind for the error report: where it was talking to, and a hint."""

    base_url: str = DEFAULT_BASE_URL
    hint: str | None = None


# -- entry point ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: the arguments after the program name; defaults to ``sys.argv[1:]``.

    Returns:
        The exit status (see the module docstring).
    """
    context = _Context()
    try:
        parser = _parser()
        args, extra = parser.parse_known_args(argv)
        if args.command == "emulator":
            # The emulator's own command line owns its options (and its --help).
            from .testing.__main__ import main as emulator_main

            return emulator_main(extra)
        if args.command == "temporal":
            return _temporal(args.temporal_command, extra)
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        command: Callable[[argparse.Namespace, _Context], Coroutine[Any, Any, int]]
        command = args.handler
        return _run(lambda: command(args, context))
    except KeyboardInterrupt:
        _error("interrupted", context.hint)
        return EXIT_INTERRUPTED
    except _CliError as exc:
        _error(str(exc))
        return exc.exit_code
    except AuthenticationError as exc:
        _error(f"the API key was refused ({exc.status}: {exc.message})")
        return EXIT_AUTH
    except APIUnavailableError as exc:
        _error(f"cannot reach {context.base_url} ({exc})", context.hint)
        return EXIT_CONNECTION
    except APIConnectionError as exc:
        # aiohttp's own words say why (refused, DNS, TLS...); a timeout has none.
        reason = str(exc.__cause__ or "") or str(exc)
        _error(f"cannot reach {context.base_url} ({reason})", context.hint)
        return EXIT_CONNECTION
    except PredevError as exc:
        _error(str(exc))
        return EXIT_FAILED
    except BrokenPipeError:
        # The reader of stdout went away (`| head`): stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED


_LOOP_ENV = "ASYNCCLIENT_LOOP"
_LOOPS = ("auto", "asyncio", "uvloop")


def _event_loop_name() -> str:
    """The event loop commands run on: ``"uvloop"`` where it is installed, else ``"asyncio"``.

    ``ASYNCCLIENT_LOOP`` (``auto``, ``asyncio`` or ``uvloop``) overrides the choice.

    Raises:
        _CliError: ``ASYNCCLIENT_LOOP`` is not one of those, or asks for a uvloop that is not
            installed (exit status 2).
    """
    wanted = os.environ.get(_LOOP_ENV, "auto").strip().lower() or "auto"
    if wanted not in _LOOPS:
        raise _CliError(
            f"{_LOOP_ENV} must be one of {', '.join(_LOOPS)}, got {wanted!r}", EXIT_USAGE
        )
    if wanted == "asyncio":
        return "asyncio"
    if importlib.util.find_spec("uvloop") is None:
        if wanted == "uvloop":
            raise _CliError(
                f"{_LOOP_ENV}=uvloop, but uvloop is not installed: "
                "pip install 'asyncclient[speed]'",
                EXIT_USAGE,
            )
        return "asyncio"
    return "uvloop"


def _run(command: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run a command to its end on the loop :func:`_event_loop_name` picks."""
    if _event_loop_name() == "uvloop":
        # Imported by name: the package is typed without the speed extra installed.
        run: Callable[[Coroutine[Any, Any, int]], int] = importlib.import_module("uvloop").run
        return run(command())
    return asyncio.run(command())


def _temporal(command: str, argv: Sequence[str]) -> int:
    """Hand over to the Temporal extra's own command line."""
    try:
        from .temporal import _cli as temporal_cli
    except ImportError:
        _error("the temporal commands need the extra: pip install 'asyncclient[temporal]'")
        return EXIT_USAGE
    prog = f"{_PROG} temporal {command}"
    if command == "worker":
        return temporal_cli.worker_main(list(argv), prog=prog)
    return temporal_cli.watch_main(list(argv), prog=prog)


def _error(message: str, hint: str | None = None) -> None:
    line = f"{_PROG}: error: {message}"
    if hint:
        line += f"; {hint}"
    print(line, file=sys.stderr, flush=True)


# -- the parser ----------------------------------------------------------------------------------

_EPILOG = """\
exit codes: 0 ok (watch: every run completed), 1 a run failed or could not be fetched,
2 usage error, 3 no API key or key refused, 4 API unreachable, 130 interrupted.
The API key and base URL come from --api-key/--base-url or $PREDEV_API_KEY/$PREDEV_BASE_URL."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Look at and watch pre.dev browser-agent runs.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    api = argparse.ArgumentParser(add_help=False)
    api.add_argument("--api-key", metavar="KEY", help=f"API key (default: ${API_KEY_ENV})")
    api.add_argument(
        "--base-url",
        metavar="URL",
        help=f"API origin (default: ${BASE_URL_ENV}, then {DEFAULT_BASE_URL})",
    )
    api.add_argument(
        "--routes",
        choices=("legacy", "v1"),
        default="legacy",
        help="path style: /browser-agent/{id} (legacy) or /api/v1/browser-agents/{id} (v1)",
    )

    runs = commands.add_parser("runs", help="get, list and watch runs")
    runs_commands = runs.add_subparsers(dest="runs_command", required=True, metavar="COMMAND")

    get = runs_commands.add_parser(
        "get", parents=[api], help="show one run", description="Show one run."
    )
    get.add_argument("run_id", metavar="ID", help="the run id (24 hexadecimal characters)")
    get.add_argument("--events", action="store_true", help="also show each task's timeline")
    get.add_argument("--json", action="store_true", help="print the run as the API's JSON")
    get.set_defaults(handler=_cmd_get)

    listing = runs_commands.add_parser(
        "list",
        parents=[api],
        help="list runs, newest first",
        description="List runs, newest first.",
    )
    listing.add_argument(
        "--status",
        choices=("processing", "completed", "failed"),
        help="only runs in this state (failed is filtered here: the API cannot)",
    )
    listing.add_argument(
        "--limit", type=_positive_int, default=20, metavar="N", help="show N runs (20)"
    )
    listing.add_argument("--all", action="store_true", help="walk every run (ignores --limit)")
    listing.add_argument("--json", action="store_true", help="one JSON run per line")
    listing.set_defaults(handler=_cmd_list)

    watch = runs_commands.add_parser(
        "watch",
        parents=[api],
        help="watch runs until they finish",
        description=(
            "Watch runs until each finishes; write one JSON line per run as it finishes: "
            '{"runId", "status", "run", "error"}.'
        ),
    )
    watch.add_argument("run_ids", nargs="*", metavar="ID", help="run ids to watch")
    watch.add_argument(
        "--ids-file",
        metavar="FILE",
        help="read run ids from FILE (- for stdin): one a line, # comments and blanks ignored",
    )
    watch.add_argument("--events", action="store_true", help="include each task's timeline")
    watch.add_argument(
        "--out", metavar="FILE", help="write the result lines to FILE (default: stdout)"
    )
    watch.add_argument(
        "--resume",
        action="store_true",
        help="keep FILE's lines and skip the runs it already holds (needs --out)",
    )
    watch.add_argument(
        "--max-outage",
        type=_positive_float,
        default=DEFAULT_MAX_OUTAGE,
        metavar="SECONDS",
        help=(
            "ride out an unreachable API for this long, then stop with exit 4 "
            f"({DEFAULT_MAX_OUTAGE:g}; runs finished meanwhile are not lost)"
        ),
    )
    watch.add_argument(
        "--max-requests-per-second",
        type=_positive_float,
        metavar="RPS",
        help="never send more than RPS requests a second (your share of the key's rate limit); "
        "without it, pacing starts at the first 429 and adapts",
    )
    watch.add_argument("-q", "--quiet", action="store_true", help="no progress or summary")
    # Tests shrink every polling and retry delay; the logic stays the production one.
    watch.add_argument("--delay-scale", type=_positive_float, default=1.0, help=argparse.SUPPRESS)
    watch.set_defaults(handler=_cmd_watch)

    commands.add_parser(
        "emulator",
        add_help=False,
        help="serve the API emulator locally (see: asyncclient emulator --help)",
    )

    temporal = commands.add_parser(
        "temporal",
        add_help=False,  # `asyncclient temporal watch --help` belongs to the watch command
        help="scale out on Temporal: temporal worker|watch (needs the temporal extra)",
        description="Watch very large batches across many Temporal workers.",
    )
    temporal.add_argument(
        "temporal_command",
        choices=("worker", "watch"),
        help="worker: run a worker; watch: start a batch and follow it (each has its own --help)",
    )

    demo = commands.add_parser(
        "demo",
        help="watch a few hundred emulated runs with the real client",
        description=(
            "Start the emulator in-process, create runs of varied lengths and outcomes, "
            "watch them all with the real client, and print a summary. No API key needed."
        ),
    )
    demo.add_argument("--runs", type=_positive_int, default=300, metavar="N", help="runs (300)")
    demo.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (0)")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    # Emulated seconds per real second: runs last up to two emulated minutes.
    demo.add_argument("--speed", type=_positive_float, default=10.0, help=argparse.SUPPRESS)
    demo.set_defaults(handler=_cmd_demo)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _client(
    args: argparse.Namespace,
    context: _Context,
    *,
    delay_scale: float = 1.0,
    max_requests_per_second: float | None = None,
) -> Client:
    """The client the options ask for; a missing or malformed key is exit 3, a bad URL exit 2."""
    key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV)
    if not key:
        raise _CliError(f"no API key: pass --api-key or set {API_KEY_ENV}", EXIT_AUTH)
    try:
        validate_api_key(key)
    except ValueError as exc:
        raise _CliError(f"unusable API key: {exc}", EXIT_AUTH) from None
    base_url = args.base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    try:
        client = Client(
            key,
            base_url=base_url,
            routes=args.routes,
            retry=_scaled_retry(delay_scale),
            max_requests_per_second=max_requests_per_second,
        )
    except ValueError as exc:
        raise _CliError(str(exc), EXIT_USAGE) from None
    context.base_url = client.base_url
    return client


def _checked_id(run_id: str, where: str | None = None) -> str:
    try:
        return validate_run_id(run_id)
    except ValueError:
        shown = run_id if len(run_id) <= 64 else run_id[:64] + "..."
        prefix = f"{where}: " if where else ""
        raise _CliError(
            f"{prefix}{shown!r} is not a run id (24 hexadecimal characters)", EXIT_USAGE
        ) from None


def _scaled_retry(scale: float) -> RetryPolicy:
    """The default retry policy with every delay multiplied by ``scale``."""
    base = RetryPolicy()
    return replace(
        base,
        initial_delay=base.initial_delay * scale,
        max_delay=base.max_delay * scale,
        max_retry_after=base.max_retry_after * scale,
    )


def _scaled_policy(scale: float) -> PollPolicy:
    """The default polling policy with every duration multiplied by ``scale``."""
    base = PollPolicy()
    return replace(
        base,
        initial_delay=base.initial_delay * scale,
        max_delay=base.max_delay * scale,
        not_found_grace=base.not_found_grace * scale,
    )


# -- runs get ------------------------------------------------------------------------------------


async def _cmd_get(args: argparse.Namespace, context: _Context) -> int:
    run_id = _checked_id(args.run_id)
    async with _client(args, context) as client:
        run = await client.get_run(run_id, include_events=args.events)
    if args.json:
        _write_bytes(msgspec.json.encode(run) + b"\n")
    else:
        sys.stdout.write("".join(line + "\n" for line in _describe_run(run, events=args.events)))
        sys.stdout.flush()
    return EXIT_OK


def _describe_run(run: Run, *, events: bool) -> Iterator[str]:
    """A readable summary of a run, one line at a time."""
    credits = run.total_credits_used
    yield (
        f"run {run.id}  {run.status}  {run.completed}/{run.total} tasks  "
        f"{credits:.2f} credits (${credits * CREDIT_USD:.2f})"
    )
    if run.created_at is not None:
        yield f"created   {_when(run.created_at)}"
    if run.completed_at is not None:
        took = ""
        if run.created_at is not None:
            took = f"  (took {_seconds((run.completed_at - run.created_at).total_seconds())})"
        yield f"finished  {_when(run.completed_at)}{took}"
    if run.error:
        yield f"error     {run.error}"
    for index, task in enumerate(run.results):
        yield ""
        if task is None:
            yield f"task {index}  (not in this listing)"
            continue
        yield from _describe_task(index, task)
        timeline = task.events or []
        if events and run.live_events and index < len(run.live_events):
            timeline = timeline or run.live_events[index]
        if events and timeline:
            yield "  events"
            for event in timeline:
                yield "    " + _describe_event(event, run.created_at)


def _describe_task(index: int, task: TaskResult) -> Iterator[str]:
    head = f"task {index}  {task.status}"
    if not task.is_pending:
        head += f"  {task.credits_used:.2f} credits"
        if task.duration_ms is not None:
            head += f"  {_seconds(task.duration_ms / 1000)}"
    yield head
    yield f"  url          {task.url}"
    if task.instruction:
        yield f"  instruction  {_short(task.instruction)}"
    if task.input:
        yield f"  input        {_short(_compact(task.input))}"
    if task.data is not None:
        yield f"  data         {_short(_compact(task.data))}"
    if task.error:
        yield f"  error        {task.error}"


def _describe_event(event: RunnerEvent, origin: datetime | None) -> str:
    when = ""
    if event.ts is not None:
        try:
            when = f"+{(event.ts - origin).total_seconds():.3f}s" if origin else _when(event.ts)
        except TypeError:  # one of the two without a time zone
            when = _when(event.ts)
    try:
        data = event.data
    except msgspec.DecodeError:
        data = None
    return f"{when:>10}  {event.type:<11} {_short(_event_summary(event.type, data), 100)}"


def _event_summary(kind: str, data: Any) -> str:
    """The notable fields of an event's data, per the documented event types."""
    if not isinstance(data, dict):
        return "" if data is None else _compact(data)
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
            parts.append(_compact(data["text"]))
        return " ".join(parts)
    if kind == "validation":
        verdict = "passed" if data.get("passed") else "failed"
        errors = data.get("errors")
        return f"{verdict}: {_compact(errors)}" if errors else verdict
    if kind == "done" and "status" in data:
        return str(data["status"])
    if kind == "error" and "message" in data:
        return str(data["message"])
    return _compact(data)


def _compact(value: object) -> str:
    return msgspec.json.encode(value).decode()


def _short(text: str, width: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _when(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") + "Z"


def _seconds(seconds: float) -> str:
    return f"{seconds:.1f} s"


# -- runs list -----------------------------------------------------------------------------------

_LIST_COLUMNS = ("id", "status", "tasks", "credits", "created (UTC)")
_LIST_WIDTHS = (24, 10, 7, 8, 19)
_LIST_RIGHT = (False, False, True, True, False)


async def _cmd_list(args: argparse.Namespace, context: _Context) -> int:
    table = _Table(_LIST_COLUMNS, _LIST_RIGHT, widths=_LIST_WIDTHS, enabled=not args.json)
    limit = None if args.all else args.limit
    status = args.status
    note = None
    async with _client(args, context) as client:
        rows: AsyncIterable[Run]
        if status != "failed" and limit is not None and limit <= 100:
            page = await client.list_runs(limit=limit, status=status)
            rows = _aiter(page.runs)
            if page.has_more:
                note = f"{len(page.runs)} of {page.total} runs; --all shows every one"
        else:
            # Past one page, or for failed runs (the API cannot filter on them): walk the runs.
            rows = client.iter_runs(status=None if status == "failed" else status)
        shown = 0
        with table:
            async for run in rows:
                if status == "failed" and run.status != "failed":
                    continue
                if args.json:
                    _write_bytes(msgspec.json.encode(run) + b"\n")
                else:
                    table.add(_list_row(run))
                shown += 1
                if limit is not None and shown >= limit:
                    break
    if note is not None and not args.json:
        print(note, file=sys.stderr)
    return EXIT_OK


async def _aiter(runs: list[Run]) -> AsyncIterator[Run]:
    for run in runs:
        yield run


def _list_row(run: Run) -> tuple[str, ...]:
    created = _when(run.created_at)[:-1] if run.created_at is not None else "-"
    return (
        run.id,
        run.status,
        f"{run.completed}/{run.total}",
        f"{run.total_credits_used:.2f}",
        created,
    )


class _Table:
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
        self._rich = enabled and sys.stdout.isatty() and _has_rich()
        self._streaming = enabled and not self._rich and widths is not None

    def __enter__(self) -> _Table:
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
        from rich.table import Table
        from rich.text import Text

        table = Table(
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


def _has_rich() -> bool:
    return importlib.util.find_spec("rich") is not None


def _write_bytes(data: bytes) -> None:
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


# -- runs watch ----------------------------------------------------------------------------------


class _RecordedRun(msgspec.Struct, rename="camel"):
    total_credits_used: float = 0.0


class _Recorded(msgspec.Struct, rename="camel"):
    """What ``--resume`` needs from a result line; the rest of the line is skipped."""

    run_id: str
    status: str | None = None
    run: _RecordedRun | None = None


_recorded_decoder = msgspec.json.Decoder(_Recorded)


@dataclass
class _Tally:
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


async def _cmd_watch(args: argparse.Namespace, context: _Context) -> int:
    if args.resume and not args.out:
        raise _CliError("--resume needs --out FILE (the results to resume from)", EXIT_USAGE)
    ids = _watch_ids(args)
    client = _client(
        args,
        context,
        delay_scale=args.delay_scale,
        max_requests_per_second=args.max_requests_per_second,
    )
    out = Path(args.out) if args.out else None
    recorded = _load_results(out) if args.resume and out is not None else {}
    tally = _Tally()
    for run_id in ids:
        if run_id in recorded:
            status, credits = recorded[run_id]
            tally.add(status, credits)
    todo = [run_id for run_id in ids if run_id not in recorded]
    where = str(out) if out is not None else "stdout"
    progress_on = (
        not args.quiet and sys.stderr.isatty() and (out is not None or not sys.stdout.isatty())
    )
    policy = replace(
        _scaled_policy(args.delay_scale), max_outage=args.max_outage * args.delay_scale
    )
    with (
        _open_results(out, append=args.resume) as sink,
        _Progress("watching", len(ids), enabled=progress_on) as progress,
        _outage_log(enabled=not args.quiet),
    ):
        progress.update(tally)
        written = 0
        if out is not None:
            context.hint = f"0 new runs recorded in {where}; rerun with --resume to go on"
        async with client:
            if todo:
                async with client.watch(todo, include_events=args.events, policy=policy) as watcher:
                    progress.note = lambda: _unreachable_note(watcher.unreachable_for)
                    # An outage is ridden out by the watch (and logged); only a run's own
                    # failures are delivered, and recorded like any other result.
                    async for update in watcher:
                        sink(_result_line(update))
                        written += 1
                        if out is not None:
                            context.hint = (
                                f"{written} new runs recorded in {where}; "
                                "rerun with --resume to go on"
                            )
                        run = update.run
                        tally.add(
                            run.status if run is not None else None,
                            run.total_credits_used if run is not None else 0.0,
                        )
                        progress.update(tally)
        context.hint = None
    if not args.quiet:
        skipped = len(ids) - len(todo)
        extra = f"; {skipped} already in {where}" if skipped else ""
        runs = "run" if len(ids) == 1 else "runs"
        print(f"watched {len(ids)} {runs}: {tally.describe()}{extra}", file=sys.stderr)
    return EXIT_OK if tally.all_completed else EXIT_FAILED


def _unreachable_note(seconds: float | None) -> str:
    return "" if seconds is None else f"API unreachable for {_seconds(seconds)}"


@contextlib.contextmanager
def _outage_log(*, enabled: bool) -> Iterator[None]:
    """Print the watch's outage log lines (when the API stops and starts answering) on stderr."""
    if not enabled:
        yield
        return
    watch_logger = logging.getLogger("asyncclient")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{_PROG}: %(message)s"))
    handler.setLevel(logging.INFO)
    handler.addFilter(lambda record: record.name == "asyncclient")
    level = watch_logger.level
    watch_logger.addHandler(handler)
    if level == logging.NOTSET or level > logging.INFO:
        watch_logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        watch_logger.removeHandler(handler)
        watch_logger.setLevel(level)


def _watch_ids(args: argparse.Namespace) -> list[str]:
    """The ids to watch, in order, without repeats."""
    if args.run_ids and args.ids_file:
        raise _CliError("give run ids or --ids-file, not both", EXIT_USAGE)
    if args.ids_file:
        ids = _read_ids_file(args.ids_file)
    elif args.run_ids:
        ids = [_checked_id(run_id) for run_id in args.run_ids]
    else:
        raise _CliError("no runs to watch: give run ids or --ids-file FILE", EXIT_USAGE)
    return list(dict.fromkeys(ids))


def _read_ids_file(path: str) -> list[str]:
    name = "stdin" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise _CliError(f"cannot read ids file {name}: {exc.strerror or exc}", EXIT_USAGE) from None
    except UnicodeDecodeError:
        raise _CliError(f"cannot read ids file {name}: not UTF-8 text", EXIT_USAGE) from None
    ids = []
    for number, line in enumerate(text.splitlines(), 1):
        value = line.split("#", 1)[0].strip()
        if value:
            ids.append(_checked_id(value, f"{name}, line {number}"))
    if not ids:
        raise _CliError(f"no run ids in {name}", EXIT_USAGE)
    return ids


def _load_results(path: Path) -> dict[str, tuple[str | None, float]]:
    """The runs a results file already holds; a torn last line (a killed writer) is cut off.

    Each line is written whole with its newline, so a kill can only leave a last line without
    one. A line that ends with a newline and is not a result means this is not our file (or it
    was edited): refuse, rather than cut anything off.

    Returns:
        ``run id -> (status, credits)`` for every complete line.

    Raises:
        _CliError: the file cannot be read, or holds a complete line that is not a result.
    """
    recorded: dict[str, tuple[str | None, float]] = {}
    try:
        handle = path.open("r+b")
    except FileNotFoundError:
        return recorded
    except OSError as exc:
        raise _CliError(f"cannot open {path}: {exc.strerror or exc}", EXIT_USAGE) from None
    with handle:
        offset = 0
        for number, line in enumerate(handle, 1):
            start, offset = offset, offset + len(line)
            complete = line.endswith(b"\n")
            if not line.strip():
                continue
            try:
                record = _recorded_decoder.decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError):
                if complete:
                    raise _CliError(
                        f"{path}, line {number}: not a result line; refusing to append to it",
                        EXIT_USAGE,
                    ) from None
                handle.truncate(start)  # the torn last line: its run is watched again
                break
            credits = record.run.total_credits_used if record.run is not None else 0.0
            recorded[record.run_id] = (record.status, credits)
            if not complete:
                handle.seek(0, os.SEEK_END)
                handle.write(b"\n")  # a whole record that lost only its newline
    return recorded


@contextlib.contextmanager
def _open_results(path: Path | None, *, append: bool) -> Iterator[Callable[[bytes], None]]:
    """A writer of whole lines, each flushed at once: a kill can tear at most the last one."""
    if path is None:
        yield _write_bytes
        return
    try:
        handle: IO[bytes] = path.open("ab" if append else "wb")
    except OSError as exc:
        raise _CliError(f"cannot write {path}: {exc.strerror or exc}", EXIT_USAGE) from None

    def write(line: bytes) -> None:
        handle.write(line)
        handle.flush()

    with handle:
        yield write


def _result_line(update: RunUpdate) -> bytes:
    error: dict[str, object] | None = None
    if update.error is not None:
        error = {
            "type": type(update.error).__name__,
            "message": str(update.error),
            "status": update.error.status if isinstance(update.error, APIStatusError) else None,
        }
    record = {
        "runId": update.run_id,
        "status": update.run.status if update.run is not None else None,
        "run": update.run,
        "error": error,
    }
    return msgspec.json.encode(record) + b"\n"


class _Progress:
    """A live progress bar on stderr (rich); does nothing when disabled or without rich."""

    def __init__(self, label: str, total: int, *, enabled: bool) -> None:
        self._label = label
        self._total = total
        self._enabled = enabled
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        # Read by the bar's refresh thread: what to say beside the counts (an outage).
        self.note: Callable[[], str] = str

    def __enter__(self) -> _Progress:
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

    def update(self, tally: _Tally) -> None:
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


# -- demo ----------------------------------------------------------------------------------------


async def _cmd_demo(args: argparse.Namespace, context: _Context) -> int:
    from .testing import Emulator, RealClock, serve

    speed: float = args.speed
    clock = RealClock(speed=speed)
    emulator = Emulator(api_keys=(_DEMO_KEY,), clock=clock, seed=args.seed)
    emulator.plan_task = _demo_task_planner(random.Random(args.seed))
    tally = _Tally()
    durations: list[float] = []
    lags: list[float] = []
    tasks: Counter[str] = Counter()
    started = time.perf_counter()
    progress_on = not args.quiet and sys.stderr.isatty()
    async with serve(emulator) as server:
        context.base_url = server.base_url
        async with Client(
            server.api_key, base_url=server.base_url, poll_policy=_scaled_policy(1 / speed)
        ) as client:
            ids = await _submit_demo_runs(client, args.runs, random.Random(args.seed + 1))
            with _Progress("runs", len(ids), enabled=progress_on) as progress:
                async with client.watch(ids) as watcher:
                    async for update in watcher:
                        run = update.run
                        if run is None:
                            tally.add(None, 0.0)
                        else:
                            tally.add(run.status, run.total_credits_used)
                            tasks.update(task.status for task in run.tasks)
                            if run.created_at is not None and run.completed_at is not None:
                                end = run.completed_at.timestamp()
                                durations.append(end - run.created_at.timestamp())
                                lags.append(max(0.0, clock() - end) / speed)
                        progress.update(tally)
            requests = client.requests_sent
    wall = time.perf_counter() - started
    rows = [("runs", str(len(ids)))]
    rows += [(f"  {status}", str(count)) for status, count in _ordered(tally.statuses)]
    rows += [
        ("tasks", str(sum(tasks.values()))),
        *((f"  {status}", str(count)) for status, count in _ordered(tasks)),
        ("credits used", f"{tally.credits:.2f} (${tally.credits * CREDIT_USD:.2f})"),
        ("run duration p50", _emulated(_percentile(durations, 50))),
        ("run duration p90", _emulated(_percentile(durations, 90))),
        ("run duration max", _emulated(max(durations, default=math.nan))),
        ("noticed after p50", f"{_percentile(lags, 50):.2f} s"),
        ("noticed after p90", f"{_percentile(lags, 90):.2f} s"),
        ("requests made", str(requests)),
        ("  submits", str(len(ids))),
        ("  polls and list scans", str(requests - len(ids))),
        ("watch requests per run", f"{(requests - len(ids)) / max(1, len(ids)):.2f}"),
        ("wall time", f"{wall:.1f} s"),
    ]
    title = f"demo: {len(ids)} runs, speed ×{speed:g}"
    with _Table(("", ""), (False, True), title=title, header=False) as table:
        for row in rows:
            table.add(row)
    return EXIT_OK if tally.statuses["error"] == 0 else EXIT_FAILED


async def _submit_demo_runs(client: Client, count: int, rng: random.Random) -> list[str]:
    """Submit runs of 1 to 5 tasks through the real ``submit`` call, 16 at a time."""
    ids: list[str] = []
    limiter = anyio.CapacityLimiter(16)

    async def submit_one(size: int) -> None:
        async with limiter:
            tasks = [
                TaskSpec(url=f"https://example.com/page/{rng.randrange(10_000)}", instruction=text)
                for text in rng.sample(_DEMO_INSTRUCTIONS, size)
            ]
            run = await client.submit(tasks, concurrency=rng.choice((2, 5)))
            ids.append(run.id)

    async with anyio.create_task_group() as task_group:
        for _ in range(count):
            task_group.start_soon(submit_one, rng.choice((1, 1, 2, 2, 3, 4, 5)))
    return ids


def _demo_task_planner(rng: random.Random) -> Callable[[int, Mapping[str, Any]], TaskPlan]:
    """How the emulator plays each submitted task: seconds to two minutes, some failing."""

    def plan(index: int, task: Mapping[str, Any]) -> TaskPlan:
        longest = rng.choice((15.0, 30.0, 60.0, 90.0, 120.0))
        status = "SUCCESS" if rng.random() < 0.8 else rng.choice(_DEMO_TASK_FAILURES)
        return TaskPlan(
            url=str(task.get("url", "")),
            instruction=str(task.get("instruction") or ""),
            input={},
            finish_after=round(rng.uniform(2.0, longest), 3),
            status=status,
            data={"title": f"Result {index}"} if status == "SUCCESS" else None,
        )

    return plan


def _ordered(counts: Counter[str]) -> list[tuple[str, int]]:
    known = ("completed", "failed", "error", "SUCCESS")
    return sorted(counts.items(), key=lambda item: (item[0] not in known, -item[1], item[0]))


def _percentile(values: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def _emulated(seconds: float) -> str:
    return f"{seconds:.1f} s (emulated)"
