"""Who can reach what, through a real gateway process with auth on, keys made by the real CLI.

Every admin route is found by walking the application's own routes, so a route added later is covered
without editing this test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from starlette.routing import Mount, Route

from frugalserve import config as cfg
from frugalserve.api.app import create_app
from tests import procs

pytestmark = pytest.mark.integration

ADMIN_KEY = "admin-secret-for-tests"
METRICS_TOKEN = "scrape-secret"


def _config(upstream: str, db: str) -> str:
    return (
        f"gateway:\n  database: '{db}'\n  metrics_token: {METRICS_TOKEN}\n"
        "auth: {enabled: true}\n"
        "accounting: {flush_interval_s: 0.05, budget_refresh_s: 0.2}\n"
        f"pools:\n  - name: small\n    model: m-small\n    backend: {{url: '{upstream}'}}\n"
        f"  - name: big\n    model: m-big\n    backend: {{url: '{upstream}'}}\n"
    )


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """(gateway url, a user key for m-small only, the config text)."""
    tmp = tmp_path_factory.mktemp("gates")
    db = f"sqlite:///{tmp / 'gates.db'}"
    user = json.loads(
        procs.cli(tmp, "keys", "create", "--database", db, "--name", "user", "--models", "m-small", "--json")
    )["secret"]
    with procs.fake_upstream(tmp) as up:
        text = _config(up, db)
        with procs.gateway(tmp, text, env={"FRUGALSERVE_ADMIN_KEY": ADMIN_KEY}) as (url, _):
            yield url, user, text


def _admin_routes(config_text: str) -> list[tuple[str, str]]:
    """(method, concrete path) of every route the app serves under /admin."""
    app = create_app(cfg.load_text(config_text))
    found = []
    for route in app.routes:
        if isinstance(route, Mount) and route.path == "/admin":
            for sub in route.routes:
                assert isinstance(sub, Route)
                for method in sorted(sub.methods or ()):
                    if method != "HEAD":
                        found.append((method, "/admin" + sub.path.replace("{name}", "small")))
        elif isinstance(route, Route):
            assert not route.path.startswith("/admin"), f"{route.path} is outside the admin gate"
    return found


def test_every_admin_route_needs_the_admin_key(gw: tuple[str, str, str]) -> None:
    url, user, text = gw
    routes = _admin_routes(text)
    assert {p for _, p in routes} >= {"/admin/pools", "/admin/usage", "/admin/pools/small/wake"}
    for method, path in [*routes, ("GET", "/admin/no-such-route")]:
        for headers in ({}, {"authorization": f"Bearer {user}"}, {"authorization": "Bearer wrong"}):
            r = httpx.request(method, url + path, headers=headers, timeout=10)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.json()["error"]["type"] == "authentication_error"
            assert r.headers["x-request-id"]
    for method, path in routes:
        r = httpx.request(method, url + path, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
        # past the gate: the route's own answer (an external pool cannot be woken: 409)
        assert r.status_code in (200, 202, 409), (method, path, r.text)
        assert r.status_code != 409 or r.json()["error"]["code"] == "not_managed"


def test_models_need_a_key_and_list_only_what_it_may_use(gw: tuple[str, str, str]) -> None:
    url, user, _ = gw
    anonymous = procs.openai_client(url + "/v1", "not-a-key")
    with pytest.raises(openai.AuthenticationError):
        anonymous.models.list()
    client = procs.openai_client(url + "/v1", user)
    assert [m.id for m in client.models.list()] == ["m-small"]
    assert client.models.retrieve("m-small").id == "m-small"
    with pytest.raises(openai.NotFoundError):  # a model the key may not use does not exist for it
        client.models.retrieve("m-big")
    with pytest.raises(openai.AuthenticationError):
        anonymous.models.retrieve("m-small")


def test_unknown_model_without_a_key_is_401_and_names_no_model(gw: tuple[str, str, str]) -> None:
    url, _, _ = gw
    body = {"model": "guess", "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(url + "/v1/chat/completions", json=body, timeout=10)
    assert r.status_code == 401
    assert "m-small" not in r.text and "m-big" not in r.text


def test_metrics_need_the_scrape_token(gw: tuple[str, str, str]) -> None:
    url, user, _ = gw
    assert httpx.get(url + "/metrics", timeout=10).status_code == 401
    assert httpx.get(url + "/metrics", headers={"authorization": f"Bearer {user}"}, timeout=10).status_code == 401
    r = httpx.get(url + "/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10)
    assert r.status_code == 200 and "frugalserve_requests_total" in r.text


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/healthz", 200),
        ("GET", "/v1/nope", 404),
        ("DELETE", "/v1/chat/completions", 405),
        ("GET", "/v1/chat/completions", 405),
        ("GET", "/admin/pools", 401),
        ("GET", "/v1/models", 401),
        ("GET", "/metrics", 401),
    ],
)
def test_every_response_has_a_request_id_and_errors_are_openai_json(
    gw: tuple[str, str, str], method: str, path: str, status: int
) -> None:
    url, _, _ = gw
    r = httpx.request(method, url + path, headers={"x-request-id": "trace-7"}, timeout=10)
    assert r.status_code == status
    assert r.headers["x-request-id"] == "trace-7"
    if status >= 400:
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}
        if status in (404, 405):
            assert err["type"] == "invalid_request_error"


def test_a_gateway_listening_beyond_loopback_without_auth_says_so_loudly(tmp_path: Path) -> None:
    """`frugalserve up` on every interface with auth off (the warning used to be defined but never called).
    Only 127.0.0.1 is sent traffic; the process is stopped as soon as it is up."""
    port = procs.free_port()
    config = tmp_path / "open.yaml"
    config.write_text(
        "gateway: {host: 0.0.0.0}\npools:\n  - {name: p, model: m, backend: {url: 'http://127.0.0.1:9'}}\n"
    )
    log = tmp_path / "open.log"
    proc = procs.spawn([sys.executable, "-m", "frugalserve", "up", "--config", str(config), "--port", str(port)], log)
    try:
        procs.wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
    finally:
        procs.stop(proc)
    assert "AUTH IS OFF" in log.read_text()
    loopback = tmp_path / "loopback.yaml"
    loopback.write_text(config.read_text().replace("0.0.0.0", "127.0.0.1"))
    with procs.gateway(tmp_path, loopback.read_text()) as (_, gateway):
        pass
    assert "AUTH IS OFF" not in (tmp_path / f"gateway-{_port_of(gateway)}.log").read_text()


def _port_of(proc: subprocess.Popen[bytes]) -> str:
    return str(proc.args[proc.args.index("--port") + 1])  # type: ignore[union-attr]
