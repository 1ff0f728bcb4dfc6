"""``frugalserve report``: requests, tokens, GPU-hours, dollars and savings from the usage records.

Rows are grouped by day, key, pool or model; the last row is the total. Dollars billed of a pool (and
of the total, and of a day) include its overhead (idle and cold-start time); dollars of a key or model
are its requests' attributed share of busy time only (overhead belongs to pools, see costs.py).
Savings compare the bill with keeping every replica of every pool up for the whole window.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from frugalserve.accounting import costs
from frugalserve.accounting.store import replica_events, usage_records
from frugalserve.config import Config

GROUPS = ("day", "key", "pool", "model")
COLUMNS = (
    "group",
    "requests",
    "errors",
    "prompt_text_tokens",
    "prompt_image_tokens",
    "prompt_video_tokens",
    "completion_tokens",
    "image_tokens_saved",
    "gpu_hours",
    "usd_billed",
    "usd_per_mtok",
    "utilisation",
    "cold_starts",
    "cold_wait_p50_s",
    "cold_wait_p95_s",
    "usd_ideal",
    "usd_always_on",
    "savings_usd",
    "savings_pct",
)
RECORD_COLUMNS = (
    "request_id",
    "time",
    "key_id",
    "model",
    "pool",
    "replica",
    "status",
    "prompt_tokens",
    "prompt_text_tokens",
    "prompt_image_tokens",
    "prompt_video_tokens",
    "completion_tokens",
    "image_tokens_saved",
    "duration_s",
    "cold_start_wait_s",
    "cost_usd",
    "anomaly",
)


def parse_when(text: str, now: float) -> float:
    """``2025-03-01``, ``2025-03-01T12:00``, or relative ``7d`` / ``12h`` / ``30m`` before now (UTC)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([dhm])", text.strip())
    if m:
        return now - float(m.group(1)) * {"d": 86400, "h": 3600, "m": 60}[m.group(2)]
    when = dt.datetime.fromisoformat(text.strip())
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def prices_of(config: Config) -> dict[str, costs.Price]:
    return {p.name: costs.Price(p.gpu.usd_per_hour, p.gpu.count, p.gpu.billing) for p in config.pools}


