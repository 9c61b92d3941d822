"""The command line of the Temporal extra: run a worker, start and follow a batch.

::

    python -m asyncclient.temporal worker --sink SINK [connection options] [--task-queue Q]
        [--base-url URL] [--api-key KEY] [--max-shards N] [poll options]
    python -m asyncclient.temporal watch --ids-file FILE --sink SINK [--shards N]
        [connection options] [--task-queue Q] [--attach] [scheduling options]

    connection options: [--profile NAME] [--config-file TOML] [--address HOST:PORT]
        [--namespace NS] [--tls | --no-tls] [--tls-ca PEM] [--tls-cert PEM --tls-key PEM]
        [--tls-server-name NAME]

A click group, :data:`temporal`, that ``asyncclient``'s command line loads when ``temporal`` is
named (``asyncclient temporal worker|watch``); :func:`main` runs it as
``python -m asyncclient.temporal``. One module per command: :mod:`._worker`, :mod:`._watch`;
:mod:`._common` holds the exit codes and the options both take.

The API key comes from ``--api-key`` or, better (argv is visible to every user of the machine),
from ``PREDEV_API_KEY``. The Temporal connection comes from Temporal's client configuration (a
profile of its TOML file and the ``TEMPORAL_*`` variables, see :mod:`.._connect`), which the
``--address``, ``--namespace``, ``--profile``, ``--config-file`` and ``--tls*`` flags override;
the Temporal API key only from the profile or ``TEMPORAL_API_KEY``. The two keys never mix.

Exit codes: 0 success (``watch``: every id is stored; ``worker``: stopped by SIGINT/SIGTERM);
1 the batch failed or ended with ids not stored (or stored only as watch errors, which a later
``watch`` tries again); 2 a usage error (bad option, unreadable or bad
ids file, unknown sink, unusable Temporal configuration); 3 no API key, or an unusable one
(``watch``: the batch failed because the API refused a worker's key, 401, or its account,
402, or every run of a shard answered 404: another account's key); 4 Temporal or the sink
could not be reached; 5 the batch is running or completed already
(``watch`` without ``--attach``; a failed, terminated or cancelled one is started again); 130
interrupted.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from ._common import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, HELP_OPTIONS
from ._watch import watch
from ._worker import worker

__all__ = ["main", "temporal", "watch_main", "worker_main"]

_PROG = "python -m asyncclient.temporal"


class _Group(click.Group):
    """A group that names an unknown command as such."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and not args[0].startswith("-") and self.get_command(ctx, args[0]) is None:
            raise click.UsageError(f"unknown command {args[0]!r}", ctx)
        return super().resolve_command(ctx, args)


@click.group(
    cls=_Group,
    invoke_without_command=True,
    no_args_is_help=False,
    context_settings=HELP_OPTIONS,
)
@click.pass_context
def temporal(ctx: click.Context) -> None:
    """Scale out on Temporal: temporal worker|watch (needs the temporal extra).

    Each command takes --help.
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help(), err=True)
        ctx.exit(EXIT_USAGE)


temporal.add_command(worker)
temporal.add_command(watch)


def _run(command: click.Command, argv: Sequence[str], prog: str) -> int:
    """Run a command on ``argv`` and return its exit status, as the main program would."""
    try:
        with command.make_context(prog, list(argv)) as ctx:
            result = command.invoke(ctx)
    except click.exceptions.Exit as exc:  # --help, or the group without a command
        return exc.exit_code
    except click.ClickException as exc:  # a usage error: the usage, then the reason
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        return EXIT_INTERRUPTED
    return result if isinstance(result, int) else EXIT_OK


def worker_main(argv: Sequence[str], *, prog: str | None = None) -> int:
    """Run a worker until SIGINT or SIGTERM.

    Args:
        argv: the arguments after ``worker``.
        prog: the command's name in usage messages (``python -m asyncclient.temporal worker``).

    Returns:
        The exit status (see the module's docstring).
    """
    return _run(worker, argv, prog or f"{_PROG} worker")


def watch_main(argv: Sequence[str], *, prog: str | None = None) -> int:
    """Start a batch and follow it until every id is stored.

    Prints one progress line every ``--interval`` seconds (stored/total, rate, elapsed).

    Args:
        argv: the arguments after ``watch``.
        prog: the command's name in usage messages (``python -m asyncclient.temporal watch``).

    Returns:
        The exit status (see the module's docstring).
    """
    return _run(watch, argv, prog or f"{_PROG} watch")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m asyncclient.temporal {worker,watch} ...``.

    Args:
        argv: the arguments; defaults to ``sys.argv[1:]``.

    Returns:
        The exit status (see the module's docstring).
    """
    return _run(temporal, sys.argv[1:] if argv is None else argv, _PROG)
