"""What one simulated policy did, in the numbers a user decides with; tables, CSV, JSON and a plot.

Definitions (docs/cost-planning.md has them with a worked example):

- ``cost_usd``: the GPU bill by the accounting's rules (on demand: every replica-second starting, ready or
  sleeping; reserved: the whole window), plus each pool's minimum charge per start where it has one.
- ``always_on_cost_usd``: every managed pool's ``replicas.max`` replicas billed from the first request to the
  last (or ``--until``): what serving the same peak without ever stopping costs. It does not depend on the
  policy. (``cost_usd`` also counts the seconds the last requests run past the last arrival.)
- ``ideal_cost_usd``: only the time replicas were running requests (busy time), as if starts were free
  and instant: no policy can cost less.
- latencies: ``ttft`` is the time to first token (wait for a replica to start or wake, queue in the
  replica, prefill); ``latency`` is to the last token. Percentiles are over served requests.
- an objective (``--objective p95_ttft_s=N``) is met when that percentile, over every request with a
  refused one counted as never answered, is at most N; ``objective_violations`` counts requests slower
  than N or refused.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from frugalserve.config import ConfigError
from frugalserve.sim.core import PoolStats, Simulation
from frugalserve.sim.policies import Policy

OBJECTIVE_KEYS = tuple(f"p{q}_{what}_s" for what in ("ttft", "latency") for q in (50, 95, 99))


@dataclass(frozen=True, slots=True)
class Objective:
    key: str  # one of OBJECTIVE_KEYS
    seconds: float

    @property
    def quantile(self) -> float:
        return int(self.key[1:3]) / 100

    @property
    def measure(self) -> str:
        return "ttft" if "_ttft_" in self.key else "latency"

    def __str__(self) -> str:
        return f"{self.key}<={self.seconds:g}"


def parse_objective(text: str) -> Objective:
    key, eq, value = text.partition("=")
    key = key.strip()
    if not eq or key not in OBJECTIVE_KEYS:
        raise ConfigError("--objective", f"expected one of {', '.join(OBJECTIVE_KEYS)}=SECONDS, got {text!r}")
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError("--objective", f"{key} must be a number of seconds, got {value!r}") from None
    if not seconds > 0:
        raise ConfigError("--objective", f"{key} must be > 0, got {value!r}")
    return Objective(key, seconds)


@dataclass(frozen=True, slots=True)
class PoolResult:
    pool: str
    requests: int
    served: int
    refused: int
    cost_usd: float
    always_on_cost_usd: float
    ideal_cost_usd: float
    gpu_hours: float
    cold_starts: int
    starts: int
    wakes: int
    sleeps: int
    stops: int
    utilisation: float
    peak_replicas: int
    prewarms: dict[str, int]
    scale_events: dict[str, int]


@dataclass(frozen=True, slots=True)
class PolicyResult:
    policy: str
    settings: dict[str, Any]
    requests: int
    served: int
    refused: int
    refused_by_reason: dict[str, int]
    cost_usd: float
    always_on_cost_usd: float
    ideal_cost_usd: float
    gpu_hours: float
    cold_starts: int
    utilisation: float  # busy / billed
    p50_latency_s: float
    p95_latency_s: float
    p99_latency_s: float
    p50_ttft_s: float
    p95_ttft_s: float
    p99_ttft_s: float
    waited_requests: int  # held while a replica started or woke
    mean_cold_wait_s: float  # over the requests that waited
    p95_cold_wait_s: float  # over the requests that waited
    objective: str | None
    objective_value_s: float | None  # the objective's percentile over every request (refused = never)
    meets_objective: bool | None
    objective_violations: int
    usd_per_million_tokens: float
    savings_vs_always_on: float  # fraction of the always-on cost saved
    gap_to_ideal_usd: float
    window_s: float
    pools: list[PoolResult] = field(default_factory=list)


def _pool_result(s: PoolStats) -> PoolResult:
    refused = sum(s.refused.values())
    return PoolResult(
        pool=s.pool,
        requests=s.requests,
        served=s.served,
        refused=refused,
        cost_usd=s.usd,
        always_on_cost_usd=s.always_on_usd,
        ideal_cost_usd=s.ideal_usd,
        gpu_hours=s.billed_s * s.gpus / 3600,
        cold_starts=s.cold_starts,
        starts=s.starts,
        wakes=s.wakes,
        sleeps=s.sleeps,
        stops=s.stops,
        utilisation=s.busy_s / s.billed_s if s.billed_s > 0 else 0.0,
        peak_replicas=s.peak_replicas,
        prewarms=dict(s.prewarms),
        scale_events=dict(s.scale_events),
    )


def summarize(sim: Simulation, policy: Policy, objective: Objective | None) -> PolicyResult:
    pools = [_pool_result(s) for s in sim.pool_stats()]
    refused_by: dict[str, int] = {}
    for s in sim.pools.values():
        for reason, n in s.stats.refused.items():
            refused_by[reason] = refused_by.get(reason, 0) + n
    for reason, n in sim.unrouted.items():
        key = reason if reason.startswith("auto:") else "model_not_found"
        refused_by[key] = refused_by.get(key, 0) + n
    waits = np.asarray(sim.cold_wait, dtype=np.float64)
    waits = waits[waits > 0]
    ttft = np.asarray(sim.ttft, dtype=np.float64)
    latency = np.asarray(sim.latency, dtype=np.float64)
    served = len(ttft)
    refused = sum(refused_by.values())
    requests = len(sim.trace)

    def pct(arr: np.ndarray[Any, Any], q: float) -> float:
        return float(np.percentile(arr, q * 100)) if len(arr) else 0.0

    value = meets = None
    violations = 0
    if objective is not None:
        arr = ttft if objective.measure == "ttft" else latency
        violations = int(np.count_nonzero(arr > objective.seconds)) + refused
        # every request, a refused one as never answered: the percentile is infinite once they pass 1 - q
        if requests and refused > (1 - objective.quantile) * requests:
            value = math.inf
        elif requests:
            padded = np.concatenate([arr, np.full(refused, np.inf)]) if refused else arr
            value = float(np.percentile(padded, objective.quantile * 100, method="higher"))
        else:
            value = 0.0
        meets = value <= objective.seconds
    cost = sum(p.cost_usd for p in pools)
    always = sum(p.always_on_cost_usd for p in pools)
    ideal = sum(p.ideal_cost_usd for p in pools)
    billed = sum(s.stats.billed_s for s in sim.pools.values())
    busy = sum(s.stats.busy_s for s in sim.pools.values())
    return PolicyResult(
        policy=policy.name,
        settings={s.key: s.value for s in policy.settings},
        requests=requests,
        served=served,
        refused=refused,
        refused_by_reason=refused_by,
        cost_usd=cost,
        always_on_cost_usd=always,
        ideal_cost_usd=ideal,
        gpu_hours=sum(p.gpu_hours for p in pools),
        cold_starts=sum(p.cold_starts for p in pools),
        utilisation=busy / billed if billed > 0 else 0.0,
        p50_latency_s=pct(latency, 0.5),
        p95_latency_s=pct(latency, 0.95),
        p99_latency_s=pct(latency, 0.99),
        p50_ttft_s=pct(ttft, 0.5),
        p95_ttft_s=pct(ttft, 0.95),
        p99_ttft_s=pct(ttft, 0.99),
        waited_requests=len(waits),
        mean_cold_wait_s=float(waits.mean()) if len(waits) else 0.0,
        p95_cold_wait_s=pct(waits, 0.95),
        objective=str(objective) if objective is not None else None,
        objective_value_s=value,
        meets_objective=meets,
        objective_violations=violations,
        usd_per_million_tokens=cost / sim.tokens * 1e6 if sim.tokens else 0.0,
        savings_vs_always_on=1 - cost / always if always > 0 else 0.0,
        gap_to_ideal_usd=cost - ideal,
        window_s=sim.window_end - sim.start,
        pools=pools,
    )


# -- choosing --------------------------------------------------------------------------------------------------


def cheapest(results: Sequence[PolicyResult]) -> PolicyResult | None:
    """The cheapest policy that meets the objective (the cheapest overall when there is none)."""
    meeting = [r for r in results if r.meets_objective is not False]
    return min(meeting, key=lambda r: (r.cost_usd, r.p95_ttft_s)) if meeting else None


def always_on_advice(r: PolicyResult) -> str:
    """When always-on would be cheaper than this policy on demand, and from what volume on.

    The estimate scales this policy's cost per request linearly with volume (each request brings its
    busy time and its share of idle and cold starts), so it is a rough line, not a second simulation:
    replay a heavier trace (``--synthetic ...,requests_per_day=N``) to check a volume near it.
    """
    if r.always_on_cost_usd <= 0 or r.requests == 0:
        return "no managed pool with a GPU price: nothing to compare with always-on"
    days = r.window_s / 86400
    per_day = r.requests / days if days > 0 else float(r.requests)
    if r.cost_usd >= r.always_on_cost_usd:
        return (
            f"always-on (${r.always_on_cost_usd:,.2f}) is cheaper than {r.policy} (${r.cost_usd:,.2f})"
            " for this traffic: keep the GPU up"
        )
    per_request = r.cost_usd / r.requests
    volume = r.always_on_cost_usd / days / per_request if days > 0 else math.inf
    return (
        f"on demand saves {r.savings_vs_always_on:.0%} against always-on at {per_day:,.0f} requests/day;"
        f" always-on becomes cheaper from about {volume:,.0f} requests/day"
    )


# -- output ------------------------------------------------------------------------------------------------------

TABLE = (
    ("policy", "policy", "{}"),
    ("requests", "requests", "{:,}"),
    ("refused", "refused", "{:,}"),
    ("cost_usd", "cost $", "{:,.2f}"),
    ("always_on_cost_usd", "always-on $", "{:,.2f}"),
    ("ideal_cost_usd", "ideal $", "{:,.2f}"),
    ("savings_vs_always_on", "saved", "{:.0%}"),
    ("gpu_hours", "GPU h", "{:,.1f}"),
    ("utilisation", "util", "{:.0%}"),
    ("cold_starts", "cold starts", "{:,}"),
    ("p50_ttft_s", "TTFT p50", "{:.2f}"),
    ("p95_ttft_s", "TTFT p95", "{:.2f}"),
    ("p99_ttft_s", "TTFT p99", "{:.2f}"),
    ("p95_latency_s", "lat p95", "{:.2f}"),
    ("usd_per_million_tokens", "$/Mtok", "{:.3f}"),
)


def table(results: Sequence[PolicyResult], objective: Objective | None) -> str:
    cols = list(TABLE)
    if objective is not None:
        cols.append(("meets_objective", f"meets {objective}", "{}"))
    rows = [[title for _, title, _ in cols]]
    for r in results:
        d = asdict(r)
        row = []
        for key, _, fmt in cols:
            v = d[key]
            row.append("yes" if v is True else "no" if v is False else fmt.format(v))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    lines = []
    for n, row in enumerate(rows):
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary_lines(results: Sequence[PolicyResult], objective: Objective | None) -> list[str]:
    out = []
    best = cheapest(results)
    if objective is not None:
        if best is None:
            out.append(f"no policy meets {objective}: relax it, or try more replicas, min_warm_s or prewarm")
        else:
            out.append(f"cheapest policy that meets {objective}: {best.policy} (${best.cost_usd:,.2f})")
    elif best is not None and len(results) > 1:
        out.append(f"cheapest policy: {best.policy} (${best.cost_usd:,.2f})")
    if best is not None:
        out.append(always_on_advice(best))
    for r in results:
        if r.refused:
            why = ", ".join(f"{k} {v:,}" for k, v in sorted(r.refused_by_reason.items()))
            out.append(f"{r.policy}: {r.refused:,} requests refused ({why})")
    return out


def as_json(results: Sequence[PolicyResult]) -> str:
    def clean(v: Any) -> Any:
        if isinstance(v, float) and math.isinf(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return json.dumps([clean(asdict(r)) for r in results], indent=2)


def as_csv(results: Sequence[PolicyResult]) -> str:
    buf = io.StringIO()
    flat = [{k: v for k, v in asdict(r).items() if not isinstance(v, (dict, list))} for r in results]
    for d, r in zip(flat, results, strict=True):
        d["refused_by_reason"] = ";".join(f"{k}={v}" for k, v in sorted(r.refused_by_reason.items()))
    writer = csv.DictWriter(buf, fieldnames=list(flat[0]) if flat else [], lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return buf.getvalue()


def plot(results: Sequence[PolicyResult], path: str, objective: Objective | None) -> None:
    """The trade-off curve as a PNG: cost against the objective's percentile (P95 TTFT without one)."""
    from PIL import Image, ImageDraw

    key = objective.key if objective is not None else "p95_ttft_s"
    points = [(getattr(r, key), r.cost_usd, r) for r in results]
    w, h, m = 900, 560, 70
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    xs = [p[0] for p in points] + ([objective.seconds] if objective is not None else [])
    ys = [p[1] for p in points]
    x0, x1 = 0.0, max(xs) * 1.1 or 1.0
    y0, y1 = 0.0, max(ys) * 1.15 or 1.0

    def at(x: float, y: float) -> tuple[float, float]:
        return m + (x - x0) / (x1 - x0) * (w - 2 * m), h - m - (y - y0) / (y1 - y0) * (h - 2 * m)

    d.line([at(x0, y0), at(x1, y0)], fill="black")
    d.line([at(x0, y0), at(x0, y1)], fill="black")
    for i in range(6):
        x = x0 + (x1 - x0) * i / 5
        y = y0 + (y1 - y0) * i / 5
        d.text((at(x, y0)[0] - 10, h - m + 8), f"{x:.1f}", fill="black")
        d.text((8, at(x0, y)[1] - 6), f"${y:,.0f}", fill="black")
    d.text((w / 2 - 60, h - 30), f"{key} (s)", fill="black")
    d.text((m, 20), "cost of each policy against its latency", fill="black")
    if objective is not None:
        xo = at(objective.seconds, y0)[0]
        d.line([(xo, m), (xo, h - m)], fill=(200, 0, 0))
        d.text((xo + 4, m), f"objective {objective}", fill=(200, 0, 0))
    best = cheapest(results)
    ordered = sorted(points, key=lambda p: p[0])
    d.line([at(x, y) for x, y, _ in ordered], fill=(60, 90, 200), width=2)
    for x, y, r in points:
        cx, cy = at(x, y)
        colour = (0, 150, 0) if r is best else (60, 90, 200)
        d.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], fill=colour)
        d.text((cx + 7, cy - 14), r.policy[:40], fill="black")
    img.save(path)
