"""The web UI: chat at ``/ui``, the operator view at ``/ui/admin`` (Gradio, mounted in the gateway).

:func:`mount` is all the gateway calls, and only when ``ui.enabled``; Gradio is imported there, so a
gateway with the UI off never loads it (about 3 s and 130 MB, docs/benchmarks.md). The pages are clients
of the gateway's own HTTP APIs (frugalserve.ui.client). Without the ``ui`` extra installed, ``/ui`` says
how to install it and the gateway serves everything else as usual.
"""

from __future__ import annotations

import importlib.util
import logging
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from frugalserve.config import Config

log = logging.getLogger("frugalserve.ui")

PATH = "/ui"
MISSING = """<!doctype html><meta charset="utf-8"><title>frugalserve</title>
<body style="font: 16px/1.5 system-ui, sans-serif; max-width: 40rem; margin: 3rem auto">
<h1>frugalserve</h1><p>The web UI needs Gradio, which this installation lacks:</p>
<pre>pip install 'frugalserve[ui]'</pre>
<p>(<code>make run</code> installs it.) The OpenAI API at <code>/v1</code> and the admin API at
<code>/admin</code> work without it. To silence this, set <code>ui: {enabled: false}</code>.</p></body>"""


def installed() -> bool:
    return importlib.util.find_spec("gradio") is not None


def mount(app: Starlette, config: Config) -> None:
    """Serve the UI from ``app`` under :data:`PATH` (called by create_app when ``ui.enabled``)."""
    app.router.routes.append(Route("/", lambda request: RedirectResponse(f"{PATH}/"), methods=["GET"]))
    if not installed():
        log.warning("ui.enabled, but Gradio is not installed: /ui explains; pip install 'frugalserve[ui]'")

        async def missing(request: Request) -> Response:
            return HTMLResponse(MISSING, status_code=503)

        app.router.routes.append(Route(PATH, missing, methods=["GET"]))
        app.router.routes.append(Route(PATH + "/{page:path}", missing, methods=["GET"]))
        return
    # Gradio reads these when it is imported: no usage reports, no update checks from a gateway.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    # The pages' calls to the gateway are logged by the gateway as requests; httpx need not say them again.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from frugalserve.ui.pages import mount_pages

    mount_pages(app, config, PATH)
