"""Fuzzing with hypothesis: only well-formed arguments are accepted, requests only ever go to the
two endpoints, and any JSON at all decodes to a model or to a decode error, never a crash."""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import math
import string
from collections.abc import AsyncIterator
from dataclasses import fields
from typing import Any

import msgspec
import pytest
from _support import serve_handler
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from asyncclient import (
    Client,
    NotFoundError,
    PollPolicy,
    ResponseDecodeError,
    RetryPolicy,
    Run,
    RunPage,
    RunStatus,
)
from asyncclient._models import run_decoder, run_page_decoder
from asyncclient.testing import Emulator, EmulatorServer, ManualClock, serve

pytestmark = pytest.mark.anyio

KEY = "sk-test-FUZZ-6a1f0e"
HEX = "0123456789abcdefABCDEF"
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
QUICK = settings(max_examples=200, deadline=None)


@pytest.fixture
async def emulator() -> Emulator:
    """An emulator with a few runs, some finished."""
    emu = Emulator(api_keys=(KEY,), clock=ManualClock(), seed=4)
    emu.populate(12, max_duration=5.0)
    return emu


@pytest.fixture
async def server(emulator: Emulator) -> AsyncIterator[EmulatorServer]:
    """The emulator on loopback."""
    async with serve(emulator) as running:
        yield running


@pytest.fixture
async def paths(emulator: Emulator) -> list[tuple[str, dict[str, str]]]:
    """Every request's raw path and query, as the server saw it (faulted or not, any route)."""
    seen: list[tuple[str, dict[str, str]]] = []
    emulator.faults.on_request = lambda route, request, fault: seen.append(
        (request.raw_path.partition("?")[0], dict(request.query))
    )
    return seen


@pytest.fixture(params=["legacy", "v1"])
async def api(request: pytest.FixtureRequest, server: EmulatorServer) -> AsyncIterator[Client]:
    """A client of the emulator, with either path style."""
    async with Client(KEY, base_url=server.base_url, routes=request.param, max_retries=0) as client:
        yield client


def endpoints(client: Client) -> tuple[str, str]:
    """The run prefix and the list path of the client's path style."""
    if client.routes == "v1":
        return "/api/v1/browser-agents/", "/api/v1/browser-agents"
    return "/browser-agent/", "/list-browser-agents"


# -- run ids -----------------------------------------------------------------------------------

run_ids = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=HEX, min_size=22, max_size=26),
    st.from_regex(r"[0-9a-fA-F]{24}", fullmatch=True),
    st.from_regex(r"[0-9a-f]{24}[\n/?#%. ]", fullmatch=True),
    st.from_regex(r"[/?#%.\\ ][0-9a-f]{23}", fullmatch=True),
    st.sampled_from(["../list-browser-agents?x=", "%2e%2e%2f" * 3, "٠" * 24, "０" * 24]),
    st.integers(),
    st.none(),
    st.binary(min_size=24, max_size=24),
)


def is_run_id(value: object) -> bool:
    """Exactly 24 ASCII hexadecimal characters."""
    return isinstance(value, str) and len(value) == 24 and all(ch in HEX for ch in value)


@FUZZ
@given(run_id=run_ids)
async def test_only_well_formed_run_ids_reach_the_server(
    api: Client, paths: list[tuple[str, dict[str, str]]], run_id: Any
) -> None:
    """A bad id is a ValueError with no request; a good one is one GET of exactly its path."""
    paths.clear()
    prefix, _ = endpoints(api)
    if not is_run_id(run_id):
        with pytest.raises(ValueError, match="run_id"):
            await api.get_run(run_id)
        assert paths == []
        return
    try:
        run = await api.get_run(run_id)
    except NotFoundError:
        pass
    else:
        assert run.id.lower() == run_id.lower()
    assert paths == [(prefix + run_id, {})]


# -- list arguments ----------------------------------------------------------------------------

numbers = st.one_of(
    st.integers(min_value=-5, max_value=130),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.booleans(),
    st.floats(),
    st.none(),
    st.text(max_size=4),
)
statuses = st.one_of(
    st.none(),
    st.sampled_from(["processing", "completed", "failed", "PROCESSING", "", " completed"]),
    st.sampled_from(list(RunStatus)),
    st.text(max_size=12),
    st.integers(),
)


