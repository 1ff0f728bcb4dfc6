"""OpenTelemetry traces of each request (``tracing.enabled``), exported over OTLP/HTTP.

Off by default, and then this module costs the request path one ``is None`` check per stage: the gateway
holds no :class:`Tracing` and every record's ``trace`` stays None, and ``opentelemetry`` is never imported.
On, a request is one SERVER span named after the OpenTelemetry GenAI conventions (``"{operation} {model}"``,
``gen_ai.*`` attributes for the model and the token counts) with one child span per stage, started and
ended on the gateway's clock as the request passes:

    budget   authenticate, read, check and count the prompt (images resized, caps)
    routing  the pool chosen (model ``auto``) or explained (a named model)
    holding  waiting for a ready replica (a cold start or a wake when the pool was cold)
    upstream the model server's answer, to its last byte relayed (one span per attempt: a retry or the
             cascade adds one); its traceparent goes upstream, so a vLLM started with
             --otlp-traces-endpoint continues the trace

The gateway owns its own TracerProvider (never the process-global one) and shuts it down, flushing the
batch, when it stops. A caller's W3C ``traceparent`` makes the request's span a child of the caller's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from frugalserve.clock import Clock
from frugalserve.config import TracingConfig
from frugalserve.config_errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from frugalserve.api.call import Call
    from frugalserve.pools import Target
    from frugalserve.records import RequestRecord

# gen_ai.operation.name by endpoint (the GenAI conventions' well-known values)
OPERATIONS = {"chat": "chat", "completions": "text_completion"}
INSTALL = "pip install 'frugalserve[otel]'"


def otel_problem() -> str | None:
    """Why traces cannot be exported here (the otel extra is missing), or None."""
    from importlib.util import find_spec

    for module in ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"):
        try:
            found = find_spec(module) is not None
        except ModuleNotFoundError:  # a parent package is missing too
            found = False
        if not found:
            return f"traces need the otel extra ({module} is not installed): {INSTALL}"
    return None


def _require_otel() -> None:
    """Fail at startup, naming the install, when the otel extra is missing (rather than on the first request)."""
    problem = otel_problem()
    if problem is not None:
        raise ConfigError("tracing.enabled", problem)


class Tracing:
    """The gateway's tracer: begins a :class:`Trace` per request; ``exporter`` replaces OTLP/HTTP (tests)."""

    def __init__(self, config: TracingConfig, clock: Clock, exporter: SpanExporter | None = None) -> None:
        _require_otel()
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=config.endpoint, headers=dict(config.headers))
        self.clock = clock
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": config.service_name}),
            sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
            shutdown_on_exit=False,  # the gateway's shutdown flushes it
        )
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("frugalserve")
        self.propagator = TraceContextTextMapPropagator()
        self.api = trace

    def begin(self, record: RequestRecord, headers: Mapping[str, str]) -> Trace:
        """The request's span, begun when it was received, in the caller's trace when it sent a traceparent."""
        return Trace(self, record, self.propagator.extract(headers))

    def flush(self, timeout_s: float = 10.0) -> bool:
        return self.provider.force_flush(int(timeout_s * 1000))

    def shutdown(self) -> None:
        self.provider.shutdown()


