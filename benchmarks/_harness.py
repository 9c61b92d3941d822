"""What every benchmark script shares: the server process, meters, medians, result rows.

Not a benchmark itself. The scripts import it as a sibling module (they run as
``python benchmarks/bench_*.py``, which puts this directory first on ``sys.path``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import select
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import psutil  # type: ignore[import-untyped]

HERE = Path(__file__).resolve().parent
API_KEY = "bench-key"
OTHER_KEY = "bench-key-2"
THIRD_KEY = "bench-key-3"
FOURTH_KEY = "bench-key-4"
"""More accounts: their runs never show in the first key's lists (and list scans)."""
# The CPUs this benchmark may use, as first seen, handed down to child processes (which start
# already pinned to the client's CPU and would otherwise see only that one).
_CPUS_ENV = "ASYNCCLIENT_BENCH_CPUS"
PACKAGES = (
    "asyncclient",
    "aiohttp",
    "msgspec",
    "anyio",
    "orjson",
    "pydantic",
    "requests",
    "psutil",
    "uvloop",
)

_T = TypeVar("_T")


# -- placement ------------------------------------------------------------------------------


def _cpus() -> list[int]:
    raw = os.environ.get(_CPUS_ENV)
    if raw:
        return [int(cpu) for cpu in raw.split(",")]
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    os.environ[_CPUS_ENV] = ",".join(map(str, cpus))
    return cpus


def can_pin() -> bool:
    """True when the client and the server can each have a core of their own."""
    return hasattr(os, "sched_setaffinity") and len(_cpus()) >= 2


def client_cpu() -> int:
    """The client's core: the first CPU allowed."""
    return _cpus()[0]


def server_cpu() -> int:
    """The server's core: the second CPU allowed."""
    return _cpus()[1]


def pin_client() -> None:
    """Keep this process (and the children it starts) on the client's core."""
    if can_pin():
        os.sched_setaffinity(0, {client_cpu()})


# -- the event loop ---------------------------------------------------------------------------

LOOP_ENV = "ASYNCCLIENT_BENCH_LOOP"
"""``asyncio`` or ``uvloop`` forces a loop; unset (or ``auto``): uvloop where it is installed."""


def uvloop_installed() -> bool:
    """True when uvloop (``asyncclient[speed]``) can be imported."""
    import importlib.util

    return importlib.util.find_spec("uvloop") is not None


def loop_name() -> str:
    """The event loop the scenarios run on: ``uvloop`` or ``asyncio``."""
    wanted = os.environ.get(LOOP_ENV, "auto")
    if wanted == "asyncio":
        return "asyncio"
    if wanted == "uvloop" or uvloop_installed():
        return "uvloop"
    return "asyncio"


def run(main: Callable[[], Coroutine[Any, Any, _T]], loop: str | None = None) -> _T:
    """``asyncio.run(main())`` on the loop :func:`loop_name` chose (or ``loop``)."""
    if (loop or loop_name()) == "uvloop":
        import importlib

        # By name: the benchmarks are type-checked where uvloop may not be installed.
        uv_run: Callable[[Coroutine[Any, Any, _T]], _T] = importlib.import_module("uvloop").run
        return uv_run(main())
    return asyncio.run(main())


# -- the server process -----------------------------------------------------------------------


class Server:
    """``benchmarks/_server.py`` in its own process, pinned to its own core.

    Use as a context manager; on exit the process is stopped (SIGTERM, then SIGKILL).
    """

    def __init__(
        self,
        spec: dict[str, Any] | None = None,
        *,
        speed: float = 1.0,
        seed: int = 0,
        args: Sequence[str] = (),
    ) -> None:
        self._spec = spec or {"groups": []}
        self._args = list(args)
        self._speed = speed
        self._seed = seed
        self._proc: subprocess.Popen[bytes] | None = None
        self._ps: Any = None
        self._spec_file = ""
        self._err_file: Any = None
        self.base_url = ""
        self.pid = 0

    def __enter__(self) -> Server:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as spec_file:
            json.dump(self._spec, spec_file)
        self._spec_file = spec_file.name
        self._err_file = tempfile.TemporaryFile()
        command = self._command()
        if can_pin():
            command += ["--cpu", str(server_cpu())]
        self._proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err_file
        )
        try:
            self.base_url = self._read_url(timeout=120.0)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.pid = self._proc.pid
        self._ps = psutil.Process(self.pid)
        return self

    def _command(self) -> list[str]:
        """The server's command line, without ``--cpu``."""
        return [
            sys.executable,
            str(HERE / "_server.py"),
            "--api-key",
            API_KEY,
            "--api-key",
            OTHER_KEY,
            "--api-key",
            THIRD_KEY,
            "--api-key",
            FOURTH_KEY,
            "--speed",
            repr(self._speed),
            "--seed",
            str(self._seed),
            "--spec",
            "@" + self._spec_file,
            *self._args,
        ]

    def _read_url(self, timeout: float) -> str:
        assert self._proc is not None
        assert self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        line = self._proc.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("http://"):
            err = ""
            if self._err_file is not None:
                self._err_file.seek(0)
                err = self._err_file.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"the emulator server did not start: {line!r}\n{err}")
        return line

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if self._err_file is not None:
            self._err_file.close()
            self._err_file = None
        if self._spec_file:
            with contextlib.suppress(OSError):
                os.unlink(self._spec_file)

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the server process has used so far."""
        times = self._ps.cpu_times()
        return float(times.user + times.system)

    def _call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data)  # noqa: S310 - loopback
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - loopback
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        """``GET /_stats``: request counts and the emulated clock."""
        result: dict[str, Any] = self._call("/_stats")
        return result

    def ids(self, key: str | None = None) -> list[str]:
        """Every run id (of ``key``, if given), in creation order."""
        result: list[str] = self._call("/_ids" + (f"?key={key}" if key else ""))
        return result

    def get_counts(self, ids: Sequence[str]) -> list[int]:
        """How many times each run was got (``GET /browser-agent/{id}``) so far."""
        result: list[int] = self._call("/_counts", {"ids": list(ids)})["counts"]
        return result

    def set_limit(self, rate: float | None, burst: float | None = None) -> None:
        """Set every key's rate limit now (``None``: none)."""
        self._call("/_limit", {"rate": rate, "burst": burst})

    def create_runs(self, spec: dict[str, Any]) -> list[str]:
        """Create the runs of ``spec`` now; returns their ids."""
        result: list[str] = self._call("/_runs", spec)["ids"]
        return result


