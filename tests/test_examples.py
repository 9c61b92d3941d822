"""Every example in README.md and docs/ runs against the emulator and prints what the page shows.

A small extractor of our own, not pytest-examples or sybil: the pages follow three conventions
that fit in a hundred lines, and it needs no new dependency.

- A page's ```` ```python ```` blocks run in order in one session, as pasted into
  ``python -m asyncio``: top-level ``await`` runs on one event loop, and names carry over from
  block to block. A block that is a whole program (``anyio.run(main)``) runs as a script would.
- A block right after a ```` ```python ```` or ```` ```bash ```` block whose fence says
  ``title="Output"`` is what that block prints; ``json`` output is compared as JSON.
- A block whose first line starts with ``# Not run by the tests:`` says why, in plain sight,
  and is skipped. There are very few.

Each page runs in its own process against its own ``asyncclient emulator`` (the command the
quick start starts, on a free port and a fast clock, so runs finish before the first poll and
nothing waits for a real poll delay), with ``PREDEV_API_KEY`` and ``PREDEV_BASE_URL`` set as
the quick start says. ``bash`` blocks with an Output block run in ``bash`` with the same two
variables.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import io
import json
import os
import re
import sys
import threading
import traceback
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SKIP_MARK = "# Not run by the tests:"
DEMO_KEY = "demo-key"
# The emulator's clock runs this many times faster than real time.
SPEED = "1000000"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,})(?P<info>.*)$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int
    lang: str
    info: str
    text: str
    output: Block | None = None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def skipped(self) -> bool:
        return self.text.startswith(SKIP_MARK)


def _fences(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, ticks, info = opening["indent"], opening["ticks"], opening["info"].strip()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and lines[j].strip() != ticks:
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        lang = info.split(" ", 1)[0]
        blocks.append(Block(page, i + 1, lang, info, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def page_blocks(page: Path) -> list[Block]:
    """The page's code blocks, each ``python``/``bash`` one paired with its Output block."""
    fences = _fences(page)
    lines = page.read_text(encoding="utf-8").splitlines()
    paired: list[Block] = []
    for index, block in enumerate(fences):
        if 'title="Output"' in block.info:
            continue
        after = fences[index + 1] if index + 1 < len(fences) else None
        output = None
        if after is not None and 'title="Output"' in after.info:
            # Only blank lines between the block's closing fence and its output's fence.
            closing = block.line + block.text.count("\n")
            if all(not line.strip() for line in lines[closing + 1 : after.line - 1]):
                output = after
        paired.append(Block(block.page, block.line, block.lang, block.info, block.text, output))
    return paired


# -- the session runner (this file run as a script, in the page's own process) --------------


