"""The emulator's answers on the wire, shared by the API, the rate limits and the faults.

A leaf over ``aiohttp.web``: a JSON error body as the service writes it, and the two looks at a
request's connection that the slow answers need (has the client gone, cut it with a reset).
"""

from __future__ import annotations

import contextlib
import socket
import struct

import msgspec
from aiohttp import web

__all__ = ["JSON", "client_gone", "error_response", "reset_connection"]

JSON = "application/json"
"""Every body the emulated API writes, errors included, is JSON."""


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    action_url: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An error answer with the service's body, ``{"error", "code"?, "actionUrl"?}``.

    Args:
        status: The HTTP status.
        message: The ``error`` field.
        code: The ``code`` field, if any (``"RATE_LIMITED"``, ``"QUEUE_FULL"``, ...).
        action_url: The ``actionUrl`` field, if any (where to subscribe or buy credits).
        headers: Extra headers (``Retry-After``, ``WWW-Authenticate``, ...).

    Returns:
        The response.
    """
    body: dict[str, str] = {"error": message}
    if code is not None:
        body["code"] = code
    if action_url is not None:
        body["actionUrl"] = action_url
    return web.Response(
        status=status, body=msgspec.json.encode(body), content_type=JSON, headers=headers
    )


def client_gone(request: web.Request) -> bool:
    """Whether the request's client has hung up (its connection is closed or closing).

    Args:
        request: The request being answered.

    Returns:
        True once nothing written would reach the client.
    """
    transport = request.transport
    return transport is None or transport.is_closing()


def reset_connection(request: web.Request) -> None:
    """Drop the request's connection with a TCP reset, not a polite close.

    Args:
        request: The request whose connection is cut.
    """
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # A socket type without SO_LINGER is closed plainly.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
