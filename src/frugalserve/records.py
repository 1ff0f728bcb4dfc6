"""What the gateway knows about each request once it is answered.

The request handler owns a :class:`RequestRecord` while the request runs and hands it to a
:class:`RecordSink` when it ends. Sinks must not block: accounting writes records in batches off the
request path, and the default :class:`RecentRecords` only keeps the last few in memory.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    endpoint: str  # "chat" | "completions"
    model: str
    started_wall: float
    started_mono: float
    stream: bool = False
    pool: str | None = None
    replica: str | None = None
    status: int = 0
    error_code: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttfb_s: float | None = None
    duration_s: float | None = None
    client_disconnected: bool = False
    # Facts later stages attach (key, tier, routing reason, token breakdown, cold-start wait, ...).
    extra: dict[str, Any] = field(default_factory=dict)


class RecordSink(Protocol):
    def submit(self, record: RequestRecord) -> None:
        """Take a finished record; must return at once."""
        ...


class RecentRecords:
    """Keeps the last ``size`` records in memory (for the admin API and tests)."""

    def __init__(self, size: int = 1000) -> None:
        self.records: deque[RequestRecord] = deque(maxlen=size)

    def submit(self, record: RequestRecord) -> None:
        self.records.append(record)

    def find(self, request_id: str) -> RequestRecord | None:
        for r in reversed(self.records):
            if r.request_id == request_id:
                return r
        return None