def _run_session(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run the blocks as ``python -m asyncio`` would, one loop for every top-level await."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    namespace: dict[str, Any] = {"__name__": "__main__"}
    results: list[dict[str, Any]] = []
    try:
        for block in blocks:
            out = io.StringIO()
            error = None
            try:
                code = compile(
                    block["text"], block["where"], "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
                )
                with contextlib.redirect_stdout(out):
                    if code.co_flags & inspect.CO_COROUTINE:
                        coroutine = eval(code, namespace)  # noqa: S307 - the docs' own code
                        asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=120)
                    else:
                        exec(code, namespace)  # noqa: S102 - the docs' own code
            except Exception:
                error = traceback.format_exc()
            results.append({"stdout": out.getvalue(), "error": error})
            if error is not None:
                break
    finally:

        async def left_over() -> list[str]:
            current = asyncio.current_task()
            return [repr(task) for task in asyncio.all_tasks() if task is not current]

        tasks = asyncio.run_coroutine_threadsafe(left_over(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
    if tasks:
        results.append({"stdout": "", "error": f"tasks left running: {tasks}"})
    return results


if __name__ == "__main__":
    source, target = sys.argv[1:3]
    Path(target).write_text(json.dumps(_run_session(json.loads(Path(source).read_text()))))
    sys.exit(0)


# -- the tests --------------------------------------------------------------------------------

import aiohttp  # noqa: E402 - the runner above needs none of the test-only imports
import anyio  # noqa: E402
import pytest  # noqa: E402

from asyncclient import APITimeoutError, Client, RetryPolicy, ServerError  # noqa: E402
from asyncclient.testing import Emulator, Fault, serve  # noqa: E402
from asyncclient.testing._examples import (  # noqa: E402
    EXAMPLE_RUN_ID,
    GET_RUN_EVENTS_EXAMPLE,
    GET_RUN_EXAMPLE,
)

pytestmark = pytest.mark.anyio


def _env(base_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDEV_")}
    env |= {"PREDEV_API_KEY": DEMO_KEY, "PREDEV_BASE_URL": base_url, "COLUMNS": "200"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


@contextlib.asynccontextmanager
async def _emulator_command() -> AsyncIterator[str]:
    """``asyncclient emulator`` on a free port; yields its base URL."""
    argv = [sys.executable, "-m", "asyncclient", "emulator", "--port", "0", "--speed", SPEED]
    async with await anyio.open_process(argv, env=_env("")) as process:
        assert process.stdout is not None
        seen = b""
        with anyio.fail_after(30):
            while b"\n" not in seen:
                seen += await process.stdout.receive()
        try:
            yield seen.split(b"\n", 1)[0].decode()
        finally:
            process.terminate()
            with anyio.fail_after(10):
                await process.wait()


def _python_pages() -> list[Any]:
    return [
        pytest.param(page, id=str(page.relative_to(ROOT)))
        for page in PAGES
        if any(b.lang == "python" for b in page_blocks(page))
    ]


def _shell_examples() -> list[Any]:
    return [
        pytest.param(block, id=block.where)
        for page in PAGES
        for block in page_blocks(page)
        if block.lang == "bash" and block.output is not None
    ]


def _same_output(block: Block, printed: str) -> None:
    assert block.output is not None
    if block.output.lang == "json":
        assert json.loads(printed) == json.loads(block.output.text), block.where
    else:
        assert printed == block.output.text, block.where


@pytest.mark.parametrize("page", _python_pages())
async def test_every_python_example_runs_and_prints_what_the_page_shows(
    page: Path, tmp_path: Path
) -> None:
    """Each page's Python blocks run in order against `asyncclient emulator`, output as shown."""
    blocks = [b for b in page_blocks(page) if b.lang == "python" and not b.skipped]
    source, target = tmp_path / "blocks.json", tmp_path / "results.json"
    work = tmp_path / "work"  # the examples' own files go here
    work.mkdir()
    source.write_text(json.dumps([{"text": b.text, "where": b.where} for b in blocks]))
    async with _emulator_command() as base_url:
        with anyio.fail_after(300):
            done = await anyio.run_process(
                [sys.executable, "-W", "error", __file__, str(source), str(target)],
                env=_env(base_url),
                cwd=work,
                check=False,
            )
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    assert "Warning" not in stderr and "Exception ignored" not in stderr, stderr
    results = json.loads(target.read_text())
    for block, result in zip(blocks, results, strict=False):
        assert result["error"] is None, f"{block.where}\n{result['error']}"
        if block.output is not None:
            _same_output(block, result["stdout"])
    assert len(results) == len(blocks), results[len(blocks) :]


@pytest.mark.parametrize("block", _shell_examples())
async def test_every_shell_example_with_output_prints_it(block: Block, tmp_path: Path) -> None:
    """A bash block that shows its output prints it, run against `asyncclient emulator`."""
    async with _emulator_command() as base_url:
        with anyio.fail_after(60):
            done = await anyio.run_process(
                ["bash", "-e", "-o", "pipefail", "-c", block.text],
                env=_env(base_url),
                cwd=tmp_path,
                check=False,
            )
    assert done.returncode == 0, done.stderr.decode()
    _same_output(block, done.stdout.decode())


def test_the_pages_have_examples_and_few_are_skipped() -> None:
    """The extractor finds the pages' examples; the few it skips say why on their first line."""
    blocks = [b for page in PAGES for b in page_blocks(page)]
    python = [b for b in blocks if b.lang == "python"]
    skipped = [b for b in python if b.skipped]
    assert len(python) >= 20
    assert len(skipped) <= 3, [b.where for b in skipped]
    assert all(len(b.text.splitlines()[0]) > len(SKIP_MARK) + 10 for b in skipped)
    assert sum(b.output is not None for b in blocks) >= 5
    assert all(b.output is None or b.lang in ("python", "bash") for b in blocks)


@pytest.mark.parametrize("page", ["README.md", "docs/quickstart.md"])
def test_the_quick_start_sets_the_variables_the_examples_run_with(page: str) -> None:
    """The quick starts start `asyncclient emulator` and export the key and URL the tests set."""
    shell = "".join(b.text for b in page_blocks(ROOT / page) if b.lang == "bash")
    assert "\nasyncclient emulator " in f"\n{shell}"
    assert f"export PREDEV_API_KEY={DEMO_KEY} PREDEV_BASE_URL=http://127.0.0.1:8765" in shell


async def test_the_emulator_answers_the_docs_example_run_as_the_docs_print_it() -> None:
    """GET of the docs' id gives the pages' two bodies on both path styles; the list omits it."""
    emulator = Emulator(api_keys=("test-key", "other-key"))
    assert emulator.add_docs_example() == EXAMPLE_RUN_ID
    emulator.populate(3)
    async with serve(emulator) as server:
        mine = {"Authorization": "Bearer test-key"}
        async with aiohttp.ClientSession(base_url=server.base_url) as http:
            for prefix in ("/browser-agent/", "/api/v1/browser-agents/"):
                path = prefix + EXAMPLE_RUN_ID
                async with http.get(path, headers=mine) as plain:
                    assert await plain.json() == GET_RUN_EXAMPLE
                async with http.get(path, headers=mine, params={"includeEvents": "true"}) as full:
                    assert await full.json() == GET_RUN_EVENTS_EXAMPLE
                upper = path.replace(EXAMPLE_RUN_ID, EXAMPLE_RUN_ID.upper())
                async with http.get(upper, headers=mine) as shouting:
                    assert await shouting.json() == GET_RUN_EXAMPLE
                other = {"Authorization": "Bearer other-key"}
                async with http.get(path, headers=other) as theirs:
                    assert theirs.status == 404
            async with http.get("/list-browser-agents", headers=mine) as listed:
                page = await listed.json()
    assert page["total"] == 3
    assert EXAMPLE_RUN_ID not in [row["id"] for row in page["batches"]]
    assert EXAMPLE_RUN_ID not in emulator.run_ids()


# -- claims of the pages that no other test states ----------------------------------------------


async def test_a_walk_of_ten_thousand_runs_costs_103_requests() -> None:
    """README and history guide: walking 10,000 runs takes 103 list requests (1.03 per 100)."""
    emulator = Emulator(api_keys=("test-key",))
    emulator.populate(10_000, event_bytes=0)
    async with serve(emulator) as server:
        async with Client(server.api_key, base_url=server.base_url) as client:
            walk = client.iter_runs()
            ids = [run.id async for run in walk]
    assert len(set(ids)) == len(ids) == 10_000
    assert walk.requests == emulator.requests_by_route["list"] == 103


def _module_file(package: Path, module: str) -> Path:
    """The file of a relative import's module: ``_x.py``, or ``_x/__init__.py``."""
    path = package.joinpath(*module.split("."))
    return path.with_suffix(".py") if path.with_suffix(".py").exists() else path / "__init__.py"


def _documented(module: Path, name: str) -> bool:
    """Whether ``name`` is defined in ``module`` (or where it imports it from) with a docstring.

    An attribute's docstring is the string right after it.
    """
    body = ast.parse(module.read_text(encoding="utf-8")).body
    for index, node in enumerate(body):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.name == name:
                return bool(ast.get_docstring(node))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                after = body[index + 1] if index + 1 < len(body) else None
                return (
                    isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)
                )
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level >= 1
            and node.module
            and any((alias.asname or alias.name) == name for alias in node.names)
        ):
            package = module.parents[node.level - 1]  # ``.`` is this package, ``..`` its parent
            return _documented(_module_file(package, node.module), name)
    return False


@pytest.mark.parametrize("package", ["asyncclient", "asyncclient/testing", "asyncclient/temporal"])
def test_every_public_name_has_a_docstring_for_the_reference(package: str) -> None:
    """Each name of the package's __all__ is defined with a docstring, which the reference shows."""
    init = ROOT / package / "__init__.py"
    tree = ast.parse(init.read_text(encoding="utf-8"))
    public = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
    )
    # __version__ is shown with its value; the reference page names it.
    undocumented = [
        name for name in public if name != "__version__" and not _documented(init, name)
    ]
    assert undocumented == []
    assert len(public) >= 9


async def test_the_retry_budget_spends_and_refunds_as_the_pages_say() -> None:
    """A retry costs 5 tokens (10 after a timeout); a success refunds 1, or its retries' cost."""
    emulator = Emulator(api_keys=("test-key",))
    run_id = emulator.create_run(n_tasks=1)
    retry = RetryPolicy(
        max_retries=2, initial_delay=0.001, max_delay=0.005, budget=100, retry_cost=5
    )
    faults = emulator.faults
    async with serve(emulator) as server:
        async with Client(server.api_key, base_url=server.base_url, retry=retry, timeout=0.5) as c:
            budget = c._transport.budget
            assert budget is not None
            faults.add(Fault("status", status=503, times=3))
            with pytest.raises(ServerError):
                await c.get_run(run_id)  # two retries, both failed: 10 tokens, none back
            assert budget.tokens == 90
            await c.get_run(run_id)  # at once: one back
            assert budget.tokens == 91
            faults.add(Fault("status", status=503, times=1))
            await c.get_run(run_id)  # one retry, then success: its 5 come back
            assert budget.tokens == 91
            faults.add(Fault("stall", delay=5.0, times=3))
            with pytest.raises(APITimeoutError):
                await c.get_run(run_id)  # two retries after timeouts: 20 tokens
            assert budget.tokens == 71
