"""GPU telemetry (metrics/gpu.py): NVML memory, utilisation and power per GPU, and the pools on each.

Two halves. This machine has no GPU and no NVIDIA driver, so the first half runs the REAL pynvml and checks
what a user without a GPU gets: no ``frugalserve_gpu_`` series, nothing failing, a clear ``frugalserve gpus``.
The second half needs devices, which cannot exist here: :class:`FakeNvml` stands in for a GPU machine's
NVML (the few pynvml functions the reader calls, raising pynvml's own error classes), with hand-set values.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pynvml
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from frugalserve import config as cfg
from frugalserve.api.app import Gateway, create_app
from frugalserve.clock import ManualClock, SystemClock
from frugalserve.metrics.gpu import GpuCollector, GpuTelemetry, NvmlReader, pool_gpus

from .. import procs


def _nvml_present() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


no_driver = pytest.mark.skipif(_nvml_present(), reason="this machine has an NVIDIA driver: the no-GPU path is moot")


def _series(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _gpu_series(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {k: v for k, v in _series(text).items() if k[0].startswith("frugalserve_gpu_")}


# ---------------------------------------------------------------------------------------------------------
# The real pynvml on a machine without a GPU


@no_driver
def test_gateway_without_nvidia_driver_exports_no_gpu_series_and_keeps_serving(tmp_path: Path) -> None:
    config = (
        "gateway: {gpu_metrics_interval_s: 0.05}\naccounting: {enabled: false}\n"
        f"pools:\n  - {{name: a, model: m, backend: {{url: 'http://127.0.0.1:{procs.free_port()}'}},"
        " gpu: {indices: [0]}}\n"
    )
    with procs.gateway(tmp_path, config) as (url, proc):
        for _ in range(3):  # a few scrapes over several reads: each answers, none has a GPU series
            page = httpx.get(f"{url}/metrics", timeout=10)
            assert page.status_code == 200
            assert "frugalserve_requests_in_flight" in page.text or "# HELP" in page.text
            assert "frugalserve_gpu_" not in page.text
        log = next(tmp_path.glob("gateway-*.log"))
        procs.wait_until(lambda: "no NVIDIA GPU" in log.read_text(), what="the no-GPU log line")
        assert proc.poll() is None
    assert log.read_text().count("no NVIDIA GPU") == 1, log.read_text()


@no_driver
@pytest.mark.parametrize("fmt", ["table", "json"])
def test_gpus_command_without_nvidia_driver_says_so_and_exits_0(tmp_path: Path, fmt: str) -> None:
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "frugalserve",
            "gpus",
            "--format",
            fmt,
            "--config",
            str(procs.TESTS.parent / "config.example.yaml"),
        ],
        cwd=tmp_path,
        env=procs.spawn_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    if fmt == "json":
        out = json.loads(done.stdout)
        assert out["gpus"] == []
        assert "no NVIDIA driver" in out["problem"]
    else:
        assert done.stdout.startswith("no NVIDIA GPU found: NVML library libnvidia-ml.so.1 not found")


@no_driver
def test_real_reader_without_driver_reads_nothing_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    reader = NvmlReader()
    with caplog.at_level(logging.INFO, logger="frugalserve.gpu"):
        assert [reader.read() for _ in range(3)] == [(), (), ()]
    reader.close()
    assert reader.problem is not None and "no NVIDIA driver" in reader.problem
    assert len([r for r in caplog.records if "no NVIDIA GPU" in r.getMessage()]) == 1
    assert all(r.levelno == logging.INFO for r in caplog.records)


# ---------------------------------------------------------------------------------------------------------
# A fake NVML: two devices with hand-set values


@dataclass
class FakeDevice:
    uuid: str
    name: str
    used: int
    total: int
    util_percent: int
    power_mw: int | None  # None: the board does not report power (NVML_ERROR_NOT_SUPPORTED)


class FakeNvml:
    """Stands in for pynvml on a GPU machine (this one has none): the functions NvmlReader calls, with
    pynvml's real error classes and codes. ``broken`` makes every call fail, as a lost GPU or driver does."""

    NVMLError = pynvml.NVMLError
    NVML_ERROR_NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED
    NVML_ERROR_LIBRARY_NOT_FOUND = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    NVML_ERROR_DRIVER_NOT_LOADED = pynvml.NVML_ERROR_DRIVER_NOT_LOADED

    def __init__(self, devices: list[FakeDevice]) -> None:
        self.devices = devices
        self.broken = False
        self.inits = 0
        self.init_attempts = 0
        self.reads = 0  # nvmlDeviceGetCount calls: one per read
        self.initialised = False

    def _check(self) -> None:
        if self.broken:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)
        if not self.initialised:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)

    def nvmlInit(self) -> None:
        self.init_attempts += 1
        if self.broken:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)
        self.inits += 1
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlDeviceGetCount(self) -> int:
        self.reads += 1
        self._check()
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:
        self._check()
        return self.devices[index]

    def nvmlDeviceGetUUID(self, d: FakeDevice) -> bytes:
        self._check()
        return d.uuid.encode()  # some pynvml versions return bytes here

    def nvmlDeviceGetName(self, d: FakeDevice) -> str:
        self._check()
        return d.name

    def nvmlDeviceGetMemoryInfo(self, d: FakeDevice) -> Any:
        self._check()
        return SimpleNamespace(total=d.total, used=d.used, free=d.total - d.used)

    def nvmlDeviceGetUtilizationRates(self, d: FakeDevice) -> Any:
        self._check()
        return SimpleNamespace(gpu=d.util_percent, memory=0)

    def nvmlDeviceGetPowerUsage(self, d: FakeDevice) -> int:
        self._check()
        if d.power_mw is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return d.power_mw


