"""Task specs checked before anything is sent, and the submit body they become."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from asyncclient import Client, TaskSpec
from asyncclient._tasks import encode_submit, validate_concurrency, validate_tasks
from asyncclient.testing import Emulator

pytestmark = pytest.mark.anyio

URL = "https://example.com"


def tasks(n: int) -> list[dict[str, Any]]:
    """``n`` simple tasks."""
    return [{"url": f"{URL}/{i}", "instruction": f"Task {i}."} for i in range(n)]


# -- refused before sending --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        pytest.param([], "tasks is empty", id="empty"),
        pytest.param(URL, "not a single str", id="a-string"),
        pytest.param({"url": URL}, "not a single dict", id="a-single-dict"),
        pytest.param(TaskSpec(url=URL), "not a single TaskSpec", id="a-single-spec"),
        pytest.param(42, "got int", id="not-iterable"),
        pytest.param([42], r"tasks\[0\]: a task is a TaskSpec or a dict", id="not-a-task"),
        pytest.param([{"instruction": "x"}], r"tasks\[0\]: a task needs a url", id="no-url"),
        pytest.param([{"url": ""}], r"tasks\[0\]: a task needs a url", id="empty-url"),
        pytest.param([{"url": 5}], r"tasks\[0\]: Expected `str`", id="url-not-str"),
        pytest.param([TaskSpec(url=5)], r"tasks\[0\]: url must be a str", id="spec-url-not-str"),  # type: ignore[arg-type]
        pytest.param([{"url": "ftp://x.org"}], "http:// or https://", id="ftp-url"),
        pytest.param([{"url": "example.com"}], "http:// or https://", id="no-scheme"),
        pytest.param([{"url": "javascript:alert(1)"}], "http:// or https://", id="javascript"),
        pytest.param([{"url": "https://"}], "no host", id="no-host"),
        pytest.param([{"url": "https://a b.com"}], "whitespace", id="whitespace"),
        pytest.param(
            [{"url": URL, "instructions": "typo"}], "unknown field `instructions`", id="typo"
        ),
        pytest.param([{"url": URL, "input": {"a": 1}}], r"Expected `str`", id="input-not-str"),
        pytest.param(
            [TaskSpec(url=URL, input={"a": 1})],  # type: ignore[dict-item]
            "input must map str to str",
            id="spec-input-not-str",
        ),
        pytest.param([{"url": URL, "output": "schema"}], "output must be a JSON", id="output-str"),
        pytest.param(
            [TaskSpec(url=URL, output=["a"])],  # type: ignore[arg-type]
            r"tasks\[0\]: output must be a JSON Schema object",
            id="spec-output-list",
        ),
        pytest.param(
            [TaskSpec(url=URL, output={"x": object()})],
            r"tasks\[0\]: output is not JSON",
            id="output-not-json",
        ),
        pytest.param(
            [{"url": URL}, {"url": URL}, {"url": "nope"}], r"tasks\[2\]", id="names-the-index"
        ),
    ],
)
async def test_bad_tasks_are_refused_unsent(
    client: Client, emulator: Emulator, bad: Any, message: str
) -> None:
    """Every bad task list is a ``ValueError`` naming the task, on every call, before sending."""
    with pytest.raises(ValueError, match=message):
        await client.submit(bad)
    with pytest.raises(ValueError, match=message):
        await client.run(bad)
    with pytest.raises(ValueError, match=message):
        client.stream(bad)
    assert client.requests_sent == emulator.request_count == 0


@pytest.mark.parametrize(
    "concurrency",
    [
        pytest.param(0, id="zero"),
        pytest.param(21, id="above-20"),
        pytest.param(-1, id="negative"),
        pytest.param(2.5, id="float"),
        pytest.param(True, id="bool"),
        pytest.param("5", id="string"),
    ],
)
async def test_bad_concurrency_is_refused_unsent(
    client: Client, emulator: Emulator, concurrency: Any
) -> None:
    """``concurrency`` outside 1..20, or not an ``int``, is refused before sending."""
    with pytest.raises(ValueError, match="concurrency"):
        await client.submit(tasks(1), concurrency=concurrency)
    with pytest.raises(ValueError, match="concurrency"):
        await client.run(tasks(1), concurrency=concurrency)
    with pytest.raises(ValueError, match="concurrency"):
        client.stream(tasks(1), concurrency=concurrency)
    assert emulator.request_count == 0


@pytest.mark.parametrize("concurrency", [pytest.param(1, id="low"), pytest.param(20, id="high")])
def test_concurrency_limits_are_accepted(concurrency: int) -> None:
    """1 and 20 are the inclusive bounds of ``concurrency``, and reach the body as given."""
    body = encode_submit(validate_tasks(tasks(1)), validate_concurrency(concurrency), stream=True)
    assert msgspec.json.decode(body)["concurrency"] == concurrency
