"""GPU telemetry through NVML: memory, utilisation and power per device, and the pools on each device.

Three pieces, each testable alone:

- a reader (:class:`GpuReader`; :class:`NvmlReader` is the real one) turns NVML into typed, frozen samples.
  NVML calls into the driver and may block, so a read runs in a worker thread, never on the event loop;
- :class:`GpuTelemetry` owns the latest samples: it reads every ``gateway.gpu_metrics_interval_s`` with
  ``asyncio.to_thread`` and answers from memory, to the exporter and to policies (:meth:`GpuTelemetry.by_pool`);
- :class:`GpuCollector` exports the latest samples when Prometheus scrapes; a scrape reads nothing.

Where NVML is missing (no NVIDIA driver, as on every development machine), a read finds no device, the reader
says why once in the log, and the ``frugalserve_gpu_*`` series are absent. A value a device does not report
(power on some boards: NVML_ERROR_NOT_SUPPORTED) drops only that value. NVML failing mid-run empties the
samples (the series go absent, never zero) and the next read initialises NVML again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from frugalserve.clock import Clock
from frugalserve.config import PoolConfig
from frugalserve.tasks import stop_task

log = logging.getLogger("frugalserve.gpu")

CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One device as NVML saw it at one read. A value the device did not report is None."""

    index: int  # NVML's index (PCI bus order): the `gpu` label
    uuid: str
    model: str
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    utilization_ratio: float | None  # share of the last sample period in which a kernel ran, 0..1
    power_watts: float | None


class GpuReader(Protocol):
    """Reads every device once. Blocking: called in a worker thread. Never raises for a missing GPU."""

    def read(self) -> tuple[GpuSample, ...]: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------------------
# NVML


class NvmlReader:
    """:class:`GpuReader` over pynvml (or a module with the same functions, handed in by tests).

    NVML is initialised at the first read, not at construction, so a gateway with telemetry off never loads
    it. ``problem`` says why the last read found no device (None when it found some).
    """

    def __init__(self, nvml: Any = None) -> None:
        self._nvml = nvml
        self._lock = threading.Lock()  # a read and close() never overlap (close shuts NVML down)
        self._initialised = False
        self.problem: str | None = None
        self._logged_problem: str | None = None
        self._logged_values: set[tuple[str, int]] = set()  # (value, NVML error code) warned about once

    def read(self) -> tuple[GpuSample, ...]:
        with self._lock:
            nvml = self._module()
            if nvml is None:
                return self._nothing("the pynvml module (nvidia-ml-py) is not installed", absent=True)
            if not self._initialised:
                try:
                    nvml.nvmlInit()
                except nvml.NVMLError as exc:
                    return self._nothing(_why_unavailable(nvml, exc), absent=True)
                self._initialised = True
            try:
                count = nvml.nvmlDeviceGetCount()
            except nvml.NVMLError as exc:
                self._shutdown(nvml)  # initialised again at the next read: NVML may recover (a reset GPU)
                return self._nothing(f"NVML failed to list the GPUs: {exc}", absent=False)
            samples = tuple(s for s in (self._device(nvml, i) for i in range(count)) if s is not None)
            if not samples:
                return self._nothing("NVML sees no GPU", absent=True)
            if self.problem is not None:
                log.info("GPU telemetry: NVML reads %d GPU(s) again", len(samples))
            self.problem = self._logged_problem = None
            return samples

    def close(self) -> None:
        with self._lock:
            if self._nvml is not None:
                self._shutdown(self._nvml)

    def _module(self) -> Any:
        if self._nvml is None:
            try:
                import pynvml
            except ImportError:
                return None
            self._nvml = pynvml
        return self._nvml

    def _shutdown(self, nvml: Any) -> None:
        if self._initialised:
            self._initialised = False
            with contextlib.suppress(nvml.NVMLError):
                nvml.nvmlShutdown()

    def _nothing(self, problem: str, *, absent: bool) -> tuple[GpuSample, ...]:
        """No device this time; said once in the log (info when there is none to read, warning on a failure)."""
        self.problem = problem
        if problem != self._logged_problem:
            self._logged_problem = problem
            if absent:
                log.info("GPU telemetry: no NVIDIA GPU (%s); the frugalserve_gpu_* series stay absent", problem)
            else:
                log.warning("GPU telemetry: %s; the frugalserve_gpu_* series are absent until it reads again", problem)
        return ()

    def _device(self, nvml: Any, index: int) -> GpuSample | None:
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(nvml.nvmlDeviceGetUUID(handle))
            model = _text(nvml.nvmlDeviceGetName(handle))
        except nvml.NVMLError as exc:
            self._warn_once(f"GPU {index}", nvml, exc)
            return None
        memory = self._value(nvml, "memory", nvml.nvmlDeviceGetMemoryInfo, handle)
        utilization = self._value(nvml, "utilization", nvml.nvmlDeviceGetUtilizationRates, handle)
        milliwatts = self._value(nvml, "power", nvml.nvmlDeviceGetPowerUsage, handle)
        return GpuSample(
            index=index,
            uuid=uuid,
            model=model,
            memory_used_bytes=int(memory.used) if memory is not None else None,
            memory_total_bytes=int(memory.total) if memory is not None else None,
            utilization_ratio=utilization.gpu / 100 if utilization is not None else None,
            power_watts=milliwatts / 1000 if milliwatts is not None else None,
        )

    def _value(self, nvml: Any, what: str, function: Any, handle: Any) -> Any:
        """One reading of one device; None (only this value dropped) when NVML does not give it."""
        try:
            return function(handle)
        except nvml.NVMLError as exc:
            if getattr(exc, "value", None) != nvml.NVML_ERROR_NOT_SUPPORTED:  # not supported: expected, silent
                self._warn_once(what, nvml, exc)
            return None

    def _warn_once(self, what: str, nvml: Any, exc: Exception) -> None:
        key = (what, int(getattr(exc, "value", -1)))
        if key not in self._logged_values:
            self._logged_values.add(key)
            log.warning("GPU telemetry: NVML cannot read %s: %s (dropped while it fails)", what, exc)


