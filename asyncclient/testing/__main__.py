"""Run the emulator as a standalone server.

Usage::

    python -m asyncclient.testing --port 8765 --api-key demo-key --runs 100 [--speed 10]

It prints its base URL on one line, then serves until interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

from ._clock import RealClock
from ._emulator import Emulator
from ._server import serve


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m asyncclient.testing",
        description="Serve an emulated pre.dev browser-agent runs API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port; 0 picks a free one (8765)")
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help="accepted API key; repeat for more; the first owns the runs (demo-key)",
    )
    parser.add_argument("--runs", type=int, default=100, help="runs to create (100)")
    parser.add_argument("--seed", type=int, default=0, help="seed for ids and content (0)")
    parser.add_argument(
        "--speed", type=float, default=1.0, help="emulated seconds per real second (1.0)"
    )
    parser.add_argument(
        "--max-duration", type=float, default=60.0, help="longest task, in seconds (60)"
    )
    parser.add_argument(
        "--event-bytes", type=int, default=4_000, help="approximate timeline bytes per run"
    )
    return parser


async def _serve_forever(emulator: Emulator, host: str, port: int) -> None:
    """Serve until cancelled (Ctrl-C, via asyncio.run) or sent SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        handling = True
    except (NotImplementedError, RuntimeError):  # Windows, or not the main thread
        handling = False
    try:
        async with serve(emulator, host=host, port=port) as server:
            print(server.base_url, flush=True)
            await stop.wait()
    finally:
        if handling:
            loop.remove_signal_handler(signal.SIGTERM)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, populate an emulator and serve it until interrupted.

    Args:
        argv: The arguments; defaults to ``sys.argv[1:]``.

    Returns:
        The exit status: 0 after an interrupt.
    """
    args = _parser().parse_args(argv)
    if args.speed <= 0:
        _parser().error("--speed must be positive")
    emulator = Emulator(
        api_keys=tuple(args.api_keys or ("demo-key",)),
        clock=RealClock(speed=args.speed),
        seed=args.seed,
    )
    emulator.populate(args.runs, max_duration=args.max_duration, event_bytes=args.event_bytes)
    # asyncio.run turns Ctrl-C into cancelling the server task, which stops the server
    # cleanly, and then re-raises KeyboardInterrupt here.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(emulator, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
