"""Traces for the planner: files read against hand-computed columns, the generator against its documented
shape (checked with Python's own calendar and zoneinfo, not the generator's arithmetic), and the gateway's
usage records read back after the real accounting path wrote them to SQLite (and PostgreSQL when set)."""

from __future__ import annotations

import gzip
import math
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry

from frugalserve import config as cfg
from frugalserve.accounting.service import Accounting
from frugalserve.clock import SystemClock
from frugalserve.records import RecentRecords, RequestRecord
from frugalserve.sim import trace
from frugalserve.sim.trace import PRIORITIES, Trace, TraceError, from_db, parse_synthetic, read_trace, synthetic

# 2026-01-05T00:00:00Z: 2025-01-01 is 1,735,689,600; + 365 days (31,536,000) is 2026-01-01; + 4 days (345,600).
MON = 1_767_571_200.0

# One image of 1600x1200 (width x height), by Qwen3-VL's rule (budget/vision.py, transformers' smart_resize):
# height 1200 / 32 = 37.5, rounded half to even -> 38 -> 1216 px; width 1600 / 32 = 50 -> 1600 px;
# 1216 x 1600 = 1,945,600 px lies within [65,536, 16,777,216], so no rescaling; 1,945,600 / (32 x 32) = 1,900
# <|image_pad|> tokens, plus <|vision_start|> and <|vision_end|>: 1,902.
TOKENS_1600x1200 = 1_902
# 1280x960: 960 / 32 = 30 and 1280 / 32 = 40, exact; 30 x 40 = 1,200 pads + 2 markers.
TOKENS_1280x960 = 1_202

CSV = (
    "timestamp,model,prompt_tokens,output_tokens,images,priority,key,note\n"
    '2026-01-05T09:00:00+08:00,qwen3-vl-2b,120,30,"[[1600,1200]]",high,team-a,ignored\n'
    "1767574800.5,qwen3-vl-8b,0,1,,,,x\n"
    '2026-01-05 02:00:01,qwen3-vl-2b,7,0,"[[1600,1200],[1280,960]]",low,team-b,\n'
)
JSONL_ROWS: list[dict[str, object]] = [
    {
        "timestamp": "2026-01-05T01:00:00Z",
        "model": "qwen3-vl-2b",
        "prompt_tokens": 120,
        "output_tokens": 30,
        "images": [[1600, 1200]],
        "priority": "high",
        "key": "team-a",
        "extra": {"ignored": True},
    },
    {"timestamp": 1767574800.5, "model": "qwen3-vl-8b", "prompt_tokens": 0, "output_tokens": 1},
    {
        "timestamp": "1767578401",
        "model": "qwen3-vl-2b",
        "prompt_tokens": 7,
        "output_tokens": 0,
        "images": [[1600, 1200], [1280, 960]],
        "priority": "low",
        "key": "team-b",
    },
]
EXPECTED = {  # the three rows above, by hand
    "t": [MON + 3600, MON + 3600.5, MON + 7201],  # 09:00+08:00 is 01:00Z; 02:00:01 naive is UTC
    "model": [0, 1, 0],
    "prompt_tokens": [120, 0, 7],
    "image_tokens": [TOKENS_1600x1200, 0, TOKENS_1600x1200 + TOKENS_1280x960],
    "output_tokens": [30, 1, 0],
    "priority": [2, 1, 0],  # high, normal (empty), low
    "key": [1, 0, 2],
}
COLUMNS = ("t", "model", "prompt_tokens", "image_tokens", "output_tokens", "priority", "key")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(rows: list[dict[str, object]]) -> str:
    return "".join(orjson.dumps(r).decode() + "\n" for r in rows)


def columns(tr: Trace) -> dict[str, list[object]]:
    return {c: getattr(tr, c).tolist() for c in COLUMNS}


def assert_same(a: Trace, b: Trace) -> None:
    for c in COLUMNS:
        x, y = getattr(a, c), getattr(b, c)
        assert x.dtype == y.dtype and np.array_equal(x, y), c
    assert (a.models, a.keys) == (b.models, b.keys)


# -- files ----------------------------------------------------------------------------------------------


