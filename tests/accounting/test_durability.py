"""Nothing lost, with real gateway processes: hostile records, a forced shutdown, kill -9 with the journal."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from frugalserve.accounting import store
from tests import procs

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent


def config_yaml(db_url: str, pools: str, accounting: str = "") -> str:
    return (
        f"gateway: {{database: '{db_url}', shutdown_grace_s: 30}}\n"
        f"accounting: {{spool_path: spool.jsonl, dead_letter_path: dead.jsonl, {accounting}}}\n"
        f"pools:\n{pools}"
    )


def pool(name: str, model: str, url: str) -> str:
    return f"  - {{name: {name}, model: {model}, backend: {{url: '{url}'}}, gpu: {{usd_per_hour: 3.6}}}}\n"


@contextmanager
def usage_backend(tmp: Path, prompt_tokens: int) -> Iterator[str]:
    port = procs.free_port()
    args = [sys.executable, str(HERE / "usage_backend.py"), "--port", str(port), "--prompt-tokens", str(prompt_tokens)]
    proc = procs.spawn(args, tmp / "usage-backend.log")
    try:
        procs.wait_http(f"http://127.0.0.1:{port}/health", proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        procs.stop(proc)


def stored(db_url: str) -> list[dict[str, Any]]:
    engine = store.create_engine(db_url)
    try:
        with engine.connect() as conn:
            q = sa.select(store.usage_records).order_by(store.usage_records.c.id)
            return [dict(r) for r in conn.execute(q).mappings()]
    except sa.exc.OperationalError:  # not created yet
        return []
    finally:
        engine.dispose()


def poll(what: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if ok(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def chat(url: str, model: str, **fake: object) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "x_fake": fake}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)


def test_hostile_records_are_fitted_and_never_block_later_ones(tmp_path: Path, db_url: str) -> None:
    """Issue 9.7's three reproductions, through a real gateway, each followed by an ordinary request."""
    with (
        procs.fake_upstream(tmp_path) as up,
        usage_backend(tmp_path, 2**64 - 1) as huge,
        procs.gateway(
            tmp_path,
            config_yaml(db_url, pool("small", "m", up) + pool("huge", "h", huge), "flush_interval_s: 0.05"),
        ) as (gw, _),
    ):
        assert chat(gw, "qwen\u0000vl").status_code == 404  # no key needed to make this record
        assert chat(gw, "x" * 300).status_code == 404
        r = chat(gw, "h")
        assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 2**64 - 1
        assert chat(gw, "m").status_code == 200
        rows = poll(lambda: stored(db_url), lambda rows: len(rows) >= 4)
        metrics = httpx.get(f"{gw}/metrics").text
    assert [r["status"] for r in rows] == [404, 404, 200, 200]
    assert rows[0]["model"] == "qwenvl" and rows[1]["model"] == "x" * 200
    # an impossible count makes the backend's usage unknown, and the record says why (api/proxy.py)
    assert rows[2]["prompt_tokens"] is None and rows[2]["completion_tokens"] is None
    assert "prompt_tokens" in rows[2]["usage_note"]
    assert rows[3]["model"] == "m" and rows[3]["prompt_tokens"] > 0
    assert "frugalserve_usage_records_dead_lettered_total 0.0" in metrics
    assert not (tmp_path / "dead.jsonl").exists() and not (tmp_path / "spool.jsonl").exists()


@pytest.mark.parametrize("durability", ["batch", "wal"])
def test_forced_shutdown_writes_a_record_for_each_request_in_flight(tmp_path: Path, durability: str) -> None:
    """batch: written to the database before the process exits; wal: journaled, written by the next start."""
    db_url = f"sqlite:///{tmp_path / 'usage.db'}"
    n = 40
    with procs.fake_upstream(tmp_path) as up:
        yaml = config_yaml(db_url, pool("small", "m", up), f"durability: {durability}")
        with procs.gateway(tmp_path, yaml) as (gw, proc):
            log = tmp_path / f"gateway-{gw.rsplit(':', 1)[1]}.log"
            with ThreadPoolExecutor(n) as ex:
                futures = [ex.submit(chat, gw, "m", delay_s=60) for _ in range(n)]
                running = poll(lambda: httpx.get(f"{up}/stats").json()["running"], lambda k: k == n)
                assert running == n
                proc.send_signal(signal.SIGTERM)
                poll(log.read_text, lambda text: "no longer accepting" in text)
                proc.send_signal(signal.SIGTERM)  # force
                assert proc.wait(20) is not None
                for f in futures:
                    try:
                        f.result()
                    except httpx.HTTPError:
                        pass  # the gateway went away under them: that is the point
        if durability == "wal":
            assert stored(db_url) == []  # in the journal only
            with procs.gateway(tmp_path, yaml):
                pass  # the next start writes it before answering
    rows = stored(db_url)
    assert len(rows) == n
    assert {(r["status"], r["error_code"]) for r in rows} == {(499, "gateway_shutdown")}
    assert all(r["duration_s"] > 0 and r["pool"] == "small" for r in rows)


def test_wal_journal_keeps_every_finished_response_through_kill_9(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'usage.db'}"
    n = 15
    with procs.fake_upstream(tmp_path) as up:
        # a long flush interval: without the journal every one of these would still be in memory
        yaml = config_yaml(
            db_url, pool("small", "m", up), "durability: wal, journal_path: journal.jsonl, flush_interval_s: 600"
        )
        with procs.gateway(tmp_path, yaml) as (gw, proc):
            for _ in range(n):
                assert chat(gw, "m").status_code == 200
            procs.stop(proc, signal.SIGKILL)
        assert len(stored(db_url)) == 0  # nothing was flushed before the kill
        with procs.gateway(tmp_path, yaml) as (gw, _):
            rows = stored(db_url)  # written at startup, before the gateway answers
    assert len(rows) == n and {r["status"] for r in rows} == {200}
    assert not (tmp_path / "journal.jsonl.flushing").exists()
