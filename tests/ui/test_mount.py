"""The UI costs nothing when it is off, and says what to install when Gradio is missing."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from frugalserve import config as cfg
from frugalserve import ui
from frugalserve.api.app import create_app

POOLS = "pools:\n  - name: a\n    model: m\n    backend: {url: 'http://127.0.0.1:9'}\n"


def test_a_gateway_with_the_ui_off_never_imports_gradio() -> None:
    code = (
        "import sys\n"
        "from frugalserve import config as cfg\n"
        "from frugalserve.api.app import create_app\n"
        f"create_app(cfg.load_text({POOLS!r}))\n"
        "print('gradio' in sys.modules, 'frugalserve.ui.pages' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "False"]


async def test_with_the_ui_off_there_is_no_ui_route() -> None:
    app = create_app(cfg.load_text(POOLS))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        assert (await client.get("/ui/")).status_code == 404
        assert (await client.get("/")).status_code == 404


async def test_without_gradio_the_ui_page_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # Stands in for an installation without the ui extra (this venv has it, so the check is made to say no).
    monkeypatch.setattr(ui, "installed", lambda: False)
    app = create_app(cfg.load_text(POOLS + "ui: {enabled: true}\n"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        for path in ("/ui", "/ui/", "/ui/admin"):
            r = await client.get(path)
            assert r.status_code == 503 and "pip install 'frugalserve[ui]'" in r.text, path
        assert (await client.get("/", follow_redirects=False)).headers["location"] == "/ui/"


def test_gradios_queue_polls_the_gateways_event_loop_no_more_than_every_20_ms() -> None:
    """Gradio's default (every 1 ms while idle) would cost the gateway ~5% of a core with nobody on the page.
    In a fresh interpreter: importing Gradio leaves sockets this test process would report as leaked."""
    code = (
        "from starlette.routing import Mount\n"
        "from frugalserve import config as cfg\n"
        "from frugalserve.api.app import create_app\n"
        f"app = create_app(cfg.load_text({POOLS + 'ui: {enabled: true}' + chr(10)!r}))\n"
        "(m,) = [r for r in app.routes if isinstance(r, Mount) and r.path == '/ui']\n"
        "q = m.app.get_blocks()._queue\n"
        "print(q.sleep_when_free, q.progress_update_sleep_when_free)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert [float(x) for x in out.stdout.split()] == [0.02, 0.1]
