"""The web UI's view of the gateway: its public HTTP APIs, as any client sees them, in typed results.

The UI runs inside the gateway process but never calls into it: every fact it shows comes over HTTP from
the same routes a client or an operator uses (``/v1/models``, ``/v1/chat/completions``,
``/v1/requests/{id}``, ``/admin/*``), so the page shows what the API says and needs the same keys.
Nothing here imports Gradio.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

WAITING = ": waiting for a replica"
COLD_START_MS = ": x-frugalserve-cold-start-ms:"


class GatewayError(Exception):
    """The gateway answered with an error (OpenAI's error JSON), or could not be reached."""

    def __init__(self, message: str, status: int | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param

    def __str__(self) -> str:
        where = f" (parameter: {self.param})" if self.param else ""
        return f"{self.message}{where}"


# -- one chat turn, as it streams --------------------------------------------------------------------


@dataclass(frozen=True)
class Routed:
    """The answer's headers are in: which pool took the request, why, and its id."""

    request_id: str
    pool: str | None
    route: str | None
    cold: bool  # the pool was not ready: keep-alives follow until it is


@dataclass(frozen=True)
class Waiting:
    """A keep-alive while the pool starts or wakes (api/holding.py)."""

    pool: str
    state: str
    eta_s: float | None  # seconds left of its measured start or wake time; None: not known
    waited_s: float


@dataclass(frozen=True)
class Ready:
    """A replica is ready after ``cold_start_s`` of waiting; the answer follows."""

    cold_start_s: float


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Done:
    request_id: str


ChatEvent = Routed | Waiting | Ready | Delta | Done


# -- what the gateway says afterwards ----------------------------------------------------------------


@dataclass(frozen=True)
class RequestFacts:
    """``GET /v1/requests/{id}``: what the request was and cost, as the gateway stored it."""

    request_id: str
    model: str
    pool: str | None
    tier: str | None
    route: str | None
    status: int
    prompt_tokens: int | None
    completion_tokens: int | None
    text_tokens: int | None
    image_tokens: int | None
    video_tokens: int | None
    image_tokens_saved: int | None
    ttft_s: float | None
    latency_s: float | None
    cold_start_wait_s: float | None
    cost_usd: float | None
    cost_note: str | None
    notes: str | None

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> RequestFacts:
        usage = body.get("usage") or {}
        kinds = usage.get("prompt_tokens_by_kind") or {}
        timing = body.get("timing") or {}
        cost = body.get("cost")
        return cls(
            request_id=body["id"],
            model=body.get("model") or "",
            pool=body.get("pool"),
            tier=body.get("tier"),
            route=body.get("route"),
            status=int(body.get("status") or 0),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            text_tokens=kinds.get("text"),
            image_tokens=kinds.get("image"),
            video_tokens=kinds.get("video"),
            image_tokens_saved=usage.get("image_tokens_saved"),
            ttft_s=timing.get("ttft_s"),
            latency_s=timing.get("latency_s"),
            cold_start_wait_s=timing.get("cold_start_wait_s"),
            cost_usd=None if cost is None else cost.get("usd"),
            cost_note=body.get("cost_note"),
            notes=body.get("notes"),
        )


def _error_of(response: httpx.Response) -> GatewayError:
    try:
        err = response.json()["error"]
        return GatewayError(str(err.get("message")), response.status_code, err.get("param"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return GatewayError(f"HTTP {response.status_code}: {response.text[:200]}", response.status_code)


def parse_waiting(line: str) -> Waiting | None:
    """The status in a keep-alive comment, or None for one without it (an older gateway's)."""
    _, _, rest = line.partition(WAITING)
    try:
        status = json.loads(rest)
        eta = status.get("eta_s")
        return Waiting(
            str(status["pool"]), str(status["state"]), None if eta is None else float(eta), float(status["waited_s"])
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class GatewayClient:
    """One user's view: a base URL (the gateway's own address) and their key (None when auth is off)."""

    def __init__(self, base_url: str, key: str | None, timeout_s: float = 600.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key or None
        self.timeout = httpx.Timeout(timeout_s, connect=5.0)

    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"} if self.key else {}

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, headers=self._headers(), timeout=self.timeout)

    async def _call(self, method: str, path: str, params: Mapping[str, str] | None = None) -> Any:
        try:
            async with self._client() as http:
                r = await http.request(method, path, params=params)
        except httpx.HTTPError as exc:
            raise GatewayError(f"the gateway did not answer: {exc}") from None
        if r.status_code >= 400:
            raise _error_of(r)
        return r.json()

    async def _get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        return await self._call("GET", path, params)

    # -- what a client uses -----------------------------------------------------------------------

    async def models(self) -> list[str]:
        body = await self._get("/v1/models")
        return [str(m["id"]) for m in body.get("data", [])]

    async def chat(self, body: dict[str, Any]) -> AsyncIterator[ChatEvent]:
        """Stream one chat completion: what the gateway says while it routes and holds it, then the text."""
        body = {**body, "stream": True}
        try:
            async with self._client() as http, http.stream("POST", "/v1/chat/completions", json=body) as r:
                if r.status_code >= 400:
                    await r.aread()
                    raise _error_of(r)
                request_id = r.headers.get("x-request-id", "")
                yield Routed(
                    request_id,
                    r.headers.get("x-frugalserve-pool"),
                    r.headers.get("x-frugalserve-route"),
                    r.headers.get("x-frugalserve-cold-start") == "waiting",
                )
                async for line in r.aiter_lines():
                    if line.startswith(WAITING):
                        waiting = parse_waiting(line)
                        if waiting is not None:
                            yield waiting
                    elif line.startswith(COLD_START_MS):
                        yield Ready(int(line[len(COLD_START_MS) :].strip()) / 1000)
                    elif line.startswith("data:"):
                        data = line[5:].strip()
                        if data == "[DONE]":
                            break
                        chunk = json.loads(data)
                        if "error" in chunk:
                            err = chunk["error"] or {}
                            raise GatewayError(str(err.get("message")), None, err.get("param"))
                        for choice in chunk.get("choices") or ():
                            text = (choice.get("delta") or {}).get("content")
                            if text:
                                yield Delta(text)
                yield Done(request_id)
        except httpx.HTTPError as exc:
            raise GatewayError(f"the gateway did not answer: {exc}") from None

    async def request(self, request_id: str) -> RequestFacts:
        return RequestFacts.parse(await self._get(f"/v1/requests/{request_id}"))

    # -- what an operator uses (the admin key) ----------------------------------------------------

    async def pools(self) -> list[dict[str, Any]]:
        return list((await self._get("/admin/pools"))["data"])

    async def usage(self, since: str, by: str) -> list[dict[str, Any]]:
        return list((await self._get("/admin/usage", {"since": since, "by": by}))["rows"])

    async def events(self, limit: int) -> list[dict[str, Any]]:
        return list((await self._get("/admin/events", {"limit": str(limit)}))["data"])

    async def wake(self, pool: str) -> dict[str, Any]:
        return dict(await self._call("POST", f"/admin/pools/{pool}/wake"))

    async def sleep(self, pool: str) -> dict[str, Any]:
        return dict(await self._call("POST", f"/admin/pools/{pool}/sleep"))