def test_csv_and_jsonl_of_the_same_rows_give_the_same_hand_computed_trace(tmp_path: Path) -> None:
    a = read_trace(write(tmp_path / "trace.csv", CSV))
    b = read_trace(write(tmp_path / "trace.jsonl", jsonl(JSONL_ROWS)))
    assert columns(a) == EXPECTED
    assert a.models == ("qwen3-vl-2b", "qwen3-vl-8b") and a.keys == ("", "team-a", "team-b")
    assert_same(a, b)
    assert (a.t.dtype, a.model.dtype, a.prompt_tokens.dtype, a.priority.dtype, a.key.dtype) == (
        np.float64,
        np.int32,
        np.int64,
        np.int8,
        np.int32,
    )
    assert a.source == str(tmp_path / "trace.csv") and (a.start, a.end, len(a)) == (MON + 3600, MON + 7201, 3)


def test_gzipped_files_and_ndjson_read_the_same(tmp_path: Path) -> None:
    plain = read_trace(write(tmp_path / "trace.csv", CSV))
    (tmp_path / "trace.csv.gz").write_bytes(gzip.compress(CSV.encode()))
    (tmp_path / "trace.jsonl.gz").write_bytes(gzip.compress(jsonl(JSONL_ROWS).encode()))
    for name in ("trace.csv.gz", "trace.jsonl.gz"):
        assert_same(read_trace(tmp_path / name), plain)
    assert_same(read_trace(write(tmp_path / "t.ndjson", jsonl(JSONL_ROWS))), plain)


@pytest.mark.parametrize(
    "stamp",
    ["2026-01-05T09:00:00+08:00", "2026-01-05T01:00:00Z", "2026-01-04T20:00:00-05:00", "2026-01-05T01:00:00",
     "1767574800", " 1767574800.0 ", "1.7675748e9"],
)  # fmt: skip
def test_iso_with_an_offset_naive_iso_and_epoch_seconds_are_the_same_instant(tmp_path: Path, stamp: str) -> None:
    tr = read_trace(write(tmp_path / "t.csv", f"timestamp,model,prompt_tokens,output_tokens\n{stamp},m,1,1\n"))
    assert tr.t.tolist() == [MON + 3600]


def test_image_tokens_follow_qwen3_vls_rule(tmp_path: Path) -> None:
    text = 'timestamp,model,prompt_tokens,output_tokens,images\n0,m,1,1,"[[1600,1200]]"\n1,m,1,1,"[]"\n'
    assert read_trace(write(tmp_path / "t.csv", text)).image_tokens.tolist() == [TOKENS_1600x1200, 0]


def test_unsorted_rows_are_sorted_stably(tmp_path: Path) -> None:
    text = (
        "timestamp,model,prompt_tokens,output_tokens,key\n"
        "30,m,3,0,c\n"
        "10,m,1,0,a\n"
        "30,m,4,0,d\n"  # the same time as the first row: stays after it
        "20,m,2,0,b\n"
    )
    tr = read_trace(write(tmp_path / "t.csv", text))
    assert tr.t.tolist() == [10.0, 20.0, 30.0, 30.0]
    assert tr.prompt_tokens.tolist() == [1, 2, 3, 4]
    assert [tr.keys[k] for k in tr.key] == ["a", "b", "c", "d"]


def test_optional_columns_default_and_extra_blank_lines_are_skipped(tmp_path: Path) -> None:
    text = "model,output_tokens,timestamp,prompt_tokens\n\nm,5,100,6\n\n"
    tr = read_trace(write(tmp_path / "t.csv", text))
    assert columns(tr) == {
        "t": [100.0],
        "model": [0],
        "prompt_tokens": [6],
        "image_tokens": [0],
        "output_tokens": [5],
        "priority": [PRIORITIES.index("normal")],
        "key": [0],
    }
    assert tr.keys == ("",)


