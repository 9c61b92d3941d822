"""What ``worker`` and ``watch`` share: exit codes, the Temporal options, number types.

And how a command stops: a step that fails raises the command line's ``CliError`` with its
exit status, and :func:`run_command` prints it as one ``error:`` line (Ctrl-C is 130), so each
command's body reads as its steps. The steps both commands take (the connection settings,
connecting to Temporal, opening the sink) are here, each with the status its failure ends in.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..._cli._exit import CliError
from .._connect import DEFAULT_ADDRESS, DEFAULT_NAMESPACE, TemporalSettings, connect, load_settings
from .._exceptions import SinkError
from .._starter import DEFAULT_TASK_QUEUE

if TYPE_CHECKING:
    from temporalio.client import Client as TemporalClient
    from temporalio.runtime import Runtime

    from .._sinks import Sink

__all__ = [
    "DEFAULT_SINK",
    "EXIT_ALREADY_STARTED",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_KEY",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "HELP_OPTIONS",
    "Number",
    "connect_temporal",
    "error",
    "open_sink_store",
    "run_command",
    "temporal_command",
    "temporal_options",
    "temporal_settings",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_KEY = 3
EXIT_UNREACHABLE = 4
EXIT_ALREADY_STARTED = 5
EXIT_INTERRUPTED = 130

DEFAULT_SINK = "sqlite:///predev-results.db"

# -h as well as --help, also when a command runs on its own (worker_main, watch_main).
HELP_OPTIONS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}

_F = TypeVar("_F", bound=Callable[..., Any])


class Number(click.FloatRange):
    """A ``FloatRange`` that refuses NaN (which passes every comparison), and if asked infinity."""

    def __init__(self, *, finite: bool = False, **bounds: Any) -> None:
        super().__init__(**bounds)
        self.finite = finite

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if math.isnan(number) or (self.finite and math.isinf(number)):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def error(message: str) -> None:
    """Print ``error: MESSAGE`` on stderr (the commands' one-line failure report)."""
    print(f"error: {message}", file=sys.stderr, flush=True)


_TEMPORAL_HELP = (
    "Connection settings come from Temporal's client configuration: a profile of its TOML file "
    "and the TEMPORAL_* environment variables (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, "
    "TEMPORAL_API_KEY, TEMPORAL_TLS, TEMPORAL_TLS_CLIENT_CERT_PATH, TEMPORAL_TLS_CLIENT_KEY_PATH, "
    "TEMPORAL_TLS_SERVER_CA_CERT_PATH, TEMPORAL_TLS_SERVER_NAME); the --address, --namespace, "
    "--profile, --config-file and --tls* options override them. The Temporal API key is read "
    "only from the profile or $TEMPORAL_API_KEY."
)


def temporal_options(command: _F) -> _F:
    """Add the Temporal connection options, ``--task-queue`` and ``--sink`` to a command."""
    options = [
        click.option(
            "--profile",
            help="The profile of the configuration file ($TEMPORAL_PROFILE, else default).",
        ),
        click.option(
            "--config-file",
            help="Temporal's TOML client configuration ($TEMPORAL_CONFIG_FILE, else "
            "~/.config/temporalio/temporal.toml).",
        ),
        click.option(
            "--address", help=f"The Temporal frontend, host:port (else {DEFAULT_ADDRESS})."
        ),
        click.option("--namespace", help=f"The Temporal namespace (else {DEFAULT_NAMESPACE})."),
        click.option(
            "--tls/--no-tls",
            default=None,
            help="Force TLS on or off (else on when an API key or a TLS setting is configured).",
        ),
        click.option("--tls-ca", metavar="PEM", help="The CA of the server's certificate."),
        click.option("--tls-cert", metavar="PEM", help="The client certificate (mTLS)."),
        click.option("--tls-key", metavar="PEM", help="The client certificate's private key."),
        click.option(
            "--tls-server-name", metavar="NAME", help="The name on the server's certificate (SNI)."
        ),
        click.option(
            "--task-queue",
            default=DEFAULT_TASK_QUEUE,
            show_default=True,
            help="The task queue workers poll.",
        ),
        click.option(
            "--sink",
            default=DEFAULT_SINK,
            show_default=True,
            help="Where results go: sqlite:///file.db, sqlite:////abs/file.db or "
            "postgresql://user:password@host:port/db.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def temporal_command(text: str, *, short_help: str) -> Callable[[_F], click.Command]:
    """Make a function a Temporal command: its help, where the connection comes from, ``-h``.

    Args:
        text: the command's help.
        short_help: its line in the group's list of commands.

    Returns:
        A decorator, ``click.command`` with those settings.
    """
    return click.command(
        help=f"{text}\n\n{_TEMPORAL_HELP}", short_help=short_help, context_settings=HELP_OPTIONS
    )


def run_command(body: Callable[[], int]) -> int:
    """Run a command's body (its checks, then its ``asyncio.run``) and return its exit status.

    Args:
        body: the command's steps.

    Returns:
        What the body returned; a :class:`CliError`'s exit code after its ``error:`` line;
        ``EXIT_INTERRUPTED`` on Ctrl-C.
    """
    try:
        return body()
    except CliError as exc:
        error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def temporal_settings(params: dict[str, Any]) -> TemporalSettings:
    """The connection settings: the profile and TEMPORAL_* environment, then the options.

    Raises:
        CliError: ``EXIT_USAGE``, the configuration cannot be used.
    """
    try:
        return load_settings(
            profile=params["profile"],
            config_file=params["config_file"],
            address=params["address"],
            namespace=params["namespace"],
            tls=params["tls"],
            tls_ca=params["tls_ca"],
            tls_cert=params["tls_cert"],
            tls_key=params["tls_key"],
            tls_server_name=params["tls_server_name"],
        )
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc


async def connect_temporal(
    settings: TemporalSettings, *, identity: str | None = None, runtime: Runtime | None = None
) -> TemporalClient:
    """Connect to Temporal.

    Raises:
        CliError: ``EXIT_UNREACHABLE``, Temporal could not be reached.
    """
    try:
        return await connect(settings, identity=identity, runtime=runtime)
    except RuntimeError as exc:
        raise CliError(str(exc), EXIT_UNREACHABLE) from exc


async def open_sink_store(sink: Sink) -> None:
    """Open the sink's store (connect, create its tables).

    Raises:
        CliError: ``EXIT_UNREACHABLE``, the store could not be reached.
    """
    try:
        await sink.open()
    except SinkError as exc:
        raise CliError(str(exc), EXIT_UNREACHABLE) from exc
