"""The result lines of ``runs watch --out FILE [--resume]``: written and read by one type.

Each line is ``{"runId", "status", "run", "error"}``, one JSON object per finished run, written
whole and flushed, so a killed writer can tear at most the last line; ``--resume`` reads the
lines back with the same :class:`ResultLine` and cuts off a torn last one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import msgspec

from .._exceptions import APIStatusError
from .._models import Run
from .._polling import RunUpdate
from ._exit import EXIT_USAGE, CliError
from ._render import write_bytes

__all__ = ["ResultError", "ResultLine", "load_results", "open_results", "result_line"]


class ResultError(msgspec.Struct):
    """Why a run could not be watched: the error's type name, message and HTTP status."""

    type: str
    message: str
    status: int | None = None


class ResultLine(msgspec.Struct, rename="camel"):
    """One line of a results file: a run as it finished, or the error that stopped its watch."""

    run_id: str
    status: str | None = None
    run: Run | None = None
    error: ResultError | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ResultLine)


def load_results(path: Path) -> dict[str, tuple[str | None, float]]:
    """The runs a results file already holds; a torn last line (a killed writer) is cut off.

    Each line is written whole with its newline, so a kill can only leave a last line without
    one. A line that ends with a newline and is not a result means this is not our file (or it
    was edited): refuse, rather than cut anything off.

    Returns:
        ``run id -> (status, credits)`` for every complete line.

    Raises:
        CliError: the file cannot be read, or holds a complete line that is not a result.
    """
    recorded: dict[str, tuple[str | None, float]] = {}
    try:
        handle = path.open("r+b")
    except FileNotFoundError:
        return recorded
    except OSError as exc:
        raise CliError(f"cannot open {path}: {exc.strerror or exc}", EXIT_USAGE) from None
    with handle:
        offset = 0
        for number, line in enumerate(handle, 1):
            start, offset = offset, offset + len(line)
            complete = line.endswith(b"\n")
            if not line.strip():
                continue
            try:
                record = _decoder.decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError):
                if complete:
                    raise CliError(
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
def open_results(path: Path | None, *, append: bool) -> Iterator[Callable[[bytes], None]]:
    """A writer of whole lines, each flushed at once: a kill can tear at most the last one."""
    if path is None:
        yield write_bytes
        return
    try:
        handle: IO[bytes] = path.open("ab" if append else "wb")
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}", EXIT_USAGE) from None

    def write(line: bytes) -> None:
        handle.write(line)
        handle.flush()

    with handle:
        yield write


def result_line(update: RunUpdate) -> bytes:
    """The JSON line ``runs watch`` writes for one finished (or unwatchable) run."""
    error = None
    if update.error is not None:
        error = ResultError(
            type=type(update.error).__name__,
            message=str(update.error),
            status=update.error.status if isinstance(update.error, APIStatusError) else None,
        )
    status = update.run.status if update.run is not None else None
    line = ResultLine(run_id=update.run_id, status=status, run=update.run, error=error)
    return _encoder.encode(line) + b"\n"
