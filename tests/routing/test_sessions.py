"""Sessions keep their tier, only move up, and forget after ttl_s or beyond max_entries."""

from __future__ import annotations

from frugalserve.routing.sessions import SessionStore, next_tier

TIERS = ("S", "M", "L")


def test_a_session_only_moves_up() -> None:
    assert next_tier(None, "M", TIERS) == "M"
    assert next_tier("M", "S", TIERS) == "M"
    assert next_tier("M", "L", TIERS) == "L"
    assert next_tier("XL", "S", TIERS) == "S"  # a tier no longer configured is forgotten


def test_store_remembers_the_highest_tier_wanted() -> None:
    store = SessionStore(ttl_s=60, max_entries=10)
    assert store.tier("c", 0) is None
    assert store.remember("c", "M", 0, TIERS) == "M"
    assert store.remember("c", "S", 1, TIERS) == "M"
    assert store.tier("c", 2) == "M"
    assert store.remember(None, "L", 2, TIERS) is None and len(store) == 1


def test_a_silent_session_is_forgotten_after_ttl() -> None:
    store = SessionStore(ttl_s=60, max_entries=10)
    store.remember("c", "L", 0, TIERS)
    assert store.tier("c", 60) == "L"
    assert store.tier("c", 60.5) is None
    assert store.remember("c", "S", 61, TIERS) == "S"


def test_each_request_extends_the_session() -> None:
    store = SessionStore(ttl_s=60, max_entries=10)
    store.remember("c", "L", 0, TIERS)
    store.remember("c", "S", 50, TIERS)
    assert store.tier("c", 100) == "L"


def test_the_oldest_sessions_go_first_beyond_max_entries() -> None:
    store = SessionStore(ttl_s=1000, max_entries=2)
    store.remember("a", "L", 0, TIERS)
    store.remember("b", "L", 1, TIERS)
    store.remember("a", "L", 2, TIERS)  # a is now the most recent
    store.remember("c", "L", 3, TIERS)
    assert (store.tier("a", 4), store.tier("b", 4), store.tier("c", 4)) == ("L", None, "L")


def test_expired_sessions_leave_memory_as_new_ones_arrive() -> None:
    store = SessionStore(ttl_s=10, max_entries=1000)
    for i in range(4):
        store.remember(f"old{i}", "S", 0, TIERS)
    store.remember("new", "S", 100, TIERS)
    assert len(store) == 1
