"""One Gradio app with two pages, the chat and the operator view, mounted on the gateway's app."""

from __future__ import annotations

import warnings

import gradio as gr
from starlette.applications import Starlette

from frugalserve.config import Config
from frugalserve.ui import admin, chat

# The system's own fonts: Gradio's default theme loads Google Fonts, which a gateway may not reach.
THEME = gr.themes.Default(
    primary_hue="blue",
    font=["system-ui", "-apple-system", "Segoe UI", "sans-serif"],
    font_mono=["ui-monospace", "monospace"],
)
CSS = """
.fs-banner { background: #fff4e5; border: 1px solid #f0b35a; border-radius: 6px; padding: .3rem .8rem; }
#fs-chat sub { color: var(--body-text-color-subdued); line-height: 1.4; }
"""


def blocks(config: Config) -> gr.Blocks:
    url = f"http://{_connectable(config.gateway.host)}:{config.gateway.port}"
    auth = config.auth.enabled
    with gr.Blocks(title="frugalserve", analytics_enabled=False) as app:
        gr.Navbar(main_page_name="Chat")
        chat.build(app, chat.ChatPage(url, auth), config.ui.banner)
    with app.route("Operator", "/admin") as page:
        gr.Navbar(main_page_name="Chat")
        admin.build(page, admin.AdminPage(url, auth))
    return app


def _connectable(host: str) -> str:
    """Where this machine reaches a gateway that listens on ``host`` (a wildcard is not an address)."""
    if host in ("0.0.0.0", "", "*"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


# Gradio's queue looks for work every 1 ms and for progress every 10 ms while idle: on the gateway's own event
# loop that is about 5% of a core spent with nobody on the page (docs/benchmarks.md). A UI event waiting up to
# 20 ms more to start is not noticeable.
IDLE_POLL_S = 0.02
IDLE_PROGRESS_POLL_S = 0.1


def _poll_less(ui: gr.Blocks) -> None:
    queue = getattr(ui, "_queue", None)  # Gradio's own attribute (gradio<7); left alone if it is not there
    if queue is not None and hasattr(queue, "sleep_when_free"):
        queue.sleep_when_free = max(queue.sleep_when_free, IDLE_POLL_S)
        queue.progress_update_sleep_when_free = max(queue.progress_update_sleep_when_free, IDLE_PROGRESS_POLL_S)


def mount_pages(app: Starlette, config: Config, path: str) -> None:
    ui = blocks(config).queue(default_concurrency_limit=None)
    _poll_less(ui)
    max_mb = config.gateway.max_body_mb
    with warnings.catch_warnings():
        # Gradio warns that a mounted multi-page app cannot render on the server; it is not asked to
        warnings.filterwarnings("ignore", message="SSR mode is not supported")
        gr.mount_gradio_app(
            app,  # a Starlette app: Gradio uses only what FastAPI inherits from it
            ui,
            path=path,
            footer_links=[],
            run_history=False,
            max_file_size=f"{max(1, int(max_mb))}mb",
            theme=THEME,
            css=CSS,
            ssr_mode=False,
        )
