"""``frugalserve report``: requests, tokens, GPU-hours, dollars and savings from the usage records.

Rows are grouped by day or hour (UTC), key (shown by name), pool or model; the last row is the total. Dollars
billed of a pool (and of the total, and of a day or hour) include its overhead (idle and cold-start time); dollars
of a key or model are its requests' attributed share of busy time only (overhead belongs to pools, see costs.py).
Savings compare the bill with keeping every replica of every pool up for the whole window. Cold starts
(successful starts and wakes, and failed ones apart) come from replica events, so they are pool facts;
rows by key or model show how many of their requests waited for one, and how long. The autoscaler's
decisions (scale-ups, scale-downs, refusals, predictive prewarms used or expired) come from scale events,
pool facts too.

As a table the columns come in three groups (tokens, cost, cold starts), and a fourth (scaling) when
the window holds autoscaler decisions, that each fit a 100-column terminal; ``wide`` prints them as one
table. CSV and JSON carry every column under its full name.
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

from frugalserve.accounting import budgets, costs
from frugalserve.accounting.store import api_keys, replica_events, scale_events, usage_records
from frugalserve.config import Config

GROUPS = ("day", "hour", "key", "pool", "model")
# Groupings by time: the width of a bucket (UTC, aligned on the epoch) and how its row is labelled.
BUCKETS: dict[str, tuple[float, str]] = {"day": (86400.0, "%Y-%m-%d"), "hour": (3600.0, "%Y-%m-%d %H:00")}
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
    "failed_starts",
    "cold_waits",
    "cold_wait_p50_s",
    "cold_wait_p95_s",
    "usd_ideal",
    "usd_always_on",
    "savings_usd",
    "savings_pct",
    "scale_ups",
    "scale_downs",
    "scale_refusals",
    "prewarms_used",
    "prewarms_expired",
)
# The report's scaling columns and the scale event action each counts (events.ScaleEvent.action).
SCALE_COUNTS = (
    ("scale_ups", "scale_up"),
    ("scale_downs", "scale_down"),
    ("scale_refusals", "refused"),
    ("prewarms_used", "prewarm_used"),
    ("prewarms_expired", "prewarm_expired"),
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


WHEN_FORMS = (
    "2025-03-01, 2025-03-01T12:00 (UTC unless an offset is given), 7d / 12h / 30m ago, today, yesterday, month"
    " (the 1st of this month), now"
)


def parse_when(text: str, now: float) -> float:
    """A time the report understands (:data:`WHEN_FORMS`) as epoch seconds; ValueError names the forms."""
    word = text.strip().lower()
    midnight = now - now % 86400  # days are UTC days, like the report's rows
    named = {"now": now, "today": midnight, "yesterday": midnight - 86400, "month": budgets.month_start(now)}
    if word in named:
        return named[word]
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([dhm])", word)
    if m:
        return now - float(m.group(1)) * {"d": 86400, "h": 3600, "m": 60}[m.group(2)]
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not a time: {text!r}; accepted: {WHEN_FORMS}") from None
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


def load_scale_events(engine: Engine, since: float | None, until: float) -> list[dict[str, Any]]:
    """The autoscaler's decisions in the window (time, pool, action), oldest first."""
    s = scale_events.c
    q = sa.select(s.time, s.pool, s.action).where(s.time < until)
    if since is not None:
        q = q.where(s.time >= since)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q.order_by(s.time))]


def scaling(scales: Sequence[Mapping[str, Any]], since: float, until: float) -> dict[str, int]:
    """How many of each counted decision (:data:`SCALE_COUNTS`) fall in ``[since, until)``."""
    column_of = {action: column for column, action in SCALE_COUNTS}
    counts = dict.fromkeys(column_of.values(), 0)
    for e in scales:
        column = column_of.get(e["action"])
        if column is not None and since <= e["time"] < until:
            counts[column] += 1
    return counts


def key_names(engine: Engine) -> dict[str, str]:
    """Key id -> the name to show: its name, with the id when another key has the same name."""
    with engine.connect() as conn:
        pairs = [(r[0], r[1]) for r in conn.execute(sa.select(api_keys.c.id, api_keys.c.name))]
    counts: dict[str, int] = defaultdict(int)
    for _, name in pairs:
        counts[name] += 1
    return {kid: name if counts[name] == 1 else f"{name} ({kid})" for kid, name in pairs}


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


