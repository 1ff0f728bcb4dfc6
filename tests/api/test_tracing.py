"""OpenTelemetry traces (frugalserve.tracing): a real gateway served by uvicorn on loopback, in front of a real
model server on loopback (conftest's Backend), driven by the official openai client.

The spans are caught by the SDK's own InMemorySpanExporter behind the gateway's real BatchSpanProcessor, and
once by the real OTLP/HTTP exporter posting to a receiver on 127.0.0.1 that decodes the protobuf body (a
stand-in for a collector, which cannot run here).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from frugalserve import config as cfg
from frugalserve.api.app import Gateway
from tests.api.conftest import Backend, gateway_on_loopback, serving

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["budget", "routing", "holding", "upstream"]


def gateway_config(backend: str, tmp: Path, tracing: str = "  enabled: true\n") -> cfg.Config:
    return cfg.load_text(
        f"gateway:\n  database: 'sqlite:///{tmp}/usage.db'\n"
        f"pools:\n  - name: small\n    model: qwen3-vl-2b\n    aliases: [fast]\n    backend: {{url: '{backend}'}}\n"
        f"tracing:\n{tracing}"
    )


@contextlib.asynccontextmanager
async def traced(tmp: Path) -> AsyncIterator[tuple[openai.AsyncOpenAI, Gateway, Backend, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    async with (
        serving() as backend,
        gateway_on_loopback(gateway_config(backend.url, tmp), span_exporter=exporter) as (url, gateway),
        openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30) as client,
    ):
        yield client, gateway, backend, exporter


async def request_spans(gateway: Gateway, exporter: InMemorySpanExporter) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """The one request's root span and its children by start time, once the root has ended (a stream's record
    is finished just after its last byte)."""
    assert gateway.tracing is not None
    for _ in range(100):
        await asyncio.to_thread(gateway.tracing.flush)
        spans = exporter.get_finished_spans()
        roots = [s for s in spans if s.kind is SpanKind.SERVER]
        if roots:
            break
        await asyncio.sleep(0.05)
    [root] = roots
    children = sorted(
        (s for s in spans if s.parent is not None and s.parent.span_id == root.context.span_id),
        key=lambda s: s.start_time or 0,
    )
    assert len(spans) == 1 + len(children), "every span belongs to the request's tree"
    return root, children


def assert_stages_nested_in_order(root: ReadableSpan, children: list[ReadableSpan]) -> None:
    assert [c.name for c in children] == STAGES
    assert root.start_time is not None and root.end_time is not None
    previous_end = root.start_time
    for child in children:
        assert child.start_time is not None and child.end_time is not None
        assert child.context.trace_id == root.context.trace_id
        assert previous_end <= child.start_time <= child.end_time <= root.end_time, child.name
        previous_end = child.end_time


async def test_a_chat_is_one_root_span_with_its_stages_and_the_responses_token_counts(tmp_path: Path) -> None:
    async with traced(tmp_path) as (client, gateway, backend, exporter):
        answer = await client.chat.completions.create(
            model="fast",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=5,
            temperature=0.5,
            top_p=0.9,
        )
        root, children = await request_spans(gateway, exporter)
    assert answer.usage is not None
    assert root.name == "chat fast"
    assert root.kind is SpanKind.SERVER and root.parent is None
    assert root.status.status_code is StatusCode.UNSET
    attrs = dict(root.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "fast"
    assert attrs["gen_ai.response.model"] == answer.model
    assert attrs["gen_ai.usage.input_tokens"] == answer.usage.prompt_tokens
    assert attrs["gen_ai.usage.output_tokens"] == answer.usage.completion_tokens
    assert (attrs["gen_ai.request.max_tokens"], attrs["gen_ai.request.temperature"], attrs["gen_ai.request.top_p"]) == (
        5,
        0.5,
        0.9,
    )
    assert attrs["frugalserve.pool"] == "small" and attrs["http.response.status_code"] == 200
    assert attrs["frugalserve.routing.reason"] == gateway.records.records[-1].routing_reason
    assert attrs["frugalserve.prompt_tokens.counted"] == gateway.records.records[-1].counted_prompt_tokens
    assert_stages_nested_in_order(root, children)
    upstream = children[-1]
    assert upstream.kind is SpanKind.CLIENT
    # the model server was handed the upstream span as its parent, so its own spans continue the trace
    version, trace_id, parent_id, flags = backend.headers[-1]["traceparent"].split("-")
    assert (version, trace_id, parent_id) == (
        "00",
        f"{upstream.context.trace_id:032x}",
        f"{upstream.context.span_id:016x}",
    )
    assert int(flags, 16) & 1, "sampled"


async def test_a_stream_is_traced_to_its_end_with_its_usage(tmp_path: Path) -> None:
    async with traced(tmp_path) as (client, gateway, _backend, exporter):
        stream = await client.chat.completions.create(
            model="qwen3-vl-2b",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        usage = None
        async for chunk in stream:
            usage = chunk.usage or usage
        root, children = await request_spans(gateway, exporter)
    assert usage is not None
    attrs = dict(root.attributes or {})
    assert root.name == "chat qwen3-vl-2b" and attrs["frugalserve.stream"] is True
    assert attrs["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert attrs["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert_stages_nested_in_order(root, children)


async def test_an_unknown_model_ends_the_trace_in_error_with_openais_code(tmp_path: Path) -> None:
    async with traced(tmp_path) as (client, gateway, backend, exporter):
        with pytest.raises(openai.NotFoundError) as err:
            await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
        root, children = await request_spans(gateway, exporter)
    assert err.value.code == "model_not_found"
    assert root.name == "chat nope"
    assert root.status.status_code is StatusCode.ERROR
    assert root.status.description == "model_not_found"
    attrs = dict(root.attributes or {})
    assert attrs["error.type"] == "model_not_found" and attrs["http.response.status_code"] == 404
    assert [c.name for c in children] == ["budget"]  # refused while the model was checked
    assert backend.bodies == []


async def test_a_callers_traceparent_is_continued_and_passed_upstream(tmp_path: Path) -> None:
    trace_id, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with traced(tmp_path) as (client, gateway, backend, exporter):
        await client.chat.completions.create(
            model="fast",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"traceparent": f"00-{trace_id}-{caller_span}-01"},
        )
        root, children = await request_spans(gateway, exporter)
    assert f"{root.context.trace_id:032x}" == trace_id
    assert root.parent is not None and f"{root.parent.span_id:016x}" == caller_span
    sent = backend.headers[-1]["traceparent"].split("-")
    assert sent[1] == trace_id and sent[2] == f"{children[-1].context.span_id:016x}"


def test_with_tracing_off_the_gateway_never_imports_opentelemetry(tmp_path: Path) -> None:
    """In a fresh interpreter: build the gateway with tracing off, answer a chat through it, then look."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        import httpx
        from aiohttp import web
        from frugalserve import config as cfg
        from frugalserve.api.app import create_app

        async def answer(request):
            usage = {{"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}
            return web.json_response({{"id": "x", "object": "chat.completion", "model": "m", "choices": [
                {{"index": 0, "message": {{"role": "assistant", "content": "ok"}}, "finish_reason": "stop"}}],
                "usage": usage}})

        async def main():
            backend = web.Application()
            backend.router.add_post("/v1/chat/completions", answer)
            runner = web.AppRunner(backend)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]
            config = cfg.load_text(
                "gateway: {{database: 'sqlite:///{tmp_path}/u.db'}}\\n"
                f"pools: [{{{{name: p, model: m, backend: {{{{url: 'http://127.0.0.1:{{port}}'}}}}}}}}]\\n"
            )
            app = create_app(config)
            gateway = app.state.gateway
            await gateway.startup()
            try:
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                    r = await client.post("/v1/chat/completions",
                                          json={{"model": "m", "messages": [{{"role": "user", "content": "hi"}}]}})
                    assert r.status_code == 200, r.text
            finally:
                await gateway.shutdown()
                await runner.cleanup()
            assert gateway.tracing is None and gateway.records.records[-1].trace is None
            print(sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry"))

        asyncio.run(main())
        """
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=90, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_tracing_on_without_the_otel_extra_fails_at_startup_naming_the_install(tmp_path: Path) -> None:
    """In a fresh interpreter where opentelemetry cannot be imported (as without the extra)."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["opentelemetry"] = None  # what import finds for a package that is not installed
        from frugalserve import config as cfg
        from frugalserve.api.app import create_app
        config = cfg.load_text("pools: [{name: p, model: m, backend: {url: 'http://127.0.0.1:9'}}]\\n"
                               "tracing: {enabled: true}\\n")
        try:
            create_app(config)
        except cfg.ConfigError as exc:
            print(exc)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("tracing.enabled: traces need the otel extra")
    assert "pip install 'frugalserve[otel]'" in done.stdout


def test_frugalserve_up_with_tracing_on_and_no_otel_extra_says_what_to_install(tmp_path: Path) -> None:
    """The CLI a user runs: one error line naming the install, exit code 2, no traceback."""
    config = tmp_path / "gateway.yaml"
    config.write_text("tracing: {enabled: true}\npools: [{name: p, model: m, backend: {url: 'http://127.0.0.1:9'}}]\n")
    script = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "from frugalserve.cli import main\n"
        f"sys.exit(main(['up', '--config', {str(config)!r}, '--port', '1']))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "error: tracing.enabled: traces need the otel extra (opentelemetry.sdk is not installed): "
        "pip install 'frugalserve[otel]'"
    )


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("  sample_ratio: 1.5\n", "tracing.sample_ratio: must be between 0 and 1, got 1.5"),
        ("  endpoint: localhost:4318\n", "tracing.endpoint: not a URL"),
        ("  headers: [a]\n", "tracing.headers: must be a mapping"),
    ],
)
def test_tracing_config_errors_name_the_key(tmp_path: Path, section: str, message: str) -> None:
    with pytest.raises(cfg.ConfigError) as err:
        gateway_config("http://127.0.0.1:9", tmp_path, section)
    assert str(err.value).startswith(message)


