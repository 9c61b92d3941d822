"""The ``asyncclient`` command line: look at runs, watch many of them, serve the emulator, demo.

::

    asyncclient runs get ID [--events] [--json]
    asyncclient runs list [--status S] [--limit N] [--all] [--json]
    asyncclient runs watch ID... | --ids-file FILE [--events] [--out FILE [--resume]]
        [--max-outage SECONDS]
        [--max-requests-per-second RPS]
    asyncclient emulator [--port P] [--runs N] [--api-key K] [--speed X]
        [--rate-limit RPS [--burst N]] [--latency 10ms]
    asyncclient demo [--runs N] [--seed S] [--speed X]
    asyncclient temporal worker|watch ...

One click group, one module per command group: :mod:`._runs` (``runs``), :mod:`._demo`
(``demo``) and :mod:`._forward` (``emulator``), and the Temporal extra's click group
(``temporal``, :mod:`asyncclient.temporal._cli`); the last three are loaded only when named, so
``runs get`` never imports the emulator or Temporal. :mod:`._exit` holds the exit codes (see
there), :mod:`._render` what is printed, :mod:`._results` the ``--out`` lines, :mod:`._loop` the
event loop. ``runs watch`` rides out an unreachable API for ``--max-outage`` (10 minutes by
default) before exit 4; shorter outages are logged on stderr.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import sys
from collections.abc import Mapping, Sequence

import click

from .._exceptions import (
    APIConnectionError,
    APIUnavailableError,
    AuthenticationError,
    PredevError,
)
from .._testing_switch import set_testing
from .._version import __version__
from ._exit import (
    EXIT_AUTH,
    EXIT_CONNECTION,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    CliError,
    ErrorContext,
    report,
)
from ._runs import runs

__all__ = ["main"]

_EPILOG = """\b
Exit codes: 0 ok (watch: every run completed), 1 a run failed or could not be fetched,
2 usage error, 3 no API key or key refused, 4 API unreachable, 130 interrupted.
The API key and base URL come from --api-key/--base-url or $PREDEV_API_KEY/$PREDEV_BASE_URL."""


class _LazyGroup(click.Group):
    """A group whose heavier commands are imported only when named (their help is listed here)."""

    # name -> (module:attribute, the short help listed by --help without importing the module)
    _lazy: Mapping[str, tuple[str, str]] = {
        "demo": ("._demo:demo", "Watch a few hundred emulated runs with the real client."),
        "emulator": (
            "._forward:emulator",
            "Serve the API emulator locally (see: asyncclient emulator --help).",
        ),
        "temporal": (
            "..temporal._cli:temporal",
            "Scale out on Temporal: temporal worker|watch (needs the temporal extra).",
        ),
    }
    # name -> the extra a lazy command needs, named in the usage error when it is not installed
    _extras: Mapping[str, str] = {"temporal": "temporal"}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self._lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self._lazy:
            return super().get_command(ctx, cmd_name)
        module_name, _, attribute = self._lazy[cmd_name][0].partition(":")
        try:
            module = importlib.import_module(module_name, __name__)
        except ImportError as exc:
            extra = self._extras.get(cmd_name)
            if extra is None:
                raise
            raise click.UsageError(
                f"the {cmd_name} commands need the extra: pip install 'asyncclient[{extra}]'"
            ) from exc
        command = getattr(module, attribute)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, self._lazy[name][1]) for name in self._lazy]
        for name in super().list_commands(ctx):
            command = super().get_command(ctx, name)
            if command is not None:
                rows.append((name, command.get_short_help_str()))
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))


@click.group(
    cls=_LazyGroup,
    epilog=_EPILOG,
    no_args_is_help=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name=PROG, message="%(prog)s %(version)s")
def _group() -> None:
    """Look at and watch pre.dev browser-agent runs."""


_group.add_command(runs)


TESTING_DELAY_SCALE_ENV = "ASYNCCLIENT_TESTING_DELAY_SCALE"
"""For tests only: the testing switch (:func:`asyncclient.testing.set_testing`) from outside the
process: every retry, poll and probe wait of the commands multiplied by this factor."""


def _testing_delay_scale() -> float | None:
    """The factor ``ASYNCCLIENT_TESTING_DELAY_SCALE`` asks for; ``None`` when it is not set.

    Raises:
        CliError: the variable is not a positive finite number (exit status 2).
    """
    text = os.environ.get(TESTING_DELAY_SCALE_ENV, "").strip()
    if not text:
        return None
    try:
        scale = float(text)
    except ValueError:
        scale = math.nan
    if not (scale > 0 and math.isfinite(scale)):
        raise CliError(
            f"{TESTING_DELAY_SCALE_ENV} must be a positive number, got {text!r}", EXIT_USAGE
        )
    return scale


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: the arguments after the program name; defaults to ``sys.argv[1:]``.

    Returns:
        The exit status (see :mod:`asyncclient._cli._exit`).
    """
    context = ErrorContext()
    try:
        # Not click's own main(): it prints a blank line on Ctrl-C and owns the exit codes.
        args = list(sys.argv[1:] if argv is None else argv)
        with (
            set_testing(_testing_delay_scale()),
            _group.make_context(PROG, args, obj=context) as ctx,
        ):
            result = _group.invoke(ctx)
    except click.exceptions.Exit as exc:  # --help, --version
        return exc.exit_code
    except click.UsageError as exc:
        report(exc.format_message())
        return EXIT_USAGE
    except click.ClickException as exc:
        report(exc.format_message())
        return exc.exit_code
    except KeyboardInterrupt:
        report("interrupted", context.hint)
        return EXIT_INTERRUPTED
    except CliError as exc:
        report(str(exc))
        return exc.exit_code
    except AuthenticationError as exc:
        report(f"the API key was refused ({exc.status}: {exc.message})")
        return EXIT_AUTH
    except APIUnavailableError as exc:
        report(f"cannot reach {context.base_url} ({exc})", context.hint)
        return EXIT_CONNECTION
    except APIConnectionError as exc:
        # aiohttp's own words say why (refused, DNS, TLS...); a timeout has none.
        reason = str(exc.__cause__ or "") or str(exc)
        report(f"cannot reach {context.base_url} ({reason})", context.hint)
        return EXIT_CONNECTION
    except PredevError as exc:
        report(str(exc))
        return EXIT_FAILED
    except BrokenPipeError:
        # The reader of stdout went away (`| head`): stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    return result if isinstance(result, int) else EXIT_OK
