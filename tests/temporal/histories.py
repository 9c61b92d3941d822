"""Record the workflow histories that ``test_replay.py`` replays.

Run it from the repository's root after a change to the workflow has shipped, to add the new
shape of history to those every later version must replay::

    python -m tests.temporal.histories tests/temporal/histories

It starts a Temporal dev server, serves the emulator and runs in-process workers, then writes
one JSON file per workflow execution: a batch of four shards that continues as new after two
(``batch-continued-1.json``, ``batch-continued-2.json``) and a batch failed by a refused key
(``batch-refused-key-1.json``). Existing files of the same name are overwritten; keep the old
ones under another name when the workflow changes, so that both versions stay replayed.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowFailureError, WorkflowHandle

from asyncclient import Client, PollPolicy
from asyncclient.temporal import ShardActivities, SQLiteSink, create_worker, start_batch
from asyncclient.testing import Emulator, ManualClock, serve

from .services import temporal_dev_server

KEY = "history-key"
POLICY = PollPolicy(initial_delay=0.01, max_delay=0.05, strategy="per-run")


async def _executions(client: TemporalClient, handle: WorkflowHandle[Any, Any]) -> list[str]:
    """Every execution's history, following continue-as-new, as JSON."""
    histories = []
    run_id = handle.first_execution_run_id or handle.run_id
    while run_id:
        history = await client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        histories.append(history.to_json())
        last = history.events[-1]
        attributes = last.workflow_execution_continued_as_new_event_attributes
        run_id = (
            attributes.new_execution_run_id
            if last.HasField("workflow_execution_continued_as_new_event_attributes")
            else None
        )
    return histories


async def _record(address: str, workdir: Path) -> dict[str, str]:
    clock = ManualClock(start=1_776_000_000.0)
    emulator = Emulator(api_keys=(KEY,), clock=clock, seed=5)
    for _ in range(50):
        emulator.create_run(durations=[1.0, 2.0])
    clock.advance(10.0)
    ids = emulator.run_ids()
    (workdir / "ids.txt").write_text("\n".join(ids[:40]) + "\n")
    (workdir / "other.txt").write_text("\n".join(ids[40:]) + "\n")
    recorded: dict[str, str] = {}
    client = await TemporalClient.connect(address)
    async with (
        serve(emulator) as server,
        Client(KEY, base_url=server.base_url) as good,
        Client("wrong-key", base_url=server.base_url) as bad,
        SQLiteSink(workdir / "results.db") as sink,
    ):
        working = create_worker(
            client,
            ShardActivities(good, sink, policy=POLICY, flush_interval=0.01),
            task_queue="record-good",
        )
        refused = create_worker(
            client,
            ShardActivities(bad, sink, policy=POLICY, flush_interval=0.01),
            task_queue="record-bad",
        )
        async with working, refused:
            started = await start_batch(
                client,
                str(workdir / "ids.txt"),
                sink=sink,
                shards=4,
                task_queue="record-good",
                max_parallel=2,
                shards_per_run=2,
            )
            await started.workflow.result()
            for n, text in enumerate(await _executions(client, started.workflow), 1):
                recorded[f"batch-continued-{n}.json"] = text
            failing = await start_batch(
                client, str(workdir / "other.txt"), sink=sink, shards=2, task_queue="record-bad"
            )
            try:
                await failing.workflow.result()
            except WorkflowFailureError:
                pass
            else:
                raise RuntimeError("the batch with a refused key did not fail")
            for n, text in enumerate(await _executions(client, failing.workflow), 1):
                recorded[f"batch-refused-key-{n}.json"] = text
    return recorded


def main(argv: list[str]) -> int:
    """Record the histories into the directory ``argv[0]``."""
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        with temporal_dev_server(workdir) as address:
            recorded = asyncio.run(_record(address, workdir))
    for name, text in recorded.items():
        (out / name).write_text(text + "\n")
        print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
