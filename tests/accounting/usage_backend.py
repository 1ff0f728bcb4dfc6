"""A model server stand-in whose usage report is whatever the test asks for (a real process, stdlib only).

No GPU and no model here: it answers every chat completion with one word and the usage given on the
command line, e.g. a backend that reports ``prompt_tokens = 2**64 - 1``.

    python tests/accounting/usage_backend.py --port 9002 --prompt-tokens 18446744073709551615
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def handler(usage: dict[str, int]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _json(self, status: int, obj: Any) -> None:
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._json(200, {"status": "ok"} if self.path == "/health" else {"object": "list", "data": []})

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            message = {"role": "assistant", "content": "ok"}
            choice = {"index": 0, "finish_reason": "stop", "message": message}
            self._json(200, {"id": "u-1", "object": "chat.completion", "choices": [choice], "usage": usage})

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--prompt-tokens", type=int, default=1)
    p.add_argument("--completion-tokens", type=int, default=1)
    a = p.parse_args()
    usage = {
        "prompt_tokens": a.prompt_tokens,
        "completion_tokens": a.completion_tokens,
        "total_tokens": a.prompt_tokens + a.completion_tokens,
    }
    ThreadingHTTPServer(("127.0.0.1", a.port), handler(usage)).serve_forever()


if __name__ == "__main__":
    main()
