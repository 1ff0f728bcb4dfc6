"""Replicas as Ray actors, on a real local Ray head with 4 logical GPUs (tests/ray_cluster.py), the fake
upstream as the model server. The first tests need no cluster: the placement message, the actor's options,
and the errors when Ray is missing or unreachable."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from frugalserve import config as cfg
from frugalserve.clock import SystemClock
from frugalserve.events import RecentEvents
from frugalserve.lifecycle.metrics import LifecycleMetrics
from frugalserve.lifecycle.provisioners import PlacementRefused, StartFailed
from frugalserve.lifecycle.provisioners.ray import (
    ACTOR_LOST,
    INSTALL_HINT,
    ClusterResources,
    RayCluster,
    RayProvisioner,
    shortfall,
)
from frugalserve.lifecycle.provisioners.ray_actor import fill
from frugalserve.lifecycle.replica import Replica
from frugalserve.metrics.cost import CostMeter
from tests import procs
from tests.ray_cluster import NO_TOKEN, ray_head

FAKE = f"{{python}} {procs.FAKE_UPSTREAM} --port {{port}} --host {{host}} --model {{model}}"
CHAT = {"model": "m-a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


def pool(name: str, address: str, command: str = FAKE, env: str = "{}", **ray: object) -> cfg.PoolConfig:
    # Ray registers the node under the machine's own address even with --node-ip-address 127.0.0.1; the
    # servers are told to listen on loopback so that tests send traffic to 127.0.0.1 only.
    ray.setdefault("runtime_env", "{env_vars: {FRUGALSERVE_NODE_IP: 127.0.0.1}}")
    ray_yaml = ", ".join(f"{k}: {v}" for k, v in {"address": json.dumps(address), **ray}.items())
    text = (
        f"pools:\n  - name: {name}\n    model: m-{name}\n"
        f"    backend: {{command: {json.dumps(command)}, log_dir: logs, startup_timeout_s: 20, stop_timeout_s: 5,"
        f" env: {env}, ray: {{{ray_yaml}}}}}\n"
    )
    return cfg.load_text(text).pools[0]


# -- without a cluster ------------------------------------------------------------------------------


def test_shortfall_names_the_resource_no_node_has() -> None:
    res = ClusterResources({"GPU": 4.0, "CPU": 16.0}, {"n1": {"CPU": 12.0}})  # a node with no free GPU key
    assert shortfall({"GPU": 1.0, "CPU": 1.0}, res) == "Ray has no node with 1 free GPU (cluster: 4 GPUs, 0 free)"


def test_shortfall_is_none_when_one_node_has_room_for_everything() -> None:
    res = ClusterResources({"GPU": 2.0, "CPU": 8.0}, {"n1": {"GPU": 0.0, "CPU": 4.0}, "n2": {"GPU": 1.0, "CPU": 1.0}})
    assert shortfall({"GPU": 1.0, "CPU": 1.0}, res) is None


def test_shortfall_names_all_needs_when_no_single_node_has_them_together() -> None:
    res = ClusterResources({"GPU": 2.0, "CPU": 8.0}, {"n1": {"GPU": 1.0, "CPU": 0.0}, "n2": {"GPU": 0.0, "CPU": 4.0}})
    assert shortfall({"GPU": 1.0, "CPU": 1.0}, res) == (
        "Ray has no node with 1 free GPU and 1 free CPU (cluster: 2 GPUs, 1 free; 8 CPUs, 4 free)"
    )


def test_shortfall_counts_custom_resources_and_ignores_zero_needs() -> None:
    res = ClusterResources({"GPU": 1.0, "L4": 2.0}, {"n1": {"GPU": 0.0, "L4": 0.5}, "n2": {"L4": 1.0}})
    assert shortfall({"GPU": 0.0, "L4": 2.0}, res) == "Ray has no node with 2 free L4 (cluster: 2 L4, 1.5 free)"
    assert shortfall({"GPU": 0.0, "L4": 1.0}, res) is None


def test_actor_options_merge_backend_env_into_runtime_env() -> None:
    p = pool(
        "a",
        "auto",
        env="{HF_HOME: /data, SHARED: backend}",
        num_gpus=0.5,
        resources="{L4: 1}",
        runtime_env="{env_vars: {SHARED: ray, OTHER: x}, pip: [foo]}",
        namespace="ns",
    )
    opts = RayProvisioner(p, "a-0", SystemClock(), RayCluster()).actor_options()
    assert opts == {
        "name": "a-0",
        "namespace": "ns",
        "num_gpus": 0.5,
        "num_cpus": 1.0,
        "resources": {"L4": 1.0},
        "runtime_env": {"env_vars": {"SHARED": "backend", "OTHER": "x", "HF_HOME": "/data"}, "pip": ["foo"]},
        "max_restarts": 0,
        "max_task_retries": 0,
    }


def test_command_placeholders_are_filled_on_the_node() -> None:
    argv = fill("{python} serve.py --host {host} --port {port} --model '{model}'", 8123, "10.0.0.7", "q 3", "/py")
    assert argv == ["/py", "serve.py", "--host", "10.0.0.7", "--port", "8123", "--model", "q 3"]


async def test_pool_on_another_ray_address_than_the_gateways_is_refused() -> None:
    theirs = pool("a", "10.0.0.1:6379").backend.ray
    assert theirs is not None
    cluster = RayCluster.for_config(theirs)
    p = RayProvisioner(pool("b", "auto"), "b-0", SystemClock(), cluster)
    with pytest.raises(StartFailed) as err:
        await p.start()
    assert str(err.value) == (
        "backend.ray.address is 'auto', but this gateway's Ray pools use '10.0.0.1:6379': "
        "a process connects to one Ray cluster"
    )
    assert cluster.ray is None  # refused before connecting anywhere


async def test_missing_ray_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(StartFailed) as err:
        await RayCluster("auto").connect()
    assert str(err.value) == INSTALL_HINT == "backend.ray needs the ray extra: pip install 'frugalserve[ray]'"


async def test_unreachable_cluster_fails_fast_with_the_address() -> None:
    pytest.importorskip("ray")
    address = f"127.0.0.1:{procs.free_port()}"
    cluster = RayCluster(address)
    with pytest.raises(StartFailed) as err:
        await asyncio.wait_for(cluster.connect(), 10)
    assert str(err.value).startswith(f"cannot reach the Ray cluster at {address}: ")
    assert cluster.ray is None


# -- on a real local Ray head -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    with ray_head(num_gpus=4, num_cpus=16) as address:
        yield address


@pytest.fixture
async def cluster(ray_address: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RayCluster]:
    monkeypatch.setenv("RAY_AUTH_MODE", NO_TOKEN["RAY_AUTH_MODE"])
    c = RayCluster(ray_address)
    try:
        # Each test starts on an empty cluster. The previous test's driver disconnected, and Ray kills the
        # actors it owned on its own time: wait for their GPUs to come back rather than race them.
        await c.connect()
        deadline = asyncio.get_running_loop().time() + 30
        while (free := (await c.resources()).free("GPU")) < 4.0:
            assert asyncio.get_running_loop().time() < deadline, (
                f"the previous test's actors still hold GPUs ({free} of 4 free)"
            )
            await asyncio.sleep(0.1)
        yield c
    finally:
        await c.shutdown()  # ends this process's Ray connection, and with it every actor it owned


@contextlib.asynccontextmanager
async def started(*provisioners: RayProvisioner) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await asyncio.gather(*(p.aclose() for p in provisioners))


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie is gone for our purpose: it no longer serves
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def server_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def name_free(cluster: RayCluster, name: str) -> bool:
    try:
        cluster.ray.get_actor(name, namespace="frugalserve")
    except ValueError:
        return True
    return False


@pytest.mark.integration
@pytest.mark.ray
async def test_replica_starts_through_an_actor_serves_chat_and_stops(cluster: RayCluster, tmp_path: Path) -> None:
    p = RayProvisioner(pool("a", cluster.address), "a-0", SystemClock(), cluster)
    async with started(p), httpx.AsyncClient(trust_env=False, timeout=10) as http:
        url = await p.start()
        where = p.placement
        assert url.startswith(f"http://{where['node_ip']}:") and where["node_ip"] == "127.0.0.1"
        assert await p.healthy()
        assert (await http.get(url + "/health")).status_code == 200
        chat = (await http.post(url + "/v1/chat/completions", json=CHAT)).json()
        assert (chat["model"], chat["usage"]["completion_tokens"]) == ("m-a", 3)  # {model} filled; max_tokens
        # Ray's GPU for this actor reaches the server's environment, and the server runs where Ray says
        stats = (await http.get(url + "/stats")).json()
        assert stats["pid"] == where["server_pid"]
        assert where["gpu_ids"] in (["0"], ["1"], ["2"], ["3"])
        assert server_env(where["server_pid"])["CUDA_VISIBLE_DEVICES"] == where["gpu_ids"][0]
        # the log is on the node under backend.log_dir, relative to the gateway's directory
        assert p.log_path == tmp_path / "logs" / "a-0.log"
        assert "=== frugalserve: starting " in p.log_path.read_text()
        # the actor's module travelled by value: the worker never imported frugalserve
        modules = await p._actor.__ray_call__.remote(
            lambda _self: sorted(m for m in sys.modules if m.startswith("frugalserve"))
        )
        assert modules == []
        server_pid = where["server_pid"]
        watch = asyncio.create_task(p.wait_exit())
        await asyncio.sleep(0.2)  # the watch is waiting on the actor
        await p.stop()
        # SIGTERM first, which uvicorn handles (shuts down, then re-raises it): not SIGKILL
        assert await asyncio.wait_for(watch, 5) == -signal.SIGTERM
        assert pid_gone(server_pid)
        with pytest.raises(httpx.ConnectError):
            await http.get(url + "/health")
        assert not await p.healthy()
        assert name_free(cluster, "a-0")
        await p.stop()  # idempotent
        assert await p.wait_exit() == 0  # nothing runs
        # the name was released: the same replica starts again at once
        url2 = await p.start()
        assert (await http.get(url2 + "/health")).status_code == 200


@pytest.mark.integration
@pytest.mark.ray
async def test_sleep_and_wake_pass_through_the_actor(cluster: RayCluster) -> None:
    p = RayProvisioner(pool("a", cluster.address), "a-0", SystemClock(), cluster)
    async with started(p), httpx.AsyncClient(trust_env=False, timeout=10) as http:
        url = await p.start()
        assert p.can_sleep  # sleep_api auto: the actor found /is_sleeping
        await p.sleep(2)
        stats = (await http.get(url + "/stats")).json()
        assert (stats["sleeping"], stats["sleep_levels"]) == (2, ["2"])
        assert (await http.get(url + "/is_sleeping")).json() == {"is_sleeping": True}
        await p.wake()
        assert (await http.get(url + "/is_sleeping")).json() == {"is_sleeping": False}
        assert (await http.post(url + "/v1/chat/completions", json=CHAT)).status_code == 200


@pytest.mark.integration
@pytest.mark.ray
async def test_four_gpus_place_four_replicas_refuse_two_and_free_one_on_stop(cluster: RayCluster) -> None:
    a = [RayProvisioner(pool("a", cluster.address), f"a-{i}", SystemClock(), cluster) for i in range(3)]
    # b-0 and the last start of b-1 get the default placement timeout: on a busy 2-core machine a Ray
    # worker process alone may take longer than 2 s to start. Only the starts that must be refused are short.
    b = [RayProvisioner(pool("b", cluster.address), "b-0", SystemClock(), cluster)] + [
        RayProvisioner(pool("b", cluster.address, placement_timeout_s=2), f"b-{i}", SystemClock(), cluster)
        for i in (1, 2)
    ]
    again = RayProvisioner(pool("b", cluster.address), "b-1", SystemClock(), cluster)
    async with started(*a, *b, again):
        await asyncio.gather(*(p.start() for p in (*a, b[0])))
        assert sorted(p.placement["gpu_ids"][0] for p in (*a, b[0])) == ["0", "1", "2", "3"]
        refused = await asyncio.gather(b[1].start(), b[2].start(), return_exceptions=True)
        for err in refused:
            assert isinstance(err, PlacementRefused)
            assert str(err) == "Ray has no node with 1 free GPU (cluster: 4 GPUs, 0 free)"
        assert name_free(cluster, "b-1") and name_free(cluster, "b-2")  # nothing left queueing inside Ray
        freed = a[0].placement["gpu_ids"]
        await a[0].stop()
        await again.start()
        assert again.placement["gpu_ids"] == freed


@pytest.mark.integration
@pytest.mark.ray
async def test_actor_ray_cannot_place_in_time_is_refused_and_killed(
    cluster: RayCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    hogs = [RayProvisioner(pool("a", cluster.address), f"a-{i}", SystemClock(), cluster) for i in range(4)]
    late = RayProvisioner(pool("b", cluster.address, placement_timeout_s=1), "b-0", SystemClock(), cluster)
    async with started(*hogs, late):
        await cluster.connect()
        stale = await cluster.resources()  # 4 GPUs free: what a view that lags behind would still say
        await asyncio.gather(*(p.start() for p in hogs))
        real = cluster.resources
        views = iter([stale])

        async def lagging() -> ClusterResources:
            return next(views, None) or await real()

        monkeypatch.setattr(cluster, "resources", lagging)
        with pytest.raises(PlacementRefused) as err:
            await late.start()
        assert str(err.value) == (
            "Ray did not place b-0 within 1s: Ray has no node with 1 free GPU (cluster: 4 GPUs, 0 free)"
        )
        assert name_free(cluster, "b-0")
        # killed, not pending: a freed GPU goes to no ghost of b-0
        await hogs[0].stop()
        await asyncio.sleep(0.5)
        assert (await real()).free("GPU") == 1.0


@pytest.mark.integration
@pytest.mark.ray
@pytest.mark.parametrize("how", ["ray.kill", "SIGKILL to the worker"])
async def test_killed_actor_ends_wait_exit_promptly_and_takes_its_server(cluster: RayCluster, how: str) -> None:
    p = RayProvisioner(pool("a", cluster.address), "a-0", SystemClock(), cluster)
    async with started(p):
        await p.start()
        server_pid, actor = p.placement["server_pid"], p._actor
        watch = asyncio.create_task(p.wait_exit())
        await asyncio.sleep(0.2)
        assert not watch.done()
        if how == "ray.kill":
            cluster.ray.kill(actor, no_restart=True)
        else:
            os.kill(p.placement["actor_pid"], signal.SIGKILL)
        assert await asyncio.wait_for(watch, 10) == ACTOR_LOST
        await procs.eventually(lambda: pid_gone(server_pid), 5, "the server dies with its actor")
        await asyncio.wait_for(p.stop(), 10)  # safe on a dead actor
        await p.stop()
        assert name_free(cluster, "a-0")


@pytest.mark.integration
@pytest.mark.ray
async def test_backend_that_exits_fails_the_start_with_its_log_and_frees_the_gpu(
    cluster: RayCluster, tmp_path: Path
) -> None:
    command = "{python} -c 'import sys; print(\"no model here\"); sys.exit(3)' {port}"
    p = RayProvisioner(pool("a", cluster.address, command=command), "a-0", SystemClock(), cluster)
    async with started(p):
        with pytest.raises(StartFailed) as err:
            await p.start()
        assert not isinstance(err.value, PlacementRefused)
        log = tmp_path / "logs" / "a-0.log"
        assert str(err.value).startswith("the backend exited with code 3 before it was healthy (log: ")
        assert str(err.value).endswith(f":{log})")
        assert "no model here" in log.read_text()
        assert name_free(cluster, "a-0")
        assert (await cluster.resources()).free("GPU") == 4.0


@pytest.mark.integration
@pytest.mark.ray
async def test_local_address_starts_a_ray_head_inside_the_gateway(
    ray_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Unset, Ray would turn token auth on for this process and write ~/.ray/auth_token for every later Ray here.
    monkeypatch.setenv("RAY_AUTH_MODE", NO_TOKEN["RAY_AUTH_MODE"])
    # this machine has no GPU, so the in-process head has none: the replica asks for a CPU only
    cluster = RayCluster("local")
    p = RayProvisioner(pool("a", "local", num_gpus=0), "a-0", SystemClock(), cluster)
    try:
        async with started(p), httpx.AsyncClient(trust_env=False, timeout=10) as http:
            url = await p.start()
            assert (await http.get(url + "/health")).status_code == 200
            assert cluster.ray.get_runtime_context().gcs_address.split(":")[1] != ray_address.split(":")[1]
    finally:
        await cluster.shutdown()
    assert cluster.ray is None


@pytest.mark.integration
@pytest.mark.ray
async def test_replica_owner_sees_a_killed_actor_fail_and_starts_a_new_one(cluster: RayCluster) -> None:
    clock = SystemClock()
    p = RayProvisioner(pool("a", cluster.address), "a-0", clock, cluster)
    events = RecentEvents()
    replica = Replica(p.pool, "a-0", p, clock, events, LifecycleMetrics(CollectorRegistry(), CostMeter(clock)))
    replica.start_owner()
    try:
        await asyncio.wait_for(replica.ensure_ready(), 30)
        assert await replica.request_sleep() == "sleeping"  # through the actor
        await asyncio.wait_for(replica.ensure_ready(), 30)  # a wake, not a start
        first = p.placement["actor_pid"]
        cluster.ray.kill(p._actor, no_restart=True)
        await procs.eventually(lambda: replica.state == "failed", 10, "the replica sees its actor die")
        await asyncio.wait_for(replica.ensure_ready(), 30)
        assert p.placement["actor_pid"] != first
        reasons = [(e.from_state, e.to_state, e.reason) for e in events.events]
        assert reasons == [
            ("stopped", "starting", "request"),
            ("starting", "ready", "request"),
            ("ready", "stopping", "admin"),
            ("stopping", "sleeping", "admin"),
            ("sleeping", "starting", "wake"),
            ("starting", "ready", "request"),
            ("ready", "failed", "exited"),
            ("failed", "starting", "request"),
            ("starting", "ready", "request"),
        ]
    finally:
        await asyncio.wait_for(replica.shutdown(), 30)
    assert name_free(cluster, "a-0")
