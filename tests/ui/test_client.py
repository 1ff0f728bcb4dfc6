"""The UI's client against a real gateway process over HTTP: the events of a chat turn on a cold pool, and
the gateway's errors as the page shows them."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from frugalserve.ui.client import ChatEvent, Delta, Done, GatewayClient, GatewayError, Ready, Routed, Waiting
from tests import procs

pytestmark = pytest.mark.integration

START_DELAY_S = 2.5


@pytest.fixture
def cold_gateway(tmp_path: Path) -> Iterator[str]:
    """One pool whose backend takes START_DELAY_S to start, keep-alives every 0.3 s."""
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(procs.FAKE_UPSTREAM))} --port {{port}} --start-delay {START_DELAY_S}"
    config = (
        f"gateway: {{database: 'sqlite:///{tmp_path / 'fs.db'}'}}\n"
        "pools:\n  - name: slow\n    model: slow-model\n"
        f"    backend: {{command: {command!r}, log_dir: {str(tmp_path)!r}, startup_timeout_s: 30}}\n"
        "    lifecycle: {keepalive_s: 0.3}\n"
    )
    with procs.gateway(tmp_path, config) as (url, _):
        yield url


async def turn(client: GatewayClient, body: dict[str, object]) -> list[ChatEvent]:
    return [e async for e in client.chat(body)]


async def test_a_turn_on_a_cold_pool_is_routed_then_waits_then_streams(cold_gateway: str) -> None:
    client = GatewayClient(cold_gateway, None)
    assert await client.models() == ["slow-model"]
    events = await turn(
        client, {"model": "slow-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    )
    routed, *rest = events
    assert isinstance(routed, Routed) and routed.pool == "slow" and routed.cold and routed.request_id
    waits = [e for e in rest if isinstance(e, Waiting)]
    # a keep-alive every 0.3 s through a start of 2.5 s: several, each saying the pool starts
    assert len(waits) >= 4 and {w.pool for w in waits} == {"slow"}
    assert "starting" in {w.state for w in waits}
    assert waits[-1].waited_s >= 1.0
    ready = [e for e in rest if isinstance(e, Ready)]
    assert len(ready) == 1 and START_DELAY_S * 0.8 <= ready[0].cold_start_s <= START_DELAY_S + 5
    text = "".join(e.text for e in rest if isinstance(e, Delta))
    assert text and isinstance(rest[-1], Done) and rest[-1].request_id == routed.request_id
    # the order: routed, waits, ready, text, done
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("Ready") > max(i for i, k in enumerate(kinds) if k == "Waiting")
    assert kinds.index("Delta") > kinds.index("Ready")

    warm = await turn(client, {"model": "slow-model", "messages": [{"role": "user", "content": "again"}]})
    assert isinstance(warm[0], Routed) and not warm[0].cold
    assert not any(isinstance(e, (Waiting, Ready)) for e in warm)


async def test_the_gateways_errors_reach_the_page_with_the_parameter_they_name(cold_gateway: str) -> None:
    client = GatewayClient(cold_gateway, None)
    with pytest.raises(GatewayError) as err:
        await turn(client, {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]})
    assert err.value.status == 404 and err.value.param == "model" and "no-such-model" in str(err.value)
    with pytest.raises(GatewayError) as err:
        await turn(client, {"model": "slow-model", "messages": [], "temperature": 7})
    assert err.value.status == 400 and err.value.param is not None
    unreachable = GatewayClient(f"http://127.0.0.1:{procs.free_port()}", None)
    with pytest.raises(GatewayError, match="did not answer"):
        await unreachable.models()
