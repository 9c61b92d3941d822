"""Run the emulator as a standalone server.

Usage::

    python -m asyncclient.testing --port 8765 --api-key demo-key --runs 100 [--speed 10]
        [--faults "503:0.2,reset:0.05,429=1:0.01"] [--outage refused:30:120 ...]
        [--rate-limit 200 --burst 20 --retry-after seconds|ms|none] [--latency 10ms --jitter 2ms]

It prints its base URL on one line, then serves until interrupted (Ctrl-C or SIGTERM). The
first key also gets the API documentation's example run ``65f8a9d2c1e4b5a6f7e8d9c0``, answered
as the documentation prints it (:meth:`Emulator.add_docs_example`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import sys
from collections.abc import Sequence

from ._clock import RealClock
from ._emulator import Emulator
from ._fault import OutageForm
from ._server import serve

_FAULTS_HELP = """\
--faults SPEC: a comma-separated list of [ROUTE/]WHAT[=VALUE]:RATE
  ROUTE   get (a run), list (runs), submit (a run) or status (the queue); omitted: all
  RATE    the probability, 0..1, that a request gets this fault
  WHAT    an HTTP status 400..599   a JSON error; =VALUE is its Retry-After (429=2)
          reset                     the connection is reset before any answer
          truncate                  half the body, then the connection is closed
          trickle[=SECONDS]         the body in 64-byte chunks, SECONDS apart (0.05)
          stall[=SECONDS]           no answer for SECONDS (65), then the real one
          not_json                  a 200 whose body is not JSON
          html[=STATUS]             a proxy's HTML error page (502)
          blackhole                 the request is read and never answered
  example: --faults "503:0.2,reset:0.05,429=1:0.01,list/stall=5:0.01"

--outage FORM:START:SECONDS (repeatable): the whole API down for SECONDS, START seconds after
  the server starts. FORM is a status such as 503 (every request answered with it), refused
  (the port closed: connections refused, open ones cut) or blackhole (connections accepted,
  nothing answered).
  example: --outage refused:30:120 --outage 503:300:60
"""


def _outage(text: str) -> tuple[OutageForm, int, float, float]:
    """Parse ``FORM:START:SECONDS`` into ``(form, status, start, seconds)``."""
    parts = text.split(":")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected FORM:START:SECONDS, got {text!r}")
    form, raw_start, raw_seconds = (part.strip() for part in parts)
    status = 503
    chosen: OutageForm
    if form.isdigit():
        status, chosen = int(form), "status"
        if not 400 <= status <= 599:
            raise argparse.ArgumentTypeError(f"{text!r}: a status must be 400..599")
    elif form == "refused":
        chosen = "refused"
    elif form == "blackhole":
        chosen = "blackhole"
    else:
        raise argparse.ArgumentTypeError(
            f"{text!r}: FORM must be a status (503), refused or blackhole, got {form!r}"
        )
    try:
        start, seconds = float(raw_start), float(raw_seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: START and SECONDS are numbers") from None
    if not (0 <= start < float("inf") and 0 <= seconds < float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r}: START and SECONDS must be finite, >= 0")
    return chosen, status, start, seconds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m asyncclient.testing",
        description="Serve an emulated pre.dev browser-agent runs API.",
        epilog=_FAULTS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    parser.add_argument(
        "--faults",
        metavar="SPEC",
        help='inject failures, e.g. "503:0.2,reset:0.05,429=1:0.01" (syntax below)',
    )
    parser.add_argument(
        "--outage",
        type=_outage,
        action="append",
        default=[],
        metavar="FORM:START:SECONDS",
        help="take the API down on a schedule, e.g. refused:30:120 (syntax below)",
    )
    parser.add_argument(
        "--rate-limit",
        type=_rate,
        metavar="RPS",
        help="requests per second per key; more are answered 429 RATE_LIMITED (no limit)",
    )
    parser.add_argument(
        "--burst", type=_rate, metavar="N", help="requests a key may send at once (RPS/10)"
    )
    parser.add_argument(
        "--retry-after",
        choices=("seconds", "ms", "none"),
        default="seconds",
        help="how a 429 says when to retry: Retry-After seconds, retry-after-ms, or not (seconds)",
    )
    parser.add_argument(
        "--latency", type=_duration, default=0.0, metavar="T", help="added to every answer (0)"
    )
    parser.add_argument(
        "--jitter", type=_duration, default=0.0, metavar="T", help="random extra latency (0)"
    )
    return parser


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _duration(text: str) -> float:
    """``10ms``, ``0.5s`` or ``0.5`` (seconds)."""
    raw = text.strip().lower()
    scale = 1.0
    if raw.endswith("ms"):
        raw, scale = raw[:-2], 0.001
    elif raw.endswith("s"):
        raw = raw[:-1]
    try:
        value = float(raw) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration (10ms, 0.5s): {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


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
    # The documentation's example run, so its curl lines and quick start work as printed.
    emulator.add_docs_example()
    if args.faults is not None:
        try:
            emulator.faults.add_spec(args.faults)
        except ValueError as exc:
            _parser().error(f"--faults: {exc}")
    for form, status, start, seconds in args.outage:
        # START counts from now: the server listens a moment later.
        emulator.faults.outage(seconds, status, form=form, start=start)
    if args.burst is not None and args.rate_limit is None:
        _parser().error("--burst needs --rate-limit")
    if args.rate_limit is not None:
        try:
            emulator.rate_limits.set(args.rate_limit, burst=args.burst)
        except ValueError as exc:
            _parser().error(f"--burst: {exc}")
    emulator.rate_limits.retry_after = args.retry_after
    emulator.rate_limits.set_latency(args.latency, jitter=args.jitter)
    # asyncio.run turns Ctrl-C into cancelling the server task, which stops the server
    # cleanly, and then re-raises KeyboardInterrupt here.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(emulator, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
