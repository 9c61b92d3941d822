"""Argument checks before any request, retry and polling policies, settings from the environment."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from asyncclient import Client, PollPolicy, RetryPolicy, RunStatus
from asyncclient.testing import EmulatorServer

pytestmark = pytest.mark.anyio

KEY = "sk-test-SECRET-5f2b9c"
RUN_ID = "65f8a9d2c1e4b5a6f7e8d9c0"
NAN = float("nan")
INF = float("inf")


def _assert_no_request(server: EmulatorServer, client: Client) -> None:
    assert server.emulator.request_count == 0
    assert client.requests_sent == 0


# -- run ids, list arguments, routes ------------------------------------------------------------


@pytest.mark.parametrize(
    "run_id",
    [
        pytest.param("../list-browser-agents", id="path-traversal"),
        pytest.param("a?b", id="query"),
        pytest.param("%2F", id="percent-encoded-slash"),
        pytest.param("65f8a9d2c1e4b5a6f7e8d9c/", id="slash-in-24"),
        pytest.param(RUN_ID + "\n", id="trailing-newline"),
        pytest.param("\n" + RUN_ID, id="leading-newline"),
        pytest.param(" " + RUN_ID[1:], id="leading-space"),
        pytest.param("٠" * 24, id="arabic-indic-digits"),
        pytest.param("０" * 24, id="fullwidth-digits"),
        pytest.param(RUN_ID[:23], id="23-chars"),
        pytest.param(RUN_ID + "a", id="25-chars"),
        pytest.param("g" * 24, id="not-hex"),
        pytest.param("", id="empty"),
        pytest.param(None, id="none"),
        pytest.param(123456789012345678901234, id="int"),
        pytest.param(RUN_ID.encode(), id="bytes"),
    ],
)
async def test_get_run_refuses_bad_run_id(
    server: EmulatorServer, client: Client, run_id: Any
) -> None:
    """A run id that is not exactly 24 ASCII hex characters is refused before any request."""
    with pytest.raises(ValueError, match="run_id") as info:
        await client.get_run(run_id)
    assert server.api_key not in str(info.value)
    _assert_no_request(server, client)


async def test_get_run_refuses_non_bool_include_events(
    server: EmulatorServer, client: Client
) -> None:
    """``include_events`` must be a real bool, not a truthy string."""
    with pytest.raises(ValueError, match="include_events"):
        await client.get_run(RUN_ID, include_events="false")  # type: ignore[arg-type]
    _assert_no_request(server, client)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        pytest.param({"limit": 0}, "limit", id="limit-0"),
        pytest.param({"limit": 101}, "limit", id="limit-101"),
        pytest.param({"limit": -1}, "limit", id="limit-negative"),
        pytest.param({"limit": 1.5}, "limit", id="limit-float"),
        pytest.param({"limit": 10.0}, "limit", id="limit-integral-float"),
        pytest.param({"limit": True}, "limit", id="limit-bool"),
        pytest.param({"limit": "10"}, "limit", id="limit-str"),
        pytest.param({"limit": None}, "limit", id="limit-none"),
        pytest.param({"skip": -1}, "skip", id="skip-negative"),
        pytest.param({"skip": 1.0}, "skip", id="skip-float"),
        pytest.param({"skip": None}, "skip", id="skip-none"),
        pytest.param({"skip": False}, "skip", id="skip-bool"),
        pytest.param({"status": "failed"}, "status", id="status-failed"),
        pytest.param({"status": RunStatus.FAILED}, "status", id="status-failed-enum"),
        pytest.param({"status": "all"}, "status", id="status-all"),
        pytest.param({"status": ""}, "status", id="status-empty"),
        pytest.param({"status": "Completed"}, "status", id="status-wrong-case"),
        pytest.param({"status": 1}, "status", id="status-int"),
    ],
)
async def test_list_runs_refuses_bad_arguments(
    server: EmulatorServer, client: Client, kwargs: dict[str, Any], name: str
) -> None:
    """Out-of-range or mistyped ``limit``, ``skip`` and ``status`` are refused unsent."""
    with pytest.raises(ValueError, match=name):
        await client.list_runs(**kwargs)
    _assert_no_request(server, client)


@pytest.mark.parametrize(
    "status",
    [
        pytest.param(None, id="none"),
        pytest.param("processing", id="processing"),
        pytest.param("completed", id="completed"),
        pytest.param(RunStatus.COMPLETED, id="completed-enum"),
    ],
)
async def test_list_runs_accepts_documented_filters(
    server: EmulatorServer, client: Client, status: Any
) -> None:
    """The filters the API documents are accepted, as strings or as the ``RunStatus`` enum."""
    page = await client.list_runs(limit=1, skip=0, status=status)
    assert page.runs == []
    assert server.emulator.request_count == 1


@pytest.mark.parametrize(
    "routes",
    [
        pytest.param("v2", id="v2"),
        pytest.param("V1", id="wrong-case"),
        pytest.param("", id="empty"),
        pytest.param(None, id="none"),
    ],
)
def test_client_refuses_unknown_routes(routes: Any) -> None:
    """Only the ``legacy`` and ``v1`` path styles exist."""
    with pytest.raises(ValueError, match="routes"):
        Client(KEY, base_url="https://api.pre.dev", routes=routes)


# -- API keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "api_key",
    [
        pytest.param("sk-test-SECRET 5f2b9c", id="space"),
        pytest.param("sk-test-SECRET\t5f2b9c", id="tab"),
        pytest.param("sk-test-SECRET-5f2b9c\n", id="trailing-newline"),
        pytest.param("sk-test-SECRET\r\nX-Evil: 1", id="header-injection"),
        pytest.param("sk-test-SECRET\x005f2b9c", id="nul"),
        pytest.param("sk-test-SECRET\x7f5f2b9c", id="del"),
        pytest.param("sk-test-SECRET\u00a05f2b9c", id="nbsp"),
        pytest.param("sk-test-SECRET-5f2b9cé", id="non-ascii"),
        pytest.param("", id="empty"),
        pytest.param(b"sk-test-SECRET-5f2b9c", id="bytes"),
        pytest.param(12345, id="int"),
    ],
)
def test_client_refuses_bad_api_key_without_echoing_it(api_key: Any) -> None:
    """A malformed key is refused, and the message never shows the key."""
    with pytest.raises(ValueError, match="api_key") as info:
        Client(api_key, base_url="https://api.pre.dev")
    message = str(info.value)
    assert "SECRET" not in message
    assert "5f2b9c" not in message


def test_missing_api_key_names_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no key passed and none in the environment, the error says to set PREDEV_API_KEY."""
    monkeypatch.delenv("PREDEV_API_KEY", raising=False)
    with pytest.raises(ValueError, match="PREDEV_API_KEY"):
        Client()


