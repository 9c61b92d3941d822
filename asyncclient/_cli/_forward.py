"""``asyncclient emulator``: a thin command that hands over its args.

It hands its raw arguments to the command line that owns them, so each option is defined once:
:mod:`asyncclient.testing`'s (also ``python -m asyncclient.testing``). The group loads this
module only when ``emulator`` is named. (``temporal`` is the Temporal extra's own click group.)
"""

from __future__ import annotations

import click

__all__ = ["emulator"]

_RAW = {"ignore_unknown_options": True, "allow_extra_args": True}


@click.command(context_settings=_RAW, add_help_option=False)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def emulator(argv: tuple[str, ...]) -> int:
    """Serve the API emulator locally (see: asyncclient emulator --help)."""
    from ..testing.__main__ import main as emulator_main

    return emulator_main(list(argv))
