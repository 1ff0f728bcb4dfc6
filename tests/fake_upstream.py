"""A small fake OpenAI-compatible model server, run as a real process by tests and benchmarks.

It is a stand-in for vLLM where a GPU would be needed, and it says so in /v1/models. It speaks the
parts of vLLM's contract the gateway uses: /v1/chat/completions and /v1/completions (streaming and
not, with ``stream_options.include_usage``), /v1/models, /health, /metrics, and the sleep-mode API
(/sleep?level=N, /wake_up, /is_sleeping).

Per-request behaviour is steered by an extension field ``x_fake`` in the body::

    {"status": 400}            answer with this status and an OpenAI error body
    {"delay_s": 1.5}           wait before answering (before the first chunk when streaming)
    {"tokens": 5}              number of completion tokens (default --tokens)
    {"interval_s": 0.05}       pause between streamed chunks
    {"die_after": 2}           exit the process (kill -9 style) after this many streamed chunks
    {"raw": "text"}            answer 200 with this non-JSON body
    {"json_body": [1]}         answer 200 with this JSON value (e.g. not an object)
    {"html_status": 500}       answer this status with an HTML error page (naming the server's address)
    {"usage": {...}}           report this usage object instead of the real counts
    {"sse_eol": "crlf"}        end SSE lines with "\r\n" ("cr", "lf", or "mixed": one style per event)
    {"stall_after": 3}         after this many streamed chunks, send nothing until the client hangs up
    {"endless_event": N}       stream one event of N bytes of data lines without a blank line, then end it

GET /stats reports how many requests started, finished and were cancelled by the client, and every
``level`` query POST /sleep received (``sleep_levels``, the raw value or null) and every answer of
GET /is_sleeping (``is_sleeping_answers``).

    python tests/fake_upstream.py --port 9001 [--start-delay 2] [--model fake] [--tokens 8]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import uvicorn

WORDS = ["frugal", "serve", "token", "gpu", "sleep", "wake", "cheap", "fast"]


class FakeUpstream:
    def __init__(self, model: str, tokens: int, latency_s: float, address: str = "") -> None:
        self.model = model
        self.address = address
        self.tokens = tokens
        self.latency_s = latency_s
        self.sleeping = 0
        self.started = 0
        self.finished = 0
        self.cancelled = 0
        self.running = 0
        self.prompt_total = 0
        self.generation_total = 0
        self.sleep_levels: list[str | None] = []
        self.is_sleeping_answers: list[bool] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path, method = scope["path"], scope["method"]
        if method == "GET" and path == "/health":
            return await self._json(send, 200, {"status": "ok"})
        if method == "GET" and path == "/v1/models":
            return await self._json(
                send, 200, {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "fake"}]}
            )
        if method == "GET" and path == "/stats":
            return await self._json(send, 200, self._stats())
        if method == "GET" and path == "/metrics":
            return await self._metrics(send)
        if method == "GET" and path == "/is_sleeping":
            self.is_sleeping_answers.append(bool(self.sleeping))
            return await self._json(send, 200, {"is_sleeping": bool(self.sleeping)})
        if method == "POST" and path == "/sleep":
            raw = parse_qs(scope.get("query_string", b"").decode()).get("level", [None])[0]
            self.sleep_levels.append(raw)
            self.sleeping = int(raw) if raw and raw.isdigit() else 1  # vLLM's default level is 1
            return await self._json(send, 200, {})
        if method == "POST" and path == "/wake_up":
            self.sleeping = 0
            return await self._json(send, 200, {})
        if method == "POST" and path in ("/v1/chat/completions", "/v1/completions"):
            body = await self._body(receive)
            return await self._complete(path, body, send, receive)
        return await self._json(send, 404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def _stats(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "finished": self.finished,
            "cancelled": self.cancelled,
            "running": self.running,
            "sleeping": self.sleeping,
            "sleep_levels": self.sleep_levels,
            "is_sleeping_answers": self.is_sleeping_answers,
            "pid": os.getpid(),
        }

    async def _body(self, receive: Any) -> dict[str, Any]:
        chunks = []
        while True:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        return json.loads(b"".join(chunks) or b"{}")

    async def _json(self, send: Any, status: int, obj: Any, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        data = json.dumps(obj).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
        await send({"type": "http.response.body", "body": data})

    async def _metrics(self, send: Any) -> None:
        text = (
            f'vllm:num_requests_running{{model_name="{self.model}"}} {self.running}\n'
            f'vllm:num_requests_waiting{{model_name="{self.model}"}} 0\n'
            f'vllm:prompt_tokens_total{{model_name="{self.model}"}} {self.prompt_total}\n'
            f'vllm:generation_tokens_total{{model_name="{self.model}"}} {self.generation_total}\n'
        ).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": text})

    async def _complete(self, path: str, body: dict[str, Any], send: Any, receive: Any) -> None:
        fake = body.get("x_fake") or {}
        if self.sleeping:
            return await self._json(send, 503, {"error": {"message": "model is sleeping", "type": "unavailable"}})
        if "status" in fake:
            status = int(fake["status"])
            return await self._json(
                send,
                status,
                {
                    "error": {
                        "message": f"fake error {status}",
                        "type": "invalid_request_error",
                        "param": "x_fake",
                        "code": "fake",
                    }
                },
            )
        if "html_status" in fake:
            page = HTML_ERROR_PAGE.format(status=int(fake["html_status"]), server=self.address).encode()
            headers = [(b"content-type", b"text/html")]
            await send({"type": "http.response.start", "status": int(fake["html_status"]), "headers": headers})
            return await send({"type": "http.response.body", "body": page})
        if "raw" in fake:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            return await send({"type": "http.response.body", "body": str(fake["raw"]).encode()})
        if "json_body" in fake:
            return await self._json(send, 200, fake["json_body"])
        chat = path.endswith("chat/completions")
        n_tokens = int(fake.get("tokens", body.get("max_tokens") or self.tokens))
        n_tokens = min(n_tokens, int(body.get("max_tokens") or n_tokens))
        prompt_tokens = max(1, len(json.dumps(body.get("messages") or body.get("prompt") or "")) // 4)
        self.started += 1
        self.running += 1
        # Like vLLM, abort generation when the client (the gateway) hangs up.
        me = asyncio.current_task()
        assert me is not None
        watcher = asyncio.ensure_future(self._cancel_on_disconnect(receive, me))
        try:
            delay = float(fake.get("delay_s", self.latency_s))
            if delay:
                await asyncio.sleep(delay)
            if body.get("stream"):
                await self._stream(body, chat, n_tokens, prompt_tokens, fake, send)
            else:
                text = " ".join(WORDS[i % len(WORDS)] for i in range(n_tokens))
                usage = fake.get("usage") or {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": n_tokens,
                    "total_tokens": prompt_tokens + n_tokens,
                }
                choice: dict[str, Any] = {"index": 0, "finish_reason": "length", "logprobs": None}
                if chat:
                    choice["message"] = {"role": "assistant", "content": text}
                else:
                    choice["text"] = text
                await self._json(
                    send,
                    200,
                    {
                        "id": f"fake-{self.started}",
                        "object": "chat.completion" if chat else "text_completion",
                        "created": int(time.time()),
                        "model": body.get("model", self.model),
                        "choices": [choice],
                        "usage": usage,
                    },
                )
            self.finished += 1
            self.prompt_total += prompt_tokens
            self.generation_total += n_tokens
        except (asyncio.CancelledError, OSError):
            self.cancelled += 1
            raise
        finally:
            watcher.cancel()
            self.running -= 1

    async def _endless_event(self, size: int, send: Any) -> None:
        """One event of ``size`` bytes of data lines and no blank line (then its end, if still connected)."""
        line = b"data: " + b"x" * 1017 + b"\n"
        block = line * 64
        sent = 0
        while sent < size:
            await send({"type": "http.response.body", "body": block, "more_body": True})
            sent += len(block)
            # Once the client is gone, uvicorn's send returns at once without suspending: yield, so that the
            # disconnect watcher can cancel this task (as vLLM aborts a request whose client left).
            await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b"\n", "more_body": True})

    async def _cancel_on_disconnect(self, receive: Any, task: asyncio.Task[Any]) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        task.cancel()

    async def _stream(
        self, body: dict[str, Any], chat: bool, n_tokens: int, prompt_tokens: int, fake: dict[str, Any], send: Any
    ) -> None:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        interval = float(fake.get("interval_s", 0))
        die_after = fake.get("die_after")
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream; charset=utf-8")],
            }
        )
        created = int(time.time())
        rid = f"fake-{self.started}"
        eol = _eols(str(fake.get("sse_eol", "lf")))
        if "endless_event" in fake:
            await self._endless_event(int(fake["endless_event"]), send)
        for i in range(n_tokens):
            if die_after is not None and i >= int(die_after):
                os._exit(9)
            if "stall_after" in fake and i == int(fake["stall_after"]):
                await asyncio.sleep(60)  # cancelled when the client hangs up
            word = WORDS[i % len(WORDS)] + " "
            if chat:
                delta: dict[str, Any] = {"content": word}
                if i == 0:
                    delta["role"] = "assistant"
                choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}
            else:
                choice = {"index": 0, "text": word, "finish_reason": None, "logprobs": None}
            chunk = {
                "id": rid,
                "object": "chat.completion.chunk" if chat else "text_completion",
                "created": created,
                "model": body.get("model"),
                "choices": [choice],
            }
            if include_usage:
                chunk["usage"] = None
            await send({"type": "http.response.body", "body": _event(chunk, next(eol)), "more_body": True})
            if interval:
                await asyncio.sleep(interval)
        final_choice: dict[str, Any] = {"index": 0, "finish_reason": "length", "logprobs": None}
        final_choice.update({"delta": {}} if chat else {"text": ""})
        tail = [
            {
                "id": rid,
                "object": "chat.completion.chunk" if chat else "text_completion",
                "created": created,
                "model": body.get("model"),
                "choices": [final_choice],
            }
        ]
        if include_usage:
            tail[0]["usage"] = None
            tail.append(
                {
                    "id": rid,
                    "object": "chat.completion.chunk" if chat else "text_completion",
                    "created": created,
                    "model": body.get("model"),
                    "choices": [],
                    "usage": fake.get("usage")
                    or {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": n_tokens,
                        "total_tokens": prompt_tokens + n_tokens,
                    },
                }
            )
        data = b"".join(_event(c, next(eol)) for c in tail) + _event("[DONE]", next(eol))
        await send({"type": "http.response.body", "body": data, "more_body": False})


HTML_ERROR_PAGE = (
    "<!DOCTYPE html><html><head><title>{status} Internal Server Error</title></head>"
    "<body><h1>Internal Server Error</h1><p>Traceback at {server}: model worker crashed</p></body></html>"
)
_EOL = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}


def _eols(style: str) -> Iterator[bytes]:
    """The line end of each successive event: one style, or all three in turn ("mixed")."""
    return itertools.cycle(_EOL.values()) if style == "mixed" else itertools.repeat(_EOL[style])


def _event(obj: Any, eol: bytes) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj)
    return b"data: " + data.encode() + eol + eol


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", default="fake-model")
    p.add_argument("--tokens", type=int, default=8, help="completion tokens per response")
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay before each answer")
    p.add_argument("--start-delay", type=float, default=0.0, help="seconds before the port opens (a cold start)")
    args = p.parse_args()
    if args.start_delay:
        time.sleep(args.start_delay)
    app = FakeUpstream(args.model, args.tokens, args.latency_ms / 1000, f"{args.host}:{args.port}")
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