async def test_client_reads_key_and_base_url_from_environment(
    server: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Client()`` takes its key from PREDEV_API_KEY and its origin from PREDEV_BASE_URL."""
    run_id = server.emulator.create_run(n_tasks=1, durations=[0.0])
    monkeypatch.setenv("PREDEV_API_KEY", server.api_key)
    monkeypatch.setenv("PREDEV_BASE_URL", server.base_url + "/")
    async with Client() as client:
        assert client.base_url == server.base_url
        run = await client.get_run(run_id)
    assert run.id == run_id
    assert server.emulator.request_count == 1


def test_explicit_arguments_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Arguments win over PREDEV_API_KEY and PREDEV_BASE_URL; the default origin is production."""
    monkeypatch.setenv("PREDEV_API_KEY", "bad key from env")
    monkeypatch.setenv("PREDEV_BASE_URL", "http://example.com")
    client = Client(KEY, base_url="https://api.pre.dev")
    assert client.base_url == "https://api.pre.dev"
    monkeypatch.delenv("PREDEV_BASE_URL")
    assert Client(KEY).base_url == "https://api.pre.dev"


def test_bad_key_from_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A malformed PREDEV_API_KEY is refused like an argument, without echoing it."""
    monkeypatch.setenv("PREDEV_API_KEY", "sk-test-SECRET 5f2b9c")
    with pytest.raises(ValueError, match="api_key") as info:
        Client(base_url="https://api.pre.dev")
    assert "SECRET" not in str(info.value)


# -- base URLs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "base_url",
    [
        pytest.param("http://example.com", id="plain-http-remote"),
        pytest.param("http://api.pre.dev", id="plain-http-production"),
        pytest.param("http://localhost.evil.com", id="localhost-prefix"),
        pytest.param("http://127.0.0.1.evil.com", id="loopback-prefix"),
        pytest.param("http://10.0.0.1", id="private-ip"),
        pytest.param("http://[::ffff:10.0.0.1]", id="ipv4-mapped-private-ip"),
        pytest.param("https://user:pass@api.pre.dev", id="credentials"),
        pytest.param("https://user@api.pre.dev", id="user-only"),
        pytest.param("ftp://x", id="ftp"),
        pytest.param("file:///etc/passwd", id="file"),
        pytest.param("https://api.pre.dev?x=1", id="query"),
        pytest.param("https://api.pre.dev#frag", id="fragment"),
        pytest.param("https://", id="no-host"),
        pytest.param("api.pre.dev", id="no-scheme"),
        pytest.param("https://api.pre.dev\n", id="newline"),
        pytest.param("https://api .pre.dev", id="space"),
        pytest.param("", id="empty"),
        pytest.param(b"https://api.pre.dev", id="bytes"),
    ],
)
def test_client_refuses_bad_base_url(base_url: Any) -> None:
    """Only https:// origins (or http:// to loopback) without credentials or query are accepted."""
    with pytest.raises(ValueError, match="base_url") as info:
        Client(KEY, base_url=base_url)
    message = str(info.value)
    assert KEY not in message
    assert "user:pass" not in message


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        pytest.param("http://127.0.0.1:8080", "http://127.0.0.1:8080", id="ipv4-loopback"),
        pytest.param("http://127.5.5.5", "http://127.5.5.5", id="ipv4-loopback-range"),
        pytest.param("http://[::1]:9", "http://[::1]:9", id="ipv6-loopback"),
        pytest.param("http://localhost:1", "http://localhost:1", id="localhost"),
        pytest.param("https://api.pre.dev/", "https://api.pre.dev", id="trailing-slash"),
        pytest.param("https://api.pre.dev", "https://api.pre.dev", id="production"),
        pytest.param("https://proxy.example/pre/", "https://proxy.example/pre", id="path-prefix"),
    ],
)
def test_client_accepts_good_base_url(base_url: str, expected: str) -> None:
    """https:// origins and http:// loopback origins are accepted; a trailing slash is dropped."""
    assert Client(KEY, base_url=base_url).base_url == expected


