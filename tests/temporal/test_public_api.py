"""The public surface of asyncclient.temporal: exactly what is meant, documented."""

from __future__ import annotations

import inspect

import asyncclient.temporal

EXPECTED = {
    "DEFAULT_TASK_QUEUE",
    "AttemptRecord",
    "BatchAlreadyStartedError",
    "BatchError",
    "BatchInput",
    "BatchInputError",
    "BatchProgress",
    "BatchResult",
    "BatchSpec",
    "PostgresSink",
    "RunResult",
    "SQLiteSink",
    "ShardActivities",
    "ShardProgress",
    "ShardResult",
    "ShardSpec",
    "Sink",
    "SinkError",
    "StartedBatch",
    "StoredBy",
    "StoredResult",
    "WatchBatchWorkflow",
    "batch_id_for",
    "create_worker",
    "load_shard",
    "open_sink",
    "plan_batch",
    "read_ids",
    "shard_of",
    "sink_name",
    "start_batch",
    "watch_main",
    "worker_main",
}


def _isort_style(name: str) -> tuple[int, str]:
    # Constants, then classes, then functions: the order ruff keeps __all__ in (RUF022).
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_exactly_the_public_names_sorted() -> None:
    """__all__ lists the intended names, sorted, and each is importable."""
    names = asyncclient.temporal.__all__
    assert set(names) == EXPECTED
    assert names == sorted(names, key=_isort_style)
    for name in names:
        assert hasattr(asyncclient.temporal, name)


def test_every_public_class_and_function_has_a_docstring() -> None:
    """Public classes (their own docstring), functions, methods and properties say what they do."""
    for name in EXPECTED - {"DEFAULT_TASK_QUEUE"}:
        value = getattr(asyncclient.temporal, name)
        assert inspect.getdoc(value), name
        if inspect.isclass(value) and not issubclass(value, BaseException):
            assert value.__doc__, f"{name} inherits its docstring"
        if inspect.isclass(value):
            for attr, member in vars(value).items():
                if attr.startswith("_"):
                    continue
                if callable(member) or isinstance(member, (property, classmethod, staticmethod)):
                    assert inspect.getdoc(getattr(value, attr)), f"{name}.{attr}"


def test_no_undeclared_public_names() -> None:
    """Every public-looking attribute of the package that is not a submodule is in __all__."""
    stray = {
        name
        for name, value in vars(asyncclient.temporal).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert stray <= set(asyncclient.temporal.__all__)


def test_the_errors_join_the_package_error_tree() -> None:
    """Every error of the extra is a PredevError; bad input is also a ValueError."""
    assert issubclass(asyncclient.temporal.BatchError, asyncclient.PredevError)
    for name in ("BatchAlreadyStartedError", "BatchInputError", "SinkError"):
        assert issubclass(getattr(asyncclient.temporal, name), asyncclient.temporal.BatchError)
    assert issubclass(asyncclient.temporal.BatchInputError, ValueError)
