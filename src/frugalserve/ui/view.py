"""What the web UI shows, as text and rows: pure functions of what the gateway's APIs returned.

Kept apart from the Gradio pages so that every number's wording is tested without a browser, and so that
the pages only lay things out. Money is shown as the report shows it (accounting/report.py); times are the
gateway's own measurements (``/v1/requests/{id}``), never the browser's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from frugalserve.ui.client import RequestFacts, Waiting

# What a held request's pool is doing, in words (PoolView.state). No emoji: a server's browser may lack them.
_DOING = {
    "starting": "is starting",
    "waking": "is waking up",
    "sleeping": "is asleep (waking it)",
    "stopped": "is stopped (starting it)",
    "failed": "failed to start (trying again)",
    "ready": "is ready",
    "external": "is ready",
}


def usd(x: float | None) -> str:
    """Dollars: cents above a cent, three significant digits below (a demo request costs micro-dollars)."""
    if x is None:
        return "-"
    if x == 0:
        return "$0"
    if abs(x) >= 0.01:
        return f"${x:,.2f}"
    return f"${x:.3g}" if abs(x) >= 1e-4 else f"${x:.2e}"


def seconds(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.1f} s"


def count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def waiting_line(w: Waiting) -> str:
    """A held request's wait, as it stands: the pool's state, the time left, the time waited."""
    doing = _DOING.get(w.state, f"is {w.state}")
    if w.eta_s is None:
        left = "Time left not known yet"
    elif w.eta_s < 0.5:
        left = "Any moment now"
    else:
        left = f"About {w.eta_s:.0f} s left"
    return f"Waiting for pool **{w.pool}**, which {doing}. {left}; waited {w.waited_s:.0f} s."


def ready_line(pool: str | None, cold_start_s: float) -> str:
    return f"Pool **{pool or '?'}** is ready after {seconds(cold_start_s)} of waiting; answering."


def route_words(detail: str | None) -> str | None:
    """The router's ``x-frugalserve-route`` line (``tier=.. pool=.. action=.. reason=..``) in a few words."""
    if not detail:
        return None
    fields = dict(part.split("=", 1) for part in detail.split() if "=" in part)
    action, reason = fields.get("action"), fields.get("reason")
    if action is None:
        return detail
    words = action if reason in (None, action) else f"{action}, {reason.replace('_', ' ')}"
    if "wanted" in fields:
        words += f"; wanted tier {fields['wanted']}"
    if "wake_usd" in fields:
        words += f"; waking it commits ${fields['wake_usd']}"
    return words


def answer_details(f: RequestFacts) -> str:
    """The lines under an answer: who served it and why, its tokens by kind, its times and its cost."""
    tier = f" (tier `{f.tier}`)" if f.tier and f.tier != "-" else ""
    route = route_words(f.route)
    why = f", {route}" if route else ""
    served = f"Served by **{f.pool or '-'}**{tier}{why} · request `{f.request_id}`"
    if f.text_tokens is not None:
        kinds = f"text {count(f.text_tokens)} · image {count(f.image_tokens)} · video {count(f.video_tokens)}"
        saved = f" · image tokens saved {count(f.image_tokens_saved)}" if f.image_tokens_saved else ""
        prompt = f"Prompt {count(f.prompt_tokens)} tokens ({kinds}{saved}) · completion {count(f.completion_tokens)}"
    else:
        prompt = f"Prompt {count(f.prompt_tokens)} tokens · completion {count(f.completion_tokens)}"
    cold = f" · cold start wait {seconds(f.cold_start_wait_s)}" if f.cold_start_wait_s else ""
    cost = usd(f.cost_usd) if f.cost_usd is not None else f"- ({f.cost_note or 'not known'})"
    timing = f"Time to first token {seconds(f.ttft_s)} · latency {seconds(f.latency_s)}{cold} · cost {cost}"
    lines = [served, prompt, timing]
    if f.notes:
        lines.append(f"Gateway notes: {f.notes}")
    return "\n".join(f"<sub>{line}</sub>" for line in lines)


