"""A small trace replayed against a real gateway (`frugalserve up`, managed fake upstreams as its backend,
the official openai client), then simulated with the performance model `frugalserve simulate --calibrate`
measured from that gateway's own database: the same starts and stops, and the same waits within the start's
noise. The upstream is a fake model server (tests/fake_upstream.py): a real process that starts in about a
second and answers in 200 ms; no GPU is needed for what is compared here.
"""

from __future__ import annotations

import json
import shlex
import sqlite3
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests import procs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Three groups of requests, 8 s apart: each group finds the pool stopped (idle_stop_s 3 s is far shorter than
# the gap), brings it up once, and the requests inside a group are held behind that start or find it ready
# (+2.5 s: ready, idle for well under 3 s).
OFFSETS = [0.0, 0.3, 2.5, 8.0, 8.3, 16.0, 16.2, 18.5]
IDLE_STOP_S = 3.0


def config(tmp: Path, db: Path) -> str:
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(procs.FAKE_UPSTREAM))} --port {{port}} --start-delay 1.0 --latency-ms 200 --tokens 8"
    return (
        f"gateway: {{database: 'sqlite:///{db}'}}\n"
        "accounting: {flush_interval_s: 0.2}\n"
        "pools:\n"
        "  - name: p\n"
        "    model: m\n"
        "    tokenizer: none\n"
        f"    backend: {{command: {command!r}, log_dir: {str(tmp)!r}, sleep_api: none, startup_timeout_s: 30}}\n"
        f"    lifecycle: {{idle_sleep_s: null, idle_stop_s: {IDLE_STOP_S}}}\n"
    )


def test_simulation_calibrated_from_a_live_run_makes_the_same_starts_stops_and_waits(tmp_path: Path) -> None:
    db = tmp_path / "usage.db"
    cfg_text = config(tmp_path, db)
    cfg_file = tmp_path / "gateway.yaml"
    cfg_file.write_text(cfg_text)
    errors: list[BaseException] = []
    with procs.gateway(tmp_path, cfg_text) as (url, _):
        client = procs.openai_client(url + "/v1", timeout=60)

        def one() -> None:
            try:
                client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=8)
            except BaseException as exc:
                errors.append(exc)

        t0 = time.time()
        threads = []
        for offset in OFFSETS:
            time.sleep(max(0.0, t0 + offset - time.time()))
            threads.append(threading.Thread(target=one))
            threads[-1].start()
        for th in threads:
            th.join(60)
        time.sleep(IDLE_STOP_S + 2.5)  # the last stop happens and is written
        end = time.time()
    assert not errors

    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT time, from_state, to_state, reason FROM replica_events ORDER BY time").fetchall()
        arrivals = [t for (t,) in conn.execute("SELECT time FROM usage_records ORDER BY time")]
        waits = [w or 0.0 for (w,) in conn.execute("SELECT cold_start_wait_s FROM usage_records ORDER BY time")]
    live_starts = sum(1 for _, f, to, _ in rows if to == "starting")
    live_stops = sum(1 for _, f, to, why in rows if to == "stopped" and why != "shutdown")
    assert (live_starts, live_stops) == (3, 3), rows

    # The trace the planner replays: what the gateway recorded, as a user would export it.
    trace = tmp_path / "trace.csv"
    trace.write_text("timestamp,model,prompt_tokens,output_tokens\n" + "".join(f"{t},m,10,8\n" for t in arrivals))
    perf = tmp_path / "perf.yaml"
    perf.write_text(procs.cli(tmp_path, "simulate", "--config", str(cfg_file), "--calibrate", "--since", "1h"))
    assert "start_s:" in perf.read_text()
    out = procs.cli(
        tmp_path,
        "simulate",
        "--config",
        str(cfg_file),
        "--trace",
        str(trace),
        "--perf",
        str(perf),
        # the fake answers 8 tokens in 200 ms; prompts take no time worth modelling
        "--policy",
        "pools.p.perf.decode_tps=40",
        "--policy",
        "pools.p.perf.prefill_tps=100000",
        "--until",
        datetime.fromtimestamp(end, UTC).isoformat(),
        "--format",
        "json",
    )
    [result] = json.loads(out)
    [pool] = result["pools"]
    assert (pool["starts"], pool["stops"], result["served"], result["refused"]) == (3, 3, len(OFFSETS), 0)
    # each request held behind a start waited for it: as many as live, as long within the noise of a start
    # (the calibrated start time is the median of the three live ones)
    held = [w for w in waits if w > 0]
    assert result["waited_requests"] == len(held)
    assert result["mean_cold_wait_s"] == pytest.approx(sum(held) / len(held), abs=0.5)
