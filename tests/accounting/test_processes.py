"""Real gateway processes: SIGTERM with requests in flight, two gateways sharing one database, the CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from frugalserve.accounting import store
from tests import procs

pytestmark = pytest.mark.integration


def config_yaml(upstream: str, db_url: str, auth: bool) -> str:
    return (
        f"gateway:\n  database: '{db_url}'\n  shutdown_grace_s: 20\n"
        f"auth: {{enabled: {str(auth).lower()}}}\n"
        "accounting: {flush_interval_s: 0.05, budget_refresh_s: 0.2, spool_path: spool.jsonl}\n"
        f"pools:\n  - name: small\n    model: m\n    backend: {{url: '{upstream}'}}\n"
        "    gpu: {usd_per_hour: 3600, type: L4}\n"
    )


def cli(tmp: Path, db_url: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "frugalserve", *args, "--database", db_url]
        if args[0] == "report"
        else [sys.executable, "-m", "frugalserve", args[0], "--database", db_url, *args[1:]],
        cwd=tmp,
        env=procs.spawn_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def post(url: str, secret: str | None = None, **fake: object) -> httpx.Response:
    headers = {"authorization": f"Bearer {secret}"} if secret else {}
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "x_fake": fake}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def test_sigterm_with_requests_in_flight_loses_no_record(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'usage.db'}"
    with procs.fake_upstream(tmp_path) as up, procs.gateway(tmp_path, config_yaml(up, db_url, False)) as (gw, proc):
        with ThreadPoolExecutor(20) as pool:
            futures = [pool.submit(post, gw, None, delay_s=1.0) for _ in range(20)]
            # all 20 are in flight (a request still connecting when the socket closes would be reset)
            procs.wait_until(lambda: httpx.get(up + "/stats").json()["running"] == 20, what="20 requests upstream")
            proc.send_signal(signal.SIGTERM)
            statuses = [f.result().status_code for f in futures]
        assert proc.wait(30) == 0
    assert statuses == [200] * 20
    engine = store.create_engine(db_url)
    assert store.count_records(engine) == 20
    engine.dispose()


def test_two_gateways_share_keys_budgets_and_usage(tmp_path: Path, db_url: str) -> None:
    created = json.loads(
        cli(tmp_path, db_url, "keys", "create", "--name", "team", "--budget-usd-per-day", "0.05", "--json")
    )
    secret = created["secret"]
    yaml = config_yaml("{up}", db_url, True)
    with procs.fake_upstream(tmp_path) as up:
        with (
            procs.gateway(tmp_path, yaml.replace("{up}", up)) as (a, _),
            procs.gateway(tmp_path, yaml.replace("{up}", up)) as (b, _),
        ):
            assert post(b, secret).status_code == 200  # the key made by the CLI works on both
            assert post(a, secret, delay_s=0.1).status_code == 200  # spends the daily budget on A
            # B sees A's spend within A's flush (0.05 s) + B's refresh (0.2 s); 2 s is a generous bound
            answers: list[httpx.Response] = []
            procs.wait_until(lambda: answers.append(post(b, secret)) or answers[-1].status_code == 429, 2.0)
            assert answers[-1].json()["error"]["code"] == "budget_exceeded"
            assert "revoked" in cli(tmp_path, db_url, "keys", "revoke", "team")
            procs.wait_until(lambda: post(a, secret).status_code == 401 and post(b, secret).status_code == 401, 2.0)
    engine = store.create_engine(db_url)
    with engine.connect() as conn:
        gateways = conn.execute(sa.select(sa.func.count(sa.distinct(store.usage_records.c.gateway)))).scalar_one()
        hashes = [r[0] for r in conn.execute(sa.select(store.api_keys.c.secret_hash))]
    engine.dispose()
    assert gateways == 2
    assert secret not in hashes and len(hashes[0]) == 64  # only the hash is stored
    listed = cli(tmp_path, db_url, "keys", "list")
    assert "team" in listed and secret not in listed
    report = json.loads(cli(tmp_path, db_url, "report", "--by", "key", "--format", "json"))
    assert report[-1]["group"] == "TOTAL" and report[-1]["requests"] == 5  # 200, 200, 429, 401, 401
    assert report[-1]["errors"] == 3
