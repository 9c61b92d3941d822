"""The error tree.

Every error this library raises on purpose derives from :class:`PredevError`::

    PredevError
    ├── APIConnectionError          the request did not get an HTTP answer
    │   └── APITimeoutError         ... because it ran out of time
    ├── APIStatusError              the server answered with a non-2xx status
    │   ├── BadRequestError         400 (malformed run id, bad query, BATCH_TOO_LARGE)
    │   ├── AuthenticationError     401 missing or invalid API key
    │   ├── PaymentRequiredError    402 SUBSCRIPTION_REQUIRED / INSUFFICIENT_CREDITS
    │   ├── NotFoundError           404 no such run for this key
    │   ├── RateLimitError          429 RATE_LIMITED / QUEUE_FULL
    │   └── ServerError             5xx
    ├── ResponseDecodeError         a 2xx whose body is not the expected JSON
    ├── APIUnavailableError         a watch gave up: the API was down longer than max_outage
    ├── WatchTimeoutError           a watched run did not finish before its deadline
    └── WalkStalledError            the run list changed faster than it could be walked

Bad arguments are refused before any request with a plain :class:`ValueError`.
None of these errors ever holds the API key, and aiohttp's exceptions never escape: ours are
raised ``from`` them so the cause stays in the traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._constants import RETRY_STATUSES

if TYPE_CHECKING:
    from ._models import ErrorBody

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "APIUnavailableError",
    "AuthenticationError",
    "BadRequestError",
    "NotFoundError",
    "PaymentRequiredError",
    "PredevError",
    "RateLimitError",
    "ResponseDecodeError",
    "ServerError",
    "WalkStalledError",
    "WatchTimeoutError",
]

_EXCERPT = 200


def _excerpt(body: bytes) -> str:
    text = body[:_EXCERPT].decode("utf-8", errors="replace")
    return text + ("…" if len(body) > _EXCERPT else "")


class PredevError(Exception):
    """Base class of every error raised by asyncclient."""

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only constructors do not survive the default pickling; rebuild from state so
        # errors cross process boundaries (worker pools, task queues) intact.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(
    cls: type[PredevError], args: tuple[object, ...], state: dict[str, object]
) -> PredevError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class APIConnectionError(PredevError):
    """The request got no HTTP answer: refused, reset, DNS failure, truncated body.

    Attributes:
        method: the HTTP method.
        path: the request path (never the full URL with query, never the key).
    """

    def __init__(self, message: str, *, method: str, path: str) -> None:
        super().__init__(f"{message} ({method} {path})")
        self.method = method
        self.path = path


class APITimeoutError(APIConnectionError):
    """The request ran out of time before a full answer arrived."""


class APIStatusError(PredevError):
    """The server answered with a status outside 2xx.

    Attributes:
        status: the HTTP status code.
        method: the HTTP method.
        path: the request path.
        message: the server's ``error`` text, or a short excerpt of the body.
        code: the server's machine-readable ``code`` (e.g. ``QUEUE_FULL``), if any.
        action_url: the server's ``actionUrl`` (where to subscribe or buy credits), if any.
        request_id: the ``x-request-id`` response header, if any.
        body: the first bytes of the body (at most a few hundred), for debugging.
        retry_after: seconds a 429 (:class:`RateLimitError`) asked us to wait, or ``None``.
    """

    def __init__(
        self,
        *,
        status: int,
        method: str,
        path: str,
        message: str,
        code: str | None = None,
        action_url: str | None = None,
        request_id: str | None = None,
        body: bytes = b"",
        retry_after: float | None = None,
    ) -> None:
        detail = f" [{code}]" if code else ""
        super().__init__(f"{status} {method} {path}: {message}{detail}")
        self.status = status
        self.method = method
        self.path = path
        self.message = message
        self.code = code
        self.action_url = action_url
        self.request_id = request_id
        self.body = _excerpt(body)
        self.retry_after = retry_after


class BadRequestError(APIStatusError):
    """400: the server refused the request as malformed."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing or invalid. Never retried; stops a whole watch."""


class PaymentRequiredError(APIStatusError):
    """402: ``SUBSCRIPTION_REQUIRED`` or ``INSUFFICIENT_CREDITS``; see :attr:`action_url`."""


class NotFoundError(APIStatusError):
    """404: no such run, or it belongs to another API key."""


class RateLimitError(APIStatusError):
    """429: ``RATE_LIMITED`` or ``QUEUE_FULL``; :attr:`retry_after` says how long to wait."""


class ServerError(APIStatusError):
    """5xx: the service failed; retried with backoff before it reaches you."""


class ResponseDecodeError(PredevError):
    """A 2xx answer whose body is not the JSON the API documents.

    Attributes:
        method: the HTTP method.
        path: the request path.
        body: the first bytes of the body.
    """

    def __init__(self, message: str, *, method: str, path: str, body: bytes = b"") -> None:
        super().__init__(f"{method} {path}: {message}")
        self.method = method
        self.path = path
        self.body = _excerpt(body)


