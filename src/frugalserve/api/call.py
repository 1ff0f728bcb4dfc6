"""One OpenAI request on its way through the gateway: what the stages hand each other.

:class:`Call` replaces the long argument lists the stages used to pass along: the stages before dispatch
fill it (validate, authenticate, resolve the pool, prepare the budget), the stages after read it (hold,
forward, respond, record). The body is already encoded: a large one was parsed and encoded in a worker
process (:mod:`frugalserve.api.worker`) and is kept in the pieces the worker sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import ASGIApp

from frugalserve.accounting.keys import ApiKey
from frugalserve.api.proxy import Usage
from frugalserve.budget.prepare import Prepared
from frugalserve.pools import Lease, Pool
from frugalserve.records import RequestRecord
from frugalserve.routing.features import Features
from frugalserve.routing.policy import Route


@dataclass(slots=True)
class Call:
    request: Request
    record: RequestRecord
    pool: Pool
    path: str  # the upstream path, e.g. /v1/chat/completions
    body: tuple[bytes, ...]  # the encoded body as it will be sent (served model name, rewritten images, caps)
    stream: bool
    client_wants_usage: bool  # the client asked for the usage chunk (the gateway always asks upstream)
    prepared: Prepared | None  # None for pools that count nothing (tokenizer: none)
    route: Route  # how the pool was chosen (or that the model pinned it), for the x-frugalserve-route header
    # model "auto" only: what a second choice (fallback, cascade) needs. ``retarget`` encodes the body again for
    # another pool; None where the body is gone (a large body was encoded in a worker process).
    key: ApiKey | None = None
    features: Features | None = None
    retarget: Retarget | None = None
    affinity: str | None = None  # replica affinity key (first image, else conversation) in a pool of several
    carried: Usage | None = None  # the cascade: tokens of the calls before this one, recorded with its own


# Encode the call's body for another pool: the counts after that pool's caps, and the body.
Retarget = Callable[[Pool], tuple[Prepared | None, tuple[bytes, ...]]]


# Send a call to the replica a lease names; the ASGI app it returns streams or sends the answer.
Forward = Callable[[Call, Lease], Awaitable[ASGIApp]]
