"""The product as a user runs it against a real Ray cluster: `frugalserve up` (a real process) in front of a
local Ray head with 4 logical GPUs (`ray start --head --num-gpus 4`, started and stopped here), replicas as
Ray actors each running the fake model server (tests/fake_upstream.py: the stand-in for vLLM, which needs a
real GPU), requests through the official openai client, state read from /admin/pools and /metrics.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.procs import FAKE_UPSTREAM, gateway, openai_client, spawn_env, wait_until
from tests.prom import samples, total

pytest.importorskip("ray")
from tests.ray_cluster import NO_TOKEN, ray_head

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.timeout(240)]

COMMAND = f"{{python}} {FAKE_UPSTREAM} --host {{host}} --port {{port}} --model {{model}}"


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    with ray_head(num_gpus=4, num_cpus=16) as address:
        yield address


def pool_yaml(
    name: str, address: str, replicas: str, autoscale: str, lifecycle: str, capacity: int = 2, placement_s: float = 10
) -> str:
    return textwrap.dedent(
        f"""\
          - name: {name}
            model: {name}-model
            tokenizer: none
            capacity: {capacity}
            backend:
              command: "{COMMAND}"
              startup_timeout_s: 60
              ray:
                address: "{address}"
                num_gpus: 1
                num_cpus: 1
                placement_timeout_s: {placement_s}
                # the servers listen on loopback only: tests send traffic to 127.0.0.1 and nowhere else
                runtime_env: {{env_vars: {{FRUGALSERVE_NODE_IP: 127.0.0.1}}}}
            replicas: {replicas}
            autoscale: {autoscale}
            lifecycle: {lifecycle}
        """
    )


def config(tmp: Path, *pools: str) -> str:
    body = "".join(textwrap.indent(p, "") for p in pools)
    return f"gateway: {{database: 'sqlite:///{tmp}/fs.db', upstream_metrics_interval_s: 0.5}}\npools:\n{body}"


def pools(base: str) -> dict[str, Any]:
    return {p["name"]: p for p in httpx.get(f"{base}/admin/pools", timeout=10).json()["data"]}


def states(base: str, pool: str) -> list[str]:
    return [r["state"] for r in pools(base)[pool]["replicas"]]


def chat(base: str, model: str, delay_s: float = 0.0) -> str:
    client = openai_client(f"{base}/v1")
    try:
        out = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"x_fake": {"delay_s": delay_s}} if delay_s else None,
        )
        return out.choices[0].message.content or ""
    finally:
        client.close()


def kill_actor(address: str, name: str) -> None:
    """Kill a replica's actor from outside, as a lost node would: another Ray driver, its own process."""
    code = (
        f"import ray; ray.init(address={address!r}, namespace='frugalserve', logging_level='ERROR'); "
        f"ray.kill(ray.get_actor({name!r})); ray.shutdown()"
    )
    subprocess.run([sys.executable, "-c", code], env=spawn_env(NO_TOKEN), check=True, timeout=60, capture_output=True)


def test_a_pool_scales_from_zero_to_two_under_load_and_back_to_zero_sleeping_through_the_actor(
    tmp_path: Path, ray_address: str
) -> None:
    cfg = config(
        tmp_path,
        pool_yaml(
            "a",
            ray_address,
            replicas="{min: 0, max: 2}",
            autoscale="{target: 0.5, stable_window_s: 4, panic_window_s: 1, interval_s: 0.5, scale_down_cooldown_s: 1}",
            lifecycle="{idle_sleep_s: 3, idle_stop_s: 8, sleep_level: 1}",
        ),
    )
    with gateway(tmp_path, cfg, NO_TOKEN) as (base, _):
        assert states(base, "a") == ["stopped"]
        # 6 requests of 3 s each on a cold pool: 6 / capacity 2 = 3 replicas' worth -> 2 replicas (max).
        with ThreadPoolExecutor(6) as ex:
            answers = list(ex.map(lambda _: chat(base, "a-model", delay_s=3.0), range(6)))
        assert len(answers) == 6 and all(answers)
        ups = [e for e in pools(base)["a"]["autoscale"]["events"] if e["action"] == "scale_up"]
        assert ups and max(e["to"] for e in ups) == 2
        urls = {r["name"]: r["url"] for r in pools(base)["a"]["replicas"]}
        assert len(urls) == 2 and all(u and u.startswith("http://127.0.0.1:") for u in urls.values())
        # Idle: the autoscaler removes one (drained, then its actor stopped), the idle ladder puts the last
        # to sleep through its actor (vLLM's POST /sleep on the node), then stops it: back to zero.
        wait_until(lambda: states(base, "a").count("stopped") == 1, 30, "a scale-down to one replica")
        wait_until(lambda: "sleeping" in states(base, "a"), 30, "the last replica asleep")
        sleeper = next(r for r in pools(base)["a"]["replicas"] if r["state"] == "sleeping")
        stats = httpx.get(f"{sleeper['url']}/stats", timeout=5).json()
        assert stats["sleep_levels"] == ["1"]
        # A request wakes it through the actor, faster than a start.
        assert chat(base, "a-model")
        desc = next(r for r in pools(base)["a"]["replicas"] if r["name"] == sleeper["name"])
        assert desc["state"] == "ready" and desc["url"] == sleeper["url"]
        page = samples(httpx.get(f"{base}/metrics", timeout=10).text)
        assert total(page, "frugalserve_cold_starts_total", pool="a", kind="wake") == 1
        wait_until(lambda: states(base, "a") == ["stopped", "stopped"], 40, "the pool at zero")
        assert total(page, "frugalserve_autoscale_decisions_total", pool="a", action="scale_up") >= 1


