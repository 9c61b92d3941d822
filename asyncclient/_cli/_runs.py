"""``asyncclient runs get | list | watch``: look at runs, and watch many of them to their end.

Every command runs with the production policies; tests shrink the waits with the testing switch
(``ASYNCCLIENT_TESTING_DELAY_SCALE``, read once by :func:`asyncclient._cli.main`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import click
import msgspec

from .._client import Client
from .._config import PollPolicy
from .._constants import API_KEY_ENV, BASE_URL_ENV, DEFAULT_BASE_URL
from .._models import Run
from .._validation import validate_api_key, validate_run_id
from ._exit import EXIT_AUTH, EXIT_FAILED, EXIT_OK, EXIT_USAGE, PROG, CliError, ErrorContext
from ._loop import run_command
from ._render import (
    ProgressBar,
    Table,
    Tally,
    describe_run,
    format_seconds,
    format_when,
    write_bytes,
)
from ._results import load_results, open_results, result_line

__all__ = [
    "DEFAULT_MAX_OUTAGE",
    "ApiOptions",
    "runs",
]


@dataclass(frozen=True)
class ApiOptions:
    """Where to send requests and with which key: ``--api-key``, ``--base-url``, ``--routes``."""

    api_key: str | None
    base_url: str | None
    routes: Literal["legacy", "v1"]


@dataclass(frozen=True)
class WatchOptions:
    """The options of ``runs watch``."""

    run_ids: tuple[str, ...]
    ids_file: IO[str] | None
    events: bool
    out: str | None
    resume: bool
    max_outage: float
    max_requests_per_second: float | None
    quiet: bool


DEFAULT_MAX_OUTAGE = 600.0
"""Seconds ``runs watch`` rides out an unreachable API before it gives up with exit 4."""


def _client(
    api: ApiOptions,
    context: ErrorContext,
    *,
    max_requests_per_second: float | None = None,
) -> Client:
    """The client the options ask for; a missing or malformed key is exit 3, a bad URL exit 2."""
    key = api.api_key if api.api_key is not None else os.environ.get(API_KEY_ENV)
    if not key:
        raise CliError(f"no API key: pass --api-key or set {API_KEY_ENV}", EXIT_AUTH)
    try:
        validate_api_key(key)
    except ValueError as exc:
        raise CliError(f"unusable API key: {exc}", EXIT_AUTH) from None
    base_url = api.base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    try:
        client = Client(
            key,
            base_url=base_url,
            routes=api.routes,
            max_requests_per_second=max_requests_per_second,
        )
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    context.base_url = client.base_url
    return client


def _checked_id(run_id: str, where: str | None = None) -> str:
    try:
        return validate_run_id(run_id)
    except ValueError:
        shown = run_id if len(run_id) <= 64 else run_id[:64] + "..."
        prefix = f"{where}: " if where else ""
        raise CliError(
            f"{prefix}{shown!r} is not a run id (24 hexadecimal characters)", EXIT_USAGE
        ) from None


async def _get(
    api: ApiOptions, context: ErrorContext, run_id: str, *, events: bool, as_json: bool
) -> int:
    run_id = _checked_id(run_id)
    async with _client(api, context) as client:
        run = await client.get_run(run_id, include_events=events)
    if as_json:
        write_bytes(msgspec.json.encode(run) + b"\n")
    else:
        sys.stdout.write("".join(line + "\n" for line in describe_run(run, events=events)))
        sys.stdout.flush()
    return EXIT_OK


_LIST_COLUMNS = ("id", "status", "tasks", "credits", "created (UTC)")


_LIST_WIDTHS = (24, 10, 7, 8, 19)


_LIST_RIGHT = (False, False, True, True, False)


async def _list(
    api: ApiOptions,
    context: ErrorContext,
    *,
    status: str | None,
    limit: int | None,
    as_json: bool,
) -> int:
    table = Table(_LIST_COLUMNS, _LIST_RIGHT, widths=_LIST_WIDTHS, enabled=not as_json)
    note = None
    async with _client(api, context) as client:
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
                if as_json:
                    write_bytes(msgspec.json.encode(run) + b"\n")
                else:
                    table.add(_list_row(run))
                shown += 1
                if limit is not None and shown >= limit:
                    break
    if note is not None and not as_json:
        print(note, file=sys.stderr)
    return EXIT_OK


async def _aiter(runs: list[Run]) -> AsyncIterator[Run]:
    for run in runs:
        yield run


def _list_row(run: Run) -> tuple[str, ...]:
    created = format_when(run.created_at)[:-1] if run.created_at is not None else "-"
    return (
        run.id,
        run.status,
        f"{run.completed}/{run.total}",
        f"{run.total_credits_used:.2f}",
        created,
    )


async def _watch(api: ApiOptions, context: ErrorContext, args: WatchOptions) -> int:
    if args.resume and not args.out:
        raise CliError("--resume needs --out FILE (the results to resume from)", EXIT_USAGE)
    ids = _watch_ids(args)
    client = _client(api, context, max_requests_per_second=args.max_requests_per_second)
    out = Path(args.out) if args.out else None
    recorded = load_results(out) if args.resume and out is not None else {}
    tally = Tally()
    for run_id in ids:
        if run_id in recorded:
            status, credits = recorded[run_id]
            tally.add(status, credits)
    todo = [run_id for run_id in ids if run_id not in recorded]
    where = str(out) if out is not None else "stdout"
    progress_on = (
        not args.quiet and sys.stderr.isatty() and (out is not None or not sys.stdout.isatty())
    )
    policy = PollPolicy(max_outage=args.max_outage)
    with (
        open_results(out, append=args.resume) as sink,
        ProgressBar("watching", len(ids), enabled=progress_on) as progress,
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
                        sink(result_line(update))
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
    return "" if seconds is None else f"API unreachable for {format_seconds(seconds)}"


@contextlib.contextmanager
def _outage_log(*, enabled: bool) -> Iterator[None]:
    """Print the watch's outage log lines (when the API stops and starts answering) on stderr."""
    if not enabled:
        yield
        return
    watch_logger = logging.getLogger("asyncclient")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
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


