"""The web UI's wording of the gateway's numbers: every expected string written out by hand."""

from __future__ import annotations

from frugalserve.ui import view
from frugalserve.ui.client import RequestFacts, Waiting, parse_waiting


def facts(**kw: object) -> RequestFacts:
    base: dict[str, object] = dict(
        request_id="r1",
        model="auto",
        pool="small",
        tier="cheap",
        route="tier=cheap pool=small score=0.412 action=woke reason=cheapest_fit wanted=fast wake_usd=0.0120",
        status=200,
        prompt_tokens=1234,
        completion_tokens=56,
        text_tokens=90,
        image_tokens=1144,
        video_tokens=0,
        image_tokens_saved=3000,
        ttft_s=0.42,
        latency_s=2.1,
        cold_start_wait_s=6.25,
        cost_usd=0.0000452,
        cost_note=None,
        notes=None,
    )
    base.update(kw)
    return RequestFacts(**base)  # type: ignore[arg-type]


def test_dollars_show_cents_above_a_cent_and_three_digits_below() -> None:
    assert view.usd(12.345) == "$12.35"
    assert view.usd(1234.5) == "$1,234.50"
    assert view.usd(0.0123) == "$0.01"
    assert view.usd(0.00123) == "$0.00123"
    assert view.usd(0.0000452) == "$4.52e-05"
    assert view.usd(0) == "$0"
    assert view.usd(None) == "-"


def test_an_answer_says_who_served_it_its_tokens_by_kind_its_times_and_its_cost() -> None:
    lines = view.answer_details(facts()).split("\n")
    assert lines == [
        "<sub>Served by **small** (tier `cheap`), woke, cheapest fit; wanted tier fast; waking it commits $0.0120"
        " · request `r1`</sub>",
        "<sub>Prompt 1,234 tokens (text 90 · image 1,144 · video 0 · image tokens saved 3,000) · completion 56</sub>",
        "<sub>Time to first token 420 ms · latency 2.1 s · cold start wait 6.2 s · cost $4.52e-05</sub>",
    ]


def test_an_answer_without_a_count_by_kind_or_a_cost_says_so() -> None:
    f = facts(text_tokens=None, image_tokens=None, video_tokens=None, cold_start_wait_s=None, cost_usd=None)
    f = facts(
        **{**f.__dict__, "cost_note": "accounting is off", "tier": None, "route": None, "notes": "max_tokens clamped"}
    )
    lines = view.answer_details(f).split("\n")
    assert lines[0] == "<sub>Served by **small** · request `r1`</sub>"
    assert lines[1] == "<sub>Prompt 1,234 tokens · completion 56</sub>"
    assert lines[2] == "<sub>Time to first token 420 ms · latency 2.1 s · cost - (accounting is off)</sub>"
    assert lines[3] == "<sub>Gateway notes: max_tokens clamped</sub>"


def test_a_route_line_reads_as_the_action_and_its_reason() -> None:
    assert view.route_words("tier=- pool=demo score=0.000 action=pinned reason=pinned") == "pinned"
    assert view.route_words("tier=s pool=a score=0.1 action=spilled reason=over_capacity top=a,b") == (
        "spilled, over capacity"
    )
    assert view.route_words("a free-form line") == "a free-form line"
    assert view.route_words(None) is None


def test_the_wait_reads_the_keepalive_the_gateway_sends() -> None:
    w = parse_waiting(': waiting for a replica {"pool":"demo","state":"starting","eta_s":4.2,"waited_s":3.0}')
    assert w == Waiting("demo", "starting", 4.2, 3.0)
    assert view.waiting_line(w) == "Waiting for pool **demo**, which is starting. About 4 s left; waited 3 s."
    assert view.waiting_line(Waiting("demo", "sleeping", None, 0.0)) == (
        "Waiting for pool **demo**, which is asleep (waking it). Time left not known yet; waited 0 s."
    )
    assert view.waiting_line(Waiting("demo", "waking", 0.2, 1.6)) == (
        "Waiting for pool **demo**, which is waking up. Any moment now; waited 2 s."
    )
    assert parse_waiting(": waiting for a replica") is None  # an older gateway's bare keep-alive