def load(engine: Engine, since: float | None, until: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Records started in the window and every event before its end (the state at ``since`` needs them)."""
    c = usage_records.c
    q = sa.select(*(c[n] for n in RECORD_COLUMNS)).where(c.time < until)
    if since is not None:
        q = q.where(c.time >= since)
    e = replica_events.c
    eq = sa.select(e.time, e.pool, e.replica, e.from_state, e.to_state, e.reason).where(e.time < until)
    with engine.connect() as conn:
        records = [dict(r._mapping) for r in conn.execute(q.order_by(c.time))]
        events = [dict(r._mapping) for r in conn.execute(eq.order_by(e.time))]
    return records, events


def _tokens(r: Mapping[str, Any]) -> tuple[int, int, int, int]:
    image = r.get("prompt_image_tokens") or 0
    video = r.get("prompt_video_tokens") or 0
    text = r.get("prompt_text_tokens")
    if text is None:
        text = max(0, (r.get("prompt_tokens") or 0) - image - video)
    return text, image, video, r.get("completion_tokens") or 0


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _row(group: str, recs: Sequence[Mapping[str, Any]], shares: Sequence[tuple[float, float]]) -> dict[str, Any]:
    text = image = video = completion = saved = 0
    for r in recs:
        t, i, v, c = _tokens(r)
        text, image, video, completion = text + t, image + i, video + v, completion + c
        saved += r.get("image_tokens_saved") or 0
    waits = sorted(r["cold_start_wait_s"] for r in recs if r.get("cold_start_wait_s"))
    busy_s = sum(s[0] for s in shares)
    usd = sum(s[1] for s in shares)
    return {
        "group": group,
        "requests": len(recs),
        "errors": sum(1 for r in recs if r.get("status", 0) >= 400),
        "prompt_text_tokens": text,
        "prompt_image_tokens": image,
        "prompt_video_tokens": video,
        "completion_tokens": completion,
        "image_tokens_saved": saved,
        "gpu_hours": busy_s / 3600,
        "usd_billed": usd,
        "usd_per_mtok": _per_mtok(usd, text + image + video + completion),
        "utilisation": None,
        "cold_starts": len(waits),
        "cold_wait_p50_s": _pct(waits, 50),
        "cold_wait_p95_s": _pct(waits, 95),
        "usd_ideal": usd,
        "usd_always_on": None,
        "savings_usd": None,
        "savings_pct": None,
    }


def _per_mtok(usd: float, tokens: int) -> float | None:
    return usd / tokens * 1e6 if tokens else None


def _with_pools(row: dict[str, Any], pools: Sequence[costs.PoolCost]) -> dict[str, Any]:
    """Fill the pool-level columns (billed incl. overhead, utilisation, cold starts, savings)."""
    billed = sum(p.usd_billed for p in pools)
    always = sum(p.usd_always_on for p in pools)
    busy = sum(p.busy_s for p in pools)
    billed_s = sum(p.billed_s for p in pools)
    tokens = sum(row[k] for k in ("prompt_text_tokens", "prompt_image_tokens", "prompt_video_tokens"))
    tokens += row["completion_tokens"]
    row.update(
        gpu_hours=sum(p.gpu_hours for p in pools),
        usd_billed=billed,
        usd_per_mtok=_per_mtok(billed, tokens),
        utilisation=busy / billed_s if billed_s else None,
        cold_starts=sum(p.cold_starts for p in pools) or row["cold_starts"],
        usd_ideal=sum(p.usd_ideal for p in pools),
        usd_always_on=always,
        savings_usd=always - billed,
        savings_pct=(always - billed) / always * 100 if always else None,
    )
    return row


def build(
    records: list[dict[str, Any]],
    events: list[dict[str, Any]],
    prices: Mapping[str, costs.Price],
    since: float | None,
    until: float,
    by: str = "pool",
) -> list[dict[str, Any]]:
    """The report's rows, the total last."""
    if since is None:
        times = [r["time"] for r in records] + [e["time"] for e in events]
        since = min(times) if times else until
    if by == "day":
        rows = []
        day = since - since % 86400
        while day < until:
            lo, hi = max(day, since), min(day + 86400, until)
            recs = [r for r in records if lo <= r["time"] < hi]
            att = costs.attribute(recs, events, prices, lo, hi)
            if recs or any(p.billed_s for p in att.pools.values()):
                label = dt.datetime.fromtimestamp(day, dt.UTC).strftime("%Y-%m-%d")
                rows.append(_with_pools(_row(label, recs, att.shares), list(att.pools.values())))
            day += 86400
    else:
        att = costs.attribute(records, events, prices, since, until)
        groups: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(records):
            groups[str(r.get({"key": "key_id"}.get(by, by)) or "-")].append(i)
        if by == "pool":
            for name in att.pools:
                groups.setdefault(name, [])
        rows = []
        for name in sorted(groups):
            idx = groups[name]
            row = _row(name, [records[i] for i in idx], [att.shares[i] for i in idx])
            if by == "pool" and name in att.pools:
                row = _with_pools(row, [att.pools[name]])
            rows.append(row)
    total_att = costs.attribute(records, events, prices, since, until)
    rows.append(_with_pools(_row("TOTAL", records, total_att.shares), list(total_att.pools.values())))
    return rows


def anomalies(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    cols = ("time", "request_id", "key_id", "pool", "model", "prompt_tokens", "completion_tokens")
    return [{k: r.get(k) for k in cols} for r in records if r.get("anomaly")]


# -- formatting ---------------------------------------------------------------------------------------


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 100 else f"{v:,.2f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def render(rows: Sequence[Mapping[str, Any]], fmt: str = "table") -> str:
    if not rows:
        return "" if fmt != "json" else "[]\n"
    cols = list(rows[0])
    if fmt == "json":
        return orjson.dumps(list(rows), option=orjson.OPT_INDENT_2).decode() + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()
    cells = [[_cell(r[c]) for c in cols] for r in rows]
    if "time" in cols:
        for line, r in zip(cells, rows, strict=True):
            line[cols.index("time")] = dt.datetime.fromtimestamp(r["time"], dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(cols)]
    out = ["  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True))]
    out += ["  ".join(v.rjust(w) for v, w in zip(line, widths, strict=True)) for line in cells]
    return "\n".join(out) + "\n"
