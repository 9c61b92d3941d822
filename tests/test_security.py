"""The API key stays in its header: never in reprs, errors, tracebacks, logs or URLs."""

from __future__ import annotations

import logging
import socket
import traceback
from collections.abc import AsyncIterator

import pytest
from _support import serve_handler
from aiohttp import web

from asyncclient import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    Client,
    NotFoundError,
    PredevError,
    RetryPolicy,
)
from asyncclient.testing import Emulator, EmulatorServer, ManualClock, serve

pytestmark = pytest.mark.anyio

KEY = "sk-test-SECRET-5f2b9c"
OTHER_KEY = "sk-test-OTHER-a41e07"
WRONG_KEY = "sk-test-WRONG-77ad01"
SECRETS = (KEY, WRONG_KEY, "SECRET-5f2b9c", "WRONG-77ad01")
RUN_ID = "65f8a9d2c1e4b5a6f7e8d9c0"
FAST = RetryPolicy(max_retries=2, initial_delay=0.001, max_delay=0.005, max_retry_after=0.05)


@pytest.fixture
def secure_emulator() -> Emulator:
    """An emulator that knows the distinctive key and one other."""
    return Emulator(api_keys=(KEY, OTHER_KEY), clock=ManualClock(), seed=0)


@pytest.fixture
async def secure_server(secure_emulator: Emulator) -> AsyncIterator[EmulatorServer]:
    """That emulator on loopback."""
    async with serve(secure_emulator) as running:
        yield running


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def assert_error_is_clean(error: BaseException) -> None:
    """Neither the error, its chain, nor its formatted traceback holds the key."""
    assert_no_secret("".join(traceback.format_exception(error)))
    seen: BaseException | None = error
    while seen is not None:
        assert_no_secret(str(seen))
        assert_no_secret(repr(seen))
        assert_no_secret(repr(seen.args))
        assert_no_secret(repr(vars(seen)))
        seen = seen.__cause__ or seen.__context__


# -- reprs and errors ---------------------------------------------------------------------------


def test_client_repr_and_str_hide_the_key() -> None:
    """``repr`` and ``str`` of a client show where it talks to, not the key."""
    api = Client(KEY, base_url="https://api.pre.dev")
    assert_no_secret(repr(api))
    assert_no_secret(str(api))
    assert_no_secret(repr(api._transport))
    assert "https://api.pre.dev" in repr(api)


