"""The testing switch for delays: one factor on every delay the SDK waits (a leaf module).

In the style of stamina's ``set_testing``: tests keep the production policies and shrink time
instead of the policies. :func:`set_testing` sets the factor for the whole process (and, used as
a context manager, restores the previous one on exit); :func:`scaled` is the one place that reads
it, and only where a delay is computed (a retry's backoff or ``Retry-After`` pause, the poller's
schedule and its 404 grace, an outage's probe interval), never on the success path. The logic
that picks each delay stays the production one: only the wait is shorter.
"""

from __future__ import annotations

from types import TracebackType

from ._validation import check_number

__all__ = ["current_delay_scale", "scaled", "set_testing"]

_delay_scale: float | None = None


class _Restore:
    """What :func:`set_testing` returns: used in a ``with``, it restores the previous factor."""

    __slots__ = ("_previous",)

    def __init__(self, previous: float | None) -> None:
        self._previous = previous

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        global _delay_scale
        _delay_scale = self._previous


def set_testing(delay_scale: float | None) -> _Restore:
    """Scale every delay the SDK waits by ``delay_scale``, for tests; ``None`` switches it off.

    Retry backoff and ``Retry-After`` pauses, the poller's schedule (with ``not_found_grace``, how
    long it keeps polling a new id that answers 404) and the probe interval of an outage are
    multiplied by the factor; everything else (how many retries, which delay comes
    next, time budgets such as ``timeout`` or ``max_outage``) is unchanged. The switch is global
    to the process::

        from asyncclient.testing import set_testing

        set_testing(delay_scale=0.001)  # a 1 s backoff now waits 1 ms
        set_testing(delay_scale=None)  # production delays again

        with set_testing(delay_scale=0.01):  # only inside the block
            ...

    Args:
        delay_scale: the factor, a finite number > 0 (``1`` waits the real delays), or ``None``
            to switch scaling off.

    Returns:
        A context manager: leaving its ``with`` block restores the factor set before the call.
        Called as a plain function, the new factor simply stays in force.

    Raises:
        ValueError: ``delay_scale`` is not ``None`` nor a finite number > 0.
    """
    global _delay_scale
    scale = None if delay_scale is None else check_number("delay_scale", delay_scale, gt=0)
    previous = _delay_scale
    _delay_scale = scale
    return _Restore(previous)


def current_delay_scale() -> float | None:
    """The factor :func:`set_testing` put in force, or ``None`` when delays are real."""
    return _delay_scale


def scaled(delay: float) -> float:
    """``delay`` seconds under the testing switch: as it is unless a factor is set."""
    scale = _delay_scale
    return delay if scale is None else delay * scale
