"""The emulated API's paths, by route name (a leaf: imports nothing from the package).

``/api/v1/browser-agents`` is both the v1 list path (GET) and the v1 submit path (POST), so a
route is named from its path and the request's method (:func:`route_name`).
"""

from __future__ import annotations

from typing import Literal

from aiohttp import web

__all__ = [
    "GET_PATHS",
    "LIST_PATHS",
    "STATUS_PATH",
    "SUBMIT_PATHS",
    "RouteName",
    "request_route",
    "route_name",
]

RouteName = Literal["get", "list", "submit", "status"]

GET_PATHS = ("/browser-agent/{id}", "/api/v1/browser-agents/{id}")
LIST_PATHS = ("/list-browser-agents", "/api/v1/browser-agents")
SUBMIT_PATHS = ("/browser-agent", "/api/v1/browser-agents")
STATUS_PATH = "/browser-agent-status"

_BY_PATH: dict[str, RouteName] = {
    **dict.fromkeys(GET_PATHS, "get"),
    **dict.fromkeys(LIST_PATHS, "list"),
    STATUS_PATH: "status",
}


def route_name(canonical: str, method: str) -> RouteName | None:
    """Name the route a request reached.

    Args:
        canonical: The matched resource's path pattern (``resource.canonical``).
        method: The request's method.

    Returns:
        ``"get"``, ``"list"``, ``"submit"`` or ``"status"``; ``None`` for any other path.
    """
    if method == "POST" and canonical in SUBMIT_PATHS:
        return "submit"
    return _BY_PATH.get(canonical)


def request_route(request: web.Request) -> RouteName | None:
    """Name the route an ``aiohttp.web`` request was matched to (:func:`route_name`).

    Args:
        request: The request, after routing (in a middleware or a handler).

    Returns:
        The route's name; ``None`` for a path outside the API.
    """
    resource = request.match_info.route.resource
    return route_name(resource.canonical if resource is not None else "", request.method)