def well_formed_int(value: object, low: int, high: int | None) -> bool:
    """An int (not a bool) within ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    return value >= low and (high is None or value <= high)


def well_formed_status(value: object) -> bool:
    """None, or one of the two filters the API has (as a string or a RunStatus)."""
    if value is None:
        return True
    if isinstance(value, RunStatus):
        value = value.value
    return value in ("processing", "completed")


@FUZZ
@given(limit=numbers, skip=numbers, status=statuses)
async def test_list_arguments_are_checked_before_the_request(
    api: Client,
    paths: list[tuple[str, dict[str, str]]],
    limit: Any,
    skip: Any,
    status: Any,
) -> None:
    """Out-of-range list arguments are refused locally; good ones become exactly one request."""
    paths.clear()
    _, list_path = endpoints(api)
    valid = (
        well_formed_int(limit, 1, 100)
        and well_formed_int(skip, 0, None)
        and well_formed_status(status)
    )
    if not valid:
        with pytest.raises(ValueError):  # noqa: PT011 - which argument depends on the example
            await api.list_runs(limit=limit, skip=skip, status=status)
        assert paths == []
        return
    page = await api.list_runs(limit=limit, skip=skip, status=status)
    assert len(page.runs) <= limit
    query = {"limit": str(limit), "skip": str(skip)}
    if status is not None:
        query["status"] = RunStatus(status).value
    assert paths == [(list_path, query)]


@FUZZ
@given(page_size=numbers, limit=st.one_of(st.none(), numbers), status=statuses)
async def test_walks_only_ever_read_the_list_endpoint(
    api: Client,
    paths: list[tuple[str, dict[str, str]]],
    page_size: Any,
    limit: Any,
    status: Any,
) -> None:
    """``iter_runs`` refuses bad arguments at once; a good walk reads only the list path."""
    paths.clear()
    _, list_path = endpoints(api)
    valid = (
        well_formed_int(page_size, 2, 100)
        and (limit is None or well_formed_int(limit, 0, None))
        and well_formed_status(status)
    )
    if not valid:
        with pytest.raises(ValueError):  # noqa: PT011 - which argument depends on the example
            api.iter_runs(page_size=page_size, limit=limit, status=status)
        assert paths == []
        return
    runs = [run async for run in api.iter_runs(page_size=page_size, limit=limit, status=status)]
    assert len({run.id for run in runs}) == len(runs)
    if limit is not None:
        assert len(runs) <= limit
    assert {path for path, _ in paths} <= {list_path}


# -- policies ----------------------------------------------------------------------------------

policy_values = st.one_of(
    st.floats(),
    st.integers(min_value=-3, max_value=2_000_000),
    st.sampled_from([0, 1, 10**15, 2**63]),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.sampled_from(["auto", "per-run", "list", "fast"]),
)


def number(value: object, *, positive: bool = False, at_least: float = 0.0) -> bool:
    """A finite int or float (not a bool) >= ``at_least`` (> 0 if ``positive``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        as_float = float(value)
    except OverflowError:
        return False
    if not math.isfinite(as_float):
        return False
    return as_float > 0 if positive else as_float >= at_least


def poll_policy_is_well_formed(kw: dict[str, Any]) -> bool:
    """The documented bounds of every PollPolicy field, with its defaults filled in."""
    values: dict[str, Any] = {f.name: f.default for f in fields(PollPolicy) if f.init}
    values.update(kw)
    return (
        number(values["initial_delay"], positive=True)
        and number(values["multiplier"], at_least=1.0)
        and number(values["max_delay"], positive=True)
        and number(values["jitter"])
        and values["jitter"] < 1
        and values["max_delay"] >= values["initial_delay"]
        and well_formed_int(values["max_in_flight"], 1, 10_000)
        and (values["run_timeout"] is None or number(values["run_timeout"], positive=True))
        and (values["timeout"] is None or number(values["timeout"], positive=True))
        and (values["max_outage"] is None or number(values["max_outage"], positive=True))
        and number(values["not_found_grace"])
        and well_formed_int(values["buffer_size"], 1, 1_000_000)
        and well_formed_int(values["max_failed_polls"], 1, 1_000_000)
        and values["strategy"] in ("auto", "per-run", "list")
    )


def retry_policy_is_well_formed(kw: dict[str, Any]) -> bool:
    """The documented bounds of every RetryPolicy field, with its defaults filled in."""
    values: dict[str, Any] = {f.name: f.default for f in fields(RetryPolicy) if f.init}
    values.update(kw)
    return (
        well_formed_int(values["max_retries"], 0, 100)
        and number(values["initial_delay"])
        and number(values["multiplier"], at_least=1.0)
        and number(values["max_delay"])
        and number(values["max_retry_after"])
        and (values["budget"] is None or well_formed_int(values["budget"], 0, None))
        and well_formed_int(values["retry_cost"], 0, None)
        and values["max_delay"] >= values["initial_delay"]
    )


POLL_FIELDS = [f.name for f in fields(PollPolicy) if f.init]
RETRY_FIELDS = [f.name for f in fields(RetryPolicy) if f.init]


@pytest.mark.parametrize(
    ("policy", "name"),
    [
        pytest.param(PollPolicy, "initial_delay", id="poll-initial_delay"),
        pytest.param(RetryPolicy, "max_delay", id="retry-max_delay"),
    ],
)
def test_an_int_too_large_for_a_float_is_a_value_error(
    policy: type[PollPolicy | RetryPolicy], name: str
) -> None:
    """An integer beyond float range is refused like every bad value: ValueError, not a crash."""
    with pytest.raises(ValueError, match=name):
        policy(**{name: 10**400})  # type: ignore[arg-type]


@QUICK
@given(kw=st.dictionaries(st.sampled_from(POLL_FIELDS), policy_values, max_size=4))
def test_poll_policy_accepts_only_well_formed_values(kw: dict[str, Any]) -> None:
    """A PollPolicy is made only from in-range numbers; anything else is a ValueError."""
    if not poll_policy_is_well_formed(kw):
        with pytest.raises(ValueError):  # noqa: PT011 - which field depends on the example
            PollPolicy(**kw)
        return
    policy = PollPolicy(**kw)
    schedule = policy.schedule
    assert schedule[-1] == pytest.approx(policy.max_delay)
    assert all(a <= b * (1 + 1e-9) for a, b in itertools.pairwise(schedule))
    for attempt in (0, 1, len(schedule), 10_000):
        for rand in (0.0, 0.5, 0.999):
            delay = policy.delay(attempt, lambda rand=rand: rand)  # type: ignore[misc]
            assert 0 < delay <= policy.max_delay * (1 + 1e-9)


@QUICK
@given(kw=st.dictionaries(st.sampled_from(RETRY_FIELDS), policy_values, max_size=4))
def test_retry_policy_accepts_only_well_formed_values(kw: dict[str, Any]) -> None:
    """A RetryPolicy is made only from in-range numbers; anything else is a ValueError."""
    if not retry_policy_is_well_formed(kw):
        with pytest.raises(ValueError):  # noqa: PT011 - which field depends on the example
            RetryPolicy(**kw)
        return
    policy = RetryPolicy(**kw)
    next_delay = policy.delays()
    for _ in range(8):
        assert 0 <= next_delay() <= policy.max_delay


# -- base URLs ---------------------------------------------------------------------------------

LOOPBACK = ["localhost", "127.0.0.1", "127.9.8.7", "[::1]", "LOCALHOST"]
REMOTE = ["api.pre.dev", "localhost.evil.com", "127.0.0.1.nip.io", "10.0.0.1", "[::ffff:7f00:1]"]


def _same_host(written: str, expected: str) -> bool:
    """One host, however it is spelled (3.13 writes ``::ffff:7f00:1`` as ``::ffff:127.0.0.1``)."""
    try:
        return ipaddress.ip_address(written) == ipaddress.ip_address(expected)
    except ValueError:
        return written.lower() == expected


@st.composite
def base_urls(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A URL assembled from parts, with what it was made of."""
    scheme = draw(st.sampled_from(["https", "http", "HTTPS", "ftp", "ws", ""]))
    host = draw(st.sampled_from(LOOPBACK + REMOTE + ["", "evil.com"]))
    user = draw(st.sampled_from(["", "user@", "user:pw@", f"{KEY}@", "localhost@"]))
    port = draw(st.sampled_from(["", ":8080", ":0", ":99999", ":x"]))
    path = draw(st.sampled_from(["", "/", "/api", "/a/../b", "/%2e%2e/", "/ x"]))
    query = draw(st.sampled_from(["", "?", "?k=v"]))
    fragment = draw(st.sampled_from(["", "#", "#f"]))
    text = f"{scheme}://{user}{host}{port}{path}{query}{fragment}"
    parts = {
        "scheme": scheme.lower(),
        "host": host.lower().strip("[]"),
        "user": user,
        # A bare "?" or "#" says nothing and is dropped; a real query or fragment is refused.
        "extra": len(query) > 1 or len(fragment) > 1,
    }
    return text, parts


@QUICK
@given(made=base_urls())
def test_only_safe_base_urls_are_accepted(made: tuple[str, dict[str, Any]]) -> None:
    """https, or http to loopback; never user-info, a query, a fragment or a look-alike host."""
    text, parts = made
    try:
        client = Client(KEY, base_url=text)
    except ValueError as exc:
        refusal = str(exc)
    else:
        refusal = ""
    if refusal:
        assert KEY not in refusal
        return
    accepted = URL(client.base_url)
    assert not parts["user"] and not parts["extra"]
    assert accepted.user is None and accepted.password is None
    assert not accepted.query_string and not accepted.fragment
    assert accepted.host is not None and _same_host(accepted.host, parts["host"])
    if accepted.scheme == "http":
        assert parts["host"] in {"localhost", "127.0.0.1", "127.9.8.7", "::1", "::ffff:7f00:1"}
    else:
        assert accepted.scheme == "https"
    # The request URL built from it keeps the origin that was checked.
    request_url = URL(client.base_url + "/browser-agent/" + "a" * 24, encoded=True)
    assert (request_url.scheme, request_url.host, request_url.port) == (
        accepted.scheme,
        accepted.host,
        accepted.port,
    )


@QUICK
@given(text=st.text(max_size=60))
def test_any_text_as_base_url_is_safe_or_refused(text: str) -> None:
    """Arbitrary text is either a ValueError or an https / loopback-http origin."""
    try:
        client = Client(KEY, base_url=text)
    except ValueError:
        return
    accepted = URL(client.base_url)
    assert accepted.scheme == "https" or accepted.host in ("localhost", "127.0.0.1", "::1")
    assert accepted.user is None and not accepted.query_string and not accepted.fragment


segments = st.lists(
    st.one_of(
        st.text(alphabet=string.ascii_letters + string.digits + "-_~", min_size=1, max_size=6),
        st.sampled_from([".", "..", "%2e%2e", "%2F", "a%20b", ";x"]),
    ),
    max_size=3,
)


@FUZZ
@given(prefix=segments)
async def test_base_url_path_prefix_never_moves_the_endpoint(
    server: EmulatorServer, paths: list[tuple[str, dict[str, str]]], prefix: list[str]
) -> None:
    """Whatever path prefix the base URL has, the request path ends with the run endpoint."""
    paths.clear()
    base = server.base_url + "".join("/" + segment for segment in prefix)
    run_id = "0123456789abcdef01234567"
    try:
        client = Client(KEY, base_url=base, max_retries=0)
    except ValueError:
        return
    async with client:
        with contextlib.suppress(NotFoundError):
            await client.get_run(run_id)
    [(path, query)] = paths
    assert path.endswith("/browser-agent/" + run_id)
    assert query == {}


# -- decoders ----------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
timestamps = st.one_of(
    st.sampled_from(["2026-04-12T13:20:00.000Z", "2026-04-12T13:20:00+02:00", "2026-13-45", ""]),
    json_values,
)
events = st.fixed_dictionaries(
    {},
    optional={
        "type": st.one_of(st.sampled_from(["plan", "done", "teleport"]), json_values),
        "data": json_values,
        "ts": timestamps,
    },
)
tasks = st.fixed_dictionaries(
    {},
    optional={
        "url": st.one_of(st.text(max_size=10), json_values),
        "instruction": json_values,
        "input": st.one_of(st.dictionaries(st.text(max_size=4), st.text(max_size=4)), json_values),
        "status": st.one_of(st.sampled_from(["SUCCESS", "PENDING", "NEW_STATUS"]), json_values),
        "data": json_values,
        "creditsUsed": st.one_of(st.floats(allow_nan=False, allow_infinity=False), json_values),
        "durationMs": st.one_of(st.integers(), json_values),
        "error": json_values,
        "events": st.one_of(st.lists(events, max_size=3), json_values),
    },
)
runs = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.from_regex(r"[0-9a-f]{24}", fullmatch=True), json_values),
        "total": st.one_of(st.integers(), json_values),
        "completed": st.one_of(st.integers(), json_values),
        "results": st.one_of(st.lists(st.one_of(tasks, st.none()), max_size=3), json_values),
        "totalCreditsUsed": st.one_of(
            st.floats(allow_nan=False, allow_infinity=False), json_values
        ),
        "status": st.one_of(st.sampled_from(["processing", "completed", "failed"]), json_values),
        "createdAt": timestamps,
        "completedAt": timestamps,
        "liveEvents": st.one_of(st.lists(st.lists(events, max_size=2), max_size=2), json_values),
        "error": json_values,
    },
)
pages = st.fixed_dictionaries(
    {},
    optional={
        "batches": st.one_of(st.lists(st.one_of(runs, st.none()), max_size=3), json_values),
        "total": st.one_of(st.integers(), json_values),
        "hasMore": st.one_of(st.booleans(), json_values),
    },
)
documents = st.one_of(runs, pages, json_values)


def encode(document: Any) -> bytes:
    """The document as JSON text."""
    return json.dumps(document, allow_nan=False).encode()


def exercise(run: Run) -> None:
    """Every derived property agrees with the fields it comes from, on any model that decoded."""
    assert run.is_terminal == (run.status in ("completed", "failed"))
    assert run.is_processing == (not run.is_terminal)
    present = [task for task in run.results if task is not None]
    assert run.tasks == present
    # Each present task is in exactly one of the three groups.
    groups = (run.succeeded_tasks, run.failed_tasks, run.pending_tasks)
    assert sum(len(group) for group in groups) == len(present)
    for task in present:
        assert [task in group for group in groups].count(True) >= 1
        assert task.succeeded == (task.status == "SUCCESS")
        assert task.is_pending == (task.status == "PENDING")
    if math.isfinite(run.total_credits_used):
        assert math.isclose(run.cost_usd, run.total_credits_used * 0.10, abs_tol=1e-6)
    for _, event in run.events():
        event.data  # noqa: B018 - decoding the raw data must work


@QUICK
@given(document=documents)
def test_run_decoder_returns_a_run_or_a_decode_error(document: Any) -> None:
    """Any JSON decodes to a Run (that round-trips) or raises DecodeError / ValidationError only."""
    try:
        run = run_decoder.decode(encode(document))
    except (msgspec.DecodeError, msgspec.ValidationError):
        return
    # What decoded encodes back to a document that decodes to the same Run.
    assert run_decoder.decode(msgspec.json.encode(run)) == run
    exercise(run)


@QUICK
@given(document=documents)
def test_page_decoder_returns_a_page_or_a_decode_error(document: Any) -> None:
    """Any JSON decodes to a RunPage or raises msgspec's DecodeError / ValidationError."""
    try:
        page = run_page_decoder.decode(encode(document))
    except (msgspec.DecodeError, msgspec.ValidationError):
        return
    assert isinstance(page, RunPage)
    assert len(page) == len(page.runs)
    for run in page:
        exercise(run)


@pytest.fixture
async def echo() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A loopback server answering every request 200 with the last body put in the list."""
    bodies: list[bytes] = [b"{}"]

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=bodies[-1], content_type="application/json")

    async with serve_handler(answer) as base_url:
        yield base_url, bodies


@FUZZ
@given(body=st.one_of(documents.map(encode), st.binary(max_size=64)))
async def test_client_raises_only_response_decode_error_on_any_body(
    echo: tuple[str, list[bytes]], body: bytes
) -> None:
    """Over real HTTP, any 200 body gives a Run / RunPage or a ResponseDecodeError."""
    base_url, bodies = echo
    bodies.append(body)
    async with Client(KEY, base_url=base_url, max_retries=0) as client:
        try:
            run = await client.get_run("0123456789abcdef01234567")
        except ResponseDecodeError:
            pass
        else:
            exercise(run)
        try:
            page = await client.list_runs(limit=3)
        except ResponseDecodeError:
            pass
        else:
            assert isinstance(page, RunPage)