class Trace:
    """One request's spans: the root, and the stage running now (each stage ends when the next begins)."""

    __slots__ = ("_mono0", "_root", "_stage", "_tracing", "_wall0")

    def __init__(self, tracing: Tracing, record: RequestRecord, parent: Any) -> None:
        api = tracing.api
        self._tracing = tracing
        self._wall0, self._mono0 = record.started_wall, record.started_mono
        self._root = tracing.tracer.start_span(
            OPERATIONS.get(record.endpoint, record.endpoint),
            context=parent,
            kind=api.SpanKind.SERVER,
            start_time=self._ns(record.started_mono),
            attributes={"frugalserve.request_id": record.request_id},
        )
        self._stage: Any = None

    def _ns(self, mono: float) -> int:
        """A reading of the gateway's monotonic clock as epoch nanoseconds (OpenTelemetry's timestamps)."""
        return int((self._wall0 + (mono - self._mono0)) * 1e9)

    def stage(self, name: str, kind: Any = None) -> None:
        """``name`` begins now; the stage before it ends."""
        api = self._tracing.api
        now = self._ns(self._tracing.clock.monotonic())
        if self._stage is not None:
            self._stage.end(end_time=now)
        context = api.set_span_in_context(self._root)
        self._stage = self._tracing.tracer.start_span(
            name, context=context, kind=kind or api.SpanKind.INTERNAL, start_time=now
        )

    def request(self, data: Mapping[str, Any]) -> None:
        """The sampling parameters the client gave (gen_ai.request.*)."""
        root = self._root
        max_tokens = data.get("max_completion_tokens", data.get("max_tokens"))
        for attr, value in (
            ("gen_ai.request.max_tokens", max_tokens),
            ("gen_ai.request.temperature", data.get("temperature")),
            ("gen_ai.request.top_p", data.get("top_p")),
        ):
            if isinstance(value, int | float) and not isinstance(value, bool):
                root.set_attribute(attr, value)

    def upstream(self, call: Call, target: Target, headers: dict[str, str]) -> None:
        """An attempt upstream begins: its span, and the traceparent in ``headers`` that names it."""
        record = call.record
        if self._stage is not None and record.cold_start_wait_s is not None:
            self._stage.set_attribute("frugalserve.cold_start_wait_s", record.cold_start_wait_s)
        self.stage("upstream", self._tracing.api.SpanKind.CLIENT)
        span = self._stage
        span.set_attribute("frugalserve.pool", call.pool.name)
        span.set_attribute("frugalserve.replica", target.replica)
        span.set_attribute("gen_ai.request.model", call.pool.config.served_model)
        self._root.set_attribute("gen_ai.response.model", call.pool.config.served_model)
        self._tracing.propagator.inject(headers, self._tracing.api.set_span_in_context(span))

    def finish(self, record: RequestRecord) -> None:
        """The request ended (:meth:`Recorder.finish`, after it filled the record): every span ends now."""
        api = self._tracing.api
        end = self._ns(record.started_mono + (record.duration_s or 0.0))
        if self._stage is not None:
            self._stage.end(end_time=end)
        root = self._root
        operation = OPERATIONS.get(record.endpoint, record.endpoint)
        root.update_name(f"{operation} {record.model}" if record.model else operation)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": record.model or None,
            "gen_ai.usage.input_tokens": record.prompt_tokens,
            "gen_ai.usage.output_tokens": record.completion_tokens,
            "http.response.status_code": record.status,
            "frugalserve.status": record.status,
            "frugalserve.pool": record.pool,
            "frugalserve.tier": record.tier,
            "frugalserve.routing.reason": record.routing_reason,
            "frugalserve.replica": record.replica,
            "frugalserve.stream": record.stream,
            "frugalserve.prompt_tokens.counted": record.counted_prompt_tokens,
            "frugalserve.image_tokens": record.prompt_image_tokens,
            "frugalserve.image_tokens_saved": record.image_tokens_saved,
            "frugalserve.cold_start_wait_s": record.cold_start_wait_s,
            "frugalserve.client_disconnected": record.client_disconnected or None,
        }
        if record.max_tokens_requested is not None and "gen_ai.request.max_tokens" not in _attrs(root):
            attributes["gen_ai.request.max_tokens"] = record.max_tokens_requested
        if record.status >= 400:
            attributes["error.type"] = record.error_code or str(record.status)
        root.set_attributes({k: v for k, v in attributes.items() if v is not None})
        if record.status >= 400:
            root.set_status(api.Status(api.StatusCode.ERROR, record.error_code or str(record.status)))
        root.end(end_time=end)


def _attrs(span: Any) -> Mapping[str, Any]:
    """A span's attributes so far (an unsampled span records none)."""
    return getattr(span, "attributes", None) or {}