HEADER = "timestamp,model,prompt_tokens,output_tokens,images,priority,key,note\n"
GOOD = "1767571200,m,1,1,,,,\n"


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ("1767571200,m,abc,1,,,,", "prompt_tokens must be an integer >= 0, got 'abc'"),
        ("1767571200,m,1,-3,,,,", "output_tokens must be an integer >= 0, got '-3'"),
        ("1767571200,m,1.5,1,,,,", "prompt_tokens must be an integer >= 0, got '1.5'"),
        ("yesterday,m,1,1,,,,", "timestamp must be ISO 8601 or epoch seconds, got 'yesterday'"),
        ("2026-13-45T00:00:00,m,1,1,,,,", "timestamp must be ISO 8601 or epoch seconds, got '2026-13-45T00:00:00'"),
        ("nan,m,1,1,,,,", "timestamp must be ISO 8601 or epoch seconds, got 'nan'"),
        ("1767571200,,1,1,,,,", "model must be a non-empty string, got ''"),
        ('1767571200,m,1,1,"[[1600]]",,,', "images must be a JSON list of [width, height] pairs, got '[[1600]]'"),
        ("1767571200,m,1,1,big,,,", "images must be a JSON list of [width, height] pairs, got 'big'"),
        ('1767571200,m,1,1,"[[10,5000]]",,,', "images: absolute aspect ratio must be smaller than 200"),
        ("1767571200,m,1,1,,urgent,,", "priority must be low, normal or high, got 'urgent'"),
    ],
)
def test_a_bad_value_names_file_line_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad_row: str, message: str
) -> None:
    # A quoted cell across two lines and a blank line come first: the line is the file's, not the row's.
    # Chunks of 2 rows put the bad row in the third chunk, so the row count carries across chunks.
    monkeypatch.setattr(trace, "CHUNK_ROWS", 2)
    text = HEADER + GOOD + '1767571200,m,1,1,,,,"two\nlines"\n' + "\n" + GOOD * 2 + bad_row + "\n" + GOOD
    path = write(tmp_path / "trace.csv", text)
    with pytest.raises(TraceError) as err:
        read_trace(path)
    assert str(err.value).startswith(f"{path}:8: {message}")
    assert err.value.where == f"{path}:8"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"timestamp": 1, "model": "m", "prompt_tokens": 1.5, "output_tokens": 1}', "prompt_tokens must be an integer >= 0, got 1.5"),
        ('{"timestamp": 1, "model": "m", "prompt_tokens": true, "output_tokens": 1}', "prompt_tokens must be an integer >= 0, got True"),
        ('{"timestamp": 1, "model": "m", "prompt_tokens": 1, "output_tokens": -1}', "output_tokens must be an integer >= 0, got -1"),
        ('{"timestamp": true, "model": "m", "prompt_tokens": 1, "output_tokens": 1}', "timestamp must be ISO 8601 or epoch seconds, got True"),
        ('{"timestamp": 1, "prompt_tokens": 1, "output_tokens": 1}', "model is missing"),
        ('{"model": "m", "prompt_tokens": 1, "output_tokens": 1}', "timestamp is missing"),
        ('{"timestamp": 1, "model": ["m"], "prompt_tokens": 1, "output_tokens": 1}', "model must be a non-empty string, got ['m']"),
        ('{"timestamp": 1, "model": "m", "prompt_tokens": 1, "output_tokens": 1, "images": [[0, 5]]}', "images must be a JSON list"),
        ('{"timestamp": 1, "model": "m", "prompt_tokens": 1, "output_tokens": 1, "key": 7}', "key must be a string, got 7"),
        ('{"timestamp": 1, "model": "m",', "not valid JSON"),
        ("[1, 2]", "a line must be a JSON object, got list"),
    ],
)  # fmt: skip
def test_a_bad_jsonl_line_names_file_line_and_field(tmp_path: Path, line: str, message: str) -> None:
    good = '{"timestamp": 1, "model": "m", "prompt_tokens": 1, "output_tokens": 1}\n'
    path = write(tmp_path / "trace.jsonl", good + "\n" + line + "\n" + good)
    with pytest.raises(TraceError, match=r"^" + str(path).replace("\\", "\\\\") + ":3: ") as err:
        read_trace(path)
    assert message in str(err.value)