def _row(group: str, recs: Sequence[Mapping[str, Any]], shares: Sequence[costs.Share]) -> dict[str, Any]:
    text = image = video = completion = saved = 0
    for r in recs:
        t, i, v, c = _tokens(r)
        text, image, video, completion = text + t, image + i, video + v, completion + c
        saved += r.get("image_tokens_saved") or 0
    waits = sorted(r["cold_start_wait_s"] for r in recs if r.get("cold_start_wait_s"))  # requests held
    gpu_s = sum(s.gpu_s for s in shares)
    usd = sum(s.usd for s in shares)
    return {
        "group": group,
        "requests": len(recs),
        "errors": sum(1 for r in recs if r.get("status", 0) >= 400),
        "prompt_text_tokens": text,
        "prompt_image_tokens": image,
        "prompt_video_tokens": video,
        "completion_tokens": completion,
        "image_tokens_saved": saved,
        "gpu_hours": gpu_s / 3600,
        "usd_billed": usd,
        "usd_per_mtok": _per_mtok(usd, text + image + video + completion),
        "utilisation": None,
        "cold_starts": None,  # a pool fact (events): filled by _with_pools
        "failed_starts": None,
        "cold_waits": len(waits),
        "cold_wait_p50_s": _pct(waits, 50),
        "cold_wait_p95_s": _pct(waits, 95),
        "usd_ideal": usd,
        "usd_always_on": None,
        "savings_usd": None,
        "savings_pct": None,
        # pool facts (scale events): filled by build for pool, day and hour rows and the total
        **dict.fromkeys((column for column, _ in SCALE_COUNTS), None),
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
        cold_starts=sum(p.cold_starts for p in pools),
        failed_starts=sum(p.failed_starts for p in pools),
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
    names: Mapping[str, str] | None = None,
    scales: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """The report's rows, the total last. ``names``: what to show for each key id (by key); ``scales``:
    the window's scale events (:func:`load_scale_events`)."""
    if since is None:
        times = [r["time"] for r in records] + [e["time"] for e in events] + [e["time"] for e in scales]
        since = min(times) if times else until
    if by in BUCKETS:
        width, label_format = BUCKETS[by]
        rows = []
        bucket = since - since % width
        while bucket < until:
            lo, hi = max(bucket, since), min(bucket + width, until)
            # a request that ran across a bucket's end is busy in both; its row is the bucket it started in
            live = [r for r in records if r["time"] < hi and r["time"] + (r.get("duration_s") or 0.0) > lo]
            att = costs.attribute(live, events, prices, lo, hi)
            mine = [i for i, r in enumerate(live) if r["time"] >= lo]
            decided = scaling(scales, lo, hi)
            if mine or any(p.billed_s for p in att.pools.values()) or any(decided.values()):
                label = dt.datetime.fromtimestamp(bucket, dt.UTC).strftime(label_format)
                row = _row(label, [live[i] for i in mine], [att.shares[i] for i in mine])
                rows.append({**_with_pools(row, list(att.pools.values())), **decided})
            bucket += width
    else:
        att = costs.attribute(records, events, prices, since, until)
        groups: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(records):
            value = r.get({"key": "key_id"}.get(by, by))
            if by == "key" and value is not None and names:
                value = names.get(value, value)
            groups[str(value or "-")].append(i)
        scaled = {e["pool"] for e in scales}
        if by == "pool":
            for name in [*att.pools, *scaled]:
                groups.setdefault(name, [])
        rows = []
        for name in sorted(groups):
            idx = groups[name]
            row = _row(name, [records[i] for i in idx], [att.shares[i] for i in idx])
            if by == "pool" and name in att.pools:
                row = _with_pools(row, [att.pools[name]])
            if by == "pool" and (name in att.pools or name in scaled):
                row.update(scaling([e for e in scales if e["pool"] == name], since, until))
            rows.append(row)
    total_att = costs.attribute(records, events, prices, since, until)
    total = _with_pools(_row("TOTAL", records, total_att.shares), list(total_att.pools.values()))
    rows.append({**total, **scaling(scales, since, until)})
    return rows


def anomalies(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    cols = ("time", "request_id", "key_id", "pool", "model", "prompt_tokens", "completion_tokens")
    return [{k: r.get(k) for k in cols} for r in records if r.get("anomaly")]


# -- formatting ---------------------------------------------------------------------------------------

# The table's column groups, each narrow enough for a 100-column terminal, with short headers.
SECTIONS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "requests and tokens (prompt tokens by kind; output = completion)",
        (
            ("requests", "requests"),
            ("errors", "errors"),
            ("prompt_text_tokens", "text_tok"),
            ("prompt_image_tokens", "image_tok"),
            ("prompt_video_tokens", "video_tok"),
            ("completion_tokens", "output_tok"),
            ("image_tokens_saved", "img_saved"),
        ),
    ),
    (
        "GPU cost in USD (always_on: every replica up the whole window; saved: always_on - billed)",
        (
            ("gpu_hours", "gpu_h"),
            ("usd_billed", "billed"),
            ("usd_per_mtok", "per_Mtok"),
            ("utilisation", "util"),
            ("usd_ideal", "ideal"),
            ("usd_always_on", "always_on"),
            ("savings_usd", "saved"),
            ("savings_pct", "saved_%"),
        ),
    ),
    (
        "cold starts (starts and wakes of replicas) and requests that waited for one",
        (
            ("cold_starts", "starts"),
            ("failed_starts", "failed"),
            ("cold_waits", "waited"),
            ("cold_wait_p50_s", "wait_p50_s"),
            ("cold_wait_p95_s", "wait_p95_s"),
        ),
    ),
)
# Shown when some row has a decision to count (a pool without an autoscaler never has one).
SCALING_SECTION = (
    "autoscaler decisions (replicas added, removed, refused; predictive prewarms used or expired)",
    (
        ("scale_ups", "ups"),
        ("scale_downs", "downs"),
        ("scale_refusals", "refused"),
        ("prewarms_used", "pw_used"),
        ("prewarms_expired", "pw_expired"),
    ),
)
GROUP_WIDTH = 24  # longer group names are cut in the table (CSV and JSON keep them whole)


