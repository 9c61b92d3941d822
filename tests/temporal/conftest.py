"""Fixtures for the Temporal extra: a real Temporal dev server and a real PostgreSQL for the
session, per-test sinks, and the figures the scale-out tests measure (printed at the end)."""

from __future__ import annotations

import asyncio
import importlib.util
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .services import Service, postgres_bin, postgres_cluster, temporal_dev_server

# Without the extra (``pip install -e '.[test,temporal]'``, as ``nox -s temporal`` does) these
# tests cannot import; a plain ``pytest`` over the whole tree leaves them out instead of failing.
if importlib.util.find_spec("temporalio") is None:  # pragma: no cover - depends on the extras
    collect_ignore_glob = ["test_*.py"]

FIGURES: dict[str, str] = {}
"""What the scale-out tests measured, shown in the terminal summary."""


@pytest.fixture(scope="session")
def temporal_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Temporal dev server for the whole session; its ``host:port``."""
    with temporal_dev_server(tmp_path_factory.mktemp("temporal")) as address:
        yield address


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster for the session; a URL to its ``postgres`` database."""
    if postgres_bin("initdb") is None or postgres_bin("pg_ctl") is None:
        # The PostgreSQL sink is tested for real or not at all: a missing server is a failure.
        pytest.fail(
            "the PostgreSQL server binaries (initdb, pg_ctl) are not installed: "
            "apt-get install postgresql (.ci/run does this when they are missing)"
        )
    with postgres_cluster() as url:
        yield url


async def _create_database(server_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    async with await psycopg.AsyncConnection.connect(server_url, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh, empty database of the session's cluster, as a sink URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create_database(postgres_server, name))
    return postgres_server.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def services() -> Iterator[list[Service]]:
    """Processes a test starts; each is stopped after it (by its own handle)."""
    started: list[Service] = []
    yield started
    for service in reversed(started):
        service.stop()


@pytest.fixture
def task_queue() -> str:
    """A task queue of the test's own."""
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A sink URL to a SQLite file in the test's directory."""
    return f"sqlite:///{tmp_path / 'results.db'}"


@pytest.fixture
def figures() -> dict[str, str]:
    """Where a test records what it measured."""
    return FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the measured figures after the run."""
    if FIGURES:
        terminalreporter.section("scale-out figures")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")