async def test_bad_request_error_hides_the_key(
    secure_server: EmulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A 400 from the API (here: a path prefix that turns the list path into a bad id) is clean."""
    caplog.set_level(logging.DEBUG, logger="asyncclient")
    async with Client(KEY, base_url=secure_server.base_url + "/browser-agent", retry=FAST) as api:
        with pytest.raises(BadRequestError) as info:
            await api.list_runs(limit=5)
    assert info.value.status == 400
    assert info.value.message == "Malformed run id"
    assert_error_is_clean(info.value)
    assert_no_secret(caplog.text)


async def test_authentication_error_hides_the_key(
    secure_server: EmulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A 401 for a wrong key never repeats the wrong key."""
    caplog.set_level(logging.DEBUG, logger="asyncclient")
    async with Client(WRONG_KEY, base_url=secure_server.base_url, retry=FAST) as api:
        with pytest.raises(AuthenticationError) as info:
            await api.get_run(RUN_ID)
    assert info.value.status == 401
    assert_error_is_clean(info.value)
    assert_no_secret(caplog.text)


async def test_not_found_error_hides_the_key(
    secure_server: EmulatorServer, secure_emulator: Emulator
) -> None:
    """A 404 for another key's run names the path but not the key."""
    run_id = secure_emulator.create_run(OTHER_KEY, n_tasks=1)
    async with Client(KEY, base_url=secure_server.base_url, retry=FAST) as api:
        with pytest.raises(NotFoundError) as info:
            await api.get_run(run_id, include_events=True)
    assert run_id in str(info.value)
    assert_error_is_clean(info.value)


async def test_connection_error_hides_the_key(caplog: pytest.LogCaptureFixture) -> None:
    """An error for a port nobody listens on, with its aiohttp cause, holds no key."""
    caplog.set_level(logging.DEBUG, logger="asyncclient")
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with Client(KEY, base_url=f"http://127.0.0.1:{port}", retry=FAST) as api:
        with pytest.raises(APIConnectionError) as info:
            await api.get_run(RUN_ID)
    assert info.value.__cause__ is not None
    assert_error_is_clean(info.value)
    assert [r for r in caplog.records if r.name == "asyncclient"]  # retries were logged
    assert_no_secret(caplog.text)


# -- logs and the wire --------------------------------------------------------------------------


async def test_debug_logs_hide_the_key(
    secure_server: EmulatorServer, secure_emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """At DEBUG, neither asyncclient's nor aiohttp's log records contain the key."""
    caplog.set_level(logging.DEBUG, logger="asyncclient")
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    run_id = secure_emulator.create_run(n_tasks=2, durations=[0.0, 1.0])
    async with Client(KEY, base_url=secure_server.base_url, retry=FAST) as api:
        await api.get_run(run_id)
        await api.get_run(run_id, include_events=True)
        await api.list_runs(limit=10, skip=0, status="processing")
        with pytest.raises(NotFoundError):
            await api.get_run("0" * 24)
    records = caplog.records
    assert len([r for r in records if r.name == "asyncclient"]) >= 4
    for record in records:
        assert_no_secret(record.getMessage())
        assert_no_secret(repr(record.args))
        assert_no_secret(record.exc_text or "")
    assert_no_secret(caplog.text)


async def test_key_travels_only_in_the_authorization_header(
    secure_server: EmulatorServer, secure_emulator: Emulator
) -> None:
    """The server sees the key in ``Authorization: Bearer`` and nowhere else: not in URLs."""
    urls: list[str] = []
    holders: list[list[str]] = []
    authorizations: list[str | None] = []

    def record(route: str, request: web.Request) -> None:
        urls.append(str(request.url))
        holders.append([name for name, value in request.headers.items() if KEY in value])
        authorizations.append(request.headers.get("Authorization"))

    secure_emulator.before_request = record
    run_id = secure_emulator.create_run(n_tasks=1)
    for routes in ("legacy", "v1"):
        async with Client(KEY, base_url=secure_server.base_url, routes=routes) as api:
            await api.get_run(run_id, include_events=True)
            await api.list_runs(limit=3, skip=1, status="completed")
    assert len(urls) == 4
    for url in urls:
        assert_no_secret(url)
    assert holders == [["Authorization"]] * 4
    assert authorizations == [f"Bearer {KEY}"] * 4


# -- redirects ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status",
    [
        pytest.param(301, id="301"),
        pytest.param(302, id="302"),
        pytest.param(303, id="303"),
        pytest.param(307, id="307"),
        pytest.param(308, id="308"),
    ],
)
async def test_redirect_is_not_followed(status: int) -> None:
    """A 3xx is an ``APIStatusError``: the key is never carried to the redirect's target."""
    stolen: list[web.Request] = []
    redirects: list[web.Request] = []

    async def steal(request: web.Request) -> web.Response:
        stolen.append(request)
        return web.json_response({"id": RUN_ID})

    async with serve_handler(steal) as thief:

        async def redirect(request: web.Request) -> web.Response:
            redirects.append(request)
            return web.Response(status=status, headers={"Location": f"{thief}/steal"})

        async with (
            serve_handler(redirect) as origin,
            Client(KEY, base_url=origin, retry=FAST) as api,
        ):
            with pytest.raises(APIStatusError) as info:
                await api.get_run(RUN_ID)
    assert type(info.value) is APIStatusError
    assert isinstance(info.value, PredevError)
    assert info.value.status == status
    assert "redirect" in info.value.message
    assert len(redirects) == 1
    assert stolen == []
    assert_error_is_clean(info.value)
