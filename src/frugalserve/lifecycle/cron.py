"""Prewarm schedules: cron expressions evaluated in a timezone, on wall-clock seconds (pure functions)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter


class CronError(ValueError):
    pass


def check_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown timezone {name!r} (expected an IANA name like 'Europe/Paris')") from None


def check_schedule(expr: str) -> None:
    if len(expr.split()) != 5 or not croniter.is_valid(expr):
        raise CronError(f"not a cron expression: {expr!r} (expected 'minute hour day month weekday')")


def next_fire(expr: str, timezone: str, after_wall: float) -> float:
    """The first time (epoch seconds) strictly after ``after_wall`` that ``expr`` fires in ``timezone``."""
    start = datetime.fromtimestamp(after_wall, check_timezone(timezone))
    return float(croniter(expr, start).get_next(float))


def next_prewarm(schedules: Iterable[str], timezone: str, after_wall: float) -> float | None:
    """The earliest next firing of any schedule, or None when there are none."""
    times = [next_fire(s, timezone, after_wall) for s in schedules]
    return min(times) if times else None
