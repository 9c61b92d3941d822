"""Fixed facts about the API: where it lives, how it is configured, its limits (a leaf).

Nothing here imports from the package, so every other module may read these, and the checks in
``_validation`` can use them without a circle through the option classes in ``_config``.
"""

from __future__ import annotations

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "DEFAULT_BASE_URL",
    "LIST_PAGE_MAX",
    "QUEUE_STATUS_PATH",
    "RETRY_STATUSES",
]

DEFAULT_BASE_URL = "https://api.pre.dev"
"""The production API, used when neither ``base_url=`` nor :data:`BASE_URL_ENV` is given."""

API_KEY_ENV = "PREDEV_API_KEY"
"""The environment variable the API key is read from when ``api_key=`` is not given."""

BASE_URL_ENV = "PREDEV_BASE_URL"
"""The environment variable the base URL is read from when ``base_url=`` is not given."""

LIST_PAGE_MAX = 100
"""The largest page the list endpoint serves."""

QUEUE_STATUS_PATH = "/browser-agent-status"
"""The queue snapshot: the only documented path, for both route styles."""

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""Statuses worth another try: the server or something in between had a passing problem."""