# -- measuring --------------------------------------------------------------------------------


@dataclass
class Meter:
    """Wall time, this process's CPU time and the server's CPU time over an interval."""

    server: Server | None = None
    wall: float = 0.0
    cpu: float = 0.0
    server_cpu: float = 0.0
    _t0: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def start(self) -> Meter:
        server_cpu = self.server.cpu_seconds() if self.server is not None else 0.0
        self._t0 = (time.perf_counter(), time.process_time(), server_cpu)
        return self

    def stop(self) -> Meter:
        wall0, cpu0, server0 = self._t0
        server_cpu = self.server.cpu_seconds() if self.server is not None else 0.0
        self.wall = time.perf_counter() - wall0
        self.cpu = time.process_time() - cpu0
        self.server_cpu = server_cpu - server0
        return self

    @property
    def server_share(self) -> float:
        """The server's CPU seconds per wall second over the interval (1.0 = one full core)."""
        return self.server_cpu / self.wall if self.wall > 0 else 0.0

    @property
    def client_share(self) -> float:
        """This process's CPU seconds per wall second over the interval."""
        return self.cpu / self.wall if self.wall > 0 else 0.0


def median(values: Sequence[float]) -> float:
    """The median; NaN for no values."""
    return float(statistics.median(values)) if values else float("nan")


def rotations(names: Sequence[_T], reps: int) -> Iterator[tuple[int, list[_T]]]:
    """``(rep, order)`` with the contenders rotated each repetition (no fixed first or last)."""
    n = len(names)
    for rep in range(reps):
        shift = rep % n
        yield rep, [*names[shift:], *names[:shift]]


def per_run_policy(**options: Any) -> Any:
    """A ``PollPolicy`` that polls every run with its own GET.

    The watch may also read the list endpoint instead (``strategy="auto"``, where the package
    has it): scenario 1 measures the per-run GET path, so it asks for that strategy explicitly.
    """
    from dataclasses import fields

    from asyncclient import PollPolicy

    if "strategy" in {f.name for f in fields(PollPolicy)}:
        options["strategy"] = "per-run"
    return PollPolicy(**options)


def policy_strategy(policy: object) -> str:
    """The policy's strategy, or ``"per-run"`` for a package without strategies."""
    return str(getattr(policy, "strategy", "per-run"))


def rss_bytes() -> int:
    """This process's resident set size now."""
    return int(psutil.Process().memory_info().rss)


# -- results ----------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the results table.

    ``ratio`` is ours ÷ this contender (for a figure where more is better; the unit says
    which), measured in the same run as the median of the per-repetition ratios.
    """

    scenario: str
    contender: str
    figure: str
    server_cpu: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None
    note: str = ""


@dataclass
class ScenarioResult:
    """What one benchmark script hands to ``run_all.py``."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": self.params,
            "raw": self.raw,
            "rows": [asdict(row) for row in self.rows],
            "seconds": round(self.seconds, 2),
        }


def fmt(value: float, digits: int = 0) -> str:
    """A number with thousands separators."""
    return f"{value:,.{digits}f}"


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}×"


def fmt_share(value: float) -> str:
    return f"{value * 100:.0f}%"


def met_text(met: bool | None) -> str:
    return "" if met is None else ("yes" if met else "**NO**")


def markdown_table(rows: Sequence[Row]) -> str:
    """The rows as a GitHub markdown table."""
    head = ["scenario", "contender", "figure", "server CPU", "ours ÷ it", "target", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [
            row.scenario,
            row.contender,
            row.figure + (f" ({row.note})" if row.note else ""),
            row.server_cpu,
            row.ratio,
            row.target,
            met_text(row.met),
        ]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what the platform module says)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def source_state() -> dict[str, Any]:
    """Which asyncclient was measured: git HEAD, uncommitted files, a hash of the sources.

    The package is edited while benchmarks run; the hash tells two runs of one tree apart.
    """
    import hashlib

    package = HERE.parent / "asyncclient"
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    state: dict[str, Any] = {"sources_sha256": digest.hexdigest()[:16]}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        state["git_head"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=HERE.parent,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "asyncclient"],
            cwd=HERE.parent,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.splitlines()
        state["uncommitted_package_files"] = len(changed)
    return state


def environment() -> dict[str, Any]:
    """Python, package versions, CPU model, core count, load, the package's source state."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": sys.version,
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": versions,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "pinned": can_pin(),
        "client_cpu": client_cpu() if can_pin() else None,
        "server_cpu": server_cpu() if can_pin() else None,
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "event_loop": loop_name(),
        "asyncclient_source": source_state(),
    }


# -- command line shared by the scripts --------------------------------------------------------


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``--quick`` and ``--out FILE`` (where run_all.py wants the result)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="the short run")
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    return parser.parse_args(argv)


def finish(result: ScenarioResult, out: str | None) -> None:
    """Write the result for run_all.py, or print its table when run on its own."""
    if out:
        Path(out).write_text(json.dumps(result.to_json(), indent=1))
    else:
        print(markdown_table(result.rows))