def test_ipv4_mapped_loopback_is_loopback_on_every_python() -> None:
    """``http://[::ffff:7f00:1]`` is loopback however the running Python spells it."""
    accepted = Client(KEY, base_url="http://[::ffff:7f00:1]:9").base_url
    # 3.13 writes the host as ::ffff:127.0.0.1, older releases keep ::ffff:7f00:1.
    assert accepted in ("http://[::ffff:7f00:1]:9", "http://[::ffff:127.0.0.1]:9")


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        pytest.param({"timeout": 0}, "timeout", id="timeout-zero"),
        pytest.param({"timeout": -1}, "timeout", id="timeout-negative"),
        pytest.param({"timeout": NAN}, "timeout", id="timeout-nan"),
        pytest.param({"timeout": INF}, "timeout", id="timeout-inf"),
        pytest.param({"timeout": "5"}, "timeout", id="timeout-str"),
        pytest.param({"max_retries": -1}, "max_retries", id="max-retries-negative"),
        pytest.param({"max_retries": 1.5}, "max_retries", id="max-retries-float"),
        pytest.param({"retry": {"max_retries": 1}}, "retry", id="retry-dict"),
        pytest.param({"poll_policy": 5}, "poll_policy", id="poll-policy-int"),
        pytest.param({"session": object()}, "session", id="session-object"),
        pytest.param({"max_response_bytes": 0}, "max_response_bytes", id="max-bytes-zero"),
    ],
)
def test_client_refuses_bad_options(kwargs: dict[str, Any], name: str) -> None:
    """Every client option is checked when the client is built, naming the option."""
    with pytest.raises(ValueError, match=name):
        Client(KEY, base_url="https://api.pre.dev", **kwargs)


