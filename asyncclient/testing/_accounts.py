"""What the emulator knows of an account: plan, credits, submit rate limit, and the caps."""

from __future__ import annotations

import hashlib
import math
from collections import deque
from dataclasses import dataclass, field

__all__ = ["CREDITS_URL", "MAX_BATCH", "QUEUE_CAP", "SUBSCRIBE_URL", "Account", "user_id"]

QUEUE_CAP = 1000
"""Live (unfinished) tasks one key may have."""
MAX_BATCH = 100
"""Tasks one submission may hold."""
SUBSCRIBE_URL = "https://pre.dev/pricing"
CREDITS_URL = "https://pre.dev/settings/credits"


@dataclass
class Account:
    """What :meth:`Emulator.set_account` set for one key."""

    subscribed: bool = True
    credits: float | None = None
    rate_limit: tuple[int, float] | None = None
    submits: deque[float] = field(default_factory=deque)

    def admit(self, now: float) -> int | None:
        """Count a submission against the rate limit, if it is under it.

        Args:
            now: The emulator's time, in seconds since the epoch.

        Returns:
            ``None`` if the submission is admitted (and counted); else the whole seconds until
            the oldest submission in the window leaves it (at least 1), for ``Retry-After``.
        """
        if self.rate_limit is None:
            return None
        limit, window = self.rate_limit
        while self.submits and self.submits[0] <= now - window:
            self.submits.popleft()
        if len(self.submits) >= limit:
            return max(1, math.ceil(self.submits[0] + window - now))
        self.submits.append(now)
        return None


def user_id(api_key: str) -> str:
    """The account id the emulator shows for a key (derived from it, never the key itself)."""
    return "user_" + hashlib.sha256(f"asyncclient.testing:{api_key}".encode()).hexdigest()[:16]
