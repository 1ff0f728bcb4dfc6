"""``frugalserve gpus``: what NVML sees on this machine and which pools of the config run on each GPU.

The first thing to run on a GPU machine: it reads the devices through the same reader the gateway samples,
so what it prints is what ``/metrics`` will export. Without an NVIDIA GPU or driver it says so and exits 0
(the gateway then runs with the GPU series absent).
"""

from __future__ import annotations

import argparse
import json
import sys

from frugalserve.commands import load_config
from frugalserve.metrics.gpu import GpuSample, NvmlReader, Placement, place, pool_gpus


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if config is None:
        return 2
    reader = NvmlReader()
    try:
        samples = reader.read()
    finally:
        reader.close()
    placement = place([p for p in map(pool_gpus, config.pools) if p is not None], samples)
    if args.format == "json":
        print(json.dumps(_as_json(samples, placement, reader.problem), indent=2))
    else:
        sys.stdout.write(_as_table(samples, placement, reader.problem))
    return 0


def _as_json(samples: tuple[GpuSample, ...], placement: Placement, problem: str | None) -> dict[str, object]:
    return {
        "gpus": [
            {
                "gpu": s.index,
                "uuid": s.uuid,
                "model": s.model,
                "memory_used_bytes": s.memory_used_bytes,
                "memory_total_bytes": s.memory_total_bytes,
                "utilization_ratio": s.utilization_ratio,
                "power_watts": s.power_watts,
                "pools": list(placement.pools_by_gpu.get(s.index, ())),
            }
            for s in samples
        ],
        "problem": None if samples else problem,
        "unmatched": [{"pool": p.pool, "source": p.source, "gpu": sel} for p, sel in placement.unmatched],
    }


def _as_table(samples: tuple[GpuSample, ...], placement: Placement, problem: str | None) -> str:
    lines: list[str] = []
    if not samples:
        lines.append(f"no NVIDIA GPU found: {problem}")
        lines.append("the gateway runs without GPU telemetry here (no frugalserve_gpu_* series)")
    else:
        rows = [("GPU", "MODEL", "UUID", "MEMORY USED / TOTAL", "UTIL", "POWER", "POOLS")]
        for s in samples:
            rows.append(
                (
                    str(s.index),
                    s.model,
                    s.uuid,
                    f"{_gib(s.memory_used_bytes)} / {_gib(s.memory_total_bytes)} GiB",
                    "-" if s.utilization_ratio is None else f"{s.utilization_ratio:.0%}",
                    "-" if s.power_watts is None else f"{s.power_watts:.1f} W",
                    ", ".join(placement.pools_by_gpu.get(s.index, ())) or "-",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    for pool, selector in placement.unmatched if samples else ():
        lines.append(f"pool {pool.pool}: {pool.source} names GPU {selector}, which NVML does not see")
    return "\n".join(lines) + "\n"


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.1f}"
