"""The gate every OpenAI request passes: API key → allowed model → budget → rate.

Answers (OpenAI error JSON, mapped in the gateway): unknown, malformed or revoked key → 401; model not in
the key's allow-list → 403; daily or monthly budget spent → 429 ``budget_exceeded`` naming the reset time
(and ``Retry-After``); over ``rpm`` or ``tpm`` → 429 ``rate_limit_exceeded`` with ``Retry-After``.

Keys and spend live in the database; the gate keeps them in memory and re-reads them every
``budget_refresh_s`` (a task it owns), so admission never waits for the database, except once per second
at most when a key id it has never seen arrives (a key created a moment ago by ``frugalserve keys``).
Rate windows are per gateway process (see docs/accounting.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import logging
import math
import os
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.engine import Engine

from frugalserve.accounting import budgets, keys, store
from frugalserve.accounting.config import AccountingConfig, AuthConfig
from frugalserve.clock import Clock
from frugalserve.errors import AuthenticationFailed, PermissionDenied, RateLimited
from frugalserve.tasks import stop_task

log = logging.getLogger("frugalserve.auth")

WINDOW_S = 60.0
MISS_REFRESH_S = 1.0


def _iso(wall: float) -> str:
    return dt.datetime.fromtimestamp(wall, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Rate:
    """Sliding one-minute windows of one key's requests and tokens (monotonic time)."""

    __slots__ = ("requests", "token_sum", "tokens")

    def __init__(self) -> None:
        self.requests: deque[float] = deque()
        self.tokens: deque[tuple[float, int]] = deque()
        self.token_sum = 0

    def expire(self, now: float) -> None:
        while self.requests and now - self.requests[0] >= WINDOW_S:
            self.requests.popleft()
        while self.tokens and now - self.tokens[0][0] >= WINDOW_S:
            self.token_sum -= self.tokens.popleft()[1]


def bearer_matches(authorization: str | None, secret: str) -> bool:
    """``authorization`` is ``Bearer <secret>`` (compared in constant time)."""
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), secret.encode())


