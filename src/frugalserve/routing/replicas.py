"""Which replica of a pool takes a request: pure functions over the replicas' outstanding requests.

Without an affinity key: the replica with the fewest outstanding requests. With one (the request's
first image, or its conversation): consistent hashing with bounded load, so a repeated image or prefix
lands where the engine's vision and prefix caches already hold it, yet no replica takes more than
``load_factor`` times the mean load. Walking the ring from the key's point, the first replica below the
bound takes the request; when replicas come or go only the keys of their ring points move.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReplicaLoad:
    name: str
    outstanding: int  # requests in flight on it


def _point(data: str) -> int:
    return int.from_bytes(hashlib.blake2b(data.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


class HashRing:
    """Points of each replica name on a 64-bit ring; immutable, built once per set of replicas."""

    __slots__ = ("_names", "_owners", "_points")

    def __init__(self, names: Sequence[str], virtual_nodes: int = 64) -> None:
        pairs = sorted((_point(f"{name}#{i}"), name) for name in set(names) for i in range(virtual_nodes))
        self._points = [p for p, _ in pairs]
        self._owners = [n for _, n in pairs]
        self._names = frozenset(names)

    @property
    def names(self) -> frozenset[str]:
        return self._names

    def walk(self, key: str) -> Iterator[str]:
        """Each replica once, in ring order from the key's point."""
        n = len(self._points)
        if not n:
            return
        start = bisect.bisect(self._points, _point(key))
        seen: set[str] = set()
        for i in range(n):
            owner = self._owners[(start + i) % n]
            if owner not in seen:
                seen.add(owner)
                yield owner
                if len(seen) == len(self._names):
                    return


def load_bound(loads: Sequence[ReplicaLoad], load_factor: float) -> int:
    """The most outstanding requests a replica may hold and still take an affine one: the mean load
    counting this request, times ``load_factor``, rounded up."""
    total = sum(r.outstanding for r in loads) + 1
    return math.ceil(load_factor * total / len(loads))


def choose_replica(
    loads: Sequence[ReplicaLoad], key: str | None = None, ring: HashRing | None = None, load_factor: float = 1.25
) -> str:
    """The replica for one request among ``loads`` (the ready ones). ``ring`` may list more replicas
    than are ready; those not in ``loads`` are skipped."""
    if not loads:
        raise ValueError("no replica to choose from")
    if key is not None and ring is not None and len(loads) > 1:
        by_name = {r.name: r.outstanding for r in loads}
        bound = load_bound(loads, load_factor)
        for name in ring.walk(key):
            outstanding = by_name.get(name)
            if outstanding is not None and outstanding < bound:
                return name
    return min(loads, key=lambda r: (r.outstanding, r.name)).name
