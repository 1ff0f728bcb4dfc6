"""The chat page at ``/ui``: text and images, multi-turn, sampling settings, the wait while a pool starts,
and under each answer who served it, its tokens and what it cost.

The conversation sent to the model is kept apart from what the page shows (a ``gr.State`` of OpenAI
messages): each image goes out with the message it was attached to, once, and the lines under an answer
never reach the model. Imported only when the UI is on (frugalserve.ui.mount).
"""

from __future__ import annotations

import asyncio
import base64
import mimetypes
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import gradio as gr

from frugalserve.ui import view
from frugalserve.ui.client import Delta, Done, GatewayClient, GatewayError, Ready, RequestFacts, Routed, Waiting

AUTO = "auto"
Message = dict[str, Any]


def image_part(path: str) -> dict[str, Any]:
    """An uploaded image as an OpenAI ``image_url`` part (a data URL: the gateway counts and resizes it)."""
    mime = mimetypes.guess_type(path)[0] or "image/png"
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}


def user_message(text: str, files: list[str]) -> Message:
    """What the model gets for one turn: the text alone, or the images then the text."""
    if not files:
        return {"role": "user", "content": text}
    parts = [image_part(f) for f in files]
    if text:
        parts.append({"type": "text", "text": text})
    return {"role": "user", "content": parts}


def request_body(
    model: str, history: list[Message], turn: Message, temperature: float, top_p: float, max_tokens: int | None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [*history, turn],
        "temperature": temperature,
        "top_p": top_p,
    }
    if max_tokens:
        body["max_tokens"] = int(max_tokens)
    return body


def gateway_url(request: gr.Request | None, fallback: str) -> str:
    """The address this page was served on: the gateway's own socket (the UI runs inside it)."""
    scope = getattr(getattr(request, "request", None), "scope", None) or {}
    server = scope.get("server")
    if not server:
        return fallback
    host, port = server
    host = f"[{host}]" if ":" in host else host
    return f"{scope.get('scheme', 'http')}://{host}:{port}"


def client_for(request: gr.Request | None, fallback_url: str, key: str) -> GatewayClient:
    """The gateway as this page's user reaches it: its own address, their key."""
    return GatewayClient(gateway_url(request, fallback_url), key)


async def facts_of(client: GatewayClient, request_id: str) -> RequestFacts | None:
    """The stored facts of a request that just ended (its record is handed over as its last byte goes out)."""
    for attempt in range(10):
        try:
            return await client.request(request_id)
        except GatewayError as exc:
            if exc.status != 404 or attempt == 9:
                return None
            await asyncio.sleep(0.1)
    return None