def _watch_ids(args: WatchOptions) -> list[str]:
    """The ids to watch, in order, without repeats."""
    if args.run_ids and args.ids_file is not None:
        raise CliError("give run ids or --ids-file, not both", EXIT_USAGE)
    if args.ids_file is not None:
        ids = _read_ids_file(args.ids_file)
    elif args.run_ids:
        ids = [_checked_id(run_id) for run_id in args.run_ids]
    else:
        raise CliError("no runs to watch: give run ids or --ids-file FILE", EXIT_USAGE)
    return list(dict.fromkeys(ids))


def _read_ids_file(file: IO[str]) -> list[str]:
    name = "stdin" if file.name in ("-", "<stdin>") else file.name
    try:
        text = file.read()
    except OSError as exc:
        raise CliError(f"cannot read ids file {name}: {exc.strerror or exc}", EXIT_USAGE) from None
    except UnicodeDecodeError:
        raise CliError(f"cannot read ids file {name}: not UTF-8 text", EXIT_USAGE) from None
    ids = []
    for number, line in enumerate(text.splitlines(), 1):
        value = line.split("#", 1)[0].strip()
        if value:
            ids.append(_checked_id(value, f"{name}, line {number}"))
    if not ids:
        raise CliError(f"no run ids in {name}", EXIT_USAGE)
    return ids


# -- the commands --------------------------------------------------------------------------------

_POSITIVE = click.FloatRange(min=0, min_open=True)