def test_missing_columns_empty_traces_and_unreadable_files_are_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "trace.csv", "timestamp,model,prompt_tokens\n1,m,1\n")
    with pytest.raises(TraceError, match=r"trace.csv:1: missing column 'output_tokens'"):
        read_trace(path)
    for name, text in (("empty.csv", ""), ("header.csv", HEADER), ("empty.jsonl", "\n\n")):
        with pytest.raises(TraceError, match=rf"{name}: no requests \(an empty trace\)"):
            read_trace(write(tmp_path / name, text))
    with pytest.raises(TraceError, match=r"t.txt: a trace file must end in .csv, .jsonl or .ndjson"):
        read_trace(write(tmp_path / "t.txt", CSV))
    with pytest.raises(TraceError, match=r"nope.csv: No such file"):
        read_trace(tmp_path / "nope.csv")
    (tmp_path / "bad.csv.gz").write_bytes(b"not gzip")
    with pytest.raises(TraceError, match=r"bad.csv.gz: "):
        read_trace(tmp_path / "bad.csv.gz")


# -- the generator --------------------------------------------------------------------------------------


def local_times(tr: Trace, zone: str) -> list[datetime]:
    tz = ZoneInfo(zone)
    return [datetime.fromtimestamp(float(t), tz) for t in tr.t]


def test_seed000_is_800_a_weekday_in_office_hours_in_shanghai_and_nothing_else() -> None:
    tr = synthetic("seed000,days=14")
    assert tr.source == "synthetic seed000,days=14,seed=0" and tr.models == ("demo",)
    local = local_times(tr, "Asia/Shanghai")
    assert all(9 <= d.hour < 18 for d in local)  # 09:00 to 18:00 local, nothing outside
    by_day: dict[str, int] = {}
    for d in local:
        by_day[d.date().isoformat()] = by_day.get(d.date().isoformat(), 0) + 1
    # 2026-01-05 is a Monday: two weeks of Mon-Fri, no request on Saturdays and Sundays
    weekdays = [f"2026-01-{day:02d}" for day in (5, 6, 7, 8, 9, 12, 13, 14, 15, 16)]
    assert sorted(by_day) == weekdays
    for day in weekdays:  # Poisson(800): standard deviation 28.3; 4 of them
        assert abs(by_day[day] - 800) < 4 * math.sqrt(800), (day, by_day[day])
    n = len(tr)
    share = float(np.mean(tr.image_tokens > 0))
    assert abs(share - 0.3) < 4 * math.sqrt(0.3 * 0.7 / n)
    assert set(tr.image_tokens.tolist()) == {0, TOKENS_1280x960}
    # lognormal sizes around the stated means (sigma 0.5: the mean's standard error is ~0.53 x mean / sqrt(n))
    assert abs(tr.prompt_tokens.mean() - 600) < 4 * 0.53 * 600 / math.sqrt(n)
    assert abs(tr.output_tokens.mean() - 60) < 4 * 0.53 * 60 / math.sqrt(n) + 0.5
    assert tr.prompt_tokens.min() >= 1 and tr.output_tokens.min() >= 1
    assert np.all(np.diff(tr.t) >= 0)


def test_the_same_seed_gives_the_same_trace_and_another_seed_another() -> None:
    a, b = synthetic("seed000,days=7"), synthetic("seed000,days=7,seed=0")
    assert_same(a, b)
    c = synthetic("seed000,days=7,seed=1")
    assert len(a) != len(c) or not np.array_equal(a.t, c.t)
    assert c.source == "synthetic seed000,days=7,seed=1"


def test_bursts_add_exactly_their_requests_to_each_active_day() -> None:
    base = "requests_per_day=500,days=7,weekdays=mon-fri,hours=8-20"
    calm = synthetic(base)
    busy = synthetic(base + ",bursts_per_day=3,burst_size=40,burst_s=5")
    assert len(busy) - len(calm) == 5 * 3 * 40  # 5 weekdays x 3 bursts x 40
    assert np.all(np.isin(calm.t, busy.t))  # the regular arrivals are untouched
    extra = np.sort(busy.t[~np.isin(busy.t, calm.t)])
    # 15 bursts of 40 within 5 s each: at least one window of 5 s holds 40 of them
    starts = np.searchsorted(extra, extra + 5.0) - np.arange(len(extra))
    assert starts.max() >= 40
    hours = {datetime.fromtimestamp(float(t), UTC).hour for t in extra}
    assert hours <= set(range(8, 21))  # a burst starts in active hours (and lasts 5 s)


