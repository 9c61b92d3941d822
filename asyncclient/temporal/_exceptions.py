"""The errors of the Temporal extra, under the package's one base::

    PredevError
    └── BatchError                   a batch could not be planned, started or stored
        ├── BatchInputError          the ids file is unreadable, holds a bad id, or has changed
        ├── BatchAlreadyStartedError this batch is running, or completed before
        └── SinkError                the result store failed or refused its configuration

None of them holds a password: sink addresses are shown with the password removed.
"""

from __future__ import annotations

from .._exceptions import PredevError

__all__ = ["BatchAlreadyStartedError", "BatchError", "BatchInputError", "SinkError"]


class BatchError(PredevError):
    """Base class of the errors of :mod:`asyncclient.temporal`."""


class BatchInputError(BatchError, ValueError):
    """The ids file cannot be used: unreadable, a line that is not a run id, or changed since
    the batch was planned (its digest no longer matches)."""


class BatchAlreadyStartedError(BatchError):
    """The batch's workflow id is taken: the same ids file into the same sink is running, or
    completed (a failed, terminated or cancelled batch can be started again).

    Starting it again would watch every run twice; follow the first one instead.

    Attributes:
        batch_id: the batch (derived from the ids file's content and the sink).
        workflow_id: the Temporal workflow id that is taken.
        run_id: the Temporal run id of the existing execution, when the server said.
    """

    def __init__(self, batch_id: str, workflow_id: str, run_id: str | None = None) -> None:
        super().__init__(
            f"batch {batch_id} was already started (workflow id {workflow_id!r}"
            + (f", run {run_id}" if run_id else "")
            + "); a running or completed batch is not started twice: follow it, or use "
            "another sink"
        )
        self.batch_id = batch_id
        self.workflow_id = workflow_id
        self.run_id = run_id


class SinkError(BatchError):
    """The result store failed (the database's own error is the ``__cause__``), or its address
    is not one this package knows."""