def _api_options(command: Callable[..., int]) -> Callable[..., int]:
    """The options every ``runs`` command takes: the key, the origin, the path style.

    The command receives them as one ``api`` keyword, an :class:`ApiOptions`.
    """

    @functools.wraps(command)
    def with_api(
        *args: Any,
        api_key: str | None,
        base_url: str | None,
        routes: Literal["legacy", "v1"],
        **kwargs: Any,
    ) -> int:
        return command(*args, api=ApiOptions(api_key, base_url, routes), **kwargs)

    options = (
        click.option("--api-key", metavar="KEY", help=f"API key (default: ${API_KEY_ENV})."),
        click.option(
            "--base-url",
            metavar="URL",
            help=f"API origin (default: ${BASE_URL_ENV}, then {DEFAULT_BASE_URL}).",
        ),
        click.option(
            "--routes",
            type=click.Choice(("legacy", "v1")),
            default="legacy",
            show_default=True,
            help="Path style: /browser-agent/{id} (legacy) or /api/v1/browser-agents/{id} (v1).",
        ),
    )
    for option in reversed(options):
        with_api = option(with_api)
    return with_api


@click.group(no_args_is_help=False)
def runs() -> None:
    """Get, list and watch runs."""


@runs.command("get")
@click.argument("run_id", metavar="ID")
@click.option("--events", is_flag=True, help="Also show each task's timeline.")
@click.option("--json", "as_json", is_flag=True, help="Print the run as the API's JSON.")
@_api_options
@click.pass_obj
def get_command(
    context: ErrorContext,
    run_id: str,
    events: bool,
    as_json: bool,
    api: ApiOptions,
) -> int:
    """Show one run (ID: 24 hexadecimal characters)."""
    return run_command(lambda: _get(api, context, run_id, events=events, as_json=as_json))


@runs.command("list")
@click.option(
    "--status",
    type=click.Choice(("processing", "completed", "failed")),
    help="Only runs in this state (failed is filtered here: the API cannot).",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=20, show_default=True, metavar="N",
    help="Show N runs.",
)  # fmt: skip
@click.option("--all", "every", is_flag=True, help="Walk every run (ignores --limit).")
@click.option("--json", "as_json", is_flag=True, help="One JSON run per line.")
@_api_options
@click.pass_obj
def list_command(
    context: ErrorContext,
    status: str | None,
    limit: int,
    every: bool,
    as_json: bool,
    api: ApiOptions,
) -> int:
    """List runs, newest first."""
    shown = None if every else limit
    return run_command(lambda: _list(api, context, status=status, limit=shown, as_json=as_json))


@runs.command("watch")
@click.argument("run_ids", nargs=-1, metavar="[ID]...")
@click.option(
    "--ids-file",
    type=click.File("r", encoding="utf-8", lazy=False),
    metavar="FILE",
    help="Read run ids from FILE (- for stdin): one a line, # comments and blanks ignored.",
)
@click.option("--events", is_flag=True, help="Include each task's timeline.")
@click.option("--out", metavar="FILE", help="Write the result lines to FILE (default: stdout).")
@click.option(
    "--resume",
    is_flag=True,
    help="Keep FILE's lines and skip the runs it already holds (needs --out).",
)
@click.option(
    "--max-outage",
    type=_POSITIVE,
    default=DEFAULT_MAX_OUTAGE,
    show_default=True,
    metavar="SECONDS",
    help="Ride out an unreachable API for this long, then stop with exit 4 "
    "(runs finished meanwhile are not lost).",
)
@click.option(
    "--max-requests-per-second",
    type=_POSITIVE,
    metavar="RPS",
    help="Never send more than RPS requests a second (your share of the key's rate limit); "
    "without it, pacing starts at the first 429 and adapts.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress or summary.")
@_api_options
@click.pass_obj
def watch_command(
    context: ErrorContext,
    run_ids: tuple[str, ...],
    ids_file: IO[str] | None,
    events: bool,
    out: str | None,
    resume: bool,
    max_outage: float,
    max_requests_per_second: float | None,
    quiet: bool,
    api: ApiOptions,
) -> int:
    """Watch runs until each finishes.

    Writes one JSON line per run as it finishes: {"runId", "status", "run", "error"}.
    """
    options = WatchOptions(
        run_ids, ids_file, events, out, resume, max_outage, max_requests_per_second, quiet
    )
    return run_command(lambda: _watch(api, context, options))
