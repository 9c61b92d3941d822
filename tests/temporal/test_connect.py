"""Connection settings: Temporal's profiles and TEMPORAL_* variables, overridden by flags."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.service import TLSConfig

from asyncclient.temporal import watch_main, worker_main
from asyncclient.temporal._connect import TemporalSettings, load_settings

TEMPORAL_KEY = "tmprl-secret-key-0123456789"
PREDEV_KEY = "predev-secret-key-0123456789"


def _profile_file(tmp_path: Path) -> Path:
    path = tmp_path / "temporal.toml"
    (tmp_path / "ca.pem").write_text("CA")
    (tmp_path / "client.pem").write_text("CERT")
    (tmp_path / "client.key").write_text("KEY")
    path.write_text(
        f"""
[profile.default]
address = "default-host:7233"

[profile.prod]
address = "prod-host:7233"
namespace = "prod-ns"

[profile.prod.tls]
server_name = "temporal.internal"
server_ca_cert_path = "{tmp_path / "ca.pem"}"
client_cert_path = "{tmp_path / "client.pem"}"
client_key_path = "{tmp_path / "client.key"}"
"""
    )
    return path


def test_nothing_configured_means_a_local_plaintext_server() -> None:
    """With no profile and no variables, localhost:7233, namespace default, no TLS."""
    settings = load_settings(env={})
    assert settings == TemporalSettings()
    assert settings.describe() == "localhost:7233, namespace default, plaintext"


def test_the_environment_sets_address_namespace_key_and_tls(tmp_path: Path) -> None:
    """TEMPORAL_* variables give address, namespace, the API key and TLS files."""
    (tmp_path / "ca.pem").write_text("CA")
    settings = load_settings(
        env={
            "TEMPORAL_ADDRESS": "ns.acct.tmprl.cloud:7233",
            "TEMPORAL_NAMESPACE": "ns.acct",
            "TEMPORAL_API_KEY": TEMPORAL_KEY,
            "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(tmp_path / "ca.pem"),
            "TEMPORAL_TLS_SERVER_NAME": "edge",
        }
    )
    assert (settings.address, settings.namespace) == ("ns.acct.tmprl.cloud:7233", "ns.acct")
    assert settings.api_key == TEMPORAL_KEY
    assert settings.tls == TLSConfig(server_root_ca_cert=b"CA", domain="edge")
    assert TEMPORAL_KEY not in repr(settings)
    assert TEMPORAL_KEY not in settings.describe()
    assert "API key set" in settings.describe()


def test_an_api_key_alone_turns_tls_on_unless_told_otherwise() -> None:
    """An API key means TLS (as Temporal Cloud needs), and TEMPORAL_TLS=false turns it off."""
    assert load_settings(env={"TEMPORAL_API_KEY": TEMPORAL_KEY}).tls == TLSConfig()
    off = load_settings(env={"TEMPORAL_API_KEY": TEMPORAL_KEY, "TEMPORAL_TLS": "false"})
    assert off.tls is False


def test_a_profile_is_chosen_by_name_and_flags_override_it(tmp_path: Path) -> None:
    """TEMPORAL_PROFILE (or --profile) picks a profile; explicit arguments win over it."""
    config = _profile_file(tmp_path)
    env = {"TEMPORAL_CONFIG_FILE": str(config)}
    assert load_settings(env=env).address == "default-host:7233"
    prod = load_settings(env={**env, "TEMPORAL_PROFILE": "prod"})
    assert (prod.address, prod.namespace) == ("prod-host:7233", "prod-ns")
    assert prod.tls == TLSConfig(
        server_root_ca_cert=b"CA",
        client_cert=b"CERT",
        client_private_key=b"KEY",
        domain="temporal.internal",
    )
    overridden = load_settings(
        profile="prod",
        config_file=str(config),
        address="other:1",
        namespace="other-ns",
        tls_server_name="other-name",
        env={},
    )
    assert (overridden.address, overridden.namespace) == ("other:1", "other-ns")
    assert isinstance(overridden.tls, TLSConfig)
    assert overridden.tls.domain == "other-name"
    assert overridden.tls.client_cert == b"CERT"
    assert load_settings(profile="prod", config_file=str(config), tls=False, env={}).tls is False


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"profile": "nope"}, "Profile 'nope' not found", id="unknown-profile"),
        pytest.param(
            {"config_file": "/nonexistent/t.toml"}, "does not exist", id="missing-config-file"
        ),
        pytest.param({"tls_cert": "/nonexistent/c.pem"}, "cannot read the client", id="no-cert"),
    ],
)
def test_a_configuration_that_cannot_work_is_refused_with_its_reason(
    tmp_path: Path, kwargs: dict[str, str], message: str
) -> None:
    """An unknown profile, a missing file or an unreadable certificate: a clear ValueError."""
    kwargs.setdefault("config_file", str(_profile_file(tmp_path)))
    with pytest.raises(ValueError, match=message):
        load_settings(**kwargs, env={})  # type: ignore[arg-type]


def test_a_client_certificate_needs_its_key(tmp_path: Path) -> None:
    """A certificate without its private key is refused before any connection."""
    (tmp_path / "c.pem").write_text("CERT")
    with pytest.raises(ValueError, match="needs its private key"):
        load_settings(tls_cert=str(tmp_path / "c.pem"), env={})


def test_the_temporal_key_is_not_the_api_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A worker given only TEMPORAL_API_KEY has no pre.dev key (status 3), and says neither."""
    monkeypatch.delenv("PREDEV_API_KEY", raising=False)
    monkeypatch.setenv("TEMPORAL_API_KEY", TEMPORAL_KEY)
    assert worker_main(["--sink", f"sqlite:///{tmp_path}/r.db"]) == 3
    err = capsys.readouterr().err
    assert "PREDEV_API_KEY" in err
    assert TEMPORAL_KEY not in err


