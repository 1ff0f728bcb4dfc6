"""What the web UI costs the gateway: start-up time and memory with ``ui.enabled`` on and off.

Starts ``frugalserve up`` (this checkout, one pool at a fixed URL, SQLite) alternately with the UI on and
off, and measures from the spawn to the first ``200`` of ``/healthz``, then the gateway process's resident
memory (``VmRSS``) once it is up and again after one load of ``/ui/`` (when on). Prints medians.

    .venv/bin/python benchmarks/ui_startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests import procs  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def one(ui: bool, work: Path) -> tuple[float, float, float | None]:
    port = procs.free_port()
    config = work / f"ui-{ui}-{port}.yaml"
    config.write_text(
        f"gateway: {{database: 'sqlite:///{work / f'{port}.db'}', gpu_metrics_interval_s: 0}}\n"
        f"ui: {{enabled: {str(ui).lower()}}}\n"
        "pools:\n  - name: a\n    model: m\n    backend: {url: 'http://127.0.0.1:9'}\n"
    )
    t0 = time.perf_counter()
    args = [sys.executable, "-m", "frugalserve", "up", "--config", str(config), "--port", str(port)]
    proc = procs.spawn(args, work / f"gateway-{port}.log")
    base = f"http://127.0.0.1:{port}"
    try:
        procs.wait_http(base + "/healthz", timeout=60, proc=proc)
        started = time.perf_counter() - t0
        time.sleep(1.0)  # start-up tasks settle
        up = rss_mb(proc.pid)
        after_page = None
        if ui:
            assert httpx.get(base + "/ui/", timeout=30).status_code == 200
            httpx.get(base + "/ui/config", timeout=30)
            after_page = rss_mb(proc.pid)
        return started, up, after_page
    finally:
        procs.stop(proc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    results: dict[bool, list[tuple[float, float, float | None]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.runs):
            for ui in (False, True):  # alternated, so drift in the machine's load hits both alike
                results[ui].append(one(ui, Path(tmp)))
    for ui in (False, True):
        rows = results[ui]
        start = statistics.median(r[0] for r in rows)
        mem = statistics.median(r[1] for r in rows)
        line = f"ui {'on ' if ui else 'off'}: start-up {start:.2f} s, memory {mem:.0f} MB"
        if ui:
            line += f", {statistics.median(r[2] or 0 for r in rows):.0f} MB after one page load"
        print(line + f"  (median of {len(rows)})")
    off, on = results[False], results[True]
    print(
        f"the UI adds {statistics.median(r[0] for r in on) - statistics.median(r[0] for r in off):.2f} s and "
        f"{statistics.median(r[1] for r in on) - statistics.median(r[1] for r in off):.0f} MB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
