"""Sessions: a conversation keeps its tier and only ever moves up.

:func:`next_tier` is the rule; :class:`SessionStore` is a small bounded memory of it (time-to-live and a
size cap, oldest forgotten first) owned by whoever calls ``decide``. The store takes the time as an
argument, so the planner can replay it on a virtual clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


def next_tier(previous: str | None, chosen: str, tiers: Sequence[str]) -> str:
    """The tier a session remembers after a request that wanted ``chosen``: the higher of the two."""
    if previous is None or previous not in tiers:
        return chosen
    return chosen if tiers.index(chosen) > tiers.index(previous) else previous


class SessionStore:
    """Session key -> (tier, last seen). Not thread-safe: one event loop owns it."""

    __slots__ = ("_entries", "max_entries", "ttl_s")

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def tier(self, key: str | None, now: float) -> str | None:
        """The session's tier, or None when it is unknown or was silent longer than ``ttl_s``."""
        if key is None:
            return None
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now - entry[1] > self.ttl_s:
            del self._entries[key]
            return None
        return entry[0]

    def remember(self, key: str | None, wanted: str, now: float, tiers: Sequence[str]) -> str | None:
        """Record a request that wanted ``wanted`` (``Route.wanted``); returns the session's tier now."""
        if key is None:
            return None
        tier = next_tier(self.tier(key, now), wanted, tiers)
        self._entries[key] = (tier, now)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        self._expire_oldest(now)
        return tier

    def _expire_oldest(self, now: float, at_most: int = 4) -> None:
        """Drop a few expired entries from the old end, so memory follows traffic without a sweep task."""
        for _ in range(at_most):
            if not self._entries:
                return
            key, (_, seen) = next(iter(self._entries.items()))
            if now - seen <= self.ttl_s:
                return
            del self._entries[key]
