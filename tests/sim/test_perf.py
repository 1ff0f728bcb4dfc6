"""The performance model: defaults with sources, config and overrides, perf files, and calibration from a real
accounting database (SQLite always, PostgreSQL when FRUGALSERVE_TEST_POSTGRES_URL is set) written through the
gateway's own accounting writer. Every median below is computed by hand in the comments."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from frugalserve import config as cfg
from frugalserve.accounting.service import Accounting
from frugalserve.clock import SystemClock
from frugalserve.config import ConfigError, PoolConfig
from frugalserve.events import ReplicaEvent
from frugalserve.records import RecentRecords, RequestRecord
from frugalserve.sim import perf
from frugalserve.sim.perf import DEFAULT_SOURCES, DEFAULTS, FIELDS, FROM_CONFIG, PerfModel

T0 = 1_700_000_000.0 - 1_700_000_000.0 % 86400  # a UTC midnight
SINCE, UNTIL = T0 + 50, T0 + 3000
KEY = "simulate.pools.gpu.perf"


def pools(timeout: float = 600, level: int = 1, extra: str = "") -> tuple[PoolConfig, ...]:
    config = cfg.load_text(
        "pools:\n"
        "  - name: gpu\n"
        "    model: qwen\n"
        f"    backend: {{command: 'serve --port {{port}}', startup_timeout_s: {timeout}}}\n"
        f"    lifecycle: {{sleep_level: {level}}}\n"
        "    capacity: 8\n"
        "    gpu: {usd_per_hour: 0.8, count: 2, billing: reserved}\n" + extra
    )
    return config.pools


# -- defaults, config, overrides ---------------------------------------------------------------------------


def test_every_default_has_a_one_line_source_and_every_field_a_layer() -> None:
    assert set(DEFAULT_SOURCES) == set(DEFAULTS)
    for name, source in DEFAULT_SOURCES.items():
        assert source.strip() and "\n" not in source, name
    assert set(DEFAULTS).isdisjoint(FROM_CONFIG)
    assert set(DEFAULTS) | set(FROM_CONFIG) == set(FIELDS)
    # every PerfModel field but source is set by one of the names (wake_s by wake_s_1 and wake_s_2)
    model_fields = {f.name for f in dataclasses.fields(PerfModel)} - {"source"}
    assert model_fields == (set(FIELDS) - {"wake_s_1", "wake_s_2"}) | {"wake_s"}


def test_the_pool_config_sets_concurrency_price_and_billing_over_the_defaults() -> None:
    (pool,) = pools()
    m = perf.perf_for(pool)
    assert m == PerfModel(
        prefill_tps=3000.0,
        decode_tps=20.0,
        concurrency=8,
        start_s=60.0,
        wake_s=(2.0, 5.0),
        sleep_s=2.0,
        usd_per_hour=1.6,  # 0.8 per GPU x 2 GPUs
        billing="reserved",
        min_billed_s=0.0,
        source="defaults; config (capacity, gpu price and billing)",
    )
    assert m.service_s(1500, 40) == (0.5, 2.5)  # 1500 / 3000, then + 40 / 20


def test_overrides_win_by_field_name_and_the_source_says_which() -> None:
    (pool,) = pools()
    overrides = {"decode_tps": 40, "concurrency": 4, "wake_s_2": 7.5, "billing": "on_demand", "min_billed_s": 60}
    m = perf.perf_for(pool, overrides, KEY)
    assert (m.decode_tps, m.concurrency, m.wake_s, m.billing, m.min_billed_s) == (40.0, 4, (2.0, 7.5), "on_demand", 60)
    assert m.prefill_tps == 3000.0 and m.usd_per_hour == 1.6
    assert m.source.endswith(f"; {KEY}: decode_tps, concurrency, wake_s_2, billing, min_billed_s")


def test_default_start_and_wake_times_are_capped_at_the_startup_timeout_but_overrides_are_not() -> None:
    (pool,) = pools(timeout=30)
    m = perf.perf_for(pool)
    assert (m.start_s, m.wake_s) == (30.0, (2.0, 5.0))
    assert "start_s capped at backend.startup_timeout_s (30 s)" in m.source
    (pool,) = pools(timeout=3)
    assert perf.perf_for(pool).wake_s == (2.0, 3.0)
    assert perf.perf_for(pool, {"start_s": 90}).start_s == 90.0  # a measured or deliberate value stands


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("decode_tok", 40, "unknown field"),
        ("decode_tps", 0, "must be > 0"),
        ("prefill_tps", -5, "must be > 0"),
        ("start_s", -1, "must be >= 0"),
        ("usd_per_hour", -0.1, "must be >= 0"),
        ("sleep_s", "2", "must be a number"),
        ("wake_s_1", True, "must be a number"),
        ("wake_s_2", float("nan"), "finite"),
        ("min_billed_s", float("inf"), "finite"),
        ("concurrency", 2.5, "must be an integer"),
        ("concurrency", 0, "must be >= 1"),
        ("billing", "spot", "must be one of 'on_demand', 'reserved'"),
    ],
)
def test_a_bad_override_names_its_key(name: str, value: object, says: str) -> None:
    (pool,) = pools()
    with pytest.raises(ConfigError) as err:
        perf.perf_for(pool, {name: value}, KEY)
    assert err.value.path == f"{KEY}.{name}"
    assert says in err.value.message
    with pytest.raises(ConfigError) as err:
        perf.perf_for(pool, {name: value})
    assert err.value.path == name


# -- perf files ----------------------------------------------------------------------------------------------


def test_a_perf_file_gives_the_checked_overrides_of_each_pool(tmp_path: Path) -> None:
    f = tmp_path / "perf.yaml"
    f.write_text("pools:\n  gpu: {decode_tps: 35, concurrency: 6}\n  idle:\n")
    assert perf.load_perf_file(f) == {"gpu": {"decode_tps": 35.0, "concurrency": 6}, "idle": {}}


@pytest.mark.parametrize(
    ("text", "path", "says"),
    [
        ("pool: {}\n", "pool", "unknown key (known: pools)"),
        ("pools: [gpu]\n", "pools", "must be a mapping of pool names"),
        ("pools: {gpu: [1]}\n", "pools.gpu", "must be a mapping of fields"),
        ("pools: {gpu: {decode_tps: fast}}\n", "pools.gpu.decode_tps", "must be a number"),
        ("pools: {gpu: {speed: 3}}\n", "pools.gpu.speed", "unknown field"),
        ("pools: {gpu: {decode_tps: 1\n", "", "not valid YAML: line 2"),
    ],
)
def test_a_bad_perf_file_names_the_key_and_the_file(tmp_path: Path, text: str, path: str, says: str) -> None:
    f = tmp_path / "perf.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        perf.load_perf_file(f)
    assert err.value.path == path
    assert says in err.value.message and str(f) in err.value.message


def test_a_missing_perf_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read perf file .*nope\.yaml"):
        perf.load_perf_file(tmp_path / "nope.yaml")


# -- calibration ---------------------------------------------------------------------------------------------


def answer(
    rid: str,
    t: float,
    prompt: int,
    ttft: float,
    completion: int,
    decode_s: float,
    *,
    pool: str = "gpu",
    stream: bool = True,
    wait: float | None = None,
    status: int = 200,
    gone: bool = False,
) -> RequestRecord:
    r = RequestRecord(rid, "chat", "qwen", T0 + t, 0.0, stream=stream, pool=pool, replica=f"{pool}-0", status=status)
    r.prompt_tokens, r.completion_tokens = prompt, completion
    r.ttfb_s, r.duration_s, r.cold_start_wait_s, r.client_disconnected = ttft, ttft + decode_s, wait, gone
    return r


# (prompt / ttft, completion / decode time) of each record that counts, and why the others do not.
RECORDS = [
    answer("a", 100, 1000, 0.5, 100, 5.0),  # prefill 2000, decode 20
    answer("b", 110, 3000, 1.0, 50, 2.0),  # 3000, 25
    answer("c", 120, 700, 0.25, 8, 0.5),  # 2800, 16 (8 tokens: just enough)
    answer("d", 130, 2500, 0.5, 30, 1.0),  # 5000, 30
    answer("e", 140, 300, 0.125, 7, 0.01),  # 2400; 7 tokens: no decode sample (700 tokens/s)
    # held 30 s for a cold start: its ttft is mostly the wait (100 / 31 = 3.2), but its decode counts: 40 / 4 = 10
    answer("cold", 150, 100, 31.0, 40, 4.0, wait=30.0),
    # not streamed: the first byte is the last (ttft ~ duration), 9000 prompt tokens/s and 500,000 tokens/s
    answer("whole", 160, 9000, 1.0, 500, 0.001, stream=False),
    answer("err", 170, 9000, 1.0, 500, 0.001, status=500),  # failed
    answer("left", 180, 9000, 1.0, 500, 0.001, status=499, gone=True),  # its client went away
    answer("early", 10, 9000, 1.0, 500, 0.001),  # before the window
    answer("late", 3000, 9000, 1.0, 500, 0.001),  # at its end (exclusive)
    answer("other", 190, 9000, 1.0, 500, 0.001, pool="cpu"),  # another pool
]
# prefill: 2000, 2400, 2800, 3000, 5000 -> median 2800 (5 requests)
# decode: 10, 16, 20, 25, 30 -> median 20 (5 requests)


def ev(t: float, replica: str, a: str, b: str, took: float | None = None, pool: str = "gpu") -> ReplicaEvent:
    return ReplicaEvent(T0 + t, pool, replica, a, b, "x", took)


EVENTS = [
    # before the window: a start that ended at 40 (30 s) is not counted
    ev(10, "gpu-2", "stopped", "starting"),
    ev(40, "gpu-2", "starting", "ready", 30.0),
    # began before the window, ended in it: counted (30 s)
    ev(45, "gpu-3", "stopped", "starting"),
    ev(75, "gpu-3", "starting", "ready", 30.0),
    # gpu-0: a start whose duration_s (58, monotonic) is taken over the wall time (60)
    ev(100, "gpu-0", "stopped", "starting"),
    ev(160, "gpu-0", "starting", "ready", 58.0),
    ev(500, "gpu-0", "ready", "stopping"),
    ev(501.5, "gpu-0", "stopping", "sleeping", 1.5),  # sleep 1.5
    ev(900, "gpu-0", "sleeping", "starting"),
    ev(901.25, "gpu-0", "starting", "ready"),  # wake; no duration_s: the wall time, 1.25
    ev(1200, "gpu-0", "ready", "stopping"),
    ev(1202, "gpu-0", "stopping", "sleeping", 2.0),  # sleep 2
    ev(1500, "gpu-0", "sleeping", "starting"),
    ev(1500.5, "gpu-0", "starting", "ready", 0.5),  # wake 0.5
    ev(1800, "gpu-0", "ready", "stopping"),
    ev(1801, "gpu-0", "stopping", "sleeping", 1.0),  # sleep 1
    ev(2000, "gpu-0", "sleeping", "starting"),
    ev(2003, "gpu-0", "starting", "ready", 3.0),  # wake 3
    ev(3100, "gpu-0", "ready", "stopping"),  # after the window
    ev(3101, "gpu-0", "stopping", "sleeping", 9.0),
    # gpu-1: a restart after a failure (70), a stop (not a sleep), a start (45), then a start that failed
    ev(200, "gpu-1", "failed", "starting"),
    ev(270, "gpu-1", "starting", "ready", 70.0),
    ev(300, "gpu-1", "ready", "stopping"),
    ev(305, "gpu-1", "stopping", "stopped", 5.0),
    ev(400, "gpu-1", "stopped", "starting"),
    ev(445, "gpu-1", "starting", "ready", 45.0),
    ev(700, "gpu-1", "ready", "failed"),
    ev(700.5, "gpu-1", "failed", "starting"),
    ev(710, "gpu-1", "starting", "failed", 9.5),
    # another pool
    ev(600, "cpu-0", "stopped", "starting", pool="cpu"),
    ev(601, "cpu-0", "starting", "ready", 1.0, pool="cpu"),
]
# starts: 30 (gpu-3), 58, 70, 45 -> 30, 45, 58, 70 -> median (45 + 58) / 2 = 51.5 (4 starts)
# wakes: 1.25, 0.5, 3 -> median 1.25 (3); sleeps: 1.5, 2, 1 -> median 1.5 (3)
EXPECTED = {"prefill_tps": 2800.0, "decode_tps": 20.0, "start_s": 51.5, "wake_s_1": 1.25, "sleep_s": 1.5}
SAMPLES = {"prefill_tps": 5, "decode_tps": 5, "start_s": 4, "wake_s_1": 3, "sleep_s": 3}


async def store_all(db_url: str, tmp_path: Path, records: list[RequestRecord], events: list[ReplicaEvent]) -> None:
    """Through the gateway's accounting: the record sink and the event sink, flushed by its writer."""
    config = cfg.load_text(
        f"gateway: {{database: '{db_url}'}}\n"
        f"accounting: {{spool_path: '{tmp_path / 'spool.jsonl'}', dead_letter_path: '{tmp_path / 'dead.jsonl'}'}}\n"
    )
    acc = Accounting(config, SystemClock(), CollectorRegistry(), RecentRecords())
    await acc.start()
    try:
        for record in records:
            acc.submit(record)
        for event in events:
            acc.events.submit(event)
        assert acc.writer is not None
        await acc.writer.flush()
    finally:
        await acc.stop()


