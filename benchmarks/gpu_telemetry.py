"""GPU telemetry checked against NVML itself (and nvidia-smi where it is installed), on a GPU machine.

Per device, side by side: memory used / total, utilisation and power as pynvml reports them directly, as
frugalserve's reader (metrics/gpu.py, what /metrics exports) reports them, and as ``nvidia-smi`` prints them.
Memory should agree exactly between the first two (nvidia-smi rounds to MiB, and on recent drivers counts
reserved memory apart from "used"); utilisation and power are read a few milliseconds apart and may differ
by a little. Also the time one read of every device takes (the reader runs it in a worker thread).

Without an NVIDIA GPU or driver it says so and exits 0.

    PYTHONPATH=src python benchmarks/gpu_telemetry.py [--reads 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import pynvml  # noqa: E402

from frugalserve.metrics.gpu import NvmlReader  # noqa: E402

SMI_FIELDS = "index,uuid,memory.used,memory.total,utilization.gpu,power.draw"


def direct() -> list[dict[str, Any]]:
    """pynvml without frugalserve: raw units (bytes, percent, milliwatts) converted here, independently."""
    pynvml.nvmlInit()
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            try:
                milliwatts: float | None = pynvml.nvmlDeviceGetPowerUsage(h)
            except pynvml.NVMLError:
                milliwatts = None
            uuid = pynvml.nvmlDeviceGetUUID(h)
            out.append(
                {
                    "gpu": i,
                    "uuid": uuid.decode() if isinstance(uuid, bytes) else uuid,
                    "memory_used_bytes": mem.used,
                    "memory_total_bytes": mem.total,
                    "utilization_percent": pynvml.nvmlDeviceGetUtilizationRates(h).gpu,
                    "power_watts": None if milliwatts is None else milliwatts / 1000,
                }
            )
        return out
    finally:
        pynvml.nvmlShutdown()


def smi() -> list[dict[str, str]] | None:
    """nvidia-smi's own view (MiB, %, W), or None where it is not installed."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    done = subprocess.run(
        [exe, f"--query-gpu={SMI_FIELDS}", "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=30
    )
    if done.returncode != 0:
        return None
    keys = SMI_FIELDS.split(",")
    return [dict(zip(keys, (v.strip() for v in line.split(",")), strict=True)) for line in done.stdout.splitlines()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reads", type=int, default=20, help="reads timed through frugalserve's reader")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    reader = NvmlReader()
    try:
        samples = reader.read()
        if not samples:
            print(f"no NVIDIA GPU found: {reader.problem}")
            if args.json:
                args.json.write_text(json.dumps({"gpus": [], "problem": reader.problem}, indent=2))
            return 0
        timings = []
        for _ in range(args.reads):
            t0 = time.perf_counter()
            reader.read()
            timings.append(time.perf_counter() - t0)
    finally:
        reader.close()
    raw = {d["gpu"]: d for d in direct()}
    shown = {int(row["index"]): row for row in smi() or []}

    rows = []
    for s in samples:
        d, n = raw.get(s.index, {}), shown.get(s.index, {})
        rows.append(
            {
                "gpu": s.index,
                "model": s.model,
                "uuid": s.uuid,
                "memory_used_bytes": {"frugalserve": s.memory_used_bytes, "nvml": d.get("memory_used_bytes"),
                                      "nvidia_smi_mib": n.get("memory.used")},
                "memory_total_bytes": {"frugalserve": s.memory_total_bytes, "nvml": d.get("memory_total_bytes"),
                                       "nvidia_smi_mib": n.get("memory.total")},
                "utilization": {"frugalserve_ratio": s.utilization_ratio, "nvml_percent": d.get("utilization_percent"),
                                "nvidia_smi_percent": n.get("utilization.gpu")},
                "power_watts": {"frugalserve": s.power_watts, "nvml": d.get("power_watts"),
                                "nvidia_smi": n.get("power.draw")},
            }
        )  # fmt: skip
    for r in rows:
        print(f"GPU {r['gpu']}: {r['model']} ({r['uuid']})")
        for key in ("memory_used_bytes", "memory_total_bytes", "utilization", "power_watts"):
            print(f"  {key:20} " + "  ".join(f"{k}={v}" for k, v in r[key].items()))
    ms = sorted(t * 1000 for t in timings)
    print(f"one read of {len(samples)} GPU(s): median {statistics.median(ms):.2f} ms, max {ms[-1]:.2f} ms")
    if args.json:
        result = {"gpus": rows, "read_ms": {"median": statistics.median(ms), "max": ms[-1], "n": len(ms)}}
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
