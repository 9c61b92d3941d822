"""Connecting to Temporal the way every Temporal tool does: ``temporalio.envconfig``.

The settings come, lowest first, from the defaults (``localhost:7233``, namespace ``default``,
no TLS), a profile of Temporal's TOML client configuration file (``--config-file`` or
``$TEMPORAL_CONFIG_FILE``, else the platform's default path; ``--profile`` or
``$TEMPORAL_PROFILE``, else ``default``), the ``TEMPORAL_*`` environment variables
(``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, ``TEMPORAL_TLS``,
``TEMPORAL_TLS_CLIENT_CERT_PATH``, ``TEMPORAL_TLS_CLIENT_KEY_PATH``,
``TEMPORAL_TLS_SERVER_CA_CERT_PATH``, ``TEMPORAL_TLS_SERVER_NAME``...), and last the command
line's flags.

The Temporal API key is Temporal's alone: it is read only from the profile or
``$TEMPORAL_API_KEY`` (never from argv, never from ``PREDEV_API_KEY``), it is never shown, and
an error that would quote it has it replaced by ``***``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.client import Client as TemporalClient
from temporalio.envconfig import ClientConfigProfile, ClientConfigTLS, DataSource
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

__all__ = ["TemporalSettings", "connect", "load_settings"]

DEFAULT_ADDRESS = "localhost:7233"
DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True)
class TemporalSettings:
    """Where and how to connect to Temporal, once every source is merged.

    Attributes:
        address: the frontend, ``host:port``.
        namespace: the namespace.
        api_key: the Temporal API key (Temporal Cloud), or ``None``; never in the repr.
        tls: ``False`` for plaintext, else the TLS settings (CA, client certificate and key as
            bytes, server name).
        rpc_metadata: gRPC headers from the profile.
    """

    address: str = DEFAULT_ADDRESS
    namespace: str = DEFAULT_NAMESPACE
    api_key: str | None = field(default=None, repr=False)
    tls: TLSConfig | bool = False
    rpc_metadata: Mapping[str, str] = field(default_factory=dict, repr=False)

    def describe(self) -> str:
        """One line for people: address, namespace, TLS and whether a key is set (not the key)."""
        if self.tls is False:
            how = "plaintext"
        else:
            tls = self.tls if isinstance(self.tls, TLSConfig) else TLSConfig()
            how = "TLS"
            if tls.client_cert is not None:
                how += " with a client certificate"
            if tls.domain:
                how += f", server name {tls.domain}"
            if tls.server_root_ca_cert is not None:
                how += ", own CA"
        if self.api_key is not None:
            how += ", API key set"
        return f"{self.address}, namespace {self.namespace}, {how}"

    def redact(self, text: str) -> str:
        """``text`` with the API key, if it appears, replaced by ``***``."""
        return text.replace(self.api_key, "***") if self.api_key else text


def _read(what: str, source: DataSource | None) -> bytes | None:
    if source is None:
        return None
    if isinstance(source, bytes):
        return source
    if isinstance(source, str):
        return source.encode()
    try:
        return source.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} {source}: {exc.strerror or exc}") from exc


def load_settings(
    *,
    profile: str | None = None,
    config_file: str | None = None,
    address: str | None = None,
    namespace: str | None = None,
    tls: bool | None = None,
    tls_ca: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_server_name: str | None = None,
    env: Mapping[str, str] | None = None,
) -> TemporalSettings:
    """Merge the profile, the ``TEMPORAL_*`` environment and these overrides.

    Args:
        profile: the profile's name (else ``$TEMPORAL_PROFILE``, else ``default``).
        config_file: the TOML file (else ``$TEMPORAL_CONFIG_FILE``, else the default path; a
            missing default file is no error, a missing named one is).
        address: overrides the address.
        namespace: overrides the namespace.
        tls: ``True`` or ``False`` forces TLS on or off; ``None`` leaves it to the profile
            (an API key or any TLS setting turns it on).
        tls_ca: a PEM file of the CA that signed the server's certificate.
        tls_cert: a PEM file of the client certificate (mTLS); needs ``tls_key``.
        tls_key: a PEM file of the client certificate's private key.
        tls_server_name: the name the server's certificate must carry (SNI).
        env: the environment (default: the process's).

    Returns:
        The merged settings.

    Raises:
        ValueError: the configuration file or profile cannot be used, a certificate file
            cannot be read, or a client certificate comes without its key.
    """
    if config_file is not None and not Path(config_file).is_file():
        raise ValueError(f"the Temporal configuration file {config_file} does not exist")
    try:
        loaded = ClientConfigProfile.load(
            profile,
            config_source=Path(config_file) if config_file else None,
            override_env_vars=env,
        )
    except Exception as exc:  # the bridge raises RuntimeError, TypeError... for a bad config
        raise ValueError(f"the Temporal client configuration cannot be used: {exc}") from exc
    base_tls = loaded.tls or ClientConfigTLS()
    overridden = any(v is not None for v in (tls_ca, tls_cert, tls_key, tls_server_name))
    ca = _read("server CA certificate", Path(tls_ca) if tls_ca else base_tls.server_root_ca_cert)
    cert = _read("client certificate", Path(tls_cert) if tls_cert else base_tls.client_cert)
    key = _read("client key", Path(tls_key) if tls_key else base_tls.client_private_key)
    if (cert is None) != (key is None):
        raise ValueError(
            "a Temporal client certificate needs its private key and the other way round "
            "(--tls-cert with --tls-key, or TEMPORAL_TLS_CLIENT_CERT_PATH with "
            "TEMPORAL_TLS_CLIENT_KEY_PATH)"
        )
    use_tls = tls
    if use_tls is None:
        # ``disabled`` is True only when TLS was turned off (TEMPORAL_TLS=false, ``disabled =
        # true``); older SDKs say False, not None, when nothing was said.
        if loaded.tls is not None and loaded.tls.disabled:
            use_tls = False
        else:
            use_tls = loaded.tls is not None or overridden or loaded.api_key is not None
    tls_config: TLSConfig | bool = False
    if use_tls:
        tls_config = TLSConfig(
            server_root_ca_cert=ca,
            client_cert=cert,
            client_private_key=key,
            domain=tls_server_name or base_tls.server_name,
        )
    return TemporalSettings(
        address=address or loaded.address or DEFAULT_ADDRESS,
        namespace=namespace or loaded.namespace or DEFAULT_NAMESPACE,
        api_key=loaded.api_key or None,
        tls=tls_config,
        rpc_metadata=dict(loaded.grpc_meta),
    )


async def connect(
    settings: TemporalSettings,
    *,
    identity: str | None = None,
    runtime: Runtime | None = None,
) -> TemporalClient:
    """Connect a Temporal client with ``settings``.

    Args:
        settings: from :func:`load_settings`.
        identity: the client's identity (default: the SDK's ``pid@host``).
        runtime: the SDK runtime (to export its metrics), default the SDK's own.

    Returns:
        The connected client.

    Raises:
        RuntimeError: Temporal cannot be reached or refused the connection; the message holds
            the cause, never the API key.
    """
    kwargs: dict[str, Any] = {
        "namespace": settings.namespace,
        "tls": settings.tls,
        "api_key": settings.api_key,
        "rpc_metadata": settings.rpc_metadata,
        "runtime": runtime,
    }
    if identity is not None:
        kwargs["identity"] = identity
    try:
        return await TemporalClient.connect(settings.address, **kwargs)
    except Exception as exc:  # the SDK raises RuntimeError and friends for a failed connect
        hint = ""
        if isinstance(settings.tls, TLSConfig) and settings.tls.client_cert is None:
            hint = (
                " (TLS is on without a client certificate: a server that requires one (mTLS) "
                "closes the connection; give it with TEMPORAL_TLS_CLIENT_CERT_PATH and "
                "TEMPORAL_TLS_CLIENT_KEY_PATH, --tls-cert and --tls-key, or the profile; else "
                "check the server CA and name)"
            )
        elif settings.tls is not False:
            hint = " (TLS is on: check the server CA, the client certificate and key, the name)"
        elif settings.api_key is not None:
            hint = " (an API key is set but TLS is off)"
        raise RuntimeError(
            settings.redact(f"cannot reach Temporal at {settings.describe()}: {exc}{hint}")
        ) from None  # the cause is in the message, redacted; its own text is not
