"""What admission does to a request body, in three steps that run in the gateway or in a body worker.

1. :func:`parse` reads the JSON and checks the parameters every backend needs, which gives the model name;
   the gateway then authorizes the key for it.
2. :func:`count` checks the messages, asks upstream for usage, and counts the prompt exactly with a pool's
   limits (the budget stage: images resized, duplicates dropped, caps applied). For ``model: "auto"`` it
   counts with the tiers' shared image limits and no caps, and extracts the routing features; the gateway
   then decides the pool (:mod:`frugalserve.routing`).
3. :func:`encode` applies the chosen pool's caps (``auto`` only), names its served model, and encodes the
   body that will be forwarded.

A small body runs the steps on the event loop; a large one in a worker process (:mod:`frugalserve.api.worker`),
so that neither parsing nor encoding tens of megabytes ever holds the gateway's loop. Both paths call
these same functions, and what passes between the steps is small.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from frugalserve.api import validate
from frugalserve.budget.images import PreprocessCache
from frugalserve.budget.limits import LimitsConfig
from frugalserve.budget.prepare import ImageSource, Prepared, apply_caps, prepare_chat, prepare_completion
from frugalserve.config import PoolConfig
from frugalserve.routing.features import Features, affinity_key, extract

AUTO = "auto"  # the model name that asks the router to choose


@dataclass(frozen=True, slots=True)
class Counted:
    """What counting found: for the record, the usage answer, and the router."""

    stream: bool
    client_wants_usage: bool  # the client asked for the usage chunk (the gateway always asks upstream)
    prepared: Prepared | None  # None for pools that count nothing (tokenizer: none)
    features: Features | None  # model "auto" only
    affinity: str | None = None  # the replica affinity key (first image, else conversation), when asked for


@dataclass(frozen=True, slots=True)
class Counting:
    """How to count: a pool's limits, or for ``auto`` the tiers' shared image limits without caps."""

    limits: LimitsConfig
    tokenizer: bool  # false: the pool counts nothing (tokenizer: none)
    routing_headers: Mapping[str, str] | None = None  # set for auto: the features are extracted
    affinity_headers: Mapping[str, str] | None = None  # set for a pool of several replicas: the affinity key


def parse(kind: str, body: bytes, default_model: str | None = None) -> tuple[dict[str, Any], str]:
    """The body as JSON, with its parameters checked; and the model it names (or the key's default)."""
    data = validate.parse_json(body)
    if default_model is not None and "model" not in data:
        data["model"] = default_model
    model = validate.chat(data) if kind == "chat" else validate.completion(data)
    return data, model


async def count(
    kind: str, data: dict[str, Any], how: Counting, fetcher: ImageSource, cache: PreprocessCache | None
) -> Counted:
    """Check and count ``data`` (changed in place: images, caps, stream options)."""
    if kind == "chat":
        validate.messages(data, validate.COUNTED_PARTS if how.tokenizer else validate.ALL_PARTS)
    stream = bool(data.get("stream"))
    client_wants_usage = False
    if stream:
        opts = data.get("stream_options") or {}
        client_wants_usage = bool(opts.get("include_usage"))
        data["stream_options"] = {**opts, "include_usage": True}
    prepared: Prepared | None = None
    if how.tokenizer:
        if kind == "chat":
            prepared = await prepare_chat(data, how.limits, fetcher, cache)
        else:
            prepared = await prepare_completion(data, how.limits)
    features = None
    affinity = None
    if how.routing_headers is not None and prepared is not None:
        features = extract(data, prepared, how.routing_headers)
        affinity = features.affinity
    elif how.affinity_headers is not None:
        affinity = affinity_key(data, how.affinity_headers)
    return Counted(stream, client_wants_usage, prepared, features, affinity)


def encode(
    kind: str, data: dict[str, Any], pool: PoolConfig, prepared: Prepared | None, routed: bool
) -> tuple[bytes, ...]:
    """The body for ``pool``: its caps when the router chose it (counting had none), its served model name."""
    if routed and prepared is not None:
        apply_caps(data, prepared, pool.limits, "messages" if kind == "chat" else "prompt")
    data["model"] = pool.served_model
    return (orjson.dumps(data),)


def encode_for(
    kind: str, data: dict[str, Any], pool: PoolConfig, prepared: Prepared | None, routed: bool
) -> tuple[Prepared | None, tuple[bytes, ...]]:
    """:func:`encode` with its own copy of the counts (the caps change them): the counts and the body."""
    mine = _copy(prepared)
    return mine, encode(kind, data, pool, mine, routed)


class Retargeting:
    """Encodes an ``auto`` request again for another pool (a fallback, or the cascade's next tier), from the
    body as it was before the first pool's caps and served model name."""

    _CHANGED = ("model", "max_tokens", "max_completion_tokens")  # what encode() sets

    def __init__(self, kind: str, data: dict[str, Any], prepared: Prepared | None) -> None:
        self.kind, self.data = kind, data
        self.original = {k: data[k] for k in self._CHANGED if k in data}
        self.prepared = _copy(prepared)

    def __call__(self, pool: PoolLike) -> tuple[Prepared | None, tuple[bytes, ...]]:
        for k in self._CHANGED:
            self.data.pop(k, None)
        self.data.update(self.original)
        return encode_for(self.kind, self.data, pool.config, self.prepared, True)


class PoolLike(Protocol):
    config: PoolConfig


def _copy(prepared: Prepared | None) -> Prepared | None:
    return None if prepared is None else dataclasses.replace(prepared, notes=list(prepared.notes))