def _why_unavailable(nvml: Any, exc: Exception) -> str:
    code = getattr(exc, "value", None)
    if code == nvml.NVML_ERROR_LIBRARY_NOT_FOUND:
        return "NVML library libnvidia-ml.so.1 not found: no NVIDIA driver is installed"
    if code == nvml.NVML_ERROR_DRIVER_NOT_LOADED:
        return "the NVIDIA driver is not loaded"
    return f"NVML did not initialise: {exc}"


def _text(value: str | bytes) -> str:
    """pynvml returns str or bytes depending on its version and the function."""
    return value.decode() if isinstance(value, bytes) else value


# ---------------------------------------------------------------------------------------------------------
# Which pools run on which GPU


@dataclass(frozen=True, slots=True)
class PoolGpus:
    """The GPUs a pool's config names: NVML indices, or UUIDs (or unique UUID prefixes, as CUDA accepts)."""

    pool: str
    selectors: tuple[int | str, ...]
    source: str  # the config key they come from, for messages

    def matches(self, selector: int | str, sample: GpuSample, samples: Sequence[GpuSample]) -> bool:
        if isinstance(selector, int):
            return sample.index == selector
        if sample.uuid == selector:
            return True
        prefixed = [s for s in samples if s.uuid.startswith(selector)]
        return prefixed == [sample]


def pool_gpus(pool: PoolConfig) -> PoolGpus | None:
    """``gpu.indices``, else ``backend.env`` CUDA_VISIBLE_DEVICES when it is a list of indices or of UUIDs.

    None: the pool names no GPU (or CUDA_VISIBLE_DEVICES is something else, e.g. ``-1``: nothing to map).
    """
    if pool.gpu.indices is not None:
        return PoolGpus(pool.name, pool.gpu.indices, "gpu.indices")
    visible = pool.backend.env.get(CUDA_VISIBLE_DEVICES)
    if visible is None:
        return None
    source = f"backend.env.{CUDA_VISIBLE_DEVICES}"
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    if all(e.isdigit() for e in entries):
        return PoolGpus(pool.name, tuple(int(e) for e in entries), source)
    if all(e.startswith("GPU-") for e in entries):
        return PoolGpus(pool.name, tuple(entries), source)
    return None


@dataclass(frozen=True)
class Placement:
    """Pools per device (by NVML index), and the selectors that matched no device NVML sees."""

    pools_by_gpu: Mapping[int, tuple[str, ...]]
    unmatched: tuple[tuple[PoolGpus, int | str], ...]


def place(declared: Iterable[PoolGpus], samples: Sequence[GpuSample]) -> Placement:
    """Match each pool's selectors against the devices read. Pure."""
    by_gpu: dict[int, list[str]] = {s.index: [] for s in samples}
    unmatched: list[tuple[PoolGpus, int | str]] = []
    for pool in declared:
        for selector in pool.selectors:
            found = [s for s in samples if pool.matches(selector, s, samples)]
            if not found:
                unmatched.append((pool, selector))
            for s in found:
                if pool.pool not in by_gpu[s.index]:
                    by_gpu[s.index].append(pool.pool)
    return Placement({i: tuple(p) for i, p in by_gpu.items()}, tuple(unmatched))


