"""Replica choice: fewest outstanding without a key; consistent hashing with bounded load with one."""

from __future__ import annotations

from collections import Counter

import pytest

from frugalserve.routing.replicas import HashRing, ReplicaLoad, choose_replica, load_bound

NAMES = ("r0", "r1", "r2")
RING = HashRing(NAMES, 64)


def loads(*outstanding: int) -> list[ReplicaLoad]:
    return [ReplicaLoad(f"r{i}", n) for i, n in enumerate(outstanding)]


def test_without_a_key_the_replica_with_fewest_outstanding_wins() -> None:
    assert choose_replica(loads(3, 1, 2)) == "r1"
    assert choose_replica(loads(2, 2, 2)) == "r0"  # a tie goes to the first name


def test_load_bound_is_load_factor_times_the_mean_counting_this_request_rounded_up() -> None:
    assert load_bound(loads(5, 0, 0), 1.25) == 3  # ceil(1.25 x 6 / 3) = ceil(2.5)
    assert load_bound(loads(0, 0, 0), 1.25) == 1  # ceil(1.25 x 1 / 3)


def test_the_same_key_lands_on_the_same_replica() -> None:
    first = {k: choose_replica(loads(0, 0, 0), f"key{k}", RING) for k in range(50)}
    again = {k: choose_replica(loads(0, 0, 0), f"key{k}", RING) for k in range(50)}
    assert first == again


def test_keys_spread_over_the_replicas() -> None:
    share = Counter(choose_replica(loads(0, 0, 0), f"key{k}", RING) for k in range(3000))
    assert set(share) == set(NAMES)
    assert all(0.2 < n / 3000 < 0.47 for n in share.values()), share


def test_a_replica_at_its_bound_passes_the_key_on_along_the_ring() -> None:
    key = next(f"key{k}" for k in range(100) if choose_replica(loads(0, 0, 0), f"key{k}", RING) == "r0")
    second = list(RING.walk(key))[1]
    assert choose_replica(loads(5, 0, 0), key, RING) == second  # r0 holds 5 >= bound 3
    assert choose_replica(loads(2, 1, 1), key, RING) == "r0"  # 2 < ceil(1.25 x 5 / 3) = 3
    assert choose_replica(loads(2, 0, 0), key, RING) == second  # 2 >= ceil(1.25 x 3 / 3) = 2


def test_a_hot_key_never_pushes_a_replica_past_the_bound() -> None:
    outstanding = dict.fromkeys(NAMES, 0)
    for _ in range(300):
        current = [ReplicaLoad(n, outstanding[n]) for n in NAMES]
        bound = load_bound(current, 1.25)
        name = choose_replica(current, "the same prefix", RING, 1.25)
        assert outstanding[name] < bound
        outstanding[name] += 1
    assert max(outstanding.values()) <= 125  # ceil(1.25 x 300 / 3)
    assert outstanding[next(RING.walk("the same prefix"))] == max(outstanding.values())


def test_removing_a_replica_moves_only_its_own_keys() -> None:
    smaller = HashRing(("r0", "r1"), 64)
    for k in range(500):
        before = choose_replica(loads(0, 0, 0), f"key{k}", RING)
        after = choose_replica(loads(0, 0), f"key{k}", smaller)
        if before != "r2":
            assert after == before


def test_ring_replicas_that_are_not_ready_are_skipped() -> None:
    for k in range(50):
        assert choose_replica(loads(0, 0), f"key{k}", RING) in ("r0", "r1")


def test_no_replica_is_an_error() -> None:
    with pytest.raises(ValueError):
        choose_replica([])
