"""pydantic v2 models of the same shape as ``asyncclient._models`` (the decode baseline).

What a user of pydantic writes for the documented ``BatchResult``: camelCase aliases, every
optional field with a default, unknown fields ignored. An event's ``data`` is ``Any`` (pydantic
has no lazily decoded raw JSON field), so it is decoded in full, like ``json.loads`` does.
Imported only by the child processes that measure pydantic, so the others skip its import.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.alias_generators import to_camel


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class PydanticEvent(_Model):
    type: str = ""
    data: Any = None
    ts: datetime | None = None


class PydanticTask(_Model):
    url: str = ""
    instruction: str = ""
    input: dict[str, str] = Field(default_factory=dict)
    status: str = "PENDING"
    data: Any = None
    credits_used: float = 0.0
    duration_ms: int | None = None
    error: str | None = None
    events: list[PydanticEvent] | None = None


class PydanticRun(_Model):
    id: str
    total: int = 0
    completed: int = 0
    results: list[PydanticTask | None] = Field(default_factory=list)
    total_credits_used: float = 0.0
    status: str = "processing"
    created_at: datetime | None = None
    completed_at: datetime | None = None
    live_events: list[list[PydanticEvent]] | None = None
    error: str | None = None


run_adapter: TypeAdapter[PydanticRun] = TypeAdapter(PydanticRun)
