"""What the gateway knows about each request once it is answered: the contract with accounting.

The request handler owns a :class:`RequestRecord` while the request runs; every stage that learns a fact
sets its field (auth the key, the budget stage the token breakdown, the lifecycle the cold-start wait, the
proxy the backend's usage), and the record goes to a :class:`RecordSink` when the request ends. Accounting
stores each field in the ``usage_records`` column of the same name (``accounting/store.py`` declares the
table; a test checks that the two agree), so a fact added here without a column fails the tests instead of
being dropped silently.

Sinks must not block: accounting writes records in batches off the request path, and the default
:class:`RecentRecords` only keeps the last few in memory.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from frugalserve.tracing import Trace


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    endpoint: str  # "chat" | "completions"
    model: str  # as the client named it
    started_wall: float  # epoch seconds (column "time")
    started_mono: float  # not stored: the clock durations are measured on
    stream: bool = False
    pool: str | None = None
    replica: str | None = None
    key_id: str | None = None  # the API key that was admitted (auth on)
    tier: str | None = None  # routing: the tier that served it
    routing_reason: str | None = None  # routing: why that pool
    status: int = 0  # HTTP status the client got (499: it went away)
    error_code: str | None = None  # OpenAI error code (or type) when status >= 400
    # The backend's own usage report (None when it sent none, or an impossible one: see usage_note).
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    # The gateway's own exact count before dispatch (budget stage), and its breakdown.
    counted_prompt_tokens: int | None = None
    prompt_text_tokens: int | None = None
    prompt_image_tokens: int | None = None
    prompt_video_tokens: int | None = None
    image_tokens_saved: int | None = None  # by resizing images and dropping duplicates
    images_resized: int | None = None
    duplicates_dropped: int | None = None
    max_tokens_requested: int | None = None  # what the client asked for
    max_tokens: int | None = None  # what was sent upstream (differs when clamped)
    notes: str | None = None  # what the gateway changed, as in the x-frugalserve-notes header
    usage_note: str | None = None  # why the backend's usage was not taken (e.g. negative counts)
    ttfb_s: float | None = None  # first byte forwarded to the client (column "ttft_s")
    duration_s: float | None = None
    cold_start_wait_s: float | None = None  # held while a replica started or woke
    client_disconnected: bool = False
    concurrency: int = 0  # requests in flight on the pool when this one was admitted (accounting)
    trace: Trace | None = None  # not stored: the request's spans while tracing is on (frugalserve.tracing)


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

    def find(self, request_id: str, key_id: str | None = None) -> RequestRecord | None:
        """The newest record with this id (of this API key only, unless ``key_id`` is None)."""
        for r in reversed(self.records):
            if r.request_id == request_id and (key_id is None or r.key_id == key_id):
                return r
        return None