UUID0 = "GPU-11111111-2222-3333-4444-555555555555"
UUID1 = "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


def two_gpus() -> FakeNvml:
    return FakeNvml(
        [
            FakeDevice(UUID0, "NVIDIA H100 80GB HBM3", 21_474_836_480, 85_520_809_984, 37, 123_456),
            FakeDevice(UUID1, "NVIDIA L4", 1_073_741_824, 24_152_899_584, 100, None),
        ]
    )


def pools_yaml(backend: str) -> str:
    return (
        "accounting: {enabled: false}\npools:\n"
        f"  - {{name: big, model: big-m, backend: {{url: '{backend}'}}, gpu: {{indices: [0, 1]}}}}\n"
        f"  - {{name: small, model: small-m, backend: {{url: '{backend}'}}, gpu: {{indices: [1]}}}}\n"
        f"  - {{name: nogpu, model: cpu-m, backend: {{url: '{backend}'}}}}\n"
    )


@pytest.fixture
async def fake_gateway() -> AsyncIterator[tuple[httpx.AsyncClient, FakeNvml, Gateway]]:
    nvml = two_gpus()
    text = pools_yaml(f"http://127.0.0.1:{procs.free_port()}").replace(
        "accounting:", "gateway: {gpu_metrics_interval_s: 0.02}\naccounting:"
    )
    app = create_app(cfg.load_text(text), gpu_reader=NvmlReader(nvml))
    gateway: Gateway = app.state.gateway
    await gateway.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
            yield c, nvml, gateway
    finally:
        await gateway.shutdown()


