"""Exit codes and the error report: the command line's leaf module, imported by every other.

Exit codes: 0 success (for ``watch``: every run finished ``completed``); 1 a run failed or could
not be fetched; 2 a usage error (bad option, bad id, unreadable file); 3 no API key, or the key
was refused; 4 the API could not be reached; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from .._constants import DEFAULT_BASE_URL

__all__ = [
    "EXIT_AUTH",
    "EXIT_CONNECTION",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "CliError",
    "ErrorContext",
    "report",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_CONNECTION = 4
EXIT_INTERRUPTED = 130

PROG = "asyncclient"


class CliError(Exception):
    """A failure to report as one line on stderr, with its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class ErrorContext:
    """What a command leaves behind for the error report: where it was talking to, and a hint."""

    base_url: str = DEFAULT_BASE_URL
    hint: str | None = None


def report(message: str, hint: str | None = None) -> None:
    """Print ``asyncclient: error: MESSAGE[; HINT]`` on stderr, as one line."""
    line = f"{PROG}: error: {message}"
    if hint:
        line += f"; {hint}"
    print(line, file=sys.stderr, flush=True)
