"""``GET /v1/requests/{request_id}``: what one finished request was and cost, for the client that made it.

The id is the one the gateway answered in ``x-request-id``. The facts are the request's record as stored
(frugalserve.records), its cost the share the reports give it (accounting/receipt.py). Who may read it:
with auth off, anyone; with auth on, the API key that made it, or the admin key. Any other key gets the
404 of an unknown id, so it learns nothing of other keys' requests; no key at all gets the 401 of every
``/v1`` route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from frugalserve.accounting.auth import bearer_matches
from frugalserve.accounting.receipt import Receipt
from frugalserve.accounting.service import Accounting
from frugalserve.errors import NotFound

PATH = "/v1/requests/{request_id:path}"


def endpoint(accounting: Accounting) -> Callable[[Request], Awaitable[Response]]:
    async def get(request: Request) -> Response:
        request_id = request.path_params["request_id"]
        found = await accounting.receipt(request_id, await _owner(accounting, request.headers.get("authorization")))
        if found is None:
            raise NotFound(
                f"No finished request with the id {request_id!r}.", param="request_id", code="request_not_found"
            )
        return Response(orjson.dumps(receipt_json(found)), media_type="application/json")

    return get


async def _owner(accounting: Accounting, authorization: str | None) -> str | None:
    """Whose requests the caller may read: one key's id, or None for every request (auth off, admin key)."""
    gate = accounting.gate
    if not gate.enabled:
        return None
    if gate.admin_key is not None and bearer_matches(authorization, gate.admin_key):
        return None
    key = await gate.authenticate(authorization)  # 401 without a valid key
    assert key is not None, "auth is on"
    return key.id


def receipt_json(receipt: Receipt) -> dict[str, Any]:
    r = receipt.record
    counted = r.counted_prompt_tokens is not None  # the budget stage counted the prompt exactly
    by_kind = {
        "text": r.prompt_text_tokens or 0,
        "image": r.prompt_image_tokens or 0,
        "video": r.prompt_video_tokens or 0,
    }
    cost = receipt.cost
    return {
        "object": "frugalserve.request",
        "id": r.request_id,
        "created": r.started_wall,
        "model": r.model,
        "pool": r.pool,
        "replica": r.replica,
        "tier": r.tier,
        "route": r.routing_reason,
        "status": r.status,
        "error_code": r.error_code,
        "stream": r.stream,
        "notes": r.notes,
        "usage": {
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens,
            "prompt_tokens_by_kind": by_kind if counted else None,
            "image_tokens_saved": r.image_tokens_saved,
        },
        "timing": {"ttft_s": r.ttfb_s, "latency_s": r.duration_s, "cold_start_wait_s": r.cold_start_wait_s},
        "cost": None if cost is None else {"usd": cost.usd, "busy_s": cost.busy_s, "gpu_s": cost.gpu_s},
        "cost_note": receipt.cost_note,
    }
