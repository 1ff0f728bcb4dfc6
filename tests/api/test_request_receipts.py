"""``GET /v1/requests/{id}`` and ``GET /admin/events`` over real HTTP: a gateway served by uvicorn on loopback,
in front of the fake model server as a real process (tests/fake_upstream.py), accounting on real SQLite.

The costs checked here are hand-computed from what the same answer says of the request's own times and
tokens; tests/accounting/test_request_cost.py checks a stored case against the report.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from frugalserve import config as cfg
from frugalserve.accounting import keys, store
from frugalserve.events import Event, RecentEvents, ReplicaEvent, ScaleEvent
from tests import procs
from tests.api.conftest import gateway_on_loopback

ADMIN = "admin-secret-for-tests"
# $1 per GPU-second, one GPU: a request's dollars are its busy seconds.
PRICE = "gpu: {usd_per_hour: 3600, type: L4}"
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


@pytest.fixture(scope="module")
def upstream_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with procs.fake_upstream(tmp_path_factory.mktemp("up")) as url:
        yield url


def make_config(url: str, tmp: Path, auth: bool = False, accounting: bool = True) -> cfg.Config:
    return cfg.load_text(
        f"gateway:\n  database: 'sqlite:///{tmp}/usage.db'\n"
        f"auth: {{enabled: {str(auth).lower()}}}\n"
        f"accounting: {{enabled: {str(accounting).lower()}, flush_interval_s: 0.05}}\n"
        f"pools:\n  - name: small\n    model: qwen3-vl-2b\n    backend: {{url: '{url}'}}\n    {PRICE}\n"
        f"  - name: big\n    model: qwen3-vl-32b\n    backend: {{url: '{url}'}}\n    {PRICE}\n"
    )


def chat(model: str = "qwen3-vl-2b", **fake: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "x_fake": fake}


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def error_of(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return dict(err)


def assert_alone_on_its_replica(receipt: dict[str, Any]) -> None:
    """Alone on a static replica, at $1 per second: it was busy its whole latency, and paid it (to the float
    precision of epoch seconds)."""
    latency = receipt["timing"]["latency_s"]
    assert latency > 0
    assert receipt["cost"] == {
        "usd": pytest.approx(latency, abs=1e-6),
        "busy_s": pytest.approx(latency, abs=1e-6),
        "gpu_s": pytest.approx(latency, abs=1e-6),
    }
    assert receipt["cost_note"] is None


async def test_auth_on_the_key_that_made_it_and_the_admin_see_it_other_keys_get_404(
    upstream_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRUGALSERVE_ADMIN_KEY", ADMIN)
    config = make_config(upstream_url, tmp_path, auth=True)
    engine = store.open_store(config.gateway.database)
    _, alice_secret = keys.create_key(engine, "alice", time.time(), models=("qwen3-vl-2b",))
    _, bob_secret = keys.create_key(engine, "bob", time.time())
    engine.dispose()
    async with gateway_on_loopback(config) as (url, _), httpx.AsyncClient(base_url=url, timeout=30) as c:
        answer = await c.post("/v1/chat/completions", json=chat(usage=USAGE), headers=bearer(alice_secret))
        assert answer.status_code == 200, answer.text
        rid = answer.headers["x-request-id"]
        seen = await c.get(f"/v1/requests/{rid}", headers=bearer(alice_secret))  # at once: from memory
        assert seen.status_code == 200, seen.text
        mine = seen.json()
        details = answer.json()["usage"]["prompt_tokens_details"]  # the gateway's own count, as the client saw it
        assert {k: v for k, v in mine.items() if k not in ("created", "timing", "cost")} == {
            "object": "frugalserve.request",
            "id": rid,
            "model": "qwen3-vl-2b",
            "pool": "small",
            "replica": "small-0",
            "tier": None,
            "route": answer.headers["x-frugalserve-route"],
            "status": 200,
            "error_code": None,
            "stream": False,
            "notes": None,
            "usage": {
                "prompt_tokens": 7,
                "completion_tokens": 3,
                "prompt_tokens_by_kind": {"text": details["text_tokens"], "image": 0, "video": 0},
                "image_tokens_saved": 0,
            },
            "cost_note": None,
        }
        assert details["text_tokens"] > 0 and abs(mine["created"] - time.time()) < 30
        timing = mine["timing"]
        assert timing["cold_start_wait_s"] is None and 0 < timing["ttft_s"] <= timing["latency_s"]
        assert_alone_on_its_replica(mine)
        # the admin key sees it too; another key gets exactly what an unknown id gets
        assert (await c.get(f"/v1/requests/{rid}", headers=bearer(ADMIN))).json() == mine
        other = error_of(await c.get(f"/v1/requests/{rid}", headers=bearer(bob_secret)), 404)
        unknown = error_of(await c.get("/v1/requests/no-such-request", headers=bearer(bob_secret)), 404)
        assert other == {**unknown, "message": other["message"]}
        assert (other["param"], other["code"], other["type"]) == (
            "request_id",
            "request_not_found",
            "invalid_request_error",
        )
        # no key, or a wrong one: 401 as on every /v1 route
        assert error_of(await c.get(f"/v1/requests/{rid}"), 401)["code"] == "missing_api_key"
        assert (
            error_of(await c.get(f"/v1/requests/{rid}", headers=bearer("fs_nope_xxxx")), 401)["code"]
            == "invalid_api_key"
        )
        # refused (403: a model outside alice's list) never reached a replica: it cost nothing
        refused = await c.post("/v1/chat/completions", json=chat("qwen3-vl-32b"), headers=bearer(alice_secret))
        assert refused.status_code == 403
        got = (await c.get(f"/v1/requests/{refused.headers['x-request-id']}", headers=bearer(alice_secret))).json()
        assert (got["status"], got["error_code"], got["pool"], got["replica"]) == (
            403,
            "model_not_allowed",
            "big",
            None,
        )
        assert got["cost"] == {"usd": 0.0, "busy_s": 0.0, "gpu_s": 0.0}
        assert "never reached a replica" in got["cost_note"]
    # a gateway started later on the same database finds it there (not in its memory), the same
    async with gateway_on_loopback(config) as (url, gateway), httpx.AsyncClient(base_url=url, timeout=30) as c:
        assert gateway.records.find(rid) is None
        stored = (await c.get(f"/v1/requests/{rid}", headers=bearer(alice_secret))).json()
        assert stored == mine
        error_of(await c.get(f"/v1/requests/{rid}", headers=bearer(bob_secret)), 404)


async def test_auth_off_anyone_reads_it_and_a_request_beside_it_still_running_is_noted(
    upstream_url: str, tmp_path: Path
) -> None:
    config = make_config(upstream_url, tmp_path)
    async with gateway_on_loopback(config) as (url, _), httpx.AsyncClient(base_url=url, timeout=30) as c:
        slow = asyncio.ensure_future(c.post("/v1/chat/completions", json=chat(delay_s=1.5, usage=USAGE)))
        await asyncio.sleep(0.3)  # the slow one is on small-0 now
        fast = await c.post("/v1/chat/completions", json=chat(delay_s=0.2, usage=USAGE))
        fid = fast.headers["x-request-id"]
        early = (await c.get(f"/v1/requests/{fid}")).json()
        assert early["cost_note"] == (
            "1 request(s) still running on small-0 when it ended are not counted yet: "
            "its share can only shrink once they finish."
        )
        assert early["cost"]["busy_s"] == pytest.approx(early["timing"]["latency_s"], abs=1e-6)  # alone, so far
        sid = (await slow).headers["x-request-id"]
        late = (await c.get(f"/v1/requests/{fid}")).json()
        first = (await c.get(f"/v1/requests/{sid}")).json()
    assert late["cost_note"] is None and first["cost_note"] is None
    # fast ran inside slow's run; both did 10 tokens, so each one's token density is 10 / its own run time,
    # and fast's share of its own span is its density over the sum of both
    f0, f1 = late["created"], late["created"] + late["timing"]["latency_s"]
    s0, s1 = first["created"], first["created"] + first["timing"]["latency_s"]
    assert s0 < f0 < f1 < s1
    df, ds = 10 / (f1 - f0), 10 / (s1 - s0)
    fast_busy = (f1 - f0) * df / (df + ds)
    assert late["cost"]["busy_s"] == pytest.approx(fast_busy, abs=1e-6)
    assert late["cost"]["usd"] == pytest.approx(fast_busy, abs=1e-6) and fast_busy < early["cost"]["usd"]
    assert first["cost"]["busy_s"] == pytest.approx((s1 - s0) - fast_busy, abs=1e-6)


async def test_accounting_off_finds_the_request_in_memory_without_a_cost(upstream_url: str, tmp_path: Path) -> None:
    config = make_config(upstream_url, tmp_path, accounting=False)
    async with gateway_on_loopback(config) as (url, _), httpx.AsyncClient(base_url=url, timeout=30) as c:
        answer = await c.post("/v1/chat/completions", json={**chat(usage=USAGE), "stream": True})
        assert answer.status_code == 200
        got = (await c.get(f"/v1/requests/{answer.headers['x-request-id']}")).json()
        assert (got["status"], got["stream"], got["pool"], got["replica"]) == (200, True, "small", "small-0")
        assert got["cost"] is None
        assert got["cost_note"] == "Accounting is off (accounting.enabled: false): no cost is computed."
        error_of(await c.get("/v1/requests/never-made"), 404)


# -- GET /admin/events ------------------------------------------------------------------------------


def fake_command() -> str:
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(procs.FAKE_UPSTREAM))} --port {{port}}"


async def test_events_from_memory_with_accounting_off_newest_first(tmp_path: Path) -> None:
    config = cfg.load_text(
        "accounting: {enabled: false}\n"
        "pools:\n  - name: m\n    model: m\n"
        f"    backend: {{command: {fake_command()!r}, log_dir: {str(tmp_path)!r}, startup_timeout_s: 30}}\n"
        "  - {name: s, model: s, backend: {url: 'http://127.0.0.1:1'}}\n"
    )
    async with gateway_on_loopback(config) as (url, _), httpx.AsyncClient(base_url=url, timeout=60) as c:
        assert (await c.get("/admin/events")).json() == {"object": "list", "data": []}
        woke = await c.post("/admin/pools/m/wake", params={"wait": "true"})
        assert woke.status_code == 200, woke.text
        data = (await c.get("/admin/events")).json()["data"]
        assert [(e["type"], e["pool"], e["replica"], e["from_state"], e["to_state"]) for e in data] == [
            ("replica", "m", "m-0", "starting", "ready"),
            ("replica", "m", "m-0", "stopped", "starting"),
        ]
        ready, started = data
        assert set(ready) == {"type", "time", "pool", "replica", "from_state", "to_state", "reason", "duration_s"}
        assert ready["reason"] == started["reason"] == "admin" and ready["time"] >= started["time"]
        assert ready["duration_s"] == pytest.approx(ready["time"] - started["time"], abs=0.05)  # time starting
        # /admin/pools: how long that start took, and when the replica became ready
        [replica] = next(p for p in (await c.get("/admin/pools")).json()["data"] if p["name"] == "m")["replicas"]
        assert replica["last_start"]["s"] == pytest.approx(ready["duration_s"], abs=0.05)
        assert replica["last_start"]["at"] == pytest.approx(ready["time"], abs=0.05)
        assert replica["last_wake"] is None and replica["last_cold_start_s"] == replica["last_start"]["s"]
        # a pool filter, a limit
        assert [e["to_state"] for e in (await c.get("/admin/events", params={"limit": 1})).json()["data"]] == ["ready"]
        assert (await c.get("/admin/events", params={"pool": "s"})).json()["data"] == []
        await check_bad_queries(c)


async def check_bad_queries(c: httpx.AsyncClient) -> None:
    for limit in ("0", "1001", "x", "-1", "2.5", ""):
        err = error_of(await c.get("/admin/events", params={"limit": limit}), 400)
        assert err["param"] == "limit", limit
    assert (await c.get("/admin/events", params={"limit": "1000"})).status_code == 200
    err = error_of(await c.get("/admin/events", params={"pool": "nope"}), 404)
    assert (err["param"], err["code"]) == ("pool", "pool_not_found")


def test_recent_events_lists_both_kinds_of_a_pool_newest_first() -> None:
    memory = RecentEvents()
    happened: list[Event] = [
        ReplicaEvent(1.0, "a", "a-0", "stopped", "starting", "request"),
        ScaleEvent(2.0, "a", "scale_up", 1, 2, "concurrency", 1.5, "x"),
        ReplicaEvent(3.0, "b", "b-0", "stopped", "starting", "request"),
        ReplicaEvent(4.0, "a", "a-0", "starting", "ready", "request", 3.0),
        ScaleEvent(5.0, "a", "scale_down", 2, 1, "concurrency", 0.2, "y"),
        ScaleEvent(6.0, "b", "refused", 1, 1, "placement", 0.0, "z"),
    ]
    for event in happened:
        memory.submit(event)
    assert [e.time for e in memory.newest(None, 50)] == [6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    assert [e.time for e in memory.newest("a", 50)] == [5.0, 4.0, 2.0, 1.0]
    assert [e.time for e in memory.newest("a", 3)] == [5.0, 4.0, 2.0]
    assert memory.newest("c", 50) == []


def replica_row(t: float, pool: str, a: str, b: str) -> dict[str, object]:
    return {"time": t, "pool": pool, "replica": f"{pool}-0", "from_state": a, "to_state": b, "reason": "request"}


def scale_row(t: float, pool: str, action: str) -> dict[str, object]:
    return {
        "time": t,
        "pool": pool,
        "action": action,
        "from_replicas": 1,
        "to_replicas": 2,
        "signal": "concurrency",
        "load": 1.5,
        "reason": "load 1.5 > 1.2",
    }


async def test_events_from_the_database_with_accounting_on_behind_the_admin_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows another gateway (or this one before a restart) wrote are listed, both kinds merged by time."""
    monkeypatch.setenv("FRUGALSERVE_ADMIN_KEY", ADMIN)
    config = make_config("http://127.0.0.1:1", tmp_path, auth=True)
    t = 1_700_000_000.0
    engine = store.open_store(config.gateway.database)
    store.insert_batch(
        engine,
        [],
        [replica_row(t + 1, "small", "stopped", "starting"), replica_row(t + 3, "small", "starting", "ready")],
        [scale_row(t + 2, "small", "scale_up"), scale_row(t + 4, "big", "refused")],
    )
    engine.dispose()
    async with gateway_on_loopback(config) as (url, _), httpx.AsyncClient(base_url=url, timeout=30) as c:
        error_of(await c.get("/admin/events"), 401)
        error_of(await c.get("/admin/events", headers=bearer("not-the-admin-key")), 401)
        c.headers.update(bearer(ADMIN))
        data = (await c.get("/admin/events")).json()["data"]
        assert data == [
            {"type": "scale", **scale_row(t + 4, "big", "refused")},
            {"type": "replica", **replica_row(t + 3, "small", "starting", "ready"), "duration_s": None},
            {"type": "scale", **scale_row(t + 2, "small", "scale_up")},
            {"type": "replica", **replica_row(t + 1, "small", "stopped", "starting"), "duration_s": None},
        ]
        small = (await c.get("/admin/events", params={"pool": "small"})).json()["data"]
        assert [e["time"] for e in small] == [t + 3, t + 2, t + 1]
        two = (await c.get("/admin/events", params={"limit": "2"})).json()["data"]
        assert [e["time"] for e in two] == [t + 4, t + 3]
        await check_bad_queries(c)
