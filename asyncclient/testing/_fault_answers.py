"""How each kind of fault answers on the wire (aiohttp.web), once :class:`Faults` has drawn it.

No state: :func:`answer` is given the fault, the request, the rest of the application and a way
to ask whether the fault is still in force (a black hole holds its requests while it is).
"""

from __future__ import annotations

import asyncio
import http
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from ._clock import loop_time
from ._fault import Fault
from ._responses import JSON, client_gone, error_response, reset_connection

__all__ = ["answer"]

# A stalled request checks this often whether its client has hung up.
_STALL_TICK = 0.01
# A black-holed request checks this often whether its client or its fault has gone (a tenth of
# a client timeout of half a second; coarse enough that an hour of virtual time costs little).
_HOLD_TICK = 0.05
_NOT_JSON = b"<<upstream answered OK but this is not JSON>>"
_HTML = (
    "<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


def _cut() -> web.Response:
    # Never reaches the wire: writing to an aborted transport fails, and aiohttp treats that
    # as the client having gone away.
    return web.Response(status=500)


async def answer(
    fault: Fault,
    request: web.Request,
    handler: Handler,
    in_force: Callable[[Fault], bool],
) -> web.StreamResponse:
    """Answer ``request`` the way ``fault`` fails.

    Args:
        fault: The fault drawn for the request.
        request: The request.
        handler: The rest of the application (the real answer, for the kinds that deliver it).
        in_force: Whether a fault is still in force (:meth:`Faults.in_force`).

    Returns:
        The response (for the kinds that cut the connection, one that never reaches the wire).
    """
    kind = fault.kind
    if kind == "status":
        return _status_response(fault)
    if kind == "html":
        text = _HTML.format(status=fault.status, phrase=_phrase(fault.status))
        return web.Response(status=fault.status, text=text, content_type="text/html")
    if kind == "not_json":
        return web.Response(status=200, body=_NOT_JSON, content_type=JSON)
    if kind == "blackhole":
        return await _hold(fault, request, in_force)
    if kind in ("reset", "refused"):
        # "refused": a request that slipped in as the listener closed is cut like the rest.
        reset_connection(request)
        return _cut()
    if kind == "stall":
        return await _stall(fault, request, handler)
    return await _deliver_badly(fault, request, handler)


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _status_response(fault: Fault) -> web.Response:
    status = fault.status
    code = fault.code if fault.code is not None else ("RATE_LIMITED" if status == 429 else None)
    headers: dict[str, str] = {}
    if fault.retry_after is not None:
        headers["Retry-After"] = fault.retry_after
    if fault.retry_after_ms is not None:
        headers["retry-after-ms"] = fault.retry_after_ms
    return error_response(status, _phrase(status), code=code, headers=headers)


async def _hold(
    fault: Fault, request: web.Request, in_force: Callable[[Fault], bool]
) -> web.Response:
    """Read, never answered: the client waits for its timeout.

    When the fault ends, the connection is cut, as when a hung machine comes back.
    """
    while in_force(fault):
        if client_gone(request):
            return _cut()
        await asyncio.sleep(_HOLD_TICK)
    reset_connection(request)
    return _cut()


async def _stall(fault: Fault, request: web.Request, handler: Handler) -> web.StreamResponse:
    """Nothing for ``fault.delay`` seconds, then the real answer if the client is still there."""
    deadline = loop_time() + fault.delay
    while (remaining := deadline - loop_time()) > 0:
        if client_gone(request):
            return _cut()
        await asyncio.sleep(min(remaining, _STALL_TICK))
    if client_gone(request):
        return _cut()
    return await handler(request)


async def _deliver_badly(
    fault: Fault, request: web.Request, handler: Handler
) -> web.StreamResponse:
    """``truncate`` and ``trickle``: the real answer, half of it or a little at a time."""
    response = await handler(request)
    body = response.body if isinstance(response, web.Response) else None
    if not isinstance(body, bytes) or not body:
        return response  # a streamed answer passes through unchanged
    stream = web.StreamResponse(status=response.status, reason=response.reason)
    for name, value in response.headers.items():
        if name.lower() not in ("content-length", "transfer-encoding"):
            stream.headers.add(name, value)
    stream.content_length = len(body)
    try:
        await stream.prepare(request)
        if fault.kind == "truncate":
            await stream.write(body[: len(body) // 2])
            transport = request.transport
            if transport is not None:
                transport.close()
            return stream
        size = fault.chunk_size
        for start in range(0, len(body), size):
            if start:
                await asyncio.sleep(fault.delay)
            await stream.write(body[start : start + size])
    except ConnectionError:
        pass  # the client hung up mid-body; aiohttp ignores the rest of the answer
    return stream
