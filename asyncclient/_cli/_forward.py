"""``asyncclient emulator`` and ``asyncclient temporal``: thin commands that hand over their args.

Each hands its raw arguments to the command line that owns them, so each option is defined once:
``emulator`` to :mod:`asyncclient.testing`'s (also ``python -m asyncclient.testing``), and
``temporal`` to the Temporal extra's (also ``python -m asyncclient.temporal``). The group loads
this module only when one of the two is named.
"""

from __future__ import annotations

import click

from ._exit import EXIT_USAGE, PROG, report

__all__ = ["emulator", "temporal"]

_RAW = {"ignore_unknown_options": True, "allow_extra_args": True}


@click.command(context_settings=_RAW, add_help_option=False)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def emulator(argv: tuple[str, ...]) -> int:
    """Serve the API emulator locally (see: asyncclient emulator --help)."""
    from ..testing.__main__ import main as emulator_main

    return emulator_main(list(argv))


@click.command(context_settings=_RAW, add_help_option=False)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def temporal(argv: tuple[str, ...]) -> int:
    """Scale out on Temporal: temporal worker|watch (needs the temporal extra)."""
    try:
        from ..temporal import _cli as temporal_cli
    except ImportError:
        report("the temporal commands need the extra: pip install 'asyncclient[temporal]'")
        return EXIT_USAGE
    command, *rest = argv or ("",)
    prog = f"{PROG} temporal {command}"
    if command == "worker":
        return temporal_cli.worker_main(rest, prog=prog)
    if command == "watch":
        return temporal_cli.watch_main(rest, prog=prog)
    return temporal_cli.main(list(argv))
