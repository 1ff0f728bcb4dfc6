"""A cold start is the pool's overhead, never a request's: hand-computed attribution and a real gateway process.

A request's busy span on its replica starts when it is dispatched (arrival + ``cold_start_wait_s``), so
neither its budget estimate (``cost_usd``) nor its report share includes the wait, and a pool's busy,
cold-start and idle seconds add up to its billed seconds.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shlex
import sqlite3
import sys
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from frugalserve import config as cfg
from frugalserve.accounting import costs, report, store
from frugalserve.accounting.service import Accounting
from frugalserve.clock import SystemClock
from frugalserve.records import RecentRecords, RequestRecord
from tests import procs

T0 = 1_700_000_000.0 - 1_700_000_000.0 % 86400  # a UTC midnight
PRICE = {"p": costs.Price(usd_per_hour=3.6)}  # $0.001 per replica-second, 1 GPU


def ev(t: float, a: str, b: str) -> dict[str, object]:
    return {"time": T0 + t, "pool": "p", "replica": "p-0", "from_state": a, "to_state": b, "reason": "x"}


def rec(rid: str, t: float, dur: float, tokens: int, wait: float | None = None, **kw: object) -> dict[str, object]:
    return {
        "request_id": rid,
        "time": T0 + t,
        "duration_s": dur,
        "cold_start_wait_s": wait,
        "pool": "p",
        "replica": "p-0",
        "model": "m",
        "key_id": rid,
        "status": 200,
        "prompt_tokens": tokens,
        "completion_tokens": 0,
        **kw,
    }


# billed from 0 (starting) to 100 (stopped), ready at 10
EVENTS = [ev(0, "stopped", "starting"), ev(10, "starting", "ready"), ev(100, "ready", "stopped")]
# a arrives at 2, waits 8 s for the start, runs 10-20 (duration 18); b runs 30-40 alone
A = rec("a", 2, 18, 100, wait=8.0)
B = rec("b", 30, 10, 50)


def test_cold_start_wait_is_billed_to_the_pool_not_the_request() -> None:
    att = costs.attribute([A, B], EVENTS, PRICE, T0, T0 + 200)
    p = att.pools["p"]
    # busy: a 10-20 (10 s) + b 30-40 (10 s) = 20; cold start: 0-10 = 10 (a's wait 2-10 lies inside it, once);
    # idle: ready 20-30 and 40-100 = 10 + 60 = 70; 20 + 10 + 70 = 100 billed
    assert (p.billed_s, p.busy_s, p.cold_start_s, p.idle_s) == (100, 20, 10, 70)
    assert p.busy_s + p.cold_start_s + p.idle_s == p.billed_s
    assert p.utilisation == pytest.approx(20 / 100)
    # each ran alone for 10 s: 10 s x $0.001 = $0.01, not a's 18 s
    assert att.shares == [costs.Share(10, pytest.approx(0.010), 10), costs.Share(10, pytest.approx(0.010), 10)]
    assert p.usd_billed == pytest.approx(100 * 0.001) and p.usd_ideal == pytest.approx(20 * 0.001)


def test_requests_held_together_share_only_the_time_they_ran_together() -> None:
    # c arrives at 5, waits 5 s, runs 10-16 beside a (10-20). Densities: a 100 tokens / 10 s = 10/s,
    # c 60 tokens / 6 s = 10/s, equal: 10-16 is split in halves (3 s each), a alone 16-20 (4 s).
    c = rec("c", 5, 11, 60, wait=5.0)
    att = costs.attribute([A, B, c], EVENTS, PRICE, T0, T0 + 200)
    (a_s, _, _), (b_s, _, _), (c_s, c_usd, _) = att.shares
    assert (a_s, b_s, c_s) == (pytest.approx(3 + 4), 10, pytest.approx(3))
    assert c_usd == pytest.approx(3 * 0.001)
    p = att.pools["p"]
    # the union of 10-20, 10-16, 30-40 is still 20 s; a and c's waits both inside 0-10, counted once
    assert (p.busy_s, p.cold_start_s, p.idle_s) == (20, 10, 70)


def test_a_request_that_never_reached_a_replica_holds_no_busy_time() -> None:
    # its client left after 5 s of waiting (the gateway knows no replica and no wait for it)
    gave_up = rec("g", 3, 5, 10, replica=None, status=499)
    att = costs.attribute([A, B, gave_up], EVENTS, PRICE, T0, T0 + 200)
    assert att.shares[2] == costs.NO_SHARE
    p = att.pools["p"]
    assert (p.replicas, p.billed_s, p.busy_s, p.cold_start_s, p.idle_s) == (1, 100, 20, 10, 70)


def test_a_starting_replica_serves_nobody() -> None:
    # the replica restarts at 50 (ready -> starting) while d runs 45-55; ready again at 60
    events = [*EVENTS[:2], ev(50, "ready", "starting"), ev(60, "starting", "ready"), EVENTS[2]]
    d = rec("d", 45, 10, 10)
    att = costs.attribute([A, B, d], events, PRICE, T0, T0 + 200)
    p = att.pools["p"]
    # busy 10-20, 30-40, 45-50 = 25; cold start 0-10 and 50-60 = 20; idle 100 - 25 - 20 = 55
    assert (p.billed_s, p.busy_s, p.cold_start_s, p.idle_s) == (100, 25, 20, 55)
    assert att.shares[2].busy_s == 5


def test_a_replica_is_billed_whenever_it_ran_a_request() -> None:
    # h runs 110-120 although the events say the replica stopped at 100 (an event lost, a clock step)
    h = rec("h", 110, 10, 10)
    p = costs.attribute([A, B, h], EVENTS, PRICE, T0, T0 + 200).pools["p"]
    # billed 0-100 and 110-120 = 110; busy 10-20, 30-40, 110-120 = 30; cold start 10; idle 20-30, 40-100 = 70
    assert (p.billed_s, p.busy_s, p.cold_start_s, p.idle_s) == (110, 30, 10, 70)


def test_time_prepared_before_the_wait_is_not_charged_for_the_start() -> None:
    # f arrives at 1, is prepared for 1 s, then waits 8 s (2-10): arrival + wait = 9 is before the
    # replica is ready at 10, so its run is 10-20, not 9-20
    f = rec("f", 1, 19, 100, wait=8.0)
    att = costs.attribute([f], EVENTS, PRICE, T0, T0 + 200)
    assert att.shares[0].busy_s == 10
    assert (att.pools["p"].busy_s, att.pools["p"].cold_start_s) == (10, 10)


def test_every_report_grouping_shows_the_same_attribution() -> None:
    rows = {by: {r["group"]: r for r in report.build([A, B], EVENTS, PRICE, T0, T0 + 200, by)} for by in report.GROUPS}
    for by in ("key",):
        assert rows[by]["a"]["usd_billed"] == pytest.approx(0.010)  # 10 s run, not 18 s
        assert rows[by]["a"]["gpu_hours"] == pytest.approx(10 / 3600)
        assert rows[by]["a"]["cold_waits"] == 1 and rows[by]["a"]["cold_wait_p50_s"] == 8.0
    assert rows["model"]["m"]["usd_billed"] == pytest.approx(0.020)
    for by, group in (("pool", "p"), ("day", "2023-11-14"), ("key", "TOTAL")):
        row = rows[by][group]
        # billed 100 s = $0.10, busy 20 s = $0.02 ideal, utilisation 20 / 100
        assert row["usd_billed"] == pytest.approx(0.100), by
        assert row["usd_ideal"] == pytest.approx(0.020) and row["utilisation"] == pytest.approx(0.20), by
        assert row["cold_starts"] == 1, by


def test_a_request_across_midnight_is_busy_on_both_days() -> None:
    # ready from 0 to 86500; e runs from 86300 to 86500 (100 s before midnight, 100 s after)
    events = [ev(0, "stopped", "ready"), ev(86500, "ready", "stopped")]
    e = rec("e", 86300, 200, 10)
    days = report.build([e], events, PRICE, T0, T0 + 2 * 86400, "day")
    assert [d["requests"] for d in days] == [1, 0, 1]  # the row is the day it started, then the total
    assert days[0]["utilisation"] == pytest.approx(100 / 86400)
    assert days[1]["utilisation"] == pytest.approx(100 / 100)  # billed 0-100 after midnight, all busy


async def test_cost_estimate_excludes_the_wait_and_is_zero_without_a_replica(db_url: str) -> None:
    """What budgets count, computed by Accounting as a request ends, stored in a real database."""
    config = cfg.load_text(
        f"gateway: {{database: '{db_url}'}}\n"
        "pools:\n  - {name: p, model: m, backend: {url: 'http://127.0.0.1:1'}, gpu: {usd_per_hour: 3600}}\n"
    )
    acc = Accounting(config, SystemClock(), CollectorRegistry(), RecentRecords())
    await acc.start()
    try:
        cold = RequestRecord("cold", "chat", "m", T0, 0.0, pool="p", replica="p-0", status=200)
        cold.duration_s, cold.cold_start_wait_s = 5.0, 3.0
        gone = RequestRecord("gone", "chat", "m", T0 + 10, 0.0, pool="p", status=499)  # left during the wait
        gone.duration_s = 4.0
        for record in (cold, gone):  # one after the other: each alone on the pool
            acc.admit(None, record)
            acc.submit(record)
        assert acc.writer is not None
        await acc.writer.flush()
        engine = store.create_engine(db_url)
        try:
            with engine.connect() as conn:
                c = store.usage_records.c
                cost = dict(conn.execute(sa.select(c.request_id, c.cost_usd)).all())
        finally:
            engine.dispose()
    finally:
        await acc.stop()
    # $1 per second: cold ran 5 - 3 = 2 s alone; gone never reached a replica
    assert cost == {"cold": pytest.approx(2.0), "gone": 0.0}


def sqlite_rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql).fetchall()


# -- through a real gateway process ---------------------------------------------------------------------

START_DELAY_S = 1.5
RUN_S = 0.5


def _config(tmp: Path, db_url: str) -> str:
    backend = (
        f"{shlex.quote(sys.executable)} {shlex.quote(str(procs.FAKE_UPSTREAM))} --port {{port}}"
        f" --start-delay {START_DELAY_S}"
    )
    return (
        f"gateway:\n  database: '{db_url}'\n"
        "accounting: {flush_interval_s: 0.05, spool_path: spool.jsonl}\n"
        "pools:\n  - name: cold\n    model: m\n"
        f"    backend: {{command: {backend!r}, log_dir: {str(tmp)!r}, startup_timeout_s: 30}}\n"
        "    gpu: {usd_per_hour: 3600, type: L4}\n"  # $1 per second: the dollars are the seconds
    )


@pytest.mark.integration
def test_gateway_stores_the_cold_request_cost_without_its_wait(tmp_path: Path) -> None:
    db = tmp_path / "usage.db"
    db_url = f"sqlite:///{db}"
    config = _config(tmp_path, db_url)
    (tmp_path / "c.yaml").write_text(config)
    since = time.time() - 1
    with procs.gateway(tmp_path, config) as (gw, _):
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        answer = httpx.post(f"{gw}/v1/chat/completions", json={**body, "x_fake": {"delay_s": RUN_S}}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert int(answer.headers["x-frugalserve-cold-start-ms"]) >= START_DELAY_S * 1000
        stored = procs.stored_record(db, answer.headers["x-request-id"])
        wait, duration = stored["cold_start_wait_s"], stored["duration_s"]
        assert wait >= START_DELAY_S and duration - wait >= RUN_S
        # alone on its replica at $1/s: the estimate budgets count is its run time, not its wait
        assert stored["cost_usd"] == pytest.approx(1.0 * (duration - wait), rel=1e-9)
        until = time.time()
        window = {
            "since": dt.datetime.fromtimestamp(since, dt.UTC).isoformat(),
            "until": dt.datetime.fromtimestamp(until, dt.UTC).isoformat(),
        }
        admin = {
            by: httpx.get(f"{gw}/admin/usage", params={**window, "by": by}, timeout=30).json()["rows"]
            for by in report.GROUPS
        }
    # the report's exact share: from dispatch (arrival + wait) or the replica's ready event, whichever is
    # later (the wait began after the gateway had prepared the request), to the request's end
    events = sqlite_rows(db, "SELECT time, from_state, to_state FROM replica_events ORDER BY time")
    assert [e[1:] for e in events[:2]] == [("stopped", "starting"), ("starting", "ready")]
    started, ready = float(str(events[0][0])), float(str(events[1][0]))
    ran = stored["time"] + duration - max(ready, stored["time"] + wait)
    assert RUN_S <= ran <= duration - wait
    key_total = admin["key"][-1]
    assert admin["key"][0]["usd_billed"] == pytest.approx(ran, rel=1e-6)
    assert key_total["usd_ideal"] == pytest.approx(ran, rel=1e-6)
    assert key_total["cold_starts"] == 1 and key_total["cold_wait_p50_s"] == pytest.approx(wait)
    # billed: starting, then ready until the window's end; busy + cold start + idle, utilisation busy / billed
    billed = report.parse_when(window["until"], 0) - started
    assert key_total["usd_billed"] == pytest.approx(billed, rel=1e-6)
    assert key_total["utilisation"] == pytest.approx(ran / billed, rel=1e-6)
    assert ready - started >= START_DELAY_S
    # `frugalserve report` reads the same functions: the same rows, grouping by grouping
    for by in report.GROUPS:
        out = procs.cli(
            tmp_path, "report", "--config", "c.yaml", "--database", db_url, "--by", by, "--format", "json",
            "--since", window["since"], "--until", window["until"],
        )  # fmt: skip
        assert json.loads(out) == admin[by], by
