"""What the deploy tests read from our files: the metric catalogue, the rules, the dashboard's queries.

Parsing is deliberately small: a PromQL expression's metric names are the identifiers left once string
literals, label matchers, range selectors and grouping label lists are removed, minus function calls and
keywords. It is enough for our own expressions, which is all it is used on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RECORDING = PROMETHEUS / "rules" / "recording.yml"
ALERTS = PROMETHEUS / "rules" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "frugalserve.json"
CATALOGUE = ROOT / "docs" / "observability.md"

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without", "on", "ignoring"}
# Grafana's variables, replaced by what Grafana would send for "All" pools and a 1-minute step.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$pool": ".*", "${datasource}": "prometheus"}


def catalogue() -> dict[str, str]:
    """Metric name -> type, from the tables of docs/observability.md."""
    found = {}
    for line in CATALOGUE.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and re.fullmatch(r"`frugalserve_[a-z0-9_]+`", cells[0]):
            found[cells[0].strip("`")] = cells[1]
    return found


def rules(path: Path) -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"] for rule in group["rules"]]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules(RECORDING)}


@dataclass(frozen=True)
class DashboardQuery:
    panel: str
    ref: str
    expr: str  # as written, with Grafana's variables

    @property
    def promql(self) -> str:
        """The expression as Grafana sends it (variables substituted)."""
        out = self.expr
        for var, value in GRAFANA_VARIABLES.items():
            out = out.replace(var, value)
        return out


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def dashboard_queries() -> list[DashboardQuery]:
    return [DashboardQuery(p["title"], t["refId"], t["expr"]) for p in panels() for t in p["targets"]]


def metric_names(expr: str) -> set[str]:
    """The metric (and recording rule) names an expression selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values, label_replace args)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        followed_by_call = text[m.end() :].lstrip().startswith("(")
        if not followed_by_call and m.group() not in KEYWORDS:
            names.add(m.group())
    return names


def unknown_names(expr: str, known: dict[str, str], recorded: set[str]) -> set[str]:
    """Names in ``expr`` that are neither in the catalogue (histogram series included) nor recorded."""
    unknown = set()
    for name in metric_names(expr):
        if ":" in name:
            ok = name in recorded
        else:
            base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), None)
            ok = name in known or (base is not None and known.get(base) == "histogram")
        if not ok:
            unknown.add(name)
    return unknown
