"""What admission does to a request body, as two steps that run in the gateway or in a body worker.

:func:`parse` reads the JSON and checks the parameters every backend needs, which gives the model name;
the gateway then finds the pool and authorizes the key. :func:`shape` does what that pool needs: checks the
messages, asks upstream for usage, names the served model, counts and caps the prompt (the budget stage),
and encodes the body that will be forwarded. A small body runs both steps on the event loop; a large one
runs them in a worker process (:mod:`frugalserve.api.worker`), so that neither parsing nor encoding tens of
megabytes ever holds the gateway's loop. Both paths call these same functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from frugalserve.api import validate
from frugalserve.budget.images import PreprocessCache
from frugalserve.budget.prepare import ImageSource, Prepared, prepare_chat, prepare_completion
from frugalserve.config import PoolConfig

Kind = Literal["chat", "completion"]


@dataclass(frozen=True, slots=True)
class Shaped:
    """A request ready to forward: what the later stages need to know, and the bytes to send."""

    stream: bool
    client_wants_usage: bool  # the client asked for the usage chunk (the gateway always asks upstream)
    prepared: Prepared | None  # None for pools that count nothing (tokenizer: none)
    body: tuple[bytes, ...]  # the encoded body, in pieces sent one after another


def parse(kind: str, body: bytes) -> tuple[dict[str, Any], str]:
    """The body as JSON, with its parameters checked; and the model it names."""
    data = validate.parse_json(body)
    model = validate.chat(data) if kind == "chat" else validate.completion(data)
    return data, model


async def shape(
    kind: str, data: dict[str, Any], pool: PoolConfig, fetcher: ImageSource, cache: PreprocessCache | None
) -> Shaped:
    """Check, count, cap and encode ``data`` (changed in place) for ``pool``."""
    counted = pool.tokenizer != "none"
    if kind == "chat":
        validate.messages(data, validate.COUNTED_PARTS if counted else validate.ALL_PARTS)
    stream = bool(data.get("stream"))
    client_wants_usage = False
    if stream:
        opts = data.get("stream_options") or {}
        client_wants_usage = bool(opts.get("include_usage"))
        data["stream_options"] = {**opts, "include_usage": True}
    data["model"] = pool.served_model
    prepared: Prepared | None = None
    if counted:
        if kind == "chat":
            prepared = await prepare_chat(data, pool.limits, fetcher, cache)
        else:
            prepared = await prepare_completion(data, pool.limits)
    return Shaped(stream, client_wants_usage, prepared, (orjson.dumps(data),))
