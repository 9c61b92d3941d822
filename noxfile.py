"""One nox session per job: tests, lowest, lint, typecheck, package, docs, temporal, bench, demo."""

from __future__ import annotations

import ast
import pathlib
import tempfile

import nox

PYPROJECT = nox.project.load_toml("pyproject.toml")
# Every Python the package claims, read from its classifiers: one list, in one place.
PYTHONS = nox.project.python_versions(PYPROJECT)
# The one version that measures coverage; the others run the plain suite (it is faster). The
# sessions that are not about a Python version run on the Python that runs nox.
COVERAGE_PYTHON = "3.11"
LOWEST_PYTHON = PYTHONS[0]

nox.needs_version = ">=2025.5.1"
nox.options.sessions = ["tests", "lowest", "lint", "typecheck", "package", "docs"]
nox.options.reuse_existing_virtualenvs = True
# A claimed Python that is missing fails the run: never download one, never skip it.
nox.options.download_python = "never"
nox.options.error_on_missing_interpreters = True
nox.options.default_venv_backend = "uv|virtualenv"

# Prints the versions a session resolved for our direct dependencies.
SHOW_VERSIONS = (
    "import importlib.metadata as m; "
    "print(*(f'{d}=={m.version(d)}' for d in "
    "('aiohttp', 'msgspec', 'anyio', 'backoff', 'rich', 'pytest', 'hypothesis')))"
)

# The baselines the benchmarks compare against.
BENCH_DEPENDENCIES = ("orjson", "pydantic>=2", "requests", "psutil")


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The suite against the emulator on loopback; branch coverage on one Python."""
    session.install("-e", ".[test,cli]")
    pytest_args = ("-m", "pytest", "--ignore=tests/temporal", *session.posargs)
    if session.python != COVERAGE_PYTHON:
        session.run("python", *pytest_args)
        return
    session.run("coverage", "erase")
    session.run("coverage", "run", *pytest_args)
    session.run("coverage", "combine", "--quiet")
    session.run("coverage", "report", "--fail-under=90")


@nox.session(python=LOWEST_PYTHON, venv_backend="uv")
def lowest(session: nox.Session) -> None:
    """The suite on the lowest Python with the lowest versions the dependency floors admit."""
    session.install("--resolution", "lowest-direct", "-e", ".[test,cli]")
    # What was resolved, in the log: the floors are the versions this run proves.
    session.run("python", "-c", SHOW_VERSIONS)
    session.run("python", "-m", "pytest", "--ignore=tests/temporal", *session.posargs)


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
def package(session: nox.Session) -> None:
    """Build the sdist and wheel, check them, and smoke-test the wheel with no extras."""
    # uv here too (not only nox's), so the smoke venv is made without relying on PATH.
    session.install("build>=1.2", "twine>=6.1", "uv>=0.5")
    with tempfile.TemporaryDirectory() as scratch:
        dist = pathlib.Path(scratch) / "dist"
        session.run("python", "-m", "build", "--outdir", str(dist))
        built = sorted(str(path) for path in dist.iterdir())
        session.run("twine", "check", "--strict", *built)
        wheel = next(path for path in built if path.endswith(".whl"))
        # A fresh venv as a user gets it: the wheel alone, no extras (so no rich), no repo on
        # the path (run from the scratch directory).
        venv = pathlib.Path(scratch) / "venv"
        python_of_session = f"{session.bin}/python"
        session.run("uv", "venv", "--quiet", "--python", python_of_session, str(venv))
        python = str(venv / "bin" / "python")
        session.run("uv", "pip", "install", "--quiet", "--python", python, wheel)
        with session.chdir(scratch):
            session.run(python, str(session.invoked_from) + "/tests/smoke_wheel.py", external=True)


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
    session.install("-e", ".[docs]")
    session.env["NO_MKDOCS_2_WARNING"] = "1"
    session.run("mkdocs", "build", "--strict", "--site-dir", "build/site")
    missing = []
    for package, page in [
        ("asyncclient", "asyncclient"),
        ("asyncclient/testing", "testing"),
        ("asyncclient/temporal", "temporal"),
    ]:
        tree = ast.parse(pathlib.Path(package, "__init__.py").read_text(encoding="utf-8"))
        names = next(
            ast.literal_eval(node.value)
            for node in tree.body
            if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
        )
        built = pathlib.Path("build", "site", "reference", page, "index.html")
        html = built.read_text(encoding="utf-8")
        prefix = package.replace("/", ".")
        missing += [f"{prefix}.{name}" for name in names if f'id="{prefix}.{name}"' not in html]
    if missing:
        session.error(f"not in the API reference: {', '.join(missing)}")
