"""The report by hour (the day grouping with one-hour buckets) and the ``month`` keyword, by hand."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from frugalserve.accounting import costs, report, store
from tests import procs

H13 = dt.datetime(2023, 11, 14, 13, tzinfo=dt.UTC).timestamp()  # 13:00 UTC
PRICE = {"p": costs.Price(usd_per_hour=3.6)}  # one GPU: $0.001 per replica-second


def ev(t: float, a: str, b: str) -> dict[str, object]:
    return {"time": H13 + t, "pool": "p", "replica": "p-0", "from_state": a, "to_state": b, "reason": "x"}


def rec(rid: str, t: float, dur: float, tokens: int) -> dict[str, object]:
    return {
        "request_id": rid,
        "time": H13 + t,
        "duration_s": dur,
        "pool": "p",
        "replica": "p-0",
        "model": "m",
        "key_id": None,
        "status": 200,
        "prompt_tokens": tokens,
        "completion_tokens": 0,
        "endpoint": "chat",
        "stream": False,
        "anomaly": False,
    }


# Starting 13:59:00-13:59:30, ready until 14:30, sleeping until 15:00, then stopped.
EVENTS = [
    ev(3540, "stopped", "starting"),
    ev(3570, "starting", "ready"),
    ev(5400, "ready", "sleeping"),
    ev(7200, "sleeping", "stopped"),
]
# r runs 13:59:40-14:00:20 (across the hour), s 14:01:40-14:02:00.
RECORDS = [rec("r", 3580, 40, 100), rec("s", 3700, 20, 300)]


def test_report_by_hour_bills_a_replica_across_the_hour_in_both_hours() -> None:
    rows = report.build(RECORDS, EVENTS, PRICE, H13, H13 + 3 * 3600, by="hour")
    by = {r["group"]: r for r in rows}
    # 15:00-16:00: stopped, no request, no decision: no row
    assert [r["group"] for r in rows] == ["2023-11-14 13:00", "2023-11-14 14:00", "TOTAL"]
    h13, h14, total = by["2023-11-14 13:00"], by["2023-11-14 14:00"], by["TOTAL"]
    # 13:00: billed 13:59:00-14:00:00 = 60 s ($0.06): cold start 30 s, r busy 20 s (13:59:40-14:00), idle 10 s
    assert h13["requests"] == 1 and h13["prompt_text_tokens"] == 100
    assert h13["usd_billed"] == pytest.approx(0.060) and h13["usd_ideal"] == pytest.approx(0.020)
    assert h13["utilisation"] == pytest.approx(20 / 60) and h13["cold_starts"] == 1
    # 14:00: billed the whole hour (ready, then sleeping) = $3.60; busy: r's last 20 s and s's 20 s
    assert h14["requests"] == 1 and h14["prompt_text_tokens"] == 300
    assert h14["usd_billed"] == pytest.approx(3.600) and h14["usd_ideal"] == pytest.approx(0.040)
    assert h14["utilisation"] == pytest.approx(40 / 3600) and h14["cold_starts"] == 0
    assert total["usd_billed"] == pytest.approx(3.660) and total["requests"] == 2
    # the same records by day: one row holding both hours
    [day, _] = report.build(RECORDS, EVENTS, PRICE, H13, H13 + 3 * 3600, by="day")
    assert day["group"] == "2023-11-14" and day["usd_billed"] == pytest.approx(3.660)


def test_report_command_and_admin_usage_group_by_hour(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'h.db'}"
    engine = store.open_store(db)
    store.insert_batch(engine, RECORDS, EVENTS)
    engine.dispose()
    config = "pools:\n  - {name: p, model: m, backend: {url: 'http://127.0.0.1:1'}, gpu: {usd_per_hour: 3.6}}\n"
    (tmp_path / "c.yaml").write_text(config)
    window = ["--since", "2023-11-14T13:00", "--until", "2023-11-14T16:00"]
    cmd = [sys.executable, "-m", "frugalserve", "report", "--config", "c.yaml", "--database", db, *window]
    out = subprocess.run(
        [*cmd, "--by", "hour", "--format", "json"],
        cwd=tmp_path,
        env=procs.spawn_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [(r["group"], round(r["usd_billed"], 6)) for r in rows] == [
        ("2023-11-14 13:00", 0.06),
        ("2023-11-14 14:00", 3.6),
        ("TOTAL", 3.66),
    ]
    with procs.gateway(tmp_path, f"gateway: {{database: '{db}'}}\n{config}") as (url, _):
        since, until = "2023-11-14T13:00", "2023-11-14T16:00"
        answer = httpx.get(f"{url}/admin/usage", params={"since": since, "until": until, "by": "hour"}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["by"] == "hour" and answer.json()["rows"] == rows


@pytest.mark.parametrize(
    ("now", "first"),
    [
        (dt.datetime(2024, 3, 15, 12, 34, tzinfo=dt.UTC), dt.datetime(2024, 3, 1, tzinfo=dt.UTC)),
        (dt.datetime(2024, 1, 1, 0, 0, tzinfo=dt.UTC), dt.datetime(2024, 1, 1, tzinfo=dt.UTC)),
        (dt.datetime(2023, 12, 31, 23, 59, 59, tzinfo=dt.UTC), dt.datetime(2023, 12, 1, tzinfo=dt.UTC)),
    ],
)
def test_month_is_midnight_utc_on_the_first_of_this_month(now: dt.datetime, first: dt.datetime) -> None:
    assert report.parse_when("month", now.timestamp()) == first.timestamp()
    assert report.parse_when(" Month ", now.timestamp()) == first.timestamp()
