"""Keys, model allow-lists, budgets and rate limits through the real gateway app (in-process)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from frugalserve import config as cfg
from frugalserve.accounting import keys, store
from frugalserve.api.app import Gateway, create_app
from tests import procs

# $1 per GPU-second: a request's cost is about its duration in seconds.
PRICE = "gpu: {usd_per_hour: 3600, type: L4}"


@pytest.fixture(scope="module")
def upstream_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with procs.fake_upstream(tmp_path_factory.mktemp("up")) as url:
        yield url


def make_config(url: str, db_url: str, auth: bool = True, **acc: object) -> cfg.Config:
    accounting = "".join(f"  {k}: {v}\n" for k, v in {"flush_interval_s": 0.05, **acc}.items())
    return cfg.load_text(
        f"gateway:\n  database: '{db_url}'\nauth: {{enabled: {str(auth).lower()}}}\naccounting:\n{accounting}"
        f"pools:\n  - name: small\n    model: qwen3-vl-2b\n    backend: {{url: '{url}'}}\n    {PRICE}\n"
        f"  - name: big\n    model: qwen3-vl-32b\n    backend: {{url: '{url}'}}\n    {PRICE}\n"
    )


@asynccontextmanager
async def running(config: cfg.Config, environ: dict[str, str] | None = None) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(config)
    gateway: Gateway = app.state.gateway
    if environ is not None:
        gateway.accounting.gate.admin_key = environ.get("FRUGALSERVE_ADMIN_KEY")
    await gateway.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
            yield c
    finally:
        await gateway.shutdown()


def chat(model: str = "qwen3-vl-2b", **fake: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "x_fake": fake}


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def error_of(r: httpx.Response, status: int) -> dict[str, object]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    e = store.open_store(db_url)
    yield e
    e.dispose()


async def test_missing_unknown_and_malformed_keys_get_401(upstream_url: str, db_url: str, engine: sa.Engine) -> None:
    async with running(make_config(upstream_url, db_url)) as c:
        err = error_of(await c.post("/v1/chat/completions", json=chat()), 401)
        assert err["type"] == "authentication_error" and err["code"] == "missing_api_key"
        for header in ("Bearer fs_nope_xxxxxxxx", "Bearer sk-123", "Basic abc", "Bearer "):
            err = error_of(await c.post("/v1/chat/completions", json=chat(), headers={"authorization": header}), 401)
            assert err["code"] == "invalid_api_key"


async def test_valid_key_is_served_and_recorded_with_its_id(upstream_url: str, db_url: str, engine: sa.Engine) -> None:
    key, secret = keys.create_key(engine, "alice", time.time())
    async with running(make_config(upstream_url, db_url)) as c:
        r = await c.post("/v1/chat/completions", json=chat(), headers={**bearer(secret), "x-request-id": "req-a"})
        assert r.status_code == 200
        wrong = secret[:-2] + ("AA" if not secret.endswith("AA") else "BB")  # right id, wrong secret
        error_of(await c.post("/v1/chat/completions", json=chat(), headers=bearer(wrong)), 401)
    with engine.connect() as conn:
        rec = conn.execute(sa.select(store.usage_records).where(store.usage_records.c.request_id == "req-a")).one()
    assert rec.key_id == key.id and rec.pool == "small" and rec.status == 200 and rec.completion_tokens == 2


async def test_key_created_while_running_works_and_revoked_key_gets_401(
    upstream_url: str, db_url: str, engine: sa.Engine
) -> None:
    async with running(make_config(upstream_url, db_url, budget_refresh_s=0.1)) as c:
        _, secret = keys.create_key(engine, "late", time.time())
        await asyncio.sleep(0.3)  # the next refresh (or a miss more than 1 s after the last one) reads it
        assert (await c.post("/v1/chat/completions", json=chat(), headers=bearer(secret))).status_code == 200
        keys.revoke_key(engine, "late", time.time())
        await asyncio.sleep(0.3)
        err = error_of(await c.post("/v1/chat/completions", json=chat(), headers=bearer(secret)), 401)
        assert err["code"] == "api_key_revoked"


async def test_model_outside_allow_list_gets_403(upstream_url: str, db_url: str, engine: sa.Engine) -> None:
    _, secret = keys.create_key(engine, "small-only", time.time(), models=("qwen3-vl-2b",))
    async with running(make_config(upstream_url, db_url)) as c:
        assert (await c.post("/v1/chat/completions", json=chat(), headers=bearer(secret))).status_code == 200
        err = error_of(await c.post("/v1/chat/completions", json=chat("qwen3-vl-32b"), headers=bearer(secret)), 403)
        assert err["type"] == "permission_error" and err["param"] == "model"


async def test_over_rpm_gets_429_with_retry_after(upstream_url: str, db_url: str, engine: sa.Engine) -> None:
    _, secret = keys.create_key(engine, "slow", time.time(), rpm=2)
    async with running(make_config(upstream_url, db_url)) as c:
        for _ in range(2):
            assert (await c.post("/v1/chat/completions", json=chat(), headers=bearer(secret))).status_code == 200
        r = await c.post("/v1/chat/completions", json=chat(), headers=bearer(secret))
        err = error_of(r, 429)
        assert err["code"] == "rate_limit_exceeded" and err["type"] == "rate_limit_error"
        assert 1 <= int(r.headers["retry-after"]) <= 60


async def test_over_tpm_gets_429(upstream_url: str, db_url: str, engine: sa.Engine) -> None:
    _, secret = keys.create_key(engine, "tokens", time.time(), tpm=5)
    async with running(make_config(upstream_url, db_url)) as c:
        assert (await c.post("/v1/chat/completions", json=chat(), headers=bearer(secret))).status_code == 200
        r = await c.post("/v1/chat/completions", json=chat(), headers=bearer(secret))
        assert "tokens per minute" in str(error_of(r, 429)["message"]) and "retry-after" in r.headers


async def test_spent_daily_budget_gets_429_budget_exceeded_with_reset_time(
    upstream_url: str, db_url: str, engine: sa.Engine
) -> None:
    _, secret = keys.create_key(engine, "capped", time.time(), budget_usd_per_day=0.05)
    async with running(make_config(upstream_url, db_url)) as c:
        r = await c.post("/v1/chat/completions", json=chat(delay_s=0.1), headers=bearer(secret))
        assert r.status_code == 200
        r = await c.post("/v1/chat/completions", json=chat(), headers=bearer(secret))
        err = error_of(r, 429)
        assert err["code"] == "budget_exceeded" and "daily budget of $0.05" in str(err["message"])
        reset = r.headers["x-ratelimit-reset"]
        assert reset.endswith("T00:00:00Z") and 0 < int(r.headers["retry-after"]) <= 86400


async def test_budget_survives_a_gateway_restart(upstream_url: str, db_url: str, engine: sa.Engine) -> None:
    _, secret = keys.create_key(engine, "capped", time.time(), budget_usd_per_month=0.05)
    async with running(make_config(upstream_url, db_url)) as c:
        assert (await c.post("/v1/chat/completions", json=chat(delay_s=0.1), headers=bearer(secret))).status_code == 200
    async with running(make_config(upstream_url, db_url)) as c:
        r = await c.post("/v1/chat/completions", json=chat(), headers=bearer(secret))
        assert error_of(r, 429)["code"] == "budget_exceeded"


async def test_concurrent_requests_overspend_at_most_the_in_flight_window(
    upstream_url: str, db_url: str, engine: sa.Engine
) -> None:
    """docs/accounting.md: a key may overspend by at most what it had in flight when the budget ran out."""
    budget, parallel = 0.3, 4
    key, secret = keys.create_key(engine, "burst", time.time(), budget_usd_per_day=budget)
    statuses: list[int] = []
    async with running(make_config(upstream_url, db_url)) as c:

        async def worker() -> None:
            for _ in range(10):
                r = await c.post("/v1/chat/completions", json=chat(delay_s=0.05), headers=bearer(secret))
                statuses.append(r.status_code)

        await asyncio.gather(*(worker() for _ in range(parallel)))
    with engine.connect() as conn:
        costs = [
            r[0]
            for r in conn.execute(
                sa.select(store.usage_records.c.cost_usd).where(
                    store.usage_records.c.key_id == key.id, store.usage_records.c.status == 200
                )
            )
        ]
    assert 429 in statuses and 200 in statuses
    assert sum(costs) >= budget
    assert sum(costs) <= budget + parallel * max(costs)


async def test_admin_route_needs_the_admin_key(upstream_url: str, db_url: str, engine: sa.Engine) -> None:
    async with running(make_config(upstream_url, db_url), environ={"FRUGALSERVE_ADMIN_KEY": "adm-secret"}) as c:
        error_of(await c.get("/admin/usage"), 401)
        error_of(await c.get("/admin/usage", headers=bearer("wrong")), 401)
        r = await c.get("/admin/usage", headers=bearer("adm-secret"))
        assert r.status_code == 200 and r.json()["rows"][-1]["group"] == "TOTAL"


async def test_auth_off_serves_without_key_and_records_usage(upstream_url: str, db_url: str, engine: sa.Engine) -> None:
    async with running(make_config(upstream_url, db_url, auth=False)) as c:
        assert (await c.post("/v1/chat/completions", json=chat())).status_code == 200
    assert store.count_records(engine) == 1


def test_open_gateway_without_auth_warns_loudly(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    from frugalserve.accounting.service import warn_if_open

    config = cfg.load_text("gateway: {host: 0.0.0.0}\n")
    assert warn_if_open(config, "0.0.0.0")
    assert "AUTH IS OFF" in caplog.text
    assert not warn_if_open(config, "127.0.0.1")


async def test_admin_usage_flushing_during_traffic_never_counts_spend_twice(
    upstream_url: str, db_url: str, engine: sa.Engine
) -> None:
    key, secret = keys.create_key(engine, "k", time.time(), budget_usd_per_day=1e6)
    app = create_app(make_config(upstream_url, db_url, flush_interval_s=0.01, budget_refresh_s=0.05))
    gateway: Gateway = app.state.gateway
    gateway.accounting.gate.admin_key = "adm"
    await gateway.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:

            async def traffic(i: int) -> None:
                r = await c.post("/v1/chat/completions", json=chat(delay_s=0.001 * (i % 5)), headers=bearer(secret))
                assert r.status_code == 200, r.text

            async def report() -> None:
                r = await c.get("/admin/usage?by=key", headers=bearer("adm"))
                assert r.status_code == 200, r.text

            await asyncio.gather(*(traffic(i) for i in range(100)), *(report() for _ in range(100)))
            await report()  # one more flush: everything is in the database now
            await gateway.accounting.gate.refresh()
            seen = gateway.accounting.gate.spend.today(key.id, time.time())
    finally:
        await gateway.shutdown()
    with engine.connect() as conn:
        stored = conn.execute(
            sa.select(sa.func.sum(store.usage_records.c.cost_usd)).where(store.usage_records.c.key_id == key.id)
        ).scalar_one()
    assert stored > 0 and seen == pytest.approx(stored)
