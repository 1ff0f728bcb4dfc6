"""GPU-second attribution and the report, against hand-computed numbers and the stored records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from frugalserve.accounting import costs, report, store
from tests import procs

T0 = 1_700_000_000.0 - 1_700_000_000.0 % 86400  # a UTC midnight
PRICE = {"p": costs.Price(usd_per_hour=3.6, count=2)}  # $0.002 per replica-second


def ev(t: float, a: str, b: str, replica: str = "p-0") -> dict[str, object]:
    return {"time": T0 + t, "pool": "p", "replica": replica, "from_state": a, "to_state": b, "reason": "x"}


def rec(t: float, dur: float, tokens: int, key: str = "k", **kw: object) -> dict[str, object]:
    return {
        "request_id": f"r{t:g}",
        "time": T0 + t,
        "duration_s": dur,
        "pool": "p",
        "replica": "p-0",
        "model": "m",
        "key_id": key,
        "status": 200,
        "prompt_tokens": tokens,
        "completion_tokens": 0,
        **kw,
    }


# starting 0-10, ready 10-60, sleeping 60-100, stopped 100-200; window 0-200
EVENTS = [
    ev(0, "stopped", "starting"),
    ev(10, "starting", "ready"),
    ev(60, "ready", "sleeping"),
    ev(100, "sleeping", "stopped"),
]


def test_on_demand_bills_starting_ready_and_sleeping_only() -> None:
    billed, starting, starts = costs.billed_time(EVENTS, T0, T0 + 200)
    assert (billed, starting, starts) == (100.0, 10.0, 1)
    # a window that starts while the replica is ready carries that state in
    assert costs.billed_time(EVENTS, T0 + 30, T0 + 200)[0] == 70.0


def test_busy_time_is_split_by_token_work_density() -> None:
    # r1 alone 10-20, r1 and r2 together 20-30 (r2 three times as dense), r2 alone 30-40
    records = [rec(10, 20, 200), rec(20, 20, 600)]
    att = costs.attribute(records, EVENTS, PRICE, T0, T0 + 200)
    p = att.pools["p"]
    assert p.busy_s == 30 and p.billed_s == 100 and p.cold_start_s == 10 and p.idle_s == 60
    (s1, usd1), (s2, usd2) = att.shares
    d1, d2 = 200 / 20, 600 / 20
    assert s1 == pytest.approx(10 + 10 * d1 / (d1 + d2)) and s2 == pytest.approx(10 + 10 * d2 / (d1 + d2))
    assert s1 + s2 == pytest.approx(p.busy_s) and usd1 + usd2 == pytest.approx(p.usd_ideal)
    assert p.usd_billed == pytest.approx(100 * 0.002) and p.gpu_hours == pytest.approx(200 / 3600)
    assert p.usd_always_on == pytest.approx(200 * 0.002)


def test_reserved_pool_bills_the_whole_window_even_unused() -> None:
    att = costs.attribute([], [], {"r": costs.Price(3.6, billing="reserved")}, T0, T0 + 100)
    assert att.pools["r"].billed_s == 100 and att.pools["r"].usd_billed == pytest.approx(0.1)


def test_report_totals_agree_with_the_records() -> None:
    records = [
        rec(10, 20, 200, key="a", prompt_image_tokens=150, image_tokens_saved=90, cold_start_wait_s=8.0),
        rec(20, 20, 600, key="b", completion_tokens=40),
        rec(50, 5, 100, key="a", status=429),
    ]
    rows = report.build(records, EVENTS, PRICE, T0, T0 + 200, by="key")
    by = {r["group"]: r for r in rows}
    total = by["TOTAL"]
    assert [r["group"] for r in rows] == ["a", "b", "TOTAL"]
    assert total["requests"] == 3 and total["errors"] == 1
    assert total["prompt_image_tokens"] == 150 and total["prompt_text_tokens"] == 50 + 600 + 100
    assert total["completion_tokens"] == 40 and total["image_tokens_saved"] == 90
    assert total["usd_billed"] == pytest.approx(0.2) and total["usd_always_on"] == pytest.approx(0.4)
    assert total["savings_usd"] == pytest.approx(0.2) and total["savings_pct"] == pytest.approx(50.0)
    assert total["cold_starts"] == 1 and total["cold_wait_p50_s"] == 8.0
    assert by["a"]["usd_billed"] + by["b"]["usd_billed"] == pytest.approx(total["usd_ideal"])
    assert total["utilisation"] == pytest.approx(35 / 100)
    days = report.build(records, EVENTS, PRICE, T0, T0 + 2 * 86400, by="day")
    assert days[0]["requests"] == 3 and days[0]["usd_billed"] == pytest.approx(0.2)


def test_report_command_reads_the_database(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    engine = store.open_store(db)
    rows = [
        {**rec(10, 20, 200), "endpoint": "chat", "stream": False, "anomaly": False, "cost_usd": 0.01},
        {**rec(20, 20, 9000), "endpoint": "chat", "stream": False, "anomaly": True, "cost_usd": 0.01},
    ]
    store.insert_batch(engine, rows, EVENTS)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(store.replica_events)).scalar_one() == 4
    engine.dispose()
    (tmp_path / "c.yaml").write_text(
        "pools:\n  - {name: p, model: m, backend: {url: 'http://127.0.0.1:1'}, gpu: {usd_per_hour: 3.6, count: 2}}\n"
    )

    def run(*args: str) -> str:
        cmd = [sys.executable, "-m", "frugalserve", "report", "--config", "c.yaml", "--database", db, *args]
        out = subprocess.run(cmd, cwd=tmp_path, env=procs.spawn_env(), capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    since, until = "2023-11-14", "2023-11-14T00:03:20"
    data = json.loads(run("--since", since, "--until", until, "--format", "json"))
    assert data[-1]["usd_billed"] == pytest.approx(0.2) and data[-1]["requests"] == 2
    table = run("--since", since, "--until", until, "--by", "model")
    assert table.splitlines()[0].split()[:3] == ["group", "requests", "errors"]
    assert run("--format", "csv", "--by", "day").splitlines()[1].startswith("2023-11-14,2,")
    listed = run("--anomalies")
    assert " r20 " in listed and " r10 " not in listed