async def test_calibration_takes_the_medians_of_what_the_gateway_measured(db_url: str, tmp_path: Path) -> None:
    await store_all(db_url, tmp_path, RECORDS, EVENTS)
    (gpu,) = pools()
    cals = perf.calibrate(db_url, [gpu], SINCE, UNTIL)
    cal = cals["gpu"]
    assert dict(cal.values) == pytest.approx(EXPECTED)
    assert dict(cal.samples) == SAMPLES
    assert cal.notes == ("wake_s_2: not measured (the pool sleeps at level 1)",)
    assert (cal.pool, cal.since, cal.until) == ("gpu", SINCE, UNTIL)


async def test_wakes_count_at_the_pools_sleep_level_and_what_was_not_measured_is_said(
    db_url: str, tmp_path: Path
) -> None:
    events = [ev(100, "gpu-0", "sleeping", "starting"), ev(104, "gpu-0", "starting", "ready", 4.0)]
    await store_all(db_url, tmp_path, [answer("short", 100, 0, 0.5, 3, 0.1)], events)
    (gpu, idle) = pools(level=2, extra="  - {name: idle, model: m2, backend: {url: 'http://127.0.0.1:1'}}\n")
    cals = perf.calibrate(db_url, [gpu, idle], SINCE, UNTIL)
    assert dict(cals["gpu"].values) == {"wake_s_2": 4.0}
    assert dict(cals["gpu"].samples) == {"wake_s_2": 1}
    assert [n.split(":")[0] for n in cals["gpu"].notes] == [
        "prefill_tps",
        "decode_tps",
        "start_s",
        "sleep_s",
        "wake_s_1",
    ]
    assert "the pool sleeps at level 2" in cals["gpu"].notes[-1]
    assert dict(cals["idle"].values) == {}