class Gate:
    def __init__(
        self,
        engine: Engine | None,
        auth: AuthConfig,
        accounting: AccountingConfig,
        clock: Clock,
        *,
        confirmed_seq: Callable[[], int] = lambda: 0,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self.engine = engine
        self.enabled = auth.enabled
        self.refresh_s = accounting.budget_refresh_s
        self.clock = clock
        self.admin_key = environ.get(auth.admin_key_env) or None
        self.admin_key_env = auth.admin_key_env
        self._confirmed_seq = confirmed_seq
        self.keys: dict[str, keys.ApiKey] = {}
        self.spend = budgets.Spend()
        self._rates: dict[str, _Rate] = {}
        self._last_refresh = float("-inf")
        self._applied_seq = -1  # the confirmed sequence of the snapshot in use
        self._reads: set[asyncio.Future[Any]] = set()  # database reads under way in worker threads
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if not self.enabled or self.engine is None:
            return
        await self.refresh()
        self._task = asyncio.create_task(self._run(), name="auth-refresh")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None
        # A read in a worker thread cannot be cancelled: let it give its connection back before the engine
        # is disposed (else the connection is dropped still open).
        for reading in list(self._reads):
            with contextlib.suppress(Exception):
                await reading

    async def _run(self) -> None:
        while True:
            await self.clock.sleep(self.refresh_s)
            try:
                await self.refresh()
            except Exception as exc:  # the database may be away; keep the last snapshot
                log.warning("auth: could not refresh keys and spend: %s", exc)

    async def refresh(self) -> None:
        """Re-read keys and spend; the one place the gate's snapshots are replaced."""
        assert self.engine is not None
        self._last_refresh = self.clock.monotonic()
        now = self.clock.wall()
        day0, month0 = budgets.day_start(now), budgets.month_start(now)
        confirmed = self._confirmed_seq()  # taken before the read: rows confirmed by now are in it
        engine = self.engine

        def read() -> tuple[dict[str, keys.ApiKey], dict[str, float], dict[str, float]]:
            with engine.connect() as conn:
                return keys.load_keys(engine), store.spend_by_key(conn, day0), store.spend_by_key(conn, month0)

        reading = asyncio.ensure_future(asyncio.to_thread(read))
        self._reads.add(reading)
        reading.add_done_callback(self._reads.discard)
        loaded, day, month = await asyncio.shield(reading)
        # Two reads can overlap (the periodic one and one for an unknown key) and finish out of order; an
        # older snapshot must not replace a newer one, whose local charges were already dropped.
        if confirmed < self._applied_seq:
            return
        self._applied_seq = confirmed
        self.keys = loaded
        self.spend.replace_snapshot(day, month, day0, month0, confirmed)

    # -- the request path ------------------------------------------------------------------------

    async def authenticate(self, authorization: str | None) -> keys.ApiKey | None:
        """The request's key (None with auth off), or 401."""
        if not self.enabled:
            return None
        return await self._authenticate(authorization)

    def authorize(self, key: keys.ApiKey, model: str) -> None:
        """May this key use this model now: 403 (model), 429 (budget, rate)."""
        if not key.allows(model):
            raise PermissionDenied(f"This API key may not use the model {model!r}.", param="model")
        self._check_budget(key)
        self._check_rate(key)

    async def _authenticate(self, authorization: str | None) -> keys.ApiKey:
        if not authorization:
            raise AuthenticationFailed(
                "No API key provided. Send it as 'Authorization: Bearer <key>'.", code="missing_api_key"
            )
        scheme, _, secret = authorization.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise AuthenticationFailed("The Authorization header must be 'Bearer <key>'.")
        key_id = keys.key_id_of(secret)
        key = self.keys.get(key_id) if key_id else None
        if key is None and key_id and self.clock.monotonic() - self._last_refresh >= MISS_REFRESH_S:
            with contextlib.suppress(Exception):
                await self.refresh()
            key = self.keys.get(key_id)
        if key is None or not keys.matches(key, secret):
            raise AuthenticationFailed("Incorrect API key provided.")
        if key.revoked_at is not None:
            raise AuthenticationFailed("This API key has been revoked.", code="api_key_revoked")
        return key

    def _check_budget(self, key: keys.ApiKey) -> None:
        now = self.clock.wall()
        if key.budget_usd_per_day is not None and self.spend.today(key.id, now) >= key.budget_usd_per_day:
            self._over_budget("daily", key.budget_usd_per_day, budgets.day_start(now) + budgets.DAY, now)
        if key.budget_usd_per_month is not None and self.spend.this_month(key.id, now) >= key.budget_usd_per_month:
            self._over_budget("monthly", key.budget_usd_per_month, budgets.next_month_start(now), now)

    @staticmethod
    def _over_budget(period: str, limit: float, reset: float, now: float) -> None:
        raise RateLimited(
            f"This API key has spent its {period} budget of {keys.format_usd(limit)}; it resets at {_iso(reset)}.",
            code="budget_exceeded",
            headers={"retry-after": str(max(1, math.ceil(reset - now))), "x-ratelimit-reset": _iso(reset)},
        )

    def _check_rate(self, key: keys.ApiKey) -> None:
        if key.rpm is None and key.tpm is None:
            return
        now = self.clock.monotonic()
        rate = self._rates.get(key.id)
        if rate is None:
            rate = self._rates[key.id] = _Rate()
        rate.expire(now)
        if key.rpm is not None and len(rate.requests) >= key.rpm:
            wait = WINDOW_S - (now - rate.requests[0])
            self._over_rate(f"{key.rpm} requests per minute", wait)
        if key.tpm is not None and rate.token_sum >= key.tpm:
            wait = WINDOW_S - (now - rate.tokens[0][0])
            self._over_rate(f"{key.tpm} tokens per minute", wait)
        rate.requests.append(now)

    @staticmethod
    def _over_rate(what: str, wait: float) -> None:
        raise RateLimited(
            f"Rate limit reached for this API key: {what}. Retry after {math.ceil(wait)} s.",
            headers={"retry-after": str(max(1, math.ceil(wait)))},
        )

    def charge(self, key_id: str, usd: float, tokens: int, seq: int) -> None:
        """A finished request's cost and tokens (called by the usage sink)."""
        self.spend.charge(key_id, usd, self.clock.wall(), seq)
        if tokens:
            rate = self._rates.get(key_id)
            if rate is None:
                rate = self._rates[key_id] = _Rate()
            rate.tokens.append((self.clock.monotonic(), tokens))
            rate.token_sum += tokens

    # -- admin -----------------------------------------------------------------------------------

    def check_admin(self, authorization: str | None) -> None:
        """The /admin routes: open with auth off; otherwise the admin key from the environment."""
        if not self.enabled:
            return
        if self.admin_key is None:
            raise AuthenticationFailed(f"Admin routes are closed: set ${self.admin_key_env} to an admin key.")
        if not bearer_matches(authorization, self.admin_key):
            raise AuthenticationFailed(
                "An admin key is required for this route.", code=None if authorization else "missing_api_key"
            )
