"""The public surface: exactly the names meant to be public, documented and typed."""

from __future__ import annotations

import importlib.resources
import inspect
from types import ModuleType

import pytest

import asyncclient
import asyncclient.testing

EXPECTED_PUBLIC = {
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "APIUnavailableError",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "DoneEvent",
    "EventType",
    "NotFoundError",
    "PaymentRequiredError",
    "PollPolicy",
    "PredevError",
    "QueueStatus",
    "RateController",
    "RateLimitError",
    "ResponseDecodeError",
    "RetryPolicy",
    "Run",
    "RunIterator",
    "RunPage",
    "RunStatus",
    "RunStream",
    "RunUpdate",
    "RunnerEvent",
    "ServerError",
    "TaskEvent",
    "TaskResult",
    "TaskResultEvent",
    "TaskSpec",
    "TaskStatus",
    "WalkStalledError",
    "WatchTimeoutError",
    "Watcher",
    "__version__",
}

EXPECTED_TESTING = {
    "Clock",
    "Emulator",
    "EmulatorServer",
    "Fault",
    "Faults",
    "ManualClock",
    "RateLimits",
    "RealClock",
    "TaskPlan",
    "serve",
    "set_testing",
}

MODULES = [
    pytest.param(asyncclient, EXPECTED_PUBLIC, id="asyncclient"),
    pytest.param(asyncclient.testing, EXPECTED_TESTING, id="asyncclient.testing"),
]


@pytest.mark.parametrize(("module", "expected"), MODULES)
def test_all_is_exactly_the_public_names(module: ModuleType, expected: set[str]) -> None:
    """``__all__`` lists exactly the intended public names, each once, and each exists."""
    assert set(module.__all__) == expected
    assert len(module.__all__) == len(expected)
    for name in module.__all__:
        assert hasattr(module, name), name


@pytest.mark.parametrize(("module", "expected"), MODULES)
def test_all_is_sorted(module: ModuleType, expected: set[str]) -> None:
    """``__all__`` is kept sorted, so additions show up clearly in review."""
    assert list(module.__all__) == sorted(module.__all__)


@pytest.mark.parametrize(("module", "expected"), MODULES)
def test_no_undeclared_public_names(module: ModuleType, expected: set[str]) -> None:
    """Every public-looking attribute of the module that is not a submodule is in ``__all__``."""
    stray = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and name != "annotations"  # from __future__
    }
    assert stray <= set(module.__all__)


@pytest.mark.parametrize(
    ("module", "name"),
    [
        pytest.param(module, name, id=f"{module.__name__}.{name}")
        for module, names in (
            (asyncclient, EXPECTED_PUBLIC),
            (asyncclient.testing, EXPECTED_TESTING),
        )
        for name in sorted(names - {"__version__"})
    ],
)
def test_every_public_name_has_a_docstring(module: ModuleType, name: str) -> None:
    """Each public name has its own docstring, and so do its public methods and properties."""
    obj = getattr(module, name)
    doc = inspect.getdoc(obj)
    assert doc, name
    if inspect.isclass(obj) and not issubclass(obj, BaseException):
        assert obj.__doc__, f"{name} inherits its docstring"
        for attr, member in vars(obj).items():
            if attr.startswith("_"):
                continue
            if callable(member) or isinstance(member, (property, classmethod, staticmethod)):
                assert inspect.getdoc(getattr(obj, attr)), f"{name}.{attr}"


def test_package_docstrings() -> None:
    """Both packages explain themselves in their module docstring."""
    assert asyncclient.__doc__
    assert "Client" in asyncclient.__doc__
    assert asyncclient.testing.__doc__
    assert "Emulator" in asyncclient.testing.__doc__


def test_py_typed_ships() -> None:
    """The package is marked as typed (PEP 561), so users' type checkers read its annotations."""
    marker = importlib.resources.files("asyncclient") / "py.typed"
    assert marker.is_file()


def test_version_is_a_string() -> None:
    """``__version__`` is a non-empty dotted string."""
    assert isinstance(asyncclient.__version__, str)
    parts = asyncclient.__version__.split(".")
    assert len(parts) >= 2
    assert all(part for part in parts)
