"""Arrivals per bucket are counted by the database, on SQLite and PostgreSQL alike, with floor semantics."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from frugalserve.accounting import store
from frugalserve.accounting.arrivals import Arrivals, arrival_counts

B = 900.0  # bucket_s
K = 1_900_000  # K * B = 1_710_000_000 s: September 2024, an exact float


def rec(t: float, pool: str = "small", status: int = 200, duration_s: float | None = None) -> dict[str, Any]:
    return {
        "request_id": f"r-{t}-{pool}",
        "time": t,
        "endpoint": "chat",
        "model": "qwen",
        "pool": pool,
        "status": status,
        "duration_s": duration_s,
    }


def test_records_are_counted_in_the_bucket_their_start_falls_in(engine: sa.Engine) -> None:
    store.insert_batch(
        engine,
        [
            rec(K * B - 0.4, duration_s=2.0),  # just before a boundary: the bucket before (a rounding cast says K)
            rec(K * B - 450.0),  # mid-bucket: .5 exactly (rounding half away from zero would say K)
            rec(K * B, duration_s=4.0),  # exactly on a boundary: that bucket
            rec(K * B + 899.6, status=500, duration_s=9.0),  # a failed request is an arrival too
            rec((K + 2) * B + 1, status=429),
        ],
        [],
    )
    got = arrival_counts(engine, "small", since=(K - 10) * B, until=(K + 10) * B, bucket_s=B)
    assert got == Arrivals({K - 1: 2, K: 2, K + 2: 1}, mean_duration_s=5.0, first_record=K * B - 450.0)


def test_only_the_pool_and_the_half_open_range_are_counted_but_first_record_looks_at_all_time(
    engine: sa.Engine,
) -> None:
    since, until = K * B, (K + 4) * B
    store.insert_batch(
        engine,
        [
            rec(since - 7 * 86400, duration_s=100.0),  # a week before the range: only first_record sees it
            rec(since - 0.001, duration_s=100.0),
            rec(since, duration_s=1.0),
            rec(until - 0.001),
            rec(until, duration_s=100.0),  # the range is [since, until)
            rec(since + 10, pool="large", duration_s=100.0),
            rec(since - 30 * 86400, pool="large"),
        ],
        [],
    )
    got = arrival_counts(engine, "small", since, until, B)
    assert got == Arrivals({K: 1, K + 3: 1}, mean_duration_s=1.0, first_record=since - 7 * 86400)


def test_buckets_of_an_hour_and_of_a_fraction_of_a_second(engine: sa.Engine) -> None:
    h = 3600.0
    k = 475_000  # 1_710_000_000 / 3600
    store.insert_batch(engine, [rec(k * h - 0.4), rec(k * h + 3599.5), rec(k * h + 3600.25)], [])
    assert arrival_counts(engine, "small", 0.0, 2e9, h).counts == {k - 1: 1, k: 1, k + 1: 1}
    # 0.5 s buckets, indexes past 2**31 (a 64-bit integer): 1_710_003_600.25 / 0.5 = 3_420_007_200.5
    assert arrival_counts(engine, "small", 0.0, 2e9, 0.5).counts == {
        3_419_999_999: 1,
        3_420_007_199: 1,
        3_420_007_200: 1,
    }


def test_a_pool_without_records_has_no_counts_no_duration_and_no_first_record(engine: sa.Engine) -> None:
    store.insert_batch(engine, [rec(K * B, pool="large", duration_s=3.0)], [])
    assert arrival_counts(engine, "small", 0.0, 2e9, B) == Arrivals({}, 0.0, None)
