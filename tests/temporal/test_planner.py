"""The planner: a stable hash, balanced shards, small descriptors, and a batch id per content."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from temporalio.converter import DataConverter

from asyncclient.temporal import (
    BatchInputError,
    batch_id_for,
    load_shard,
    plan_batch,
    read_ids,
    shard_of,
)
from asyncclient.temporal import _planner as planner
from asyncclient.temporal._planner import parse_ids
from asyncclient.temporal._workflows import BatchInput

SINK = "sqlite:////tmp/results.db"


def _ids(n: int, *, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.getrandbits(96):024x}" for _ in range(n)]


def _write(path: Path, ids: list[str]) -> Path:
    path.write_text("\n".join(ids) + "\n")
    return path


@pytest.mark.parametrize(
    ("run_id", "shards", "expected"),
    [
        pytest.param("65f8a9d2c1e4b5a6f7e8d9c0", 10, 4, id="ten"),
        pytest.param("65f8a9d2c1e4b5a6f7e8d9c0", 7, 6, id="seven"),
        pytest.param("000000000000000000000000", 10, 1, id="zeros"),
        pytest.param("65F8A9D2C1E4B5A6F7E8D9C0", 10, 4, id="upper-case-same-shard"),
        pytest.param("65f8a9d2c1e4b5a6f7e8d9c0", 1, 0, id="one-shard"),
    ],
)
def test_shard_of_is_a_fixed_function_of_the_id(run_id: str, shards: int, expected: int) -> None:
    """The shard of an id is pinned: BLAKE2b of the lower-cased id, mod the shard count."""
    assert shard_of(run_id, shards) == expected


def test_shard_of_is_the_same_in_other_processes_whatever_their_hash_seed() -> None:
    """Workers in other processes (other PYTHONHASHSEED) put each id in the same shard."""
    ids = _ids(200)
    here = [shard_of(run_id, 10) for run_id in ids]
    code = (
        "import sys; from asyncclient.temporal import shard_of; "
        "print(','.join(str(shard_of(i, 10)) for i in sys.argv[1:]))"
    )
    for seed in ("1", "2"):
        out = subprocess.run(  # noqa: S603 - our own interpreter and code
            [sys.executable, "-c", code, *ids],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        assert [int(x) for x in out.strip().split(",")] == here


@pytest.mark.parametrize("shards", [pytest.param(n, id=f"{n}-shards") for n in (2, 10, 64)])
def test_shards_are_balanced(shards: int) -> None:
    """20,000 ids spread over the shards as evenly as chance allows: every shard within five
    standard deviations of an even split, and a chi-square statistic of a uniform spread."""
    counts = Counter(shard_of(run_id, shards) for run_id in _ids(20_000, seed=shards))
    even = 20_000 / shards
    assert len(counts) == shards
    assert all(abs(count - even) < 5 * even**0.5 for count in counts.values())
    chi_square = sum((count - even) ** 2 / even for count in counts.values())
    assert chi_square < 2 * (shards - 1) + 10


def test_shards_partition_the_ids_file(tmp_path: Path) -> None:
    """The shards of a batch are disjoint and together hold every id of the file, once."""
    ids = _ids(3_000)
    spec = plan_batch(_write(tmp_path / "ids.txt", ids), shards=7, sink=SINK)
    shards = [load_shard(spec.shard(i)) for i in range(7)]
    assert sum(len(s) for s in shards) == len(ids)
    assert {run_id for s in shards for run_id in s} == set(ids)
    assert spec.total == len(ids)
    with pytest.raises(IndexError):
        spec.shard(7)


@pytest.mark.parametrize("n", [pytest.param(10, id="10-ids"), pytest.param(200_000, id="200k")])
def test_descriptors_stay_small_whatever_the_batch_size(tmp_path: Path, n: int) -> None:
    """What goes to Temporal (the workflow input, one shard) is under 2 KB for any batch."""
    spec = plan_batch(_write(tmp_path / "ids.txt", _ids(n)), shards=10, sink=SINK)
    converter = DataConverter.default.payload_converter
    for value in (BatchInput(batch=spec), spec.shard(9)):
        payload = converter.to_payloads([value])[0]
        assert len(payload.data) < 2_000


def test_parse_ids_skips_blanks_and_comments_and_keeps_each_id_once() -> None:
    """Blank lines, comments and repeats are skipped; ids are lower-cased."""
    content = b"# runs of Monday\n\n  65F8A9D2C1E4B5A6F7E8D9C0  \n65f8a9d2c1e4b5a6f7e8d9c0\n" + (
        b"000000000000000000000001\r\n"
    )
    assert parse_ids(content) == ["65f8a9d2c1e4b5a6f7e8d9c0", "000000000000000000000001"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"65f8a9d2c1e4b5a6f7e8d9c0\nnot-an-id\n", "line 2", id="bad-line"),
        pytest.param(b"\xff\xfe", "UTF-8", id="not-utf8"),
    ],
)
def test_parse_ids_names_the_bad_line(content: bytes, message: str) -> None:
    """A line that is not a run id is refused, naming its line."""
    with pytest.raises(BatchInputError, match=message):
        parse_ids(content)


def test_an_unreadable_or_empty_ids_file_is_refused(tmp_path: Path) -> None:
    """A missing file or one without ids cannot be planned."""
    with pytest.raises(BatchInputError, match="cannot read"):
        read_ids(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(BatchInputError, match="no run id"):
        plan_batch(tmp_path / "empty.txt", shards=2, sink=SINK)


@pytest.mark.parametrize("shards", [0, -1, 100_001, True])
def test_a_shard_count_out_of_range_is_refused(tmp_path: Path, shards: int) -> None:
    """Shard counts outside 1..100000 are refused."""
    path = _write(tmp_path / "ids.txt", _ids(3))
    with pytest.raises(ValueError, match="shards"):
        plan_batch(path, shards=shards, sink=SINK)


def test_the_batch_id_follows_content_and_sink_not_path_or_shards(tmp_path: Path) -> None:
    """Same content into the same sink is the same batch, wherever the file is and however cut."""
    ids = _ids(50)
    a = plan_batch(_write(tmp_path / "a.txt", ids), shards=5, sink=SINK)
    b = plan_batch(_write(tmp_path / "b.txt", ids), shards=9, sink=SINK)
    other_sink = plan_batch(tmp_path / "a.txt", shards=5, sink="sqlite:////tmp/other.db")
    other_ids = plan_batch(_write(tmp_path / "c.txt", ids[:-1]), shards=5, sink=SINK)
    assert a.batch_id == b.batch_id == batch_id_for(a.ids_digest, SINK)
    assert a.workflow_id == f"predev-batch-{a.batch_id}"
    assert len({a.batch_id, other_sink.batch_id, other_ids.batch_id}) == 3


def test_a_worker_cuts_a_batch_into_shards_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading every shard of a batch hashes each id once, not once per shard."""
    calls = Counter[int]()
    real = planner.shard_of

    def counting(run_id: str, shards: int) -> int:
        calls[shards] += 1
        return real(run_id, shards)

    monkeypatch.setattr(planner, "shard_of", counting)
    spec = plan_batch(_write(tmp_path / "ids.txt", _ids(500)), shards=20, sink=SINK)
    for index in range(20):
        load_shard(spec.shard(index))
    assert calls[20] == 500


def test_a_changed_ids_file_is_refused_by_its_shards(tmp_path: Path) -> None:
    """A worker refuses a shard whose ids file no longer holds what was planned."""
    path = _write(tmp_path / "ids.txt", _ids(20))
    spec = plan_batch(path, shards=2, sink=SINK)
    _write(path, _ids(21))
    with pytest.raises(BatchInputError, match="changed since"):
        load_shard(spec.shard(0))