# ---------------------------------------------------------------------------------------------------------
# The owner of the latest samples


class GpuTelemetry:
    """Reads the GPUs on an interval (off the event loop) and keeps the last read for exporters and policies."""

    def __init__(self, reader: GpuReader, pools: Sequence[PoolConfig], interval_s: float, clock: Clock) -> None:
        self._reader = reader
        self._declared = tuple(p for p in map(pool_gpus, pools) if p is not None)
        self._interval_s = interval_s
        self._clock = clock
        self._samples: tuple[GpuSample, ...] = ()
        self._placement = place(self._declared, ())
        self.read_at: float | None = None  # clock.monotonic() of the last read, for a policy to judge staleness
        self._task: asyncio.Task[None] | None = None

    @property
    def samples(self) -> tuple[GpuSample, ...]:
        """The devices of the last read; empty without a GPU, or while NVML fails."""
        return self._samples

    @property
    def placement(self) -> Placement:
        return self._placement

    def pools_on(self, index: int) -> tuple[str, ...]:
        return self._placement.pools_by_gpu.get(index, ())

    def by_pool(self) -> dict[str, tuple[GpuSample, ...]]:
        """The latest samples of the GPUs each pool runs on (pools on no GPU NVML sees are left out)."""
        out: dict[str, list[GpuSample]] = {}
        for sample in self._samples:
            for pool in self.pools_on(sample.index):
                out.setdefault(pool, []).append(sample)
        return {pool: tuple(samples) for pool, samples in out.items()}

    async def refresh(self) -> None:
        """Read once in a worker thread and keep the result."""
        self._keep(await asyncio.to_thread(self._reader.read))

    def start(self) -> None:
        if self._interval_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name="gpu-telemetry")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None
        await asyncio.to_thread(self._reader.close)  # waits for a read still running in its thread

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                await self.refresh()
                failing = False
            except Exception:  # a bug in a reader must not end telemetry, nor leave old numbers exported
                if not failing:  # once per run of failures, not once per interval
                    log.exception("GPU telemetry: the read failed")
                failing = True
                self._keep(())
            await self._clock.sleep(self._interval_s)

    def _keep(self, samples: tuple[GpuSample, ...]) -> None:
        self._samples = samples
        self._placement = place(self._declared, samples)
        self.read_at = self._clock.monotonic()


# ---------------------------------------------------------------------------------------------------------
# Export


class GpuCollector(Collector):
    """The latest samples as Prometheus gauges, built at scrape time; nothing at all without a GPU."""

    def __init__(self, telemetry: GpuTelemetry) -> None:
        self._telemetry = telemetry

    def describe(self) -> Iterable[Metric]:
        return list(_families((), {}))  # the names, for the registry's duplicate check

    def collect(self) -> Iterable[Metric]:
        samples = self._telemetry.samples
        if not samples:
            return []
        return list(_families(samples, self._telemetry.placement.pools_by_gpu))


def _families(samples: Sequence[GpuSample], pools_by_gpu: Mapping[int, tuple[str, ...]]) -> Iterator[Metric]:
    info = GaugeMetricFamily(
        "frugalserve_gpu_info", "One per GPU NVML sees (always 1).", labels=["gpu", "uuid", "model"]
    )
    pool_info = GaugeMetricFamily(
        "frugalserve_gpu_pool_info", "A pool runs on this GPU (always 1).", labels=["gpu", "pool"]
    )
    for s in samples:
        info.add_metric([str(s.index), s.uuid, s.model], 1)
        for pool in pools_by_gpu.get(s.index, ()):
            pool_info.add_metric([str(s.index), pool], 1)
    yield info
    yield pool_info
    for name, doc, value in (
        ("frugalserve_gpu_memory_used_bytes", "GPU memory in use.", lambda s: s.memory_used_bytes),
        ("frugalserve_gpu_memory_total_bytes", "GPU memory installed.", lambda s: s.memory_total_bytes),
        (
            "frugalserve_gpu_utilization_ratio",
            "Share of the last sample period in which a kernel ran on the GPU (0..1).",
            lambda s: s.utilization_ratio,
        ),
        ("frugalserve_gpu_power_watts", "GPU power draw.", lambda s: s.power_watts),
    ):
        family = GaugeMetricFamily(name, doc, labels=["gpu"])
        for s in samples:
            v = value(s)
            if v is not None:
                family.add_metric([str(s.index)], v)
        yield family