# -- PollPolicy ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        pytest.param({"initial_delay": 0}, "initial_delay", id="initial-zero"),
        pytest.param({"initial_delay": -1.0}, "initial_delay", id="initial-negative"),
        pytest.param({"initial_delay": NAN}, "initial_delay", id="initial-nan"),
        pytest.param({"initial_delay": INF}, "initial_delay", id="initial-inf"),
        pytest.param({"initial_delay": "1"}, "initial_delay", id="initial-str"),
        pytest.param({"initial_delay": True}, "initial_delay", id="initial-bool"),
        pytest.param({"initial_delay": None}, "initial_delay", id="initial-none"),
        pytest.param({"multiplier": 0.5}, "multiplier", id="multiplier-below-one"),
        pytest.param({"multiplier": -2.0}, "multiplier", id="multiplier-negative"),
        pytest.param({"multiplier": NAN}, "multiplier", id="multiplier-nan"),
        pytest.param({"multiplier": INF}, "multiplier", id="multiplier-inf"),
        pytest.param({"multiplier": "1.5"}, "multiplier", id="multiplier-str"),
        pytest.param({"max_delay": -1.0}, "max_delay", id="max-negative"),
        pytest.param({"max_delay": NAN}, "max_delay", id="max-nan"),
        pytest.param({"max_delay": INF}, "max_delay", id="max-inf"),
        pytest.param({"max_delay": [15]}, "max_delay", id="max-list"),
        pytest.param({"max_delay": 0.5}, "max_delay", id="max-below-initial"),
        pytest.param({"jitter": -0.1}, "jitter", id="jitter-negative"),
        pytest.param({"jitter": 1.0}, "jitter", id="jitter-one"),
        pytest.param({"jitter": 1.5}, "jitter", id="jitter-above-one"),
        pytest.param({"jitter": NAN}, "jitter", id="jitter-nan"),
        pytest.param({"jitter": INF}, "jitter", id="jitter-inf"),
        pytest.param({"jitter": "0.2"}, "jitter", id="jitter-str"),
        pytest.param({"max_in_flight": 0}, "max_in_flight", id="in-flight-zero"),
        pytest.param({"max_in_flight": -1}, "max_in_flight", id="in-flight-negative"),
        pytest.param({"max_in_flight": 1.5}, "max_in_flight", id="in-flight-float"),
        pytest.param({"max_in_flight": True}, "max_in_flight", id="in-flight-bool"),
        pytest.param({"max_in_flight": 10_001}, "max_in_flight", id="in-flight-huge"),
        pytest.param({"run_timeout": 0}, "run_timeout", id="run-timeout-zero"),
        pytest.param({"run_timeout": -1.0}, "run_timeout", id="run-timeout-negative"),
        pytest.param({"run_timeout": NAN}, "run_timeout", id="run-timeout-nan"),
        pytest.param({"run_timeout": INF}, "run_timeout", id="run-timeout-inf"),
        pytest.param({"run_timeout": "60"}, "run_timeout", id="run-timeout-str"),
        pytest.param({"timeout": 0}, "timeout", id="timeout-zero"),
        pytest.param({"timeout": -5}, "timeout", id="timeout-negative"),
        pytest.param({"timeout": NAN}, "timeout", id="timeout-nan"),
        pytest.param({"timeout": INF}, "timeout", id="timeout-inf"),
        pytest.param({"not_found_grace": -1.0}, "not_found_grace", id="grace-negative"),
        pytest.param({"not_found_grace": NAN}, "not_found_grace", id="grace-nan"),
        pytest.param({"not_found_grace": None}, "not_found_grace", id="grace-none"),
        pytest.param({"buffer_size": 0}, "buffer_size", id="buffer-zero"),
        pytest.param({"buffer_size": 2.0}, "buffer_size", id="buffer-float"),
    ],
)
def test_poll_policy_refuses_bad_values(kwargs: dict[str, Any], name: str) -> None:
    """Every PollPolicy field is checked for type, sign and finiteness, naming the field."""
    with pytest.raises(ValueError, match=name):
        PollPolicy(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"jitter": 0.0}, id="no-jitter"),
        pytest.param({"jitter": 0.99}, id="jitter-just-below-one"),
        pytest.param({"multiplier": 1.0}, id="constant"),
        pytest.param({"initial_delay": 15.0, "max_delay": 15.0}, id="initial-equals-max"),
        pytest.param({"not_found_grace": 0}, id="no-grace"),
        pytest.param({"run_timeout": 0.5, "timeout": 2}, id="timeouts"),
        pytest.param({"max_in_flight": 1, "buffer_size": 1}, id="minimal"),
    ],
)
def test_poll_policy_accepts_edge_values(kwargs: dict[str, Any]) -> None:
    """Boundary values that make sense are accepted."""
    policy = PollPolicy(**kwargs)
    assert policy.schedule[0] == policy.initial_delay
    assert max(policy.schedule) <= policy.max_delay