def test_diurnal_shape_peaks_at_15_local_as_documented() -> None:
    rate, days = 200_000, 7
    tr = synthetic(f"requests_per_day={rate},days={days},shape=diurnal,timezone=Europe/Paris")
    # Paris is UTC+1 all that week (zoneinfo says so at both ends)
    tz = ZoneInfo("Europe/Paris")
    offsets = {datetime.fromtimestamp(t, tz).utcoffset() for t in (tr.start, tr.end)}
    assert offsets == {timedelta(hours=1)}
    local = tr.t + 3600.0
    # one-hour bins centred on each hour h of local time: [h - 0.5, h + 0.5)
    centred = np.floor(((local % 86400) / 3600.0 + 0.5) % 24).astype(int)
    counts = np.bincount(centred, minlength=24)
    assert int(np.argmax(counts)) == 15 and int(np.argmin(counts)) == 3
    # expected per bin: rate x days x (1/24) x mean of 1 + 0.8 cos(2 pi (x - 15)/24) over the bin
    #   = rate x days / 24 x (1 + 0.8 x (24 / pi) x sin(pi / 24) x cos(2 pi (h - 15) / 24))
    for h in range(24):
        expected = (
            rate * days / 24 * (1 + 0.8 * 24 / math.pi * math.sin(math.pi / 24) * math.cos(2 * math.pi * (h - 15) / 24))
        )
        assert abs(counts[h] - expected) < 5 * math.sqrt(expected), (h, counts[h], expected)  # fmt: skip


def test_several_models_weekend_factor_and_a_spec_without_preset() -> None:
    tr = synthetic("requests_per_day=2000,days=14,model=big|small,model_weights=0.8|0.2,weekend_factor=0.5,seed=3")
    assert tr.models == ("big", "small")
    assert abs(float(np.mean(tr.model == 0)) - 0.8) < 4 * math.sqrt(0.16 / len(tr))
    weekend = np.array([d.weekday() >= 5 for d in local_times(tr, "UTC")])
    # 4 weekend days at 1000 expected, 10 weekdays at 2000
    assert abs(int(weekend.sum()) - 4000) < 4 * math.sqrt(4000)
    assert abs(int((~weekend).sum()) - 20000) < 4 * math.sqrt(20000)
    assert (
        tr.source
        == "synthetic requests_per_day=2000,days=14,model=big|small,model_weights=0.8|0.2,weekend_factor=0.5,seed=3"
    )


def test_active_hours_follow_the_local_clock_across_a_dst_switch() -> None:
    tr = synthetic("requests_per_day=3000,timezone=Europe/Paris,start=2026-03-28,days=3,hours=1-4")
    local = local_times(tr, "Europe/Paris")
    assert all(1 <= d.hour < 4 for d in local)
    per_day = Counter(d.date().isoformat() for d in local)
    # 2026-03-29 02:00 CET becomes 03:00 CEST: that day has 2 of the 3 active clock hours
    expected = {"2026-03-28": 3000, "2026-03-29": 2000, "2026-03-30": 3000}
    assert set(per_day) == set(expected)
    for day, n in expected.items():
        assert abs(per_day[day] - n) < 4 * math.sqrt(n), (day, per_day[day])


def test_presets_parse_to_what_they_promise() -> None:
    s0 = parse_synthetic("seed000")
    assert (s0.requests_per_day, s0.weekdays, s0.hours, s0.timezone, s0.image_share, s0.image) == (
        800,
        "mon-fri",
        (9, 18),
        "Asia/Shanghai",
        0.3,
        (1280, 960),
    )
    s2 = parse_synthetic("seed002,days=30")
    assert (s2.requests_per_day, s2.weekdays, s2.hours, s2.shape, s2.weekend_factor, s2.days) == (
        230_000,
        "all",
        (0, 24),
        "diurnal",
        0.6,
        30,
    )
    assert s2.bursts_per_day > 0 and s2.text == "seed002,days=30,seed=0"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("seed999", "unknown preset 'seed999'"),
        ("seed000,speed=3", "unknown key 'speed'"),
        ("days=0", "days must be an integer >= 1, got '0'"),
        ("hours=18-9", "hours must be H1-H2 with 0 <= H1 < H2 <= 24, got '18-9'"),
        ("weekdays=sat", "weekdays must be all or mon-fri, got 'sat'"),
        ("timezone=Mars/Base", "timezone must be an IANA timezone"),
        ("shape=spiky", "shape must be flat or diurnal, got 'spiky'"),
        ("model=a|b,model_weights=1", "model_weights must be 2 weights"),
        ("image_share=1.5", "image_share must be a number >= 0 and <= 1, got '1.5'"),
        ("image=1024", "image must be WxH in pixels"),
        ("requests_per_day=-1", "requests_per_day must be a number > 0, got '-1'"),
        ("seed=x", "seed must be an integer >= 0, got 'x'"),
        ("start=monday", "start must be an ISO date"),
        ("days=3,", "empty item"),
    ],
)
def test_a_bad_spec_names_the_key(spec: str, message: str) -> None:
    with pytest.raises(TraceError, match=r"^synthetic: ") as err:
        synthetic(spec)
    assert message in str(err.value)