async def _gpu_page(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = await client.get("/metrics")
    assert r.status_code == 200
    return _gpu_series(r.text)


async def test_gateway_exports_each_gpu_in_base_units(fake_gateway: Any) -> None:
    client, _, gateway = fake_gateway
    await procs.eventually(lambda: bool(gateway.gpus.samples), what="the first GPU read")
    got = await _gpu_page(client)
    assert got == {
        ("frugalserve_gpu_info", (("gpu", "0"), ("model", "NVIDIA H100 80GB HBM3"), ("uuid", UUID0))): 1.0,
        ("frugalserve_gpu_info", (("gpu", "1"), ("model", "NVIDIA L4"), ("uuid", UUID1))): 1.0,
        ("frugalserve_gpu_pool_info", (("gpu", "0"), ("pool", "big"))): 1.0,
        ("frugalserve_gpu_pool_info", (("gpu", "1"), ("pool", "big"))): 1.0,
        ("frugalserve_gpu_pool_info", (("gpu", "1"), ("pool", "small"))): 1.0,
        ("frugalserve_gpu_memory_used_bytes", (("gpu", "0"),)): 21_474_836_480.0,
        ("frugalserve_gpu_memory_used_bytes", (("gpu", "1"),)): 1_073_741_824.0,
        ("frugalserve_gpu_memory_total_bytes", (("gpu", "0"),)): 85_520_809_984.0,
        ("frugalserve_gpu_memory_total_bytes", (("gpu", "1"),)): 24_152_899_584.0,
        ("frugalserve_gpu_utilization_ratio", (("gpu", "0"),)): 0.37,
        ("frugalserve_gpu_utilization_ratio", (("gpu", "1"),)): 1.0,
        # GPU 1 does not report power (NOT_SUPPORTED): only that one series is absent
        ("frugalserve_gpu_power_watts", (("gpu", "0"),)): 123.456,
    }
    assert {p: [s.index for s in samples] for p, samples in gateway.gpus.by_pool().items()} == {
        "big": [0, 1],
        "small": [1],
    }


async def test_nvml_failing_mid_run_empties_the_gpu_series_then_they_come_back(fake_gateway: Any) -> None:
    client, nvml, gateway = fake_gateway
    await procs.eventually(lambda: bool(gateway.gpus.samples), what="the first GPU read")
    assert len(await _gpu_page(client)) == 12
    inits = nvml.inits
    nvml.broken = True
    await procs.eventually(lambda: not gateway.gpus.samples, what="the samples to empty")
    assert await _gpu_page(client) == {}  # absent, never reported as zero
    assert (await client.get("/healthz")).status_code == 200
    tries = nvml.init_attempts
    await procs.eventually(lambda: nvml.init_attempts > tries + 2, what="NVML tried again while it fails")
    nvml.broken = False
    await procs.eventually(lambda: bool(gateway.gpus.samples), what="the samples to come back")
    got = await _gpu_page(client)
    assert got[("frugalserve_gpu_power_watts", (("gpu", "0"),))] == 123.456
    assert len(got) == 12
    assert nvml.inits == inits + 1  # NVML was shut down on the failure and initialised again


def _collected(telemetry: GpuTelemetry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(GpuCollector(telemetry))
    return _gpu_series(generate_latest(registry).decode())


async def test_cuda_visible_devices_maps_pools_by_index_and_by_uuid() -> None:
    text = (
        "pools:\n"
        "  - {name: by-index, model: a, backend: {command: 'x {port}', env: {CUDA_VISIBLE_DEVICES: '1'}}}\n"
        f"  - {{name: by-uuid, model: b, backend: {{command: 'x {{port}}', env: {{CUDA_VISIBLE_DEVICES: '{UUID0}'}}}}}}\n"
        "  - {name: by-prefix, model: c, backend: {command: 'x {port}', env: {CUDA_VISIBLE_DEVICES: 'GPU-aaaa'}}}\n"
        "  - {name: explicit, model: d, backend: {command: 'x {port}', env: {CUDA_VISIBLE_DEVICES: '0'}},"
        " gpu: {indices: [1]}}\n"
        "  - {name: absent, model: e, backend: {command: 'x {port}', env: {CUDA_VISIBLE_DEVICES: '0,5'}}}\n"
    )
    config = cfg.load_text(text)
    telemetry = GpuTelemetry(NvmlReader(two_gpus()), config.pools, 5, SystemClock())
    await telemetry.refresh()
    got = {k[1] for k in _collected(telemetry) if k[0] == "frugalserve_gpu_pool_info"}
    assert got == {
        (("gpu", "0"), ("pool", "absent")),
        (("gpu", "0"), ("pool", "by-uuid")),
        (("gpu", "1"), ("pool", "by-index")),
        (("gpu", "1"), ("pool", "by-prefix")),
        (("gpu", "1"), ("pool", "explicit")),  # gpu.indices wins over CUDA_VISIBLE_DEVICES
    }
    assert [(p.pool, sel) for p, sel in telemetry.placement.unmatched] == [("absent", 5)]


@pytest.mark.parametrize(
    ("visible", "selectors"),
    [
        ("0,2", (0, 2)),
        (" 3 ", (3,)),
        (f"{UUID0},{UUID1}", (UUID0, UUID1)),
        ("", ()),  # the process sees no GPU
        ("-1", None),
        ("0,GPU-1234", None),  # mixed: CUDA itself would not read it as two devices
        ("MIG-1234", None),  # a MIG instance is not a device NVML lists
    ],
)
def test_cuda_visible_devices_is_read_only_as_indices_or_uuids(visible: str, selectors: tuple[Any, ...] | None) -> None:
    pool = cfg.load_text(
        f"pools:\n  - {{name: p, model: m, backend: {{command: 'x {{port}}', env: {{CUDA_VISIBLE_DEVICES: '{visible}'}}}}}}\n"
    ).pools[0]
    found = pool_gpus(pool)
    assert (found.selectors if found is not None else None) == selectors


async def test_reader_errors_on_one_value_drop_only_that_value(caplog: pytest.LogCaptureFixture) -> None:
    nvml = two_gpus()

    def no_memory(d: FakeDevice) -> Any:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NO_PERMISSION)

    nvml.nvmlDeviceGetMemoryInfo = no_memory  # type: ignore[method-assign]
    reader = NvmlReader(nvml)
    with caplog.at_level(logging.INFO, logger="frugalserve.gpu"):
        first, second = reader.read(), reader.read()
    assert first == second
    assert [(s.memory_used_bytes, s.memory_total_bytes, s.utilization_ratio) for s in first] == [
        (None, None, 0.37),
        (None, None, 1.0),
    ]
    # a value that fails for another reason than "not supported" is worth one warning, not one per read
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_missing_nvml_library_reads_nothing_logs_once_and_retries(caplog: pytest.LogCaptureFixture) -> None:
    nvml = two_gpus()
    absent = True

    def init() -> None:
        if absent:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
        FakeNvml.nvmlInit(nvml)

    nvml.nvmlInit = init  # type: ignore[method-assign]
    reader = NvmlReader(nvml)
    with caplog.at_level(logging.INFO, logger="frugalserve.gpu"):
        assert [reader.read() for _ in range(3)] == [(), (), ()]
        assert reader.problem == "the NVIDIA driver is not loaded"
        absent = False  # the driver loaded later: the next read finds the GPUs
        assert [s.index for s in reader.read()] == [0, 1]
    assert reader.problem is None
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [m for m in messages if "no NVIDIA GPU" in m[1]] == [
        (
            logging.INFO,
            "GPU telemetry: no NVIDIA GPU (the NVIDIA driver is not loaded); the frugalserve_gpu_* series stay absent",
        )
    ]


async def test_telemetry_reads_on_its_interval_and_not_at_all_when_off() -> None:
    config = cfg.load_text(pools_yaml("http://127.0.0.1:1"))
    clock = ManualClock()
    nvml = two_gpus()
    telemetry = GpuTelemetry(NvmlReader(nvml), config.pools, 5, clock)
    telemetry.start()
    try:
        await procs.eventually(lambda: nvml.reads == 1, what="the first read at start")
        await clock.advance(4.9)
        assert nvml.reads == 1
        await clock.advance(0.1)
        await procs.eventually(lambda: nvml.reads == 2, what="the read after one interval")
    finally:
        await telemetry.stop()
    assert not nvml.initialised  # stop shut NVML down

    off_nvml = two_gpus()
    off = GpuTelemetry(NvmlReader(off_nvml), config.pools, 0, clock)
    off.start()
    await clock.advance(60)
    await off.stop()
    assert off_nvml.reads == 0 and off_nvml.inits == 0
    assert _collected(off) == {}


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("gateway: {gpu_metrics_interval_s: -1}\n", "gateway.gpu_metrics_interval_s"),
        (
            "pools:\n  - {name: p, model: m, backend: {url: 'http://h:1'}, gpu: {indices: [0, -2]}}\n",
            "pools[0].gpu.indices[1]",
        ),
        (
            "pools:\n  - {name: p, model: m, backend: {url: 'http://h:1'}, gpu: {indices: [1, 1]}}\n",
            "pools[0].gpu.indices[1]",
        ),
        (
            "pools:\n  - {name: p, model: m, backend: {url: 'http://h:1'}, gpu: {indices: [a]}}\n",
            "pools[0].gpu.indices",
        ),
    ],
)
def test_gpu_config_errors_name_the_key(yaml_text: str, key: str) -> None:
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.load_text(yaml_text)
    assert caught.value.path == key
    assert str(caught.value).startswith(f"{key}: must ")