def test_poll_policy_defaults() -> None:
    """The production polling defaults match the documented Node.js pattern, plus jitter."""
    policy = PollPolicy()
    assert (policy.initial_delay, policy.multiplier, policy.max_delay) == (1.0, 1.5, 15.0)
    assert policy.jitter == 0.2
    assert (policy.run_timeout, policy.timeout) == (None, None)
    assert policy.max_in_flight == 32
    assert policy.not_found_grace == 10.0
    assert policy.buffer_size == 256


def test_poll_policy_default_schedule() -> None:
    """The default schedule is 1 s growing ×1.5 to a 15 s cap, exactly."""
    assert PollPolicy().schedule == (1.0, 1.5, 2.25, 3.375, 5.0625, 7.59375, 11.390625, 15.0)


@pytest.mark.parametrize(
    ("attempt", "nominal"),
    [
        pytest.param(0, 1.0, id="first"),
        pytest.param(1, 1.5, id="second"),
        pytest.param(3, 3.375, id="fourth"),
        pytest.param(6, 11.390625, id="last-before-cap"),
        pytest.param(7, 15.0, id="cap"),
        pytest.param(8, 15.0, id="past-schedule"),
        pytest.param(10_000, 15.0, id="far-past-schedule"),
    ],
)
def test_poll_policy_delay_bounds(attempt: int, nominal: float) -> None:
    """``delay`` gives the nominal delay at rand=0 and nominal × (1 - jitter) at rand=1."""
    policy = PollPolicy()
    assert policy.delay(attempt, rand=lambda: 0.0) == nominal
    assert policy.delay(attempt, rand=lambda: 1.0) == pytest.approx(nominal * 0.8)


def test_poll_policy_jitter_stays_within_bounds() -> None:
    """Over many random draws each delay stays in [nominal × (1 - jitter), nominal]."""
    rng = random.Random(1234)
    policies = [PollPolicy(), PollPolicy(jitter=0.5), PollPolicy(jitter=0.0)]
    for policy in policies:
        for attempt in range(12):
            nominal = policy.schedule[min(attempt, len(policy.schedule) - 1)]
            low = nominal * (1 - policy.jitter)
            draws = [policy.delay(attempt, rand=rng.random) for _ in range(300)]
            draws += [policy.delay(attempt) for _ in range(50)]
            assert all(low - 1e-12 <= d <= nominal for d in draws)
            if policy.jitter:
                # The draws really are spread out, not stuck at one end.
                assert max(draws) - min(draws) > (nominal - low) / 2


@pytest.mark.parametrize(
    ("initial", "multiplier", "cap"),
    [
        pytest.param(1.0, 1.5, 15.0, id="default"),
        pytest.param(0.5, 2.0, 30.0, id="doubling"),
        pytest.param(0.01, 1.05, 15.0, id="slow-growth"),
        pytest.param(0.001, 1.01, 15.0, id="very-slow-growth"),
    ],
)
def test_poll_policy_schedule_reaches_its_cap(
    initial: float, multiplier: float, cap: float
) -> None:
    """With any multiplier above 1, polling backs off until it reaches ``max_delay``."""
    policy = PollPolicy(initial_delay=initial, multiplier=multiplier, max_delay=cap)
    assert policy.schedule[0] == initial
    assert list(policy.schedule) == sorted(policy.schedule)
    assert policy.schedule[-1] == cap
    assert policy.delay(100_000, rand=lambda: 0.0) == cap


def test_poll_policy_is_frozen() -> None:
    """A policy cannot be changed after it is built (it is shared between watches)."""
    policy = PollPolicy()
    with pytest.raises(AttributeError):
        policy.max_delay = 1.0  # type: ignore[misc]