# -- the operator view -------------------------------------------------------------------------------

POOL_COLUMNS = ["pool", "replica", "state", "since", "in flight", "held", "last start", "last wake"]
EVENT_COLUMNS = ["time (UTC)", "pool", "what", "why"]


def ago(wall: float | None, now: float) -> str:
    if wall is None:
        return "-"
    s = max(0.0, now - wall)
    if s < 90:
        return f"{s:.0f} s ago"
    if s < 5400:
        return f"{s / 60:.0f} min ago"
    if s < 172800:
        return f"{s / 3600:.1f} h ago"
    return f"{s / 86400:.0f} d ago"


def _took(start: Mapping[str, Any] | None, now: float) -> str:
    if not start:
        return "-"
    return f"{seconds(start.get('s'))}, {ago(start.get('at'), now)}"


def pool_rows(pools: Sequence[Mapping[str, Any]], now: float) -> list[list[str]]:
    """One row per replica (a pool without replicas, as a static backend is, gets one row of its own)."""
    rows = []
    for p in pools:
        held = str(p.get("queue_length", 0))
        replicas = p.get("replicas") or []
        if not replicas:
            rows.append([p["name"], "-", "external" if not p.get("managed") else "-", "-", "-", held, "-", "-"])
        for r in replicas:
            state = r["state"] + (" (being removed)" if r.get("removing") else "")
            rows.append(
                [
                    p["name"],
                    r["name"],
                    state,
                    ago(r.get("since"), now),
                    str(r.get("in_flight", 0)),
                    held,
                    _took(r.get("last_start"), now),
                    _took(r.get("last_wake"), now),
                ]
            )
    return rows


def _total(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    return rows[-1] if rows and rows[-1].get("group") == "TOTAL" else {}


def spend_line(label: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """One window's spend from the report's TOTAL row: billed, always-on, saved."""
    t = _total(rows)
    if not t:
        return f"**{label}**: no usage yet"
    pct = t.get("savings_pct")
    saved = usd(t.get("savings_usd")) + (f" ({pct:.0f}%)" if pct is not None else "")
    n = t.get("requests") or 0
    return (
        f"**{label}**: {usd(t.get('usd_billed'))} billed for {count(n)} request{'' if n == 1 else 's'} · "
        f"always-on would have cost {usd(t.get('usd_always_on'))} · saved {saved}"
    )


def cost_points(rows: Sequence[Mapping[str, Any]], now: float, hours: int = 24) -> list[tuple[str, float]]:
    """(hour, dollars billed) for the last ``hours`` UTC hours up to ``now``'s, from the report's by=hour rows;
    an hour the report has no row for billed nothing (it lists every hour something was billed)."""
    billed = {str(r["group"]): float(r.get("usd_billed") or 0.0) for r in rows if r.get("group") != "TOTAL"}
    last = now - now % 3600
    points = []
    for i in range(hours - 1, -1, -1):
        hour = dt.datetime.fromtimestamp(last - i * 3600, dt.UTC)
        points.append((hour.strftime("%H:00"), billed.get(hour.strftime("%Y-%m-%d %H:00"), 0.0)))
    return points


def _utc(wall: float) -> str:
    return dt.datetime.fromtimestamp(wall, dt.UTC).strftime("%m-%d %H:%M:%S")


def event_rows(events: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for e in events:
        if e.get("type") == "scale":
            what = f"{e['action']}: {e['from_replicas']} → {e['to_replicas']} replicas ({e['signal']})"
            rows.append([_utc(e["time"]), e["pool"], what, e.get("reason") or ""])
        else:
            took = f" after {seconds(e['duration_s'])}" if e.get("duration_s") is not None else ""
            what = f"{e['replica']}: {e['from_state']} → {e['to_state']}{took}"
            rows.append([_utc(e["time"]), e["pool"], what, e.get("reason") or ""])
    return rows
