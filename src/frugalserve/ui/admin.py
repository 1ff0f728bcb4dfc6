"""The operator view at ``/ui/admin``: pools and replicas, spend and savings, cost over time, recent
lifecycle and autoscaling events, and buttons to wake or sleep a pool.

Every figure comes from the admin API (``/admin/pools``, ``/admin/usage``, ``/admin/events``) with the
operator's admin key, the same numbers ``frugalserve report`` prints; without the key (auth on) the page
shows the API's refusal and nothing else. Refreshed every few seconds while open.
"""

from __future__ import annotations

import time
from typing import Any

import gradio as gr
import pandas as pd

from frugalserve.ui import view
from frugalserve.ui.chat import client_for
from frugalserve.ui.client import GatewayError

REFRESH_S = 3.0  # pools, replicas and events
# Spend and the chart: reports over the month and the last day, which cost the gateway more to build than
# the pool table does (an attribution over every record in the window), and change slowly.
SPEND_REFRESH_S = 30.0
EVENTS_SHOWN = 40


class AdminPage:
    def __init__(self, fallback_url: str, auth: bool) -> None:
        self.fallback_url = fallback_url
        self.auth = auth

    async def refresh(self, key: str, request: gr.Request) -> tuple[Any, ...]:
        """The note, the pools table, the pool menu and the events."""
        client = client_for(request, self.fallback_url, key)
        now = time.time()
        try:
            pools = await client.pools()
            events = await client.events(EVENTS_SHOWN)
        except GatewayError as exc:
            hint = " Enter the admin key above." if exc.status == 401 else ""
            return (
                f"**Error:** {exc}.{hint}",
                pd.DataFrame(columns=view.POOL_COLUMNS),
                gr.update(),
                pd.DataFrame(columns=view.EVENT_COLUMNS),
            )
        return (
            f"Updated {time.strftime('%H:%M:%S')} · pools and events every {REFRESH_S:.0f} s, spend every "
            f"{SPEND_REFRESH_S:.0f} s",
            pd.DataFrame(view.pool_rows(pools, now), columns=view.POOL_COLUMNS),
            gr.update(choices=[p["name"] for p in pools]),
            pd.DataFrame(view.event_rows(events), columns=view.EVENT_COLUMNS),
        )

    async def refresh_spend(self, key: str, request: gr.Request) -> tuple[Any, ...]:
        """Spend today and this month, and dollars per hour over the last day."""
        client = client_for(request, self.fallback_url, key)
        now = time.time()
        try:
            today = await client.usage("today", "pool")
            month = await client.usage("month", "pool")
            hours = await client.usage("24h", "hour")
        except GatewayError:
            return "", gr.update(visible=False)  # the note above says why (refresh)
        spend = "\n\n".join(
            (view.spend_line("Today (since 00:00 UTC)", today), view.spend_line("This month (UTC)", month))
        )
        points = pd.DataFrame(view.cost_points(hours, now), columns=["hour", "usd"])
        top = float(points["usd"].max()) if len(points) else 0.0
        # nothing billed in 24 hours (a pool at a fixed URL has no price): no chart of zeros
        plot = gr.update(value=points, y_lim=[0, top * 1.1], visible=True) if top > 0 else gr.update(visible=False)
        return spend, plot

    async def wake(self, key: str, pool: str | None, request: gr.Request) -> str:
        if not pool:
            return "Choose a pool first."
        try:
            await client_for(request, self.fallback_url, key).wake(pool)
        except GatewayError as exc:
            return f"**Error:** {exc}"
        return f"Waking **{pool}** (it starts or wakes in the background; the table follows it)."

    async def sleep(self, key: str, pool: str | None, request: gr.Request) -> str:
        if not pool:
            return "Choose a pool first."
        try:
            result = await client_for(request, self.fallback_url, key).sleep(pool)
        except GatewayError as exc:
            return f"**Error:** {exc}"
        return f"**{pool}**: {result.get('result', 'done')}."


def build(page: gr.Blocks, admin: AdminPage) -> None:
    """The operator view's components and events, inside ``page`` (the route's open ``gr.Blocks``)."""
    gr.Markdown("## frugalserve: operator view", elem_id="fs-admin-title")
    key = gr.Textbox(
        label="Admin key", type="password", visible=admin.auth, elem_id="fs-admin-key", info="$FRUGALSERVE_ADMIN_KEY"
    )
    note = gr.Markdown(elem_id="fs-admin-note")
    spend = gr.Markdown(elem_id="fs-spend")
    pools = gr.Dataframe(headers=view.POOL_COLUMNS, label="Pools and replicas", interactive=False, elem_id="fs-pools")
    with gr.Row():
        pool = gr.Dropdown(label="Pool", choices=[], elem_id="fs-pool", scale=2)
        wake = gr.Button("Wake", elem_id="fs-wake", scale=1)
        sleep = gr.Button("Sleep", elem_id="fs-sleep", scale=1)
    done = gr.Markdown(elem_id="fs-action")
    plot = gr.BarPlot(
        x="hour",
        y="usd",
        title="Billed per hour, last 24 hours (UTC), USD",
        x_title="hour (UTC)",
        y_title="USD",
        sort=None,
        elem_id="fs-cost-plot",
    )
    events = gr.Dataframe(
        headers=view.EVENT_COLUMNS,
        label="Recent lifecycle and autoscaling events",
        interactive=False,
        elem_id="fs-events",
    )
    live = [note, pools, pool, events]
    opened = [page.load, key.submit, key.blur]
    quiet = {"show_progress": "hidden", "trigger_mode": "always_last"}
    gr.on([*opened, gr.Timer(REFRESH_S).tick], admin.refresh, [key], live, **quiet)
    gr.on([*opened, gr.Timer(SPEND_REFRESH_S).tick], admin.refresh_spend, [key], [spend, plot], **quiet)
    wake.click(admin.wake, [key, pool], [done]).then(admin.refresh, [key], live, show_progress="hidden")
    sleep.click(admin.sleep, [key, pool], [done]).then(admin.refresh, [key], live, show_progress="hidden")