async def test_calibration_yaml_round_trips_through_a_perf_file_into_the_model(db_url: str, tmp_path: Path) -> None:
    await store_all(db_url, tmp_path, RECORDS, EVENTS)
    (gpu,) = pools()
    text = perf.calibration_yaml(perf.calibrate(db_url, [gpu], SINCE, UNTIL))
    comments = [line for line in text.splitlines() if line.strip().startswith("#")]
    assert (
        "  # gpu: prefill_tps from 5 requests, decode_tps from 5 requests, start_s from 4 starts, wake_s_1 from "
        "3 wakes, sleep_s from 3 sleeps; window 2023-11-14 00:00:50Z .. 2023-11-14 00:50:00Z"
    ) in comments
    f = tmp_path / "perf.yaml"
    f.write_text(text)
    overrides = perf.load_perf_file(f)
    assert overrides == {"gpu": pytest.approx(EXPECTED)}
    m = perf.perf_for(gpu, overrides["gpu"], f"{f}:pools.gpu")
    assert (m.prefill_tps, m.decode_tps, m.start_s, *m.wake_s, m.sleep_s) == pytest.approx(
        (2800.0, 20.0, 51.5, 1.25, 5.0, 1.5)  # wake_s_2 was not measured: the default
    )
    assert (m.concurrency, m.usd_per_hour, m.billing) == (8, 1.6, "reserved")
    assert m.source.endswith(f"{f}:pools.gpu: prefill_tps, decode_tps, start_s, wake_s_1, sleep_s")