class ChatPage:
    """The chat page's handlers; ``fallback_url``: where the gateway listens, when a request cannot say."""

    def __init__(self, fallback_url: str, auth: bool) -> None:
        self.fallback_url = fallback_url
        self.auth = auth

    async def models(self, key: str, request: gr.Request) -> tuple[Any, str]:
        """The model menu, from /v1/models with the user's key: ``auto`` first when the gateway routes."""
        client = client_for(request, self.fallback_url, key)
        try:
            names = await client.models()
        except GatewayError as exc:
            hint = "Enter your API key above to see the models." if exc.status == 401 else str(exc)
            return gr.update(choices=[], value=None), f"**{hint}**"
        names.sort(key=lambda n: n != AUTO)  # stable: otherwise as the gateway lists them
        return gr.update(choices=names, value=names[0] if names else None), ""

    async def send(
        self,
        message: dict[str, Any] | None,
        shown: list[Message],
        history: list[Message],
        model: str | None,
        key: str,
        temperature: float,
        top_p: float,
        max_tokens: float | None,
        request: gr.Request,
    ) -> AsyncIterator[tuple[Any, ...]]:
        text = ((message or {}).get("text") or "").strip()
        files = [str(f) for f in (message or {}).get("files") or []]
        if not text and not files:
            yield shown, gr.update(), history, gr.update()
            return
        if not model:
            yield shown, "Choose a model first (no models listed: is your API key right?)", history, gr.update()
            return
        turn = user_message(text, files)
        shown = [*shown, *self._shown_user(text, files), {"role": "assistant", "content": "…"}]
        yield shown, "Sending…", history, None
        client = client_for(request, self.fallback_url, key)
        body = request_body(model, history, turn, temperature, top_p, int(max_tokens) if max_tokens else None)
        answer, pool, status = "", None, ""
        try:
            async for event in client.chat(body):
                if isinstance(event, Routed):
                    pool = event.pool
                    status = f"Sent to pool **{pool}**" if not event.cold else f"Pool **{pool}** is not ready: waiting"
                elif isinstance(event, Waiting):
                    status = view.waiting_line(event)
                elif isinstance(event, Ready):
                    status = view.ready_line(pool, event.cold_start_s)
                elif isinstance(event, Delta):
                    answer += event.text
                    shown[-1] = {"role": "assistant", "content": answer}
                elif isinstance(event, Done):
                    facts = await facts_of(client, event.request_id)
                    details = view.answer_details(facts) if facts else "<sub>(the gateway kept no record)</sub>"
                    shown[-1] = {"role": "assistant", "content": f"{answer}\n\n{details}"}
                    history = [*history, turn, {"role": "assistant", "content": answer}]
                    status = ""
                yield shown, status, history, None
        except GatewayError as exc:
            shown[-1] = {"role": "assistant", "content": f"**Error:** {exc}"}
            yield shown, f"**Error:** {exc}", history, None

    @staticmethod
    def _shown_user(text: str, files: list[str]) -> list[Message]:
        out: list[Message] = [{"role": "user", "content": {"path": f}} for f in files]
        if text:
            out.append({"role": "user", "content": text})
        return out


def build(blocks: gr.Blocks, page: ChatPage, banner: str | None) -> None:
    """The chat page's components and events, inside ``blocks`` (the caller's open ``gr.Blocks``)."""
    gr.Markdown("## frugalserve: chat", elem_id="fs-title")
    if banner:
        gr.Markdown(banner, elem_id="fs-banner", elem_classes=["fs-banner"])
    with gr.Row():
        with gr.Column(scale=1, min_width=240):
            key = gr.Textbox(
                label="API key",
                type="password",
                placeholder="sk-...",
                visible=page.auth,
                elem_id="fs-key",
                info="This gateway needs a key (frugalserve keys create).",
            )
            model = gr.Dropdown(label="Model", choices=[], elem_id="fs-model", info="auto: the gateway chooses a tier")
            models_note = gr.Markdown(elem_id="fs-models-note")
            temperature = gr.Slider(0.0, 2.0, value=0.7, step=0.05, label="Temperature", elem_id="fs-temperature")
            top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.05, label="top_p", elem_id="fs-top-p")
            max_tokens = gr.Number(value=64, minimum=1, precision=0, label="Max tokens", elem_id="fs-max-tokens")
            clear = gr.Button("New conversation", elem_id="fs-clear")
        with gr.Column(scale=3):
            status = gr.Markdown(elem_id="fs-status")
            chatbot = gr.Chatbot(label="Conversation", height=480, elem_id="fs-chat", sanitize_html=True)
            box = gr.MultimodalTextbox(
                placeholder="Ask something; attach images with the clip",
                file_types=["image"],
                file_count="multiple",
                show_label=False,
                elem_id="fs-input",
            )
    history = gr.State([])
    inputs = [box, chatbot, history, model, key, temperature, top_p, max_tokens]
    box.submit(page.send, inputs, [chatbot, status, history, box], concurrency_limit=None)
    clear.click(lambda: ([], [], ""), None, [chatbot, history, status])
    # always_last: a key typed again while the last one is being checked is checked too, not dropped
    gr.on([blocks.load, key.submit, key.blur], page.models, [key], [model, models_note], trigger_mode="always_last")