def _compact(v: float) -> str:
    for size, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        if abs(v) >= size:
            return f"{v / size:.2f}{unit}"
    return f"{v:,.0f}"


def _percent(column: str, v: Any) -> str | None:
    """Ratios as percent, the same in the narrow and the wide table (CSV and JSON keep the numbers)."""
    if v is None or column not in ("utilisation", "savings_pct"):
        return None
    return f"{v * 100 if column == 'utilisation' else v:.1f}%"


def _short(column: str, v: Any) -> str:
    """A narrow cell: as :func:`_cell`, with counts past ten million and dollars past a million compacted."""
    is_int = isinstance(v, int) and not isinstance(v, bool)
    large = (is_int and abs(v) >= 10_000_000) or (isinstance(v, float) and abs(v) >= 1e6)
    if large and _percent(column, v) is None:
        return _compact(v)
    return _cell(column, v)


def _fit_group(name: str) -> str:
    """Cut a long group name in the middle, so names that differ only at the end stay apart."""
    if len(name) <= GROUP_WIDTH:
        return name
    head = GROUP_WIDTH // 2 - 1
    return name[:head] + "~" + name[-(GROUP_WIDTH - head - 1) :]


def _cell(column: str, v: Any) -> str:
    if v is None:
        return "-"
    pct = _percent(column, v)
    if pct is not None:
        return pct
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 100 else f"{v:,.2f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def _table(headers: Sequence[str], lines: Sequence[Sequence[str]], left: int = 0) -> list[str]:
    """Right-aligned columns, except the first ``left`` ones."""
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return [fmt(headers).rstrip(), *(fmt(line).rstrip() for line in lines)]


def legend(rows: Sequence[Mapping[str, Any]], by: str) -> list[str]:
    """What the table's less obvious parts mean, printed under it."""
    lines = [
        "billed: GPU time paid for, idle and cold starts included; ideal: paid only while serving requests;",
        "util: serving time / billed time; per_Mtok: billed per million tokens (prompt and output).",
    ]
    if by in ("key", "model"):
        lines += [
            f"a {by} row is its requests' share of serving time only; TOTAL is the pools' whole bill (idle and",
            f"cold starts too), so the {by} rows add up to less than TOTAL.",
        ]
    if any(r["group"] == "-" for r in rows):
        lines.append(
            {
                "pool": "-: requests that never reached a pool (refused before dispatch: auth, budget, validation).",
                "key": "-: requests without a key (auth off, or refused before a key was known).",
            }.get(by, "-: requests without a value for this grouping.")
        )
    return lines


def render_report(rows: Sequence[Mapping[str, Any]], fmt: str = "table", wide: bool = False, by: str = "pool") -> str:
    """The report as a table in column groups (``wide``: one table) with a legend, CSV or JSON."""
    if fmt != "table" or not rows:
        return render(rows, fmt)
    notes = [f"# {line}" for line in legend(rows, by)]
    if wide:
        return render(rows, fmt) + "\n" + "\n".join(notes) + "\n"
    out: list[str] = []
    sections = list(SECTIONS)
    if any(r.get(column) for r in rows for column, _ in SCALING_SECTION[1]):
        sections.append(SCALING_SECTION)
    for title, columns in sections:
        groups = [str(r["group"]) for r in rows]
        groups = [_fit_group(g) for g in groups]
        lines = [[g, *(_short(c, r.get(c)) for c, _ in columns)] for g, r in zip(groups, rows, strict=True)]
        out += [f"# {title}", *_table(["group", *(h for _, h in columns)], lines, left=1)]
        out += [*notes, ""] if columns[0][0] == "gpu_hours" else [""]
    return "\n".join(out)


def render(rows: Sequence[Mapping[str, Any]], fmt: str = "table") -> str:
    """Any list of rows as one table (every column, full names), CSV or JSON."""
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
    cells = [[_cell(c, r[c]) for c in cols] for r in rows]
    if "time" in cols:
        for line, r in zip(cells, rows, strict=True):
            line[cols.index("time")] = dt.datetime.fromtimestamp(r["time"], dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    return "\n".join(_table(cols, cells)) + "\n"
