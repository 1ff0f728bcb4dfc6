"""Sleep level 1 and 2 and wake through the gateway with the built-in engine and the demo model."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from frugalserve import config as cfg
from frugalserve.api.app import Gateway, create_app

pytest.importorskip("frugalserve.engine")
pytestmark = [pytest.mark.integration, pytest.mark.engine, pytest.mark.slow]

CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("engine") / "demo-model"
    subprocess.run([sys.executable, "-m", "frugalserve", "demo-model", str(path)], check=True, timeout=120)
    return path


@pytest.mark.parametrize("level", [1, 2])
async def test_engine_sleeps_and_wakes_through_the_gateway(tmp_path: Path, model_dir: Path, level: int) -> None:
    command = f"{shlex.quote(sys.executable)} -m frugalserve engine --model {model_dir} --served-model-name demo --port {{port}}"
    config = cfg.load_text(
        f"pools:\n  - name: demo\n    model: demo\n"
        f"    backend: {{command: {command!r}, log_dir: {str(tmp_path)!r}, startup_timeout_s: 120}}\n"
        f"    lifecycle: {{idle_sleep_s: null, idle_stop_s: null, sleep_level: {level}}}\n"
    )
    app = create_app(config)
    gateway: Gateway = app.state.gateway
    await gateway.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw", timeout=120) as c:
            assert (await c.post("/v1/chat/completions", json=CHAT)).status_code == 200
            pool = gateway.pools.pools["demo"]
            assert pool.describe()["replicas"][0]["can_sleep"], "the engine speaks vLLM's sleep API"
            assert (await c.post("/admin/pools/demo/sleep")).json()["result"] == "sleeping"
            r = await c.post("/v1/chat/completions", json=CHAT)
            assert r.status_code == 200 and "x-frugalserve-cold-start-ms" in r.headers
            kinds = [(e.from_state, e.to_state, e.reason) for e in gateway.recent_events.events]
            assert ("sleeping", "starting", "wake") in kinds
    finally:
        await gateway.shutdown()
