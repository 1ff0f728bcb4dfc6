"""The sleep level a pool is configured with is the level its backend receives (vLLM's POST /sleep?level=N).

The gateway runs as a real process and manages two real fake-upstream processes (stand-ins for vLLM,
which needs a GPU); each fake records every ``level`` query it was sent and every answer of its
``GET /is_sleeping``.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import procs

pytestmark = pytest.mark.integration


def managed_pool(name: str, log_dir: Path, level: int) -> str:
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(procs.FAKE_UPSTREAM))} --port {{port}}"
    return (
        f"  - name: {name}\n    model: m-{name}\n"
        f"    backend: {{command: {command!r}, log_dir: {str(log_dir)!r}, startup_timeout_s: 30}}\n"
        f"    lifecycle: {{idle_sleep_s: 0.5, idle_stop_s: null, sleep_level: {level}}}\n"
    )


def replica(gw: str, pool: str) -> dict[str, Any]:
    data = httpx.get(gw + "/admin/pools", timeout=5).json()["data"]
    return next(p for p in data if p["name"] == pool)["replicas"][0]  # type: ignore[no-any-return]


def wait_state(gw: str, pool: str, state: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = replica(gw, pool)
        if r["state"] == state:
            return r
        time.sleep(0.05)
    raise AssertionError(f"pool {pool} is {replica(gw, pool)['state']}, not {state}, after {timeout}s")


def test_each_pool_puts_its_backend_to_sleep_at_its_configured_level(tmp_path: Path) -> None:
    config = "pools:\n" + managed_pool("light", tmp_path, 1) + managed_pool("deep", tmp_path, 2)
    with procs.gateway(tmp_path, config) as (gw, _):
        for pool in ("light", "deep"):
            body = {"model": f"m-{pool}", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
            assert httpx.post(gw + "/v1/chat/completions", json=body, timeout=30).status_code == 200
        stats = {}
        for pool in ("light", "deep"):
            url = wait_state(gw, pool, "sleeping")["url"]
            stats[pool] = httpx.get(url + "/stats", timeout=5).json()
        assert stats["light"]["sleep_levels"] == ["1"]
        assert stats["deep"]["sleep_levels"] == ["2"]
        for pool in ("light", "deep"):
            # the sleep API was probed once after the start (awake then), and the backend sleeps now
            assert stats[pool]["is_sleeping_answers"][:1] == [False]
            assert stats[pool]["sleeping"] == (1 if pool == "light" else 2)

        # a request wakes the deep sleeper, which then serves it
        body = {"model": "m-deep", "messages": [{"role": "user", "content": "again"}], "max_tokens": 2}
        r = httpx.post(gw + "/v1/chat/completions", json=body, timeout=30)
        assert r.status_code == 200 and "x-frugalserve-cold-start-ms" in r.headers
        woken = httpx.get(replica(gw, "deep")["url"] + "/stats", timeout=5).json()
        assert woken["started"] == 2, "woken, not restarted: the same process served both requests"