def test_an_empty_calibration_writes_a_pool_without_fields() -> None:
    cal = perf.Calibration("gpu", {}, {}, ("prefill_tps: not measured (none)",))
    text = perf.calibration_yaml({"gpu": cal})
    assert "  # gpu: nothing measured; window the first record .. the last" in text
    assert yaml.safe_load(text) == {"pools": {"gpu": {}}}


def test_calibrating_a_missing_sqlite_file_says_so_and_creates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "none" / "acc.db"
    with pytest.raises(ConfigError, match="no accounting database at sqlite:///"):
        perf.calibrate(f"sqlite:///{db}", pools(), None, None)
    assert not db.parent.exists()


def test_calibrating_a_database_without_the_tables_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    db.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"cannot read the accounting database at .*no such table"):
        perf.calibrate(f"sqlite:///{db}", pools(), None, None)


def test_a_gap_in_a_replicas_events_is_not_a_span() -> None:
    rows = [
        {"time": 0.0, "replica": "r", "from_state": "stopped", "to_state": "starting", "duration_s": None},
        # the event in between (starting -> ready, ready -> stopping) was lost: this is no start
        {"time": 9.0, "replica": "r", "from_state": "stopping", "to_state": "sleeping", "duration_s": 1.0},
        {"time": 20.0, "replica": "r", "from_state": "sleeping", "to_state": "starting", "duration_s": 11.0},
        {"time": 22.0, "replica": "r", "from_state": "starting", "to_state": "ready", "duration_s": None},
    ]
    assert perf.lifecycle_samples(rows, None, None) == {"start": [], "wake": [2.0], "sleep": []}
