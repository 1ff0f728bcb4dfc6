"""GPU-second attribution and the report, against hand-computed numbers and the stored records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from frugalserve import config as cfg
from frugalserve.accounting import costs, keys, report, store
from frugalserve.accounting.service import Accounting
from frugalserve.clock import SystemClock
from frugalserve.records import RecentRecords, RequestRecord
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


def scale(t: float, action: str, pool: str = "p") -> dict[str, object]:
    """A stored scale_events row (every NOT NULL column)."""
    return {
        "time": T0 + t,
        "pool": pool,
        "action": action,
        "from_replicas": 1,
        "to_replicas": 2,
        "signal": "concurrency",
        "load": 1.5,
        "reason": "x",
    }


# starting 0-10, ready 10-60, sleeping 60-100, stopped 100-200; window 0-200
EVENTS = [
    ev(0, "stopped", "starting"),
    ev(10, "starting", "ready"),
    ev(60, "ready", "sleeping"),
    ev(100, "sleeping", "stopped"),
]


def test_on_demand_bills_starting_ready_and_sleeping_only() -> None:
    assert costs.billed_time(EVENTS, T0, T0 + 200) == costs.ReplicaTime(100.0, 10.0, 1, 0)
    # a window that starts while the replica is ready carries that state in
    assert costs.billed_time(EVENTS, T0 + 30, T0 + 200).billed_s == 70.0


def test_failed_starts_are_counted_apart_from_successful_ones() -> None:
    events = [
        ev(0, "stopped", "starting"),
        ev(5, "starting", "failed"),  # failed after 5 s
        ev(20, "failed", "starting"),
        ev(30, "starting", "ready"),  # the retry worked
        ev(60, "ready", "sleeping"),
        ev(70, "sleeping", "starting"),  # a wake
        ev(71, "starting", "ready"),
        ev(190, "ready", "starting"),  # still starting when the window ends: not counted either way
    ]
    rt = costs.billed_time(events, T0, T0 + 200)
    # billed: starting 0-5, 20-30, 70-71, 190-200; ready 30-60, 71-190; sleeping 60-70 (failed 5-20 is not)
    assert rt == costs.ReplicaTime(5 + 10 + 1 + 10 + 30 + 119 + 10, 5 + 10 + 1 + 10, 2, 1)
    total = report.build([], events, PRICE, T0, T0 + 200)[-1]
    assert (total["cold_starts"], total["failed_starts"]) == (2, 1)


def test_busy_time_is_split_by_token_work_density() -> None:
    # r1 alone 10-20, r1 and r2 together 20-30 (r2 three times as dense), r2 alone 30-40
    records = [rec(10, 20, 200), rec(20, 20, 600)]
    att = costs.attribute(records, EVENTS, PRICE, T0, T0 + 200)
    p = att.pools["p"]
    assert p.busy_s == 30 and p.billed_s == 100 and p.cold_start_s == 10 and p.idle_s == 60
    (s1, usd1, gpu1), (s2, usd2, gpu2) = att.shares
    d1, d2 = 200 / 20, 600 / 20
    assert s1 == pytest.approx(10 + 10 * d1 / (d1 + d2)) and s2 == pytest.approx(10 + 10 * d2 / (d1 + d2))
    assert s1 + s2 == pytest.approx(p.busy_s) and usd1 + usd2 == pytest.approx(p.usd_ideal)
    assert (gpu1, gpu2) == (pytest.approx(2 * s1), pytest.approx(2 * s2))  # 2 GPUs per replica
    assert p.usd_billed == pytest.approx(100 * 0.002) and p.gpu_hours == pytest.approx(200 / 3600)
    assert p.usd_always_on == pytest.approx(200 * 0.002)


def test_reserved_pool_bills_the_whole_window_even_unused() -> None:
    att = costs.attribute([], [], {"r": costs.Price(3.6, billing="reserved")}, T0, T0 + 100)
    assert att.pools["r"].billed_s == 100 and att.pools["r"].usd_billed == pytest.approx(0.1)


def test_report_totals_agree_with_the_records() -> None:
    records = [
        rec(10, 20, 200, key="a", prompt_image_tokens=150, image_tokens_saved=90, cold_start_wait_s=8.0),
        rec(20, 20, 600, key="b", completion_tokens=40),
        rec(50, 5, 100, key="a", status=429, replica=None),  # refused: it never reached a replica
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
    assert total["cold_starts"] == 1 and total["failed_starts"] == 0
    assert total["cold_waits"] == 1 and total["cold_wait_p50_s"] == 8.0
    assert by["a"]["cold_starts"] is None and by["a"]["cold_waits"] == 1  # starts are pool facts
    assert by["a"]["usd_billed"] + by["b"]["usd_billed"] == pytest.approx(total["usd_ideal"])
    # busy: a runs 18-30 (after its 8 s wait), b 20-40: the union 18-40 is 22 of 100 billed seconds
    assert total["utilisation"] == pytest.approx(22 / 100)
    # the keys' GPU-hours are their busy seconds x 2 GPUs per replica
    assert by["a"]["gpu_hours"] + by["b"]["gpu_hours"] == pytest.approx(22 * 2 / 3600)
    days = report.build(records, EVENTS, PRICE, T0, T0 + 2 * 86400, by="day")
    assert days[0]["requests"] == 3 and days[0]["usd_billed"] == pytest.approx(0.2)


# The autoscaler's decisions around the window 0-200: p decided 2 ups, 1 down, 1 refusal, 1 prewarm used,
# 1 expired inside it; q 1 up, 2 refusals, 1 expired. "prewarm" and "panic" are not counted; -5 is before
# the window and 200 at its end (outside); 86410 is the next day.
SCALES = [
    scale(-5, "scale_up"),
    scale(5, "prewarm"),
    scale(10, "scale_up"),
    scale(30, "scale_up", "q"),
    scale(40, "refused", "q"),
    scale(45, "refused", "q"),
    scale(50, "scale_up"),
    scale(55, "panic"),
    scale(60, "refused"),
    scale(80, "prewarm_used"),
    scale(90, "prewarm_expired", "q"),
    scale(120, "scale_down"),
    scale(150, "prewarm_expired"),
    scale(200, "scale_down"),
    scale(86410, "scale_up", "q"),
]
SCALE_COLUMNS = ("scale_ups", "scale_downs", "scale_refusals", "prewarms_used", "prewarms_expired")


def counts(row: dict[str, object]) -> list[object]:
    return [row[c] for c in SCALE_COLUMNS]


def test_report_counts_the_autoscalers_decisions_per_pool_in_the_window() -> None:
    by_pool = {r["group"]: counts(r) for r in report.build([], EVENTS, PRICE, T0, T0 + 200, "pool", None, SCALES)}
    assert by_pool == {"p": [2, 1, 1, 1, 1], "q": [1, 0, 2, 0, 1], "TOTAL": [3, 1, 3, 1, 2]}
    records = [rec(10, 20, 200, key="a")]
    by_key = {r["group"]: counts(r) for r in report.build(records, EVENTS, PRICE, T0, T0 + 200, "key", None, SCALES)}
    assert by_key == {"a": [None] * 5, "TOTAL": [3, 1, 3, 1, 2]}  # decisions are pool facts
    # by day over two days: day 1 has the 200 s scale-down too; day 2 only q's scale-up (no bill, no request)
    days = report.build([], EVENTS, PRICE, T0, T0 + 2 * 86400, "day", None, SCALES)
    assert [(r["group"], counts(r)) for r in days] == [
        ("2023-11-14", [3, 2, 3, 1, 2]),
        ("2023-11-15", [1, 0, 0, 0, 0]),
        ("TOTAL", [4, 2, 3, 1, 2]),
    ]
    # without scale events, pools count none
    assert counts(report.build([], EVENTS, PRICE, T0, T0 + 200)[-1]) == [0, 0, 0, 0, 0]


def test_report_table_shows_the_autoscaler_section_only_when_there_were_decisions() -> None:
    rows = report.build([], EVENTS, PRICE, T0, T0 + 200, "pool", None, SCALES)
    table = report.render_report(rows)
    assert max(len(line) for line in table.splitlines()) <= 100, table
    section = table[table.index("# autoscaler decisions") :].strip().splitlines()
    assert section[1].split() == ["group", "ups", "downs", "refused", "pw_used", "pw_expired"]
    assert [line.split() for line in section[2:]] == [
        ["p", "2", "1", "1", "1", "1"],
        ["q", "1", "0", "2", "0", "1"],
        ["TOTAL", "3", "1", "3", "1", "2"],
    ]
    quiet = report.render_report(report.build([], EVENTS, PRICE, T0, T0 + 200))
    assert "autoscaler" not in quiet and quiet.count("TOTAL") == 3


def test_report_command_reads_the_database(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    engine = store.open_store(db)
    rows = [
        {**rec(10, 20, 200), "endpoint": "chat", "stream": False, "anomaly": False, "cost_usd": 0.01},
        {**rec(20, 20, 9000), "endpoint": "chat", "stream": False, "anomaly": True, "cost_usd": 0.01},
    ]
    store.insert_batch(engine, rows, EVENTS, SCALES[1:])  # none before the first record: --by day starts there
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(store.replica_events)).scalar_one() == 4
        assert conn.execute(sa.select(sa.func.count()).select_from(store.scale_events)).scalar_one() == 14
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
    assert {r["group"]: counts(r) for r in data} == {
        "p": [2, 1, 1, 1, 1],
        "q": [1, 0, 2, 0, 1],
        "TOTAL": [3, 1, 3, 1, 2],
    }
    assert "# autoscaler decisions" in run("--since", since, "--until", until)
    table = run("--since", since, "--until", until, "--by", "model")
    assert table.splitlines()[1].split()[:3] == ["group", "requests", "errors"]
    assert run("--format", "csv", "--by", "day").splitlines()[1].startswith("2023-11-14,2,")
    listed = run("--anomalies")
    assert " r20 " in listed and " r10 " not in listed


def test_report_by_key_shows_key_names(tmp_path: Path) -> None:
    engine = store.open_store(f"sqlite:///{tmp_path / 'k.db'}")
    try:
        a, _ = keys.create_key(engine, "mobile-app", T0)
        b, _ = keys.create_key(engine, "batch", T0)
        c, _ = keys.create_key(engine, "batch", T0)  # the same name twice: the id tells them apart
        names = report.key_names(engine)
    finally:
        engine.dispose()
    records = [rec(10, 1, 10, key=a.id), rec(20, 1, 10, key=b.id), rec(30, 1, 10, key=c.id), rec(40, 1, 10, key=None)]
    records[-1]["key_id"] = None
    groups = [r["group"] for r in report.build(records, EVENTS, PRICE, T0, T0 + 200, "key", names)]
    assert groups == ["-", f"batch ({b.id})", f"batch ({c.id})", "mobile-app", "TOTAL"] or groups == [
        "-",
        f"batch ({c.id})",
        f"batch ({b.id})",
        "mobile-app",
        "TOTAL",
    ]


def test_report_reads_image_video_and_saved_tokens_from_stored_records(tmp_path: Path) -> None:
    """A RequestRecord as the request path fills it, stored by Accounting, read back by the report."""
    db = f"sqlite:///{tmp_path / 'e.db'}"
    config = cfg.load_text(
        f"gateway: {{database: '{db}'}}\n"
        "pools:\n  - {name: p, model: m, backend: {url: 'http://127.0.0.1:1'}, gpu: {usd_per_hour: 3.6}}\n"
    )
    acc = Accounting(config, SystemClock(), CollectorRegistry(), RecentRecords())
    record = RequestRecord("r1", "chat", "m", T0 + 10, 0.0, pool="p", replica="p-0", status=200)
    record.prompt_tokens, record.completion_tokens = 1_060, 7
    record.prompt_text_tokens, record.prompt_image_tokens, record.prompt_video_tokens = 30, 1_010, 20
    record.image_tokens_saved, record.duration_s = 1_032, 2.0
    engine = store.open_store(db)
    try:
        store.insert_batch(engine, [acc.row(record, 0.0)], [])
        records, events = report.load(engine, None, T0 + 86400)
    finally:
        engine.dispose()
    total = report.build(records, events, report.prices_of(config), T0, T0 + 100)[-1]
    assert (total["prompt_text_tokens"], total["prompt_image_tokens"], total["prompt_video_tokens"]) == (30, 1_010, 20)
    assert total["image_tokens_saved"] == 1_032 and total["completion_tokens"] == 7
    # a static pool with no events is billed its busy time: 2 s at $3.60/h
    assert total["usd_billed"] == pytest.approx(0.002)


def test_report_table_fits_a_100_column_terminal_and_wide_has_every_column() -> None:
    # a busy month: billions of tokens, thousands of dollars, a long key name
    records = [
        rec(10 * i, 9, 3_000_000, key=f"a-rather-long-team-key-name-{i % 3}", prompt_image_tokens=2_500_000)
        for i in range(400)
    ]
    for r in records:
        r["completion_tokens"], r["image_tokens_saved"], r["cold_start_wait_s"] = 400_000, 1_234_567, 12.5
    price = {"p": costs.Price(usd_per_hour=98.32, count=8)}
    for by in ("key", "pool", "model", "day"):
        rows = report.build(records, EVENTS, price, T0, T0 + 40 * 86400, by)
        table = report.render_report(rows)
        assert max(len(line) for line in table.splitlines()) <= 100, table
        assert table.count("TOTAL") == 3  # once per column group
    wide = report.render_report(rows, wide=True)
    assert wide.splitlines()[0].split() == ["group", *report.COLUMNS[1:]]


def test_report_table_shows_hand_computed_values() -> None:
    """The example in docs/accounting.md: started 0-10, ready 10-60, sleeping 60-100, stopped after."""
    records = [
        # a arrives at 2, waits 8 s for the start, runs 10-30; b runs 20-40; c is refused (no replica)
        rec(2, 28, 200, key="a", prompt_image_tokens=150, image_tokens_saved=90, cold_start_wait_s=8.0),
        rec(20, 20, 600, key="b", completion_tokens=40),
        rec(50, 5, 100, key="a", status=429, replica=None),
    ]
    table = report.render_report(report.build(records, EVENTS, PRICE, T0, T0 + 200, by="pool"))
    lines = {line.split()[0] + str(i): line.split() for i, line in enumerate(table.splitlines()) if line}
    tokens, cost, cold = [v for k, v in lines.items() if k.startswith("TOTAL")]
    assert tokens == ["TOTAL", "3", "1", "750", "150", "0", "40", "90"]
    # billed 100 s x $0.002 = $0.20 = 10 s cold start + 30 s busy (10-40) + 60 s idle (40-100);
    # per Mtok 0.20 / 940 tokens; utilisation 30 / 100; ideal 30 s x $0.002; always on 200 s = $0.40
    assert cost == ["TOTAL", "0.0556", "0.2000", "212.77", "30.0%", "0.0600", "0.4000", "0.2000", "50.0%"]
    assert cold == ["TOTAL", "1", "0", "1", "8.0000", "8.0000"]
    # densities a 200 tokens / 20 s run = 10/s, b 640 / 20 s = 32/s: a alone 10-20 (10 s), 20-30 split
    # 10:32, b alone 30-40 (10 s); a's wait 2-10 is nobody's. At $0.002/s:
    a_s, b_s = 10 + 10 * 10 / 42, 10 + 10 * 32 / 42  # 12.381 s and 17.619 s
    by_key = {r["group"]: r for r in report.build(records, EVENTS, PRICE, T0, T0 + 200, by="key")}
    assert by_key["a"]["usd_billed"] == pytest.approx(a_s * 0.002)  # $0.0248
    assert by_key["b"]["usd_billed"] == pytest.approx(b_s * 0.002)  # $0.0352


def test_built_in_demo_config_carries_an_example_price() -> None:
    config = cfg.load(None, environ={})
    (pool,) = config.pools
    assert pool.gpu.usd_per_hour == 0.80 and "example" in pool.gpu.type
    assert "EXAMPLE PRICE" in cfg.default_config_text()
    # one demo replica up for an hour is billed $0.80
    ev0 = {"time": T0, "pool": pool.name, "replica": "demo-0", "from_state": "stopped", "to_state": "starting"}
    ev1 = {**ev0, "time": T0 + 60, "from_state": "starting", "to_state": "ready"}
    total = report.build([], [ev0, ev1], report.prices_of(config), T0, T0 + 3600)[-1]
    assert total["usd_billed"] == pytest.approx(0.80)
