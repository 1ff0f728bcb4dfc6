"""The end of every request: its record finished once, its metrics counted, the record handed to the sink.

Every path through the gateway (an answer, an error, a client that left, a stream that broke) ends in
:meth:`Recorder.finish`, which is also what releases the request's share of the in-flight gauge.
"""

from __future__ import annotations

from frugalserve.api.proxy import CLIENT_CLOSED, Usage
from frugalserve.clock import Clock
from frugalserve.errors import APIError
from frugalserve.metrics import GatewayMetrics
from frugalserve.records import RecordSink, RequestRecord


class Recorder:
    def __init__(self, clock: Clock, metrics: GatewayMetrics, sink: RecordSink) -> None:
        self.clock = clock
        self.metrics = metrics
        self.sink = sink

    def admitted(self, record: RequestRecord) -> None:
        """The request has a pool: it counts as in flight until :meth:`finish`."""
        self.metrics.in_flight.labels(record.pool).inc()

    def moved(self, record: RequestRecord, old_pool: str) -> None:
        """The request left ``old_pool`` for ``record.pool`` before any answer (a fallback, the cascade)."""
        self.metrics.in_flight.labels(old_pool).dec()
        self.metrics.in_flight.labels(record.pool).inc()

    def first_byte(self, record: RequestRecord) -> None:
        record.ttfb_s = self.clock.monotonic() - record.started_mono

    def finish_stream(
        self, record: RequestRecord, status: int, usage: Usage | None, err: APIError | None, gone: bool
    ) -> None:
        record.client_disconnected = gone
        self.finish(record, CLIENT_CLOSED if gone else status, usage, err)

    def gone(self, record: RequestRecord) -> None:
        """The client left before its answer began."""
        record.client_disconnected = True
        self.finish(record, CLIENT_CLOSED, None, None)

    def finish(self, record: RequestRecord, status: int, usage: Usage | None, err: APIError | None) -> None:
        record.status = status
        record.duration_s = self.clock.monotonic() - record.started_mono
        if err is not None:
            record.error_code = err.code or err.type
        if usage is not None:  # checked by proxy.parse_usage: counts are trusted or None with a note
            record.prompt_tokens = usage.prompt_tokens
            record.completion_tokens = usage.completion_tokens
            record.usage_note = usage.note
        m = self.metrics
        pool = record.pool or "-"
        tier = record.tier or "-"
        m.requests.labels(pool, tier, record.endpoint, str(status)).inc()
        if record.pool:
            m.in_flight.labels(pool).dec()
            m.latency.labels(pool, tier, record.endpoint).observe(record.duration_s)
            if record.ttfb_s is not None:
                m.ttft.labels(pool, tier, record.endpoint).observe(record.ttfb_s)
            if record.prompt_tokens is not None:  # a backend processed it: its prompt by kind
                _count_prompt(m, pool, tier, record)
            if record.completion_tokens:
                m.generation_tokens.labels(pool, tier).inc(record.completion_tokens)
                if record.stream and record.ttfb_s is not None and record.completion_tokens > 1:
                    gap = (record.duration_s - record.ttfb_s) / (record.completion_tokens - 1)
                    m.itl.labels(pool, tier).observe(gap)
            if record.image_tokens_saved:
                m.tokens_saved.labels(pool, tier).inc(record.image_tokens_saved)
            if record.client_disconnected:
                m.client_disconnects.labels(pool).inc()
        if record.trace is not None:
            record.trace.finish(record)
        self.sink.submit(record)


def _count_prompt(m: GatewayMetrics, pool: str, tier: str, record: RequestRecord) -> None:
    """Prompt tokens by kind: the gateway's exact count where it counted, else the backend's usage."""
    if record.counted_prompt_tokens is None:
        if record.prompt_tokens:
            m.prompt_tokens.labels(pool, tier, "uncounted").inc(record.prompt_tokens)
        return
    for kind, n in (
        ("text", record.prompt_text_tokens),
        ("image", record.prompt_image_tokens),
        ("video", record.prompt_video_tokens),
    ):
        if n:
            m.prompt_tokens.labels(pool, tier, kind).inc(n)