def test_replicas_are_rows_with_their_state_since_when_and_last_start_and_wake() -> None:
    now = 10_000.0
    pools = [
        {
            "name": "demo",
            "managed": True,
            "queue_length": 2,
            "replicas": [
                {
                    "name": "demo-0",
                    "state": "ready",
                    "since": now - 30,
                    "in_flight": 1,
                    "last_start": {"s": 11.8, "at": now - 600},
                    "last_wake": {"s": 0.4, "at": now - 30},
                },
                {"name": "demo-1", "state": "stopping", "since": now - 7200, "in_flight": 0, "removing": True},
            ],
        },
        {"name": "remote", "managed": False, "queue_length": 0, "replicas": []},
    ]
    assert view.pool_rows(pools, now) == [
        ["demo", "demo-0", "ready", "30 s ago", "1", "2", "11.8 s, 10 min ago", "400 ms, 30 s ago"],
        ["demo", "demo-1", "stopping (being removed)", "2.0 h ago", "0", "2", "-", "-"],
        ["remote", "-", "external", "-", "-", "0", "-", "-"],
    ]


def test_spend_comes_from_the_reports_total_row() -> None:
    rows = [
        {"group": "demo", "usd_billed": 1.5},
        {
            "group": "TOTAL",
            "requests": 1200,
            "usd_billed": 1.5,
            "usd_always_on": 19.2,
            "savings_usd": 17.7,
            "savings_pct": 92.1875,
        },
    ]
    assert view.spend_line("Today", rows) == (
        "**Today**: $1.50 billed for 1,200 requests · always-on would have cost $19.20 · saved $17.70 (92%)"
    )
    assert view.spend_line("Today", []) == "**Today**: no usage yet"
    one = [{"group": "TOTAL", "requests": 1, "usd_billed": 0.0, "usd_always_on": 0.0, "savings_usd": 0.0}]
    assert view.spend_line("Today", one) == (
        "**Today**: $0 billed for 1 request · always-on would have cost $0 · saved $0"
    )


def test_cost_over_time_is_the_billed_dollars_of_each_of_the_last_hours() -> None:
    now = 1_795_003_000.0  # 2026-11-18 11:56:40 UTC: the last bar is 11:00
    rows = [
        {"group": "2026-11-18 09:00", "usd_billed": 0.2, "usd_always_on": 0.8},
        {"group": "2026-11-18 11:00", "usd_billed": None, "usd_always_on": 0.8},
        {"group": "2026-11-17 13:00", "usd_billed": 9.0},  # 22 h before 11:00: outside a 4-hour plot
        {"group": "TOTAL", "usd_billed": 9.2, "usd_always_on": 1.6},
    ]
    assert view.cost_points(rows, now, hours=4) == [("08:00", 0.0), ("09:00", 0.2), ("10:00", 0.0), ("11:00", 0.0)]
    assert len(view.cost_points(rows, now)) == 24 and view.cost_points(rows, now)[1] == ("13:00", 9.0)


def test_events_read_as_what_happened_and_why() -> None:
    t = 1_795_000_000.0  # 2026-11-18 11:06:40 UTC
    events = [
        {
            "type": "replica",
            "time": t,
            "pool": "demo",
            "replica": "demo-0",
            "from_state": "starting",
            "to_state": "ready",
            "reason": "request",
            "duration_s": 11.8,
        },
        {
            "type": "scale",
            "time": t + 5,
            "pool": "demo",
            "action": "scale_up",
            "from_replicas": 1,
            "to_replicas": 2,
            "signal": "concurrency",
            "load": 1.7,
            "reason": "load 1.70 > 1",
        },
    ]
    assert view.event_rows(events) == [
        ["11-18 11:06:40", "demo", "demo-0: starting → ready after 11.8 s", "request"],
        ["11-18 11:06:45", "demo", "scale_up: 1 → 2 replicas (concurrency)", "load 1.70 > 1"],
    ]
