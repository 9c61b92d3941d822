"""A secured cluster for real: the dev server behind a TLS proxy that requires a client
certificate from a throwaway CA; worker and watch configured only by Temporal's own settings."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncclient.temporal import open_sink, watch_main, worker_main
from asyncclient.temporal._connect import connect, load_settings

from .services import (
    API_KEY,
    READY,
    Certificates,
    Service,
    make_certificates,
    start_emulator,
    start_worker,
    tls_proxy,
    write_ids_file,
)

TEMPORAL_KEY = "tmprl-tls-test-key-9876543210"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA, a server certificate for localhost and a client certificate, made by openssl."""
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def secured_address(temporal_address: str, certificates: Certificates) -> Iterator[str]:
    """The dev server behind a TLS proxy that requires a client certificate."""
    with tls_proxy(temporal_address, certificates) as address:
        yield address


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Service]:
    """The emulator with 300 runs that finish within a few seconds."""
    service = start_emulator(tmp_path, runs=300, speed=40.0, max_duration=10.0)
    yield service
    service.stop()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No TEMPORAL_* variable from the outside; the test sets its own."""
    for name in list(os.environ):
        if name.startswith("TEMPORAL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", "/nonexistent")  # no default configuration file either
    return monkeypatch


def _tls_env(address: str, certs: Certificates) -> dict[str, str]:
    return {
        "TEMPORAL_ADDRESS": address,
        "TEMPORAL_API_KEY": TEMPORAL_KEY,
        "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(certs.ca),
        "TEMPORAL_TLS_CLIENT_CERT_PATH": str(certs.client_cert),
        "TEMPORAL_TLS_CLIENT_KEY_PATH": str(certs.client_key),
        "TEMPORAL_TLS_SERVER_NAME": "localhost",
    }


def _run_batch(
    tmp_path: Path,
    emulator: Service,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[str, str]:
    """Worker and watch with only ``env`` to connect; the watch's output and the worker log."""
    queue = f"tls-{uuid.uuid4().hex[:8]}"
    sink = f"sqlite:///{tmp_path / 'results.db'}"
    ids = write_ids_file(emulator.extra["base_url"], tmp_path / "ids.txt")
    worker = start_worker(
        tmp_path,
        "worker-tls",
        address=None,
        task_queue=queue,
        base_url=emulator.extra["base_url"],
        sink=sink,
        env=env,
    )
    try:
        worker.wait_for(READY)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        argv = ["--ids-file", str(tmp_path / "ids.txt"), "--sink", sink, "--task-queue", queue]
        status = watch_main([*argv, "--shards", "3", "--interval", "1"])
    finally:
        worker.stop()
    out = capsys.readouterr()
    assert status == 0, out.err + worker.output()[-2000:]

    async def stored() -> set[str]:
        async with open_sink(sink) as opened:
            return await opened.has(ids)

    assert asyncio.run(stored()) == set(ids)
    return out.out + out.err, worker.output()


def test_a_batch_runs_over_mtls_configured_only_by_the_environment(
    secured_address: str,
    certificates: Certificates,
    emulator: Service,
    tmp_path: Path,
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """TEMPORAL_ADDRESS, TEMPORAL_API_KEY and the TLS variables alone connect worker and watch
    through mTLS; neither key shows in their output nor in the workflow's history."""
    env = _tls_env(secured_address, certificates)
    output, worker_log = _run_batch(tmp_path, emulator, env, clean_env, capsys)
    assert f"{secured_address}, namespace default, TLS with a client certificate" in worker_log
    workflow_id = output.split("workflow ")[1].split(",")[0]

    async def history() -> str:
        client = await connect(load_settings())
        return (await client.get_workflow_handle(workflow_id).fetch_history()).to_json()

    recorded = asyncio.run(history())
    assert "watch_shard" in recorded
    for secret in (TEMPORAL_KEY, API_KEY):
        assert secret not in output
        assert secret not in worker_log
        assert secret not in recorded


def test_a_batch_runs_over_mtls_configured_only_by_a_profile(
    secured_address: str,
    certificates: Certificates,
    emulator: Service,
    tmp_path: Path,
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A profile of a TOML file, named by TEMPORAL_PROFILE, is all worker and watch need."""
    config = tmp_path / "temporal.toml"
    config.write_text(
        f"""
[profile.secure]
address = "{secured_address}"
namespace = "default"
api_key = "{TEMPORAL_KEY}"

[profile.secure.tls]
server_name = "localhost"
server_ca_cert_path = "{certificates.ca}"
client_cert_path = "{certificates.client_cert}"
client_key_path = "{certificates.client_key}"
"""
    )
    env = {"TEMPORAL_CONFIG_FILE": str(config), "TEMPORAL_PROFILE": "secure"}
    output, worker_log = _run_batch(tmp_path, emulator, env, clean_env, capsys)
    assert "done: every one of 300 ids is stored" in output
    assert TEMPORAL_KEY not in output + worker_log


def test_without_the_client_certificate_the_worker_fails_fast_and_says_why(
    secured_address: str,
    certificates: Certificates,
    tmp_path: Path,
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    figures: dict[str, str],
) -> None:
    """The server CA but no client certificate: status 4 at once, naming the missing
    certificate, the address and not the key."""
    env = _tls_env(secured_address, certificates)
    del env["TEMPORAL_TLS_CLIENT_CERT_PATH"], env["TEMPORAL_TLS_CLIENT_KEY_PATH"]
    for name, value in env.items():
        clean_env.setenv(name, value)
    clean_env.setenv("PREDEV_API_KEY", API_KEY)
    began = time.monotonic()
    status = worker_main(["--sink", f"sqlite:///{tmp_path / 'r.db'}"])
    elapsed = time.monotonic() - began
    err = capsys.readouterr().err
    assert status == 4
    assert f"cannot reach Temporal at {secured_address}" in err
    assert "without a client certificate" in err
    assert "TEMPORAL_TLS_CLIENT_CERT_PATH" in err
    assert TEMPORAL_KEY not in err
    figures["worker without its client certificate (mTLS proxy)"] = f"exit 4 after {elapsed:.2f} s"