# -- the gateway's usage records ------------------------------------------------------------------------

T0 = MON


def record(rid: str, t: float, model: str, **fields: object) -> RequestRecord:
    r = RequestRecord(rid, "chat", model, t, 0.0, pool="p", replica="p-0", status=200, duration_s=1.0)
    for name, value in fields.items():
        setattr(r, name, value)
    return r


async def write_records(db_url: str, records: list[RequestRecord]) -> None:
    """Through the gateway's own accounting: Accounting.admit/submit, the usage writer, a flush."""
    config = cfg.load_text(
        f"gateway: {{database: '{db_url}'}}\n"
        "pools:\n  - {name: p, model: m, backend: {url: 'http://127.0.0.1:1'}, gpu: {usd_per_hour: 3.6}}\n"
    )
    acc = Accounting(config, SystemClock(), CollectorRegistry(), RecentRecords())
    await acc.start()
    try:
        for r in records:
            acc.admit(None, r)
            acc.submit(r)
        assert acc.writer is not None
        await acc.writer.flush()
    finally:
        await acc.stop()


async def test_usage_records_round_trip_into_a_trace(db_url: str) -> None:
    records = [  # written out of order: the trace is in start order
        # no text count: the gateway's count (500) less its image tokens; the backend's 510 is not used
        record("r2", T0 + 10, "qwen3-vl-8b", counted_prompt_tokens=500, prompt_image_tokens=200, prompt_tokens=510),
        record(
            "r1",
            T0,
            "qwen3-vl-2b",
            key_id="k1",
            prompt_tokens=1_060,
            completion_tokens=7,
            prompt_text_tokens=30,
            prompt_image_tokens=1_010,
            prompt_video_tokens=20,
        ),
        record("r4", T0 + 30, "auto", key_id="k2", status=499),  # nothing counted: zeros
        # only the backend's total, smaller than the image tokens: never negative
        record(
            "r3", T0 + 20, "qwen3-vl-2b", key_id="k1", prompt_tokens=50, prompt_image_tokens=80, completion_tokens=3
        ),
    ]
    await write_records(db_url, records)
    tr = from_db(db_url)
    assert columns(tr) == {
        "t": [T0, T0 + 10, T0 + 20, T0 + 30],
        "model": [0, 1, 0, 2],
        "prompt_tokens": [30, 300, 0, 0],
        "image_tokens": [1_030, 200, 80, 0],
        "output_tokens": [7, 0, 3, 0],
        "priority": [1, 1, 1, 1],
        "key": [1, 0, 1, 2],
    }
    assert tr.models == ("qwen3-vl-2b", "qwen3-vl-8b", "auto") and tr.keys == ("", "k1", "k2")
    assert "usage records in" in tr.source and "4 requests" in tr.source

    window = from_db(db_url, since=T0 + 10, until=T0 + 30)  # [since, until)
    assert window.t.tolist() == [T0 + 10, T0 + 20] and window.models == ("qwen3-vl-8b", "qwen3-vl-2b")
    with pytest.raises(TraceError, match=r"\[2026-01-06T00:00:00Z, \+inf\): no usage records in this window"):
        from_db(db_url, since=T0 + 86400)


def test_reading_a_missing_sqlite_file_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "none" / "usage.db"
    with pytest.raises(TraceError, match="no such database file"):
        from_db(f"sqlite:///{path}")
    assert not path.parent.exists()
