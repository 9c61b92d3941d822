"""Event timelines of emulated tasks, sized to a byte budget and pre-encoded to JSON.

A timeline reads like the real thing: a ``navigation``, then rounds of ``plan`` (long
``reasoning`` plus ``steps``), ``action`` and ``screenshot``, then ``validation`` and
``done`` for a success, or ``error`` and ``done`` for a failure. The budget is spent on the
reasoning text, which is a slice of one repeated chunk of prose, so a 20 MB timeline costs a
few string slices and one JSON encode rather than per-character randomness.
"""

from __future__ import annotations

import random
import time

import msgspec

__all__ = ["build_timeline", "iso_ms"]

_encode = msgspec.json.encode

_SENTENCES: tuple[str, ...] = (
    "The page finished loading and the main landmark region is visible above the fold.",
    "The heading is the first h1 inside the main element, so extracting it needs no scroll.",
    "A cookie banner covers the lower third of the viewport; dismissing it first is safer.",
    "The list of results is rendered client side, so I wait for the container to settle.",
    "There are two candidate selectors; the one scoped to the article body is more stable.",
    "The search box accepts free text, so I type the input value and submit with Enter.",
    "Pagination uses a Next link rather than infinite scroll, which keeps extraction simple.",
    "The output schema asks for strings only, so numeric badges are converted to text.",
    "The previous action changed the URL, which confirms the navigation succeeded.",
    "Prices appear twice on the page; the one near the buy button is the current price.",
    "I will scroll by one viewport and take a screenshot to confirm nothing new loaded.",
    "The instruction mentions the top five entries, so I stop after the fifth match.",
    "The table header row has no data cells and must be skipped during extraction.",
    "A modal dialog asks for a location; choosing the default keeps the task on track.",
    "The element is inside a shadow root, so the selector pierces it explicitly.",
    "Validation needs every required field present, so I re-check the partial result.",
)

_STEPS: tuple[str, ...] = (
    "dismiss the consent banner",
    "locate the results container",
    "scroll to load more entries",
    "type the search query",
    "open the first matching link",
    "extract the requested fields",
    "check the output against the schema",
    "take a confirmation screenshot",
)

_ACTIONS: tuple[str, ...] = ("click", "type", "scroll", "extract")

_SELECTORS: tuple[str, ...] = (
    "main h1",
    "#search-input",
    "button[type=submit]",
    "ol.results > li:nth-child(1) a",
    "table.data tbody tr",
    "div.price span.amount",
    "a.next-page",
    "[data-testid=accept-cookies]",
)

_MIN_REASONING = 40
_OFFSETS = 4096  # reasoning slices start within the first 4 KB of the corpus


class _Corpus:
    """One long run of prose; reasoning texts are slices of it."""

    def __init__(self) -> None:
        rng = random.Random("asyncclient.testing corpus")
        sentences = list(_SENTENCES)
        rng.shuffle(sentences)
        self._base = " ".join(sentences) + " "
        self._text = self._base * 4

    def slice(self, offset: int, length: int) -> str:
        """Return ``length`` characters starting at ``offset``, growing the corpus if needed."""
        need = offset + length
        if len(self._text) < need:
            self._text = self._base * (need // len(self._base) + 1)
        return self._text[offset:need]


_corpus = _Corpus()


def iso_ms(ms: int) -> str:
    """Format milliseconds since the epoch as ISO-8601 UTC with milliseconds and ``Z``.

    Args:
        ms: Milliseconds since the Unix epoch.

    Returns:
        A string such as ``2026-04-16T18:22:10.224Z``.
    """
    secs, frac = divmod(ms, 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(secs))}.{frac:03d}Z"


def build_timeline(
    *,
    run_id: str,
    index: int,
    url: str,
    status: str,
    error: str | None,
    created_ms: int,
    finish: float,
    budget: int,
    seed: str,
) -> list[bytes]:
    """Generate one task's event timeline, each event already encoded as JSON.

    Event ``j`` of ``n`` happens at ``created + finish * (j + 1) / n``, so the prefix of the
    timeline that has happened by a given time is easy to compute.

    Args:
        run_id: The run's id (screenshot URLs include it).
        index: The task's index in the run.
        url: The task's URL.
        status: The task's final status.
        error: The failure reason, for non-``SUCCESS`` statuses.
        created_ms: The run's creation time, in milliseconds since the epoch.
        finish: Seconds after creation when the task finishes.
        budget: Approximate size of the encoded timeline (a JSON array) in bytes.
        seed: Seeds the choice of selectors, actions and reasoning slices.

    Returns:
        The encoded events, in order.
    """
    rng = random.Random(seed)
    rounds = max(1, min(300, budget // 4000))
    events: list[tuple[str, dict[str, object]]] = [("navigation", {"url": url})]
    plan_slots: list[int] = []
    for step in range(rounds):
        plan_slots.append(len(events))
        first = rng.randrange(len(_STEPS))
        steps = [_STEPS[(first + i) % len(_STEPS)] for i in range(3)]
        events.append(("plan", {"reasoning": "", "steps": steps}))
        action = _ACTIONS[(step + index) % len(_ACTIONS)]
        action_data: dict[str, object] = {"action": action, "selector": rng.choice(_SELECTORS)}
        if action == "type":
            action_data["text"] = "python asyncio"
        events.append(("action", action_data))
        shot = f"https://cdn.pre.dev/screenshots/{run_id}/{index}/{step:04d}.png"
        events.append(("screenshot", {"url": shot}))
    if status == "SUCCESS":
        events.append(("validation", {"passed": True, "errors": []}))
    else:
        if status == "NO_TARGET":
            events.append(("validation", {"passed": False, "errors": [error or status]}))
        events.append(("error", {"message": error or status}))
    events.append(("done", {"status": status}))

    n = len(events)
    span_ms = finish * 1000.0
    stamps = [iso_ms(created_ms + round(span_ms * (j + 1) / n)) for j in range(n)]
    encoded = [
        _encode({"type": kind, "data": data, "ts": ts})
        for (kind, data), ts in zip(events, stamps, strict=True)
    ]
    # The array costs its brackets and commas on top of the events themselves.
    overhead = sum(len(e) for e in encoded) + n + 1
    length = max(_MIN_REASONING, (budget - overhead) // rounds)
    start = rng.randrange(_OFFSETS)
    for i, slot in enumerate(plan_slots):
        kind, data = events[slot]
        data["reasoning"] = _corpus.slice((start + 613 * i) % _OFFSETS, length)
        encoded[slot] = _encode({"type": kind, "data": data, "ts": stamps[slot]})
    return encoded