class Collector:
    """An OTLP/HTTP traces receiver on loopback: keeps each export's decoded body and headers."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.headers: list[dict[str, str]] = []

    async def traces(self, request: web.Request) -> web.Response:
        body = ExportTraceServiceRequest()
        body.ParseFromString(await request.read())
        self.requests.append(body)
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        return web.Response(body=b"", content_type="application/x-protobuf")


async def test_the_otlp_http_exporter_delivers_the_spans_to_a_collector_on_shutdown(tmp_path: Path) -> None:
    collector = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", collector.traces)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    tracing = (
        f"  enabled: true\n  endpoint: http://127.0.0.1:{port}/v1/traces\n  service_name: gw-under-test\n"
        "  headers: {x-collector-key: s3cret}\n"
    )
    try:
        async with serving() as backend:
            async with (
                gateway_on_loopback(gateway_config(backend.url, tmp_path, tracing)) as (url, _gateway),
                openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30) as client,
            ):
                answer = await client.chat.completions.create(
                    model="fast", messages=[{"role": "user", "content": "hi"}]
                )
            # the gateway has shut down: its provider flushed the batch to the collector
            sent = backend.headers[-1]["traceparent"]
    finally:
        await runner.cleanup()
    assert collector.requests, "nothing was exported"
    assert collector.headers[0]["x-collector-key"] == "s3cret"
    spans = []
    for export in collector.requests:
        for resource_spans in export.resource_spans:
            service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}["service.name"]
            assert service == "gw-under-test"
            spans += [s for scope in resource_spans.scope_spans for s in scope.spans]
    by_name = {s.name: s for s in spans}
    assert sorted(by_name) == sorted(["chat fast", *STAGES])
    root = by_name["chat fast"]
    attrs = {a.key: a.value for a in root.attributes}
    assert answer.usage is not None
    assert attrs["gen_ai.usage.input_tokens"].int_value == answer.usage.prompt_tokens
    assert attrs["gen_ai.usage.output_tokens"].int_value == answer.usage.completion_tokens
    assert all(s.trace_id == root.trace_id for s in spans)
    assert sent.split("-")[1:3] == [root.trace_id.hex(), by_name["upstream"].span_id.hex()]
