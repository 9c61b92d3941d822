"""Scale out on Temporal: watch very many runs on many workers, each result stored once.

Install with ``pip install 'asyncclient[temporal]'``. The pieces, one module each:

- a planner (:func:`plan_batch`) names the batch after its ids file and its sink and cuts it
  into shards by a stable hash; shards travel as small descriptors (:class:`ShardSpec`), never
  as lists of ids;
- a workflow (:class:`WatchBatchWorkflow`) runs one activity per shard, a bounded number at a
  time, and continues as new past a few hundred shards;
- the activity (:class:`ShardActivities`) watches one shard with the SDK's poller, skips what
  the sink holds, stores each result and heartbeats its progress; after a crash the next
  attempt resumes where the sink says;
- a sink (:class:`Sink`: :class:`SQLiteSink`, :class:`PostgresSink`) stores a run's result only
  if nobody stored it yet, atomically: Temporal runs activities at least once, the sink makes
  it exactly once;
- :func:`start_batch` starts a batch once (a second start raises
  :class:`BatchAlreadyStartedError`), :func:`create_worker` builds a worker.

::

    python -m asyncclient.temporal worker --sink postgresql://app@db/results  # on each machine
    python -m asyncclient.temporal watch --ids-file ids.txt --sink postgresql://app@db/results
"""

from __future__ import annotations

try:
    import temporalio  # noqa: F401 - only to say what is missing, below
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "asyncclient.temporal needs the temporal extra: pip install 'asyncclient[temporal]'"
    ) from exc

from ._activities import ShardActivities, ShardProgress, ShardResult
from ._cli import watch_main, worker_main
from ._exceptions import BatchAlreadyStartedError, BatchError, BatchInputError, SinkError
from ._planner import BatchSpec, ShardSpec, batch_id_for, load_shard, plan_batch, read_ids, shard_of
from ._sinks import (
    AttemptRecord,
    PostgresSink,
    RunResult,
    Sink,
    SQLiteSink,
    StoredBy,
    StoredResult,
    open_sink,
    sink_name,
)
from ._starter import DEFAULT_TASK_QUEUE, StartedBatch, start_batch
from ._worker import create_worker
from ._workflows import BatchInput, BatchProgress, BatchResult, WatchBatchWorkflow

__all__ = [
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
]
