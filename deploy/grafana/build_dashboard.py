"""Writes dashboards/frugalserve.json, the Grafana dashboard of frugalserve's metrics.

The dashboard is generated rather than edited by hand: each panel below is one line of intent (title,
queries, unit), and the few hundred lines of Grafana JSON around it (ids, grid positions, datasource
references) are derived, so they cannot drift apart. The committed JSON is what users import;
tests/deploy/test_dashboard.py fails when it differs from what this script writes.

    python deploy/grafana/build_dashboard.py          # rewrite the JSON
    python deploy/grafana/build_dashboard.py --check  # exit 1 when the committed JSON is stale

Standard library only. Schema: Grafana 10/11 (schemaVersion 39).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

OUT = Path(__file__).parent / "dashboards" / "frugalserve.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
P = 'pool=~"$pool"'  # the pool variable's selector; "All" is ".*"
RATE = "$__rate_interval"
WIDTH = 24  # Grafana's grid


@dataclass(frozen=True)
class Q:
    """One PromQL query of a panel and its legend."""

    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Q, ...]
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    width: int = 8
    height: int = 8
    description: str = ""
    stack: bool = False
    time_from: str | None = None  # e.g. "now/d": the panel shows today so far whatever the dashboard's range
    overrides: tuple[dict[str, object], ...] = field(default_factory=tuple)


def quantiles(metric: str, by: str, selector: str = P) -> tuple[Q, ...]:
    """P50 and P95 of a histogram, the buckets of all gateways added before the quantile."""
    return tuple(
        Q(
            f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{selector}}}[{RATE}])))",
            f"p{round(q * 100)} " + " ".join("{{" + label + "}}" for label in by.split(", ")),
        )
        for q in (0.5, 0.95)
    )


def dashed(name_regex: str) -> dict[str, object]:
    """A series drawn as a dashed line (objectives, bands, limits)."""
    return {
        "matcher": {"id": "byRegexp", "options": name_regex},
        "properties": [
            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
            {"id": "custom.fillOpacity", "value": 0},
        ],
    }


ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    (
        "Cost and savings",
        (
            Panel(
                "Dollars per hour now",
                (Q(f"sum(pool:frugalserve_cost_burn_usd_per_hour:sum{{{P}}})", "USD/h", instant=True),),
                unit="currencyUSD",
                kind="stat",
                width=6,
                height=5,
                description="What the selected pools cost per hour at this moment (replica states and load).",
            ),
            Panel(
                "Spent today (UTC)",
                (Q(f"sum(increase(frugalserve_cost_usd_total{{{P}}}[$__range]))", "USD", instant=True),),
                unit="currencyUSD",
                kind="stat",
                width=6,
                height=5,
                time_from="now/d",
                description="Dollars billed since midnight UTC (the live view; `frugalserve report` is the bill).",
            ),
            Panel(
                "Saved vs always-on (time range)",
                (Q(f"sum(increase(frugalserve_savings_usd_total{{{P}}}[$__range]))", "USD", instant=True),),
                unit="currencyUSD",
                kind="stat",
                width=6,
                height=5,
                description="Always-on cost minus billed cost over the dashboard's time range.",
            ),
            Panel(
                "Saved share (time range)",
                (
                    Q(
                        f"sum(increase(frugalserve_savings_usd_total{{{P}}}[$__range]))"
                        f" / sum(increase(frugalserve_cost_always_on_usd_total{{{P}}}[$__range]))",
                        "saved",
                        instant=True,
                    ),
                ),
                unit="percentunit",
                kind="stat",
                width=6,
                height=5,
            ),
            Panel(
                "Cost per hour by kind",
                (
                    Q(f"pool_kind:frugalserve_cost_usd_per_hour:rate5m{{{P}}}", "{{pool}} {{kind}}"),
                    Q(f"pool:frugalserve_cost_burn_usd_per_hour:sum{{{P}}}", "{{pool}} burn now"),
                ),
                unit="currencyUSD",
                width=12,
                description="Billed dollars per hour (5-minute rate) split into busy, idle and cold start; "
                "the dashed line is the instantaneous burn.",
                overrides=(dashed(".* burn now"),),
            ),
            Panel(
                "Savings per hour",
                (
                    Q(f"pool:frugalserve_savings_usd_per_hour:rate5m{{{P}}}", "{{pool}} saved"),
                    Q(
                        f"sum by (pool) (rate(frugalserve_cost_always_on_usd_total{{{P}}}[{RATE}])) * 3600",
                        "{{pool}} always-on",
                    ),
                ),
                unit="currencyUSD",
                width=12,
                overrides=(dashed(".* always-on"),),
            ),
        ),
    ),
    (
        "Latency",
        (
            Panel(
                "Time to first token by tier",
                (
                    *quantiles("frugalserve_time_to_first_token_seconds", "tier"),
                    Q("max by (tier) (frugalserve_tier_ttft_objective_seconds)", "objective {{tier}}"),
                ),
                unit="s",
                description="P50 and P95 from the histogram; the dashed line is the tier's objective (slo_ms).",
                overrides=(dashed("objective .*"),),
            ),
            Panel(
                "Request duration by tier",
                quantiles("frugalserve_request_duration_seconds", "tier"),
                unit="s",
            ),
            Panel(
                "Inter-token latency by tier",
                quantiles("frugalserve_inter_token_latency_seconds", "tier"),
                unit="s",
            ),
            Panel(
                "Requests per second by status",
                (Q(f"sum by (pool, status) (rate(frugalserve_requests_total{{{P}}}[{RATE}]))", "{{pool}} {{status}}"),),
                unit="reqps",
                width=12,
            ),
            Panel(
                "Upstream errors and client disconnects",
                (
                    Q(
                        f"sum by (pool, kind) (rate(frugalserve_upstream_errors_total{{{P}}}[{RATE}]))",
                        "{{pool}} {{kind}}",
                    ),
                    Q(
                        f"sum by (pool) (rate(frugalserve_client_disconnects_total{{{P}}}[{RATE}]))",
                        "{{pool}} client left",
                    ),
                ),
                unit="reqps",
                width=12,
            ),
        ),
    ),
    (
        "Utilisation",
        (
            Panel(
                "Pool utilisation vs band",
                (
                    Q(f"frugalserve_pool_utilization_ratio{{{P}}}", "{{pool}}"),
                    Q(f"frugalserve_pool_utilization_target_ratio{{{P}}}", "{{pool}} {{bound}}"),
                ),
                unit="percentunit",
                description="Requests in flight / (capacity x ready replicas); dashed: the tier's band.",
                overrides=(dashed(".* (low|high)"),),
            ),
            Panel(
                "Requests in flight and held",
                (
                    Q(f"sum by (pool) (frugalserve_requests_in_flight{{{P}}})", "{{pool}} in flight"),
                    Q(f"sum by (pool) (frugalserve_requests_held{{{P}}})", "{{pool}} held"),
                ),
            ),
            Panel(
                "GPU duty cycle and VRAM",
                (
                    Q(f"gpu_pool:frugalserve_gpu_utilization_ratio:avg5m{{{P}}}", "gpu {{gpu}} ({{pool}}) duty"),
                    Q("gpu:frugalserve_gpu_memory_used:ratio", "gpu {{gpu}} VRAM"),
                ),
                unit="percentunit",
                description="NVML, where a GPU is present. Alert FrugalserveGpuMemoryHigh fires above 90% VRAM.",
            ),
            Panel(
                "Upstream requests running and waiting",
                (
                    Q(f"sum by (pool) (frugalserve_upstream_requests_running{{{P}}})", "{{pool}} running"),
                    Q(f"sum by (pool) (frugalserve_upstream_requests_waiting{{{P}}})", "{{pool}} waiting"),
                ),
            ),
            Panel(
                "Upstream KV cache and cache hits",
                (
                    Q(f"frugalserve_upstream_kv_cache_usage_ratio{{{P}}}", "{{replica}} KV cache"),
                    Q(
                        f"sum by (pool, cache) (rate(frugalserve_upstream_cache_hits_total{{{P}}}[{RATE}]))"
                        f" / sum by (pool, cache) (rate(frugalserve_upstream_cache_queries_total{{{P}}}[{RATE}]))",
                        "{{pool}} {{cache}} hit ratio",
                    ),
                ),
                unit="percentunit",
            ),
            Panel(
                "GPU power",
                (Q("frugalserve_gpu_power_watts", "gpu {{gpu}}"),),
                unit="watt",
            ),
        ),
    ),
    (
        "Replicas and cold starts",
        (
            Panel(
                "Replicas by state",
                (Q(f"sum by (pool, state) (frugalserve_replicas{{{P}}})", "{{pool}} {{state}}"),),
                stack=True,
            ),
            Panel(
                "Starts and wakes by level",
                (
                    Q(
                        f"sum by (pool, kind, level) (increase(frugalserve_cold_starts_total{{{P}}}[{RATE}]))",
                        "{{pool}} {{kind}} L{{level}}",
                    ),
                ),
                description="Level 0: a start from stopped; 1 and 2: a wake from that sleep level.",
            ),
            Panel(
                "Start and wake time (P95)",
                (
                    Q(
                        f"histogram_quantile(0.95, sum by (kind, level, le) "
                        f"(rate(frugalserve_cold_start_seconds_bucket{{{P}}}[{RATE}])))",
                        "{{kind}} L{{level}}",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Replica transitions",
                (
                    Q(
                        f"sum by (pool, to, reason) (increase(frugalserve_replica_transitions_total{{{P}}}[{RATE}]))",
                        "{{pool}} to {{to}} ({{reason}})",
                    ),
                ),
                width=12,
            ),
            Panel(
                "Held requests refused",
                (
                    Q(
                        f"sum by (pool, reason) (increase(frugalserve_pool_rejected_total{{{P}}}[{RATE}]))",
                        "{{pool}} {{reason}}",
                    ),
                ),
                width=12,
            ),
        ),
    ),
    (
        "Tokens",
        (
            Panel(
                "Tokens per second by kind",
                (Q(f"pool_kind:frugalserve_tokens:rate5m{{{P}}}", "{{pool}} {{kind}}"),),
                unit="short",
                stack=True,
                description="Prompt tokens by kind (text, image, video; uncounted for tokenizer: none) "
                "and generated tokens, 5-minute rate.",
            ),
            Panel(
                "Image tokens saved per second",
                (
                    Q(f"pool:frugalserve_image_tokens_saved:rate5m{{{P}}}", "{{pool}} saved"),
                    Q(
                        f'sum by (pool) (rate(frugalserve_prompt_tokens_total{{{P}, kind="image"}}[{RATE}]))',
                        "{{pool}} sent",
                    ),
                ),
                description="Tokens avoided by resizing images to the budget and dropping duplicates.",
            ),
            Panel(
                "Backend tokens per second",
                (
                    Q(
                        f"sum by (pool) (rate(frugalserve_upstream_prompt_tokens_total{{{P}}}[{RATE}]))",
                        "{{pool}} prompt",
                    ),
                    Q(
                        f"sum by (pool) (rate(frugalserve_upstream_generation_tokens_total{{{P}}}[{RATE}]))",
                        "{{pool}} generated",
                    ),
                ),
                description="As the backends count them (their own /metrics).",
            ),
            Panel(
                "max_tokens clamped",
                (Q(f"sum by (pool) (increase(frugalserve_max_tokens_clamped_total{{{P}}}[{RATE}]))", "{{pool}}"),),
                width=12,
            ),
            Panel(
                "Token count anomalies",
                (Q(f"sum by (pool) (increase(frugalserve_token_anomalies_total{{{P}}}[{RATE}]))", "{{pool}}"),),
                width=12,
            ),
        ),
    ),
    (
        "Routing",
        (
            Panel(
                "Routing decisions by reason",
                (
                    Q(
                        f"sum by (tier, reason, action) (rate(frugalserve_routing_decisions_total[{RATE}]))",
                        "{{tier}} {{action}} ({{reason}})",
                    ),
                ),
                unit="reqps",
                width=24,
                stack=True,
                description='Model "auto" only: which tier served and why (not filtered by pool).',
            ),
        ),
    ),
    (
        "Budgets",
        (
            Panel(
                "Daily budget remaining by key",
                (
                    Q('frugalserve_budget_remaining_usd{period="day"}', "{{key}} remaining"),
                    Q('frugalserve_budget_limit_usd{period="day"}', "{{key}} limit"),
                ),
                unit="currencyUSD",
                width=12,
                overrides=(dashed(".* limit"),),
            ),
            Panel(
                "Monthly budget remaining by key",
                (Q('frugalserve_budget_remaining_usd{period="month"}', "{{key}}"),),
                unit="currencyUSD",
                width=6,
            ),
            Panel(
                "Until the daily reset",
                (Q('max(frugalserve_budget_period_seconds_left{period="day"})', "day", instant=True),),
                unit="s",
                kind="stat",
                width=6,
            ),
        ),
    ),
    (
        "Accounting",
        (
            Panel(
                "Usage records",
                (
                    Q(f"sum(rate(frugalserve_usage_records_written_total[{RATE}]))", "written"),
                    Q(f"sum(rate(frugalserve_usage_records_spooled_total[{RATE}]))", "spooled"),
                    Q(f"sum(rate(frugalserve_usage_records_dead_lettered_total[{RATE}]))", "dead-lettered"),
                ),
                unit="ops",
                width=12,
                description="Spooled: the database was away (replayed later). Dead-lettered: refused; "
                "alert FrugalserveUsageRecordsDeadLettered.",
            ),
            Panel(
                "Records waiting to be written",
                (Q("sum(frugalserve_usage_queue)", "queue"),),
                width=12,
            ),
        ),
    ),
)


def _panel(panel: Panel, pid: int, x: int, y: int) -> dict[str, object]:
    targets = [
        {
            "datasource": DATASOURCE,
            "refId": chr(ord("A") + i),
            "expr": q.expr,
            "legendFormat": q.legend,
            "range": not q.instant,
            "instant": q.instant,
        }
        for i, q in enumerate(panel.queries)
    ]
    custom: dict[str, object] = {}
    if panel.kind == "timeseries":
        custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
        if panel.stack:
            custom["stacking"] = {"mode": "normal", "group": "A"}
    out: dict[str, object] = {
        "id": pid,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": panel.unit, "custom": custom}, "overrides": list(panel.overrides)},
        "options": (
            {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}, "tooltip": {"mode": "multi"}}
            if panel.kind == "timeseries"
            else {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "colorMode": "value"}
        ),
    }
    if panel.time_from:
        out["timeFrom"] = panel.time_from
    return out


def _variables() -> list[dict[str, object]]:
    return [
        {
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
        },
        {
            "name": "pool",
            "label": "Pool",
            "type": "query",
            "datasource": DATASOURCE,
            "query": {"query": "label_values(frugalserve_pool_info, pool)", "refId": "pool"},
            "definition": "label_values(frugalserve_pool_info, pool)",
            "refresh": 2,  # on time range change: pools come and go with config reloads
            "multi": True,
            "includeAll": True,
            "allValue": ".*",
            "current": {"text": "All", "value": "$__all"},
            "sort": 1,
            "hide": 0,
        },
    ]


def build() -> dict[str, object]:
    panels: list[dict[str, object]] = []
    pid, y = 1, 0
    for title, row in ROWS:
        panels.append(
            {
                "id": pid,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"x": 0, "y": y, "w": WIDTH, "h": 1},
                "panels": [],
            }
        )
        pid, y, x, row_h = pid + 1, y + 1, 0, 0
        for panel in row:
            if x + panel.width > WIDTH:
                x, y, row_h = 0, y + row_h, 0
            panels.append(_panel(panel, pid, x, y))
            pid, x, row_h = pid + 1, x + panel.width, max(row_h, panel.height)
        y += row_h
    return {
        "uid": "frugalserve",
        "title": "frugalserve",
        "description": "Cost, savings, latency, utilisation, replicas, tokens, routing, budgets and accounting "
        "of frugalserve gateways (docs/observability.md). Generated by deploy/grafana/build_dashboard.py.",
        "tags": ["frugalserve"],
        "timezone": "utc",  # budgets and "today" are UTC days
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "schemaVersion": 39,
        "version": 1,
        "templating": {"list": _variables()},
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed JSON differs")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is stale: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