# -- RetryPolicy --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        pytest.param({"max_retries": -1}, "max_retries", id="retries-negative"),
        pytest.param({"max_retries": 101}, "max_retries", id="retries-huge"),
        pytest.param({"max_retries": 1.5}, "max_retries", id="retries-float"),
        pytest.param({"max_retries": True}, "max_retries", id="retries-bool"),
        pytest.param({"max_retries": "2"}, "max_retries", id="retries-str"),
        pytest.param({"max_retries": None}, "max_retries", id="retries-none"),
        pytest.param({"initial_delay": -0.1}, "initial_delay", id="initial-negative"),
        pytest.param({"initial_delay": NAN}, "initial_delay", id="initial-nan"),
        pytest.param({"initial_delay": INF}, "initial_delay", id="initial-inf"),
        pytest.param({"initial_delay": "0.5"}, "initial_delay", id="initial-str"),
        pytest.param({"multiplier": 0.9}, "multiplier", id="multiplier-below-one"),
        pytest.param({"multiplier": NAN}, "multiplier", id="multiplier-nan"),
        pytest.param({"multiplier": INF}, "multiplier", id="multiplier-inf"),
        pytest.param({"multiplier": False}, "multiplier", id="multiplier-bool"),
        pytest.param({"max_delay": -1.0}, "max_delay", id="max-negative"),
        pytest.param({"max_delay": NAN}, "max_delay", id="max-nan"),
        pytest.param({"max_delay": INF}, "max_delay", id="max-inf"),
        pytest.param({"max_delay": 0.1}, "max_delay", id="max-below-initial"),
        pytest.param({"max_retry_after": -1.0}, "max_retry_after", id="retry-after-negative"),
        pytest.param({"max_retry_after": NAN}, "max_retry_after", id="retry-after-nan"),
        pytest.param({"max_retry_after": INF}, "max_retry_after", id="retry-after-inf"),
        pytest.param({"max_retry_after": "60"}, "max_retry_after", id="retry-after-str"),
    ],
)
def test_retry_policy_refuses_bad_values(kwargs: dict[str, Any], name: str) -> None:
    """Every RetryPolicy field is checked for type, sign and finiteness, naming the field."""
    with pytest.raises(ValueError, match=name):
        RetryPolicy(**kwargs)


def test_retry_policy_defaults() -> None:
    """By default: 2 retries, 0.5 s growing ×2 to 8 s, Retry-After honoured up to 60 s."""
    policy = RetryPolicy()
    assert policy.max_retries == 2
    assert policy.initial_delay == 0.5
    assert policy.multiplier == 2.0
    assert policy.max_delay == 8.0
    assert policy.max_retry_after == 60.0


def test_retry_policy_accepts_no_retries_and_no_delay() -> None:
    """``max_retries=0`` and zero delays are valid (retries off, or retry at once)."""
    policy = RetryPolicy(max_retries=0, initial_delay=0, max_delay=0, max_retry_after=0)
    assert policy.delays()() == 0.0


def test_retry_delays_are_full_jitter_exponential() -> None:
    """Each retry delay is drawn from [0, min(initial × multiplier^n, max_delay)]."""
    policy = RetryPolicy()
    caps = [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    draws: list[list[float]] = [[] for _ in caps]
    for _ in range(200):
        next_delay = policy.delays()
        for i in range(len(caps)):
            draws[i].append(next_delay())
    for cap, values in zip(caps, draws, strict=True):
        assert all(0.0 <= v <= cap for v in values)
        assert max(values) > cap / 2  # jitter spreads over the whole range
        assert not math.isclose(min(values), max(values))


def test_client_refuses_bad_max_retries_next_to_a_retry_policy() -> None:
    """``max_retries=`` is checked like the policy's own count, even next to a valid policy."""
    with pytest.raises(ValueError, match="max_retries"):
        Client(KEY, base_url="https://api.pre.dev", retry=RetryPolicy(), max_retries=101)


@pytest.mark.parametrize(
    ("initial_delay", "multiplier"),
    [
        pytest.param(0.0, 1.0873965158377491e44, id="zero-start-absurd-growth"),
        pytest.param(0.5, 1e300, id="absurd-growth"),
    ],
)
def test_retry_delays_reach_the_cap_instead_of_overflowing(
    initial_delay: float, multiplier: float
) -> None:
    """An absurd multiplier makes the delays reach ``max_delay``, never an OverflowError."""
    policy = RetryPolicy(initial_delay=initial_delay, multiplier=multiplier, max_delay=2.0)
    next_delay = policy.delays()
    assert all(0.0 <= next_delay() <= 2.0 for _ in range(50))


def test_retry_delays_follow_the_capped_schedule() -> None:
    """The n-th retry waits at most ``min(max_delay, initial * multiplier**n)`` (full jitter)."""
    policy = RetryPolicy(initial_delay=0.5, multiplier=2.0, max_delay=3.0)
    drawn: list[list[float]] = []
    for _ in range(200):  # fresh sources: each starts again at the first step
        next_delay = policy.delays()
        drawn.append([next_delay() for _ in range(6)])
    for step, nominal in enumerate((0.5, 1.0, 2.0, 3.0, 3.0, 3.0)):
        column = [draws[step] for draws in drawn]
        assert all(0.0 <= delay <= nominal for delay in column)
        assert max(column) > nominal / 2  # the jitter spans the step, not a smaller one