def test_two_pools_wanting_three_gpus_each_on_four_get_four_and_two_refusals(tmp_path: Path, ray_address: str) -> None:
    fixed = "{interval_s: 0.5}"
    lc = "{idle_sleep_s: null, idle_stop_s: null}"
    cfg = config(
        tmp_path,
        pool_yaml("a", ray_address, "{min: 3, max: 3}", fixed, lc),
        pool_yaml("b", ray_address, "{min: 3, max: 3}", fixed, lc),
    )
    with gateway(tmp_path, cfg, NO_TOKEN) as (base, _):

        def ready() -> int:
            return sum(s == "ready" for p in ("a", "b") for s in states(base, p))

        def refusals() -> list[dict[str, Any]]:
            return [e for p in ("a", "b") for e in pools(base)[p]["autoscale"]["events"] if e["action"] == "refused"]

        # All six start at once; Ray places four. The other two wait for a GPU for placement_timeout_s (3 s)
        # and are refused, or are refused at once when Ray already shows no free GPU.
        wait_until(lambda: ready() == 4, 90, "four replicas placed")
        wait_until(lambda: len(refusals()) >= 2, 30, "two refusals")
        assert ready() == 4
        assert all((e["signal"] == "placement" and "GPU" in e["reason"]) or "place" in e["reason"] for e in refusals())
        counts = {p: states(base, p).count("ready") for p in ("a", "b")}
        assert sum(counts.values()) == 4 and min(counts.values()) >= 1
        page = samples(httpx.get(f"{base}/metrics", timeout=10).text)
        assert total(page, "frugalserve_autoscale_decisions_total", action="refused", signal="placement") >= 2
        # Both pools serve.
        assert chat(base, "a-model") and chat(base, "b-model")


def test_a_killed_actor_is_replaced_without_failing_requests_that_had_not_started(
    tmp_path: Path, ray_address: str
) -> None:
    cfg = config(
        tmp_path,
        pool_yaml("k", ray_address, "{min: 2, max: 2}", "{interval_s: 0.5}", "{idle_sleep_s: null, idle_stop_s: null}"),
    )
    with gateway(tmp_path, cfg, NO_TOKEN) as (base, _):
        wait_until(lambda: states(base, "k") == ["ready", "ready"], 90, "two replicas")
        old_url = pools(base)["k"]["replicas"][1]["url"]
        kill_actor(ray_address, "k-1")
        # Requests sent from now on: none fails, whichever replica is up.
        with ThreadPoolExecutor(4) as ex:
            answers = list(ex.map(lambda _: chat(base, "k-model", delay_s=0.2), range(12)))
        assert all(answers)
        wait_until(lambda: states(base, "k") == ["ready", "ready"], 90, "the killed replica replaced")
        replaced = pools(base)["k"]["replicas"][1]
        assert replaced["url"] != old_url or replaced["failures"] >= 1
        transitions = [e for e in pools(base)["k"]["autoscale"]["events"] if e["action"] == "scale_up"]
        assert transitions and transitions[-1]["signal"] == "min"
