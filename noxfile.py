"""One nox session per job: tests, lint, typecheck, bench, demo."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False

# The baselines the benchmarks compare against.
BENCH_DEPENDENCIES = ("orjson", "pydantic>=2", "requests", "psutil")


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite against the emulator on loopback, with branch coverage."""
    session.install("-e", ".[test,cli]")
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", "--ignore=tests/temporal", *session.posargs)
    session.run("coverage", "combine", "--quiet")
    session.run("coverage", "report", "--fail-under=90")


@nox.session
def temporal(session: nox.Session) -> None:
    """The Temporal extra against a real Temporal dev server, PostgreSQL and emulator processes."""
    session.install("-e", ".[test,temporal]")
    session.run("pytest", "tests/temporal", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.8")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, the tests and the benchmarks."""
    # The temporal extra too: asyncclient.temporal and its tests are checked against the real
    # temporalio and psycopg types (both ship py.typed).
    session.install(
        "-e",
        ".[test,cli,temporal]",
        "mypy>=1.13",
        "types-PyYAML",
        "types-jsonschema",
        # What the benchmarks import, so they are checked too.
        *BENCH_DEPENDENCIES,
        "types-requests",
    )
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Standalone benchmarks; pass -- --quick for the short run."""
    session.install("-e", ".", *BENCH_DEPENDENCIES)
    session.run("python", "benchmarks/run_all.py", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """Start the embedded emulator and watch a few hundred runs with the real client."""
    session.install("-e", ".[cli]")
    session.run("asyncclient", "demo", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site with warnings as errors, offline, into build/site.

    Then check that the API reference shows every public name of the three packages.
    """
    import ast
    from pathlib import Path

    session.install("-e", ".[docs]")
    session.env["NO_MKDOCS_2_WARNING"] = "1"
    session.run("mkdocs", "build", "--strict", "--site-dir", "build/site")
    missing = []
    for package, page in [
        ("asyncclient", "asyncclient"),
        ("asyncclient/testing", "testing"),
        ("asyncclient/temporal", "temporal"),
    ]:
        tree = ast.parse(Path(package, "__init__.py").read_text(encoding="utf-8"))
        names = next(
            ast.literal_eval(node.value)
            for node in tree.body
            if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
        )
        html = Path("build", "site", "reference", page, "index.html").read_text(encoding="utf-8")
        prefix = package.replace("/", ".")
        missing += [f"{prefix}.{name}" for name in names if f'id="{prefix}.{name}"' not in html]
    if missing:
        session.error(f"not in the API reference: {', '.join(missing)}")