class APIUnavailableError(PredevError):
    """Every request of a watch failed for longer than ``PollPolicy.max_outage``; it stopped.

    Raised by the watch (and :meth:`Client.wait`) as a whole, not delivered per run: an outage is
    the API's state, not a run's. The runs not yet delivered are still running on the server.

    Attributes:
        seconds: how long the API had been unreachable when the watch gave up.
        last_error: the last transient failure seen (refused, timed out, 5xx...), also the
            exception's ``__cause__``.
    """

    def __init__(self, seconds: float, last_error: PredevError | None = None) -> None:
        detail = f"; last error: {last_error}" if last_error is not None else ""
        super().__init__(f"the API has been unreachable for {seconds:.1f} s{detail}")
        self.seconds = seconds
        self.last_error = last_error


class WatchTimeoutError(PredevError, TimeoutError):
    """A watched run was still processing when its deadline passed.

    Attributes:
        run_id: the run that did not finish in time.
    """

    def __init__(self, run_id: str, message: str) -> None:
        super().__init__(f"run {run_id}: {message}")
        self.run_id = run_id


class WalkStalledError(PredevError):
    """:meth:`Client.iter_runs` read the list many times in a row without finding a new run.

    The list changed faster than it could be walked (for example, more runs were created per
    request than a page holds); the walk stops instead of spinning.
    """


_CODE_STATUS = {
    "BATCH_TOO_LARGE": 400,
    "SUBSCRIPTION_REQUIRED": 402,
    "INSUFFICIENT_CREDITS": 402,
    "RATE_LIMITED": 429,
    "QUEUE_FULL": 429,
}
"""The HTTP status each documented error ``code`` comes with."""

_STATUS_CLASS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: PaymentRequiredError,
    404: NotFoundError,
    429: RateLimitError,
}


def make_status_error(
    status: int,
    *,
    method: str,
    path: str,
    body: ErrorBody | None,
    raw: bytes,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> APIStatusError:
    """The typed error for a refused request: the one place a status becomes an error class.

    Args:
        status: the HTTP status of the answer. A 2xx is a stream's own, for an ``error`` event
            in its body: a known ``code`` then gets the class and status it comes with over
            REST, an unknown one stays a plain :class:`APIStatusError` with ``status``, and a
            missing message reads "the run failed".
        method: the HTTP method.
        path: the request path.
        body: the error JSON, already decoded by the caller, or ``None`` if it was not JSON.
        raw: the first bytes of the body, kept as an excerpt (and the message when ``body`` has
            none).
        request_id: the ``x-request-id`` response header, if any.
        retry_after: seconds a 429 asked to wait, already parsed by the caller.

    Returns:
        The error, of the subclass the status (or, for a stream, the code) calls for.
    """
    message = (body.error or body.message) if body is not None else None
    code = body.code if body is not None else None
    action_url = body.action_url if body is not None else None
    if 200 <= status < 300:
        known = _CODE_STATUS.get(code or "")
        if known is not None:
            status = known
        cls = _status_class(status) if known is not None else APIStatusError
        message = message or "the run failed"
    else:
        cls = _status_class(status)
        if not message:
            if 300 <= status < 400:
                message = "unexpected redirect (redirects are not followed)"
            else:
                message = raw[:120].decode("utf-8", errors="replace").strip() or f"HTTP {status}"
    return cls(
        status=status,
        method=method,
        path=path,
        message=message,
        code=code,
        action_url=action_url,
        request_id=request_id,
        body=raw,
        retry_after=retry_after,
    )


def _status_class(status: int) -> type[APIStatusError]:
    cls = _STATUS_CLASS.get(status)
    if cls is not None:
        return cls
    return ServerError if status >= 500 else APIStatusError


def is_transient(error: BaseException) -> bool:
    """Whether an error may pass if the request is made again: the one definition of transient.

    No answer at all (:class:`APIConnectionError`, timeouts included), or an answer whose status
    says the API is busy or unwell (408, 429, 500, 502, 503, 504). The transport retries these,
    the poller (less a 429, see :func:`is_outage`) counts them towards an outage, and the Temporal
    activities do not store them as a run's final result.

    Args:
        error: any exception.

    Returns:
        ``True`` for a transient failure; ``False`` for an answer that will not change (4xx,
        undecodable body) and for anything that is not one of our request errors.
    """
    if isinstance(error, APIConnectionError):
        return True
    return isinstance(error, APIStatusError) and error.status in RETRY_STATUSES


def is_outage(error: BaseException) -> bool:
    """Whether an error is a sign the API is down: :func:`is_transient`, but not a 429.

    A 429 is transient for a request (it is retried), but for the outage tracker it is an answer:
    the API is up and only asks the client to slow down.

    Args:
        error: any exception.

    Returns:
        ``True`` for no answer, a 408 or a 5xx of the retried kind.
    """
    return is_transient(error) and not isinstance(error, RateLimitError)
