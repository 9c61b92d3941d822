"""A static server in a process of its own: pre-rendered run bodies, as fast as aiohttp can serve.

::

    python benchmarks/_static.py --small FILE [--large RUN_ID=FILE ...] [--cpu N]

It answers ``GET /browser-agent/{id}`` with the body of ``--small`` (one processing run, as the
emulator renders it), and with ``?includeEvents=true`` with the ``--large`` body of that id where
there is one. Bodies are sent with a ``Content-Length``; under the path prefix ``/chunked`` (a
base URL of ``http://host:port/chunked``) the same bodies go out with chunked transfer encoding
in 256 KiB chunks, without a length. Nothing is rendered, checked or counted per request: the
server costs as little as aiohttp allows, so the client's cost is what the benchmark measures.
It prints the base URL on one line of stdout and serves until SIGTERM or the end of its stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _harness import Server
from aiohttp import web

_CHUNK = 256 * 1024
_JSON = {"Content-Type": "application/json"}


def _app(small: bytes, large: dict[str, bytes]) -> web.Application:
    async def run(request: web.Request) -> web.StreamResponse:
        body = small
        if request.query.get("includeEvents") == "true":
            body = large.get(request.match_info["run_id"], small)
        if not request.path.startswith("/chunked/"):
            return web.Response(body=body, headers=_JSON)
        response = web.StreamResponse(headers=_JSON)
        response.enable_chunked_encoding()
        await response.prepare(request)
        view = memoryview(body)
        for start in range(0, len(view), _CHUNK):
            await response.write(view[start : start + _CHUNK])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/browser-agent/{run_id}", run)
    app.router.add_get("/chunked/browser-agent/{run_id}", run)
    return app


async def _serve(app: web.Application, host: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def wait_for_eof() -> None:
        with contextlib.suppress(OSError, ValueError):
            sys.stdin.buffer.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_for_eof, daemon=True).start()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0, backlog=1024)
    await site.start()
    port = runner.addresses[0][1]
    print(f"http://{host}:{port}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the bodies given on the command line and print the base URL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--small", required=True, help="file with the body of a small run")
    parser.add_argument("--large", action="append", default=[], help="RUN_ID=FILE, repeatable")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--cpu", type=int, default=None, help="pin the server to this CPU")
    args = parser.parse_args(argv)
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    small = Path(args.small).read_bytes()
    large = {}
    for item in args.large:
        run_id, _, file = item.partition("=")
        large[run_id] = Path(file).read_bytes()
    asyncio.run(_serve(_app(small, large), args.host))
    return 0


class StaticServer(Server):
    """This server in its own process, pinned to the server's core (see :class:`Server`).

    Args:
        small: the body of a small run, answered for every id.
        large: ``{run_id: file}``: bodies answered for ``?includeEvents=true``.
    """

    def __init__(self, small: bytes, large: dict[str, str] | None = None) -> None:
        super().__init__()
        self._small = small
        self._large = large or {}
        self._small_file = ""

    def __enter__(self) -> StaticServer:
        super().__enter__()
        return self

    def _command(self) -> list[str]:
        # The spec file the base class writes holds the small body's path, for cleanup.
        self._small_file = self._spec_file + ".small"
        Path(self._small_file).write_bytes(self._small)
        command = [sys.executable, str(Path(__file__)), "--small", self._small_file]
        for run_id, file in self._large.items():
            command += ["--large", f"{run_id}={file}"]
        return command

    def __exit__(self, *exc_info: Any) -> None:
        super().__exit__(*exc_info)
        if self._small_file:
            with contextlib.suppress(OSError):
                os.unlink(self._small_file)


def small_run_body() -> bytes:
    """One processing run of one task, as the emulator renders it for ``GET`` (no events)."""
    from asyncclient.testing import Emulator

    emulator = Emulator(api_keys=("bench-key",))
    run_id = emulator.create_run("bench-key", durations=[1e9])
    body = emulator.render_run("bench-key", run_id, False)
    assert body is not None
    json.loads(body)  # a real run body
    return body


if __name__ == "__main__":
    sys.exit(main())