def test_the_api_key_is_not_sent_to_temporal() -> None:
    """PREDEV_API_KEY in the environment gives Temporal no key (and so no TLS)."""
    settings = load_settings(env={"PREDEV_API_KEY": PREDEV_KEY})
    assert settings.api_key is None
    assert settings.tls is False


@pytest.mark.parametrize("command", [worker_main, watch_main])
def test_a_failed_connection_never_shows_either_key(
    command: object,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """Temporal unreachable with both keys set: status 4, the address shown, neither key."""
    monkeypatch.setenv("PREDEV_API_KEY", PREDEV_KEY)
    monkeypatch.setenv("TEMPORAL_API_KEY", TEMPORAL_KEY)
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:1")
    monkeypatch.setenv("TEMPORAL_TLS", "false")
    ids = tmp_path / "ids.txt"
    ids.write_text("65f8a9d2c1e4b5a6f7e8d9c0\n")
    argv = ["--sink", f"sqlite:///{tmp_path}/r.db", "--ids-file", str(ids)]
    if command is worker_main:
        argv = argv[:2]
    assert callable(command)
    assert command(argv) == 4
    err = capsys.readouterr().err
    assert "cannot reach Temporal at 127.0.0.1:1" in err
    assert "API key set" in err
    assert TEMPORAL_KEY not in err
    assert PREDEV_KEY not in err


@pytest.mark.parametrize("command", [worker_main, watch_main])
def test_an_unknown_profile_is_a_usage_error(
    command: object, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--profile naming no profile of --config-file: status 2 and the profile's name."""
    config = _profile_file(tmp_path)
    ids = tmp_path / "ids.txt"
    ids.write_text("65f8a9d2c1e4b5a6f7e8d9c0\n")
    argv = ["--api-key", "k"] if command is worker_main else ["--ids-file", str(ids)]
    argv += ["--config-file", str(config), "--profile", "staging"]
    assert callable(command)
    assert command(argv) == 2
    assert "'staging' not found" in capsys.readouterr().err
