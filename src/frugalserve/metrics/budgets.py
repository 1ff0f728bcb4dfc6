"""Each key's budget and what is left of it, as the gate knows it at scrape time (auth on).

Spend is the gate's own view (``accounting/budgets.py``): the last database snapshot plus this gateway's
charges since, the same numbers that answer 429 ``budget_exceeded``. Only keys with a budget appear; the
label is the key's name (bounded by the keys an operator creates; two active keys of one name get
the first characters of their ids), never its secret.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from frugalserve.accounting import budgets
from frugalserve.accounting.auth import Gate
from frugalserve.metrics.collector import ScrapeCollector


class BudgetsCollector(ScrapeCollector):
    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    def families(self, collecting: bool) -> Iterator[Metric]:
        limit = GaugeMetricFamily(
            "frugalserve_budget_limit_usd",
            "A key's budget, by key name and period (day, month; UTC).",
            labels=["key", "period"],
        )
        remaining = GaugeMetricFamily(
            "frugalserve_budget_remaining_usd",
            "What is left of a key's budget (never below 0), by key name and period.",
            labels=["key", "period"],
        )
        left = GaugeMetricFamily(
            "frugalserve_budget_period_seconds_left", "Seconds until budgets of the period reset.", labels=["period"]
        )
        if collecting and self.gate.enabled:
            now = self.gate.clock.wall()
            spend = self.gate.spend
            active = [k for k in self.gate.keys.values() if k.revoked_at is None]
            names = Counter(k.name for k in active)
            for key in active:
                # names need not be unique; two series with the same labels would fail the whole scrape
                name = key.name if names[key.name] == 1 else f"{key.name}#{key.id[:8]}"
                if key.budget_usd_per_day is not None:
                    limit.add_metric([name, "day"], key.budget_usd_per_day)
                    remaining.add_metric([name, "day"], max(0.0, key.budget_usd_per_day - spend.today(key.id, now)))
                if key.budget_usd_per_month is not None:
                    limit.add_metric([name, "month"], key.budget_usd_per_month)
                    month = spend.this_month(key.id, now)
                    remaining.add_metric([name, "month"], max(0.0, key.budget_usd_per_month - month))
            left.add_metric(["day"], budgets.day_start(now) + budgets.DAY - now)
            left.add_metric(["month"], budgets.next_month_start(now) - now)
        yield from (limit, remaining, left)
