"""A deploy must not break running batches: the current workflow replays recorded histories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from asyncclient.temporal import WatchBatchWorkflow
from asyncclient.temporal._worker import _sandbox_runner

pytestmark = pytest.mark.anyio

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))
TEXTS = {path.stem: path.read_text() for path in HISTORIES}


def _events(path: Path) -> list[str]:
    return [next(iter(k for k in event if k.endswith("EventAttributes"))) for event in
            json.loads(path.read_text())["events"]]  # fmt: skip


def test_the_recorded_histories_cover_continue_as_new_and_a_failed_batch() -> None:
    """The histories replayed hold an execution that continued as new and a failed batch."""
    kinds = {kind for path in HISTORIES for kind in _events(path)}
    assert "workflowExecutionContinuedAsNewEventAttributes" in kinds
    assert "workflowExecutionFailedEventAttributes" in kinds
    assert "activityTaskFailedEventAttributes" in kinds


@pytest.mark.parametrize("path", HISTORIES, ids=[path.stem for path in HISTORIES])
async def test_the_workflow_replays_a_recorded_history(path: Path) -> None:
    """Today's workflow, in the worker's sandbox, makes the same decisions as the recorded
    run did: a change that would break a running batch fails here."""
    history = WorkflowHistory.from_json(path.stem, TEXTS[path.stem])
    replayer = Replayer(workflows=[WatchBatchWorkflow], workflow_runner=_sandbox_runner())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None


def test_the_sandbox_shares_libraries_but_loads_the_workflow_itself() -> None:
    """Workflow runs reuse the worker's aiohttp, anyio, msgspec and this package's modules,
    while the workflow's own module is still loaded afresh in the sandbox to guard it."""
    passed = _sandbox_runner().restrictions.passthrough_modules
    assert {"aiohttp", "anyio", "msgspec", "asyncclient._client"} <= passed
    assert "asyncclient.temporal._activities" in passed
    assert WatchBatchWorkflow.__module__ not in passed
    assert not any(WatchBatchWorkflow.__module__.startswith(name + ".") for name in passed)
    assert "asyncclient" not in passed
    assert "asyncclient.temporal" not in passed
