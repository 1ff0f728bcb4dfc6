"""What each key has spent today and this month (UTC), as one gateway knows it.

Spend = the last snapshot read from the database + this gateway's own records since then that the
database did not yet hold. The snapshot is re-read every ``budget_refresh_s``; a local charge is dropped
once the writer confirms its row reached the database before the snapshot was read (by sequence number),
so nothing is counted twice and nothing is missed while a batch waits in memory or in the spool.

How consistent that is: within one gateway a finished request counts at once. Across gateways sharing
one database, another gateway's spend becomes visible after at most its ``flush_interval_s`` plus this
gateway's ``budget_refresh_s``. Requests already admitted when the budget runs out still finish.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass, field

DAY = 86400.0


def day_start(wall: float) -> float:
    return wall - wall % DAY


def month_start(wall: float) -> float:
    d = dt.datetime.fromtimestamp(wall, dt.UTC)
    return calendar.timegm((d.year, d.month, 1, 0, 0, 0))


def next_month_start(wall: float) -> float:
    d = dt.datetime.fromtimestamp(wall, dt.UTC)
    y, m = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return calendar.timegm((y, m, 1, 0, 0, 0))


@dataclass(slots=True)
class _Charge:
    seq: int
    wall: float
    usd: float


@dataclass
class Spend:
    snapshot_day: dict[str, float] = field(default_factory=dict)
    snapshot_month: dict[str, float] = field(default_factory=dict)
    snapshot_day_start: float = 0.0
    snapshot_month_start: float = 0.0
    local: dict[str, list[_Charge]] = field(default_factory=dict)

    def charge(self, key_id: str, usd: float, wall: float, seq: int) -> None:
        if usd > 0:
            self.local.setdefault(key_id, []).append(_Charge(seq, wall, usd))

    def replace_snapshot(
        self, day: dict[str, float], month: dict[str, float], day0: float, month0: float, confirmed_seq: int
    ) -> None:
        """A fresh read of the database; local charges it already contains are dropped."""
        self.snapshot_day, self.snapshot_month = day, month
        self.snapshot_day_start, self.snapshot_month_start = day0, month0
        for key_id in list(self.local):
            kept = [c for c in self.local[key_id] if c.seq > confirmed_seq]
            if kept:
                self.local[key_id] = kept
            else:
                del self.local[key_id]

    def today(self, key_id: str, now: float) -> float:
        start = day_start(now)
        base = self.snapshot_day.get(key_id, 0.0) if self.snapshot_day_start == start else 0.0
        return base + sum(c.usd for c in self.local.get(key_id, ()) if c.wall >= start)

    def this_month(self, key_id: str, now: float) -> float:
        start = month_start(now)
        base = self.snapshot_month.get(key_id, 0.0) if self.snapshot_month_start == start else 0.0
        return base + sum(c.usd for c in self.local.get(key_id, ()) if c.wall >= start)
