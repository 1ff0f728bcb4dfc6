"""What the ``frugalserve`` command prints, read as a user reads it: a real subprocess on a real SQLite file.

Each test guards one finding of a review on a 100-column terminal (alignment, units, legends, errors).
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from frugalserve.accounting import keys, store
from frugalserve.accounting.auth import Gate
from frugalserve.errors import RateLimited

from . import procs

POOL = "pools:\n  - {name: p, model: m, backend: {url: 'http://127.0.0.1:9'}, gpu: {usd_per_hour: 3.6, count: 2}}\n"


def run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "frugalserve", *args],
        cwd=cwd,
        env=procs.spawn_env(env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def write_config(tmp: Path, pools: str = POOL) -> Path:
    f = tmp / "gw.yaml"
    f.write_text(f"gateway: {{database: 'sqlite:///{tmp / 'gw.db'}'}}\n{pools}")
    return f


def record(t: float, key: str | None, pool: str | None, dur: float, status: int = 200) -> dict[str, object]:
    return {
        "request_id": f"r{t}",
        "time": t,
        "endpoint": "chat",
        "model": "m",
        "key_id": key,
        "pool": pool,
        "replica": "p-0" if pool else None,
        "status": status,
        "prompt_tokens": 100,
        "completion_tokens": 10,
        "duration_s": dur,
    }


@pytest.fixture
def usage_db(tmp_path: Path) -> Path:
    """Two keys' requests on pool p an hour ago, one refused request (no pool, no key), one 10 days old.

    The replica was up 600 s (10 s starting) and served 30 s: the pools' bill is far above the keys' shares.
    """
    config = write_config(tmp_path)
    engine = store.open_store(f"sqlite:///{tmp_path / 'gw.db'}")
    now = time.time()
    t = now - 3600  # after yesterday's UTC midnight whatever the time of day
    a, _ = keys.create_key(engine, "team-a", t)
    b, _ = keys.create_key(engine, "team-b", t)
    records = [
        record(t + 20, a.id, "p", 10.0),
        record(t + 40, b.id, "p", 20.0),
        record(t + 50, None, None, 0.0, status=401),
        record(now - 10 * 86400, a.id, "p", 5.0),
    ]
    states = [(0, "stopped", "starting"), (10, "starting", "ready"), (600, "ready", "stopped")]
    events = [
        {"time": t + s, "pool": "p", "replica": "p-0", "from_state": x, "to_state": y, "reason": "r"}
        for s, x, y in states
    ]
    store.insert_batch(engine, records, events)
    engine.dispose()
    return config


def columns_line_up(lines: list[str], left: int) -> None:
    """Every cell sits under its header: the first ``left`` columns start where their header starts, the
    others (amounts) end where their header ends. The last column is not checked (it may point below)."""
    header = lines[0]
    spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", header)]
    for line in lines[1:]:
        for i, (start, end) in enumerate(spans[:-1]):
            edge, outside = (start, start - 1) if i < left else (end - 1, end)
            assert line[edge] != " " and line[outside : outside + 1] in ("", " "), (i, header, line)


def test_keys_list_fits_100_columns_under_its_headers_with_both_budgets_in_dollars(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    procs.cli(
        tmp_path,
        "keys", "create", "--config", str(config), "--name", "a-rather-long-team-name-for-billing",
        "--budget-usd-per-day", "0.000001", "--budget-usd-per-month", "1250", "--rpm", "600", "--tpm", "1000000",
        "--models", "m,qwen3-vl-8b-instruct,qwen3-vl-32b-instruct,another-model",
    )  # fmt: skip
    procs.cli(tmp_path, "keys", "create", "--config", str(config), "--name", "b", "--budget-usd-per-day", "0.01")
    procs.cli(tmp_path, "keys", "revoke", "b", "--config", str(config))
    out = procs.cli(tmp_path, "keys", "list", "--config", str(config)).splitlines()
    assert max(len(line) for line in out) <= 100, out
    assert out[0].split() == ["id", "name", "created", "revoked", "usd/day", "usd/month", "rpm", "tpm", "models"]
    columns_line_up([line for line in out if not line.startswith("  ")], left=4)
    text = "\n".join(out)
    assert "$0.000001" in text and "$1,250.00" in text and "$0.01" in text and "e-0" not in text
    # the long allow-list is whole on its own line, not cut at the terminal's edge
    assert "models: m, qwen3-vl-8b-instruct, qwen3-vl-32b-instruct, another-model" in text


def test_over_budget_message_writes_the_budget_in_dollars() -> None:
    with pytest.raises(RateLimited) as caught:
        Gate._over_budget("daily", 0.000001, 86400.0, 0.0)
    assert "daily budget of $0.000001;" in caught.value.message
    assert keys.format_usd(0.01) == "$0.01" and keys.format_usd(1234.5) == "$1,234.50"


def test_keys_create_warns_about_a_model_no_pool_serves_and_still_creates_the_key(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    done = run(
        tmp_path, "keys", "create", "--config", str(config), "--name", "x", "--models", "m,other-model", "--json"
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("warning: no pool of") and "'other-model'" in done.stderr and "'m'" not in done.stderr
    assert json.loads(done.stdout)["name"] == "x"
    served = run(tmp_path, "keys", "create", "--config", str(config), "--name", "y", "--models", "m")
    assert served.returncode == 0 and served.stderr == ""


def test_report_by_key_explains_why_total_is_more_than_the_rows(tmp_path: Path, usage_db: Path) -> None:
    config = usage_db
    out = procs.cli(tmp_path, "report", "--config", str(config), "--by", "key", "--since", "yesterday")
    assert max(len(line) for line in out.splitlines()) <= 100
    section = out[out.index("# GPU cost") :].split("\n\n")[0].splitlines()
    billed = {line.split()[0]: float(line.split()[2].replace(",", "")) for line in section[2:] if line[0] != "#"}
    # by hand, at 2 GPUs x $3.60/h = $0.002 per replica-second: team-a served 10 s, team-b 20 s; the pool
    # billed 600 s (starting at t, stopped at t+600)
    assert (billed["team-a"], billed["team-b"], billed["TOTAL"]) == (0.02, 0.04, 1.2)
    assert "TOTAL is the pools' whole bill" in out and "ideal:" in out and "util:" in out
    assert "-: requests without a key" in out


def test_report_names_its_database_and_window_and_explains_the_dash_group(tmp_path: Path, usage_db: Path) -> None:
    config = usage_db
    done = run(tmp_path, "report", "--config", str(config), "--since", "yesterday")
    assert done.returncode == 0, done.stderr
    midnight = time.strftime("%Y-%m-%d 00:00", time.gmtime(time.time() - 86400))
    header = done.stderr.splitlines()
    assert header[0] == f"# database: {tmp_path / 'gw.db'}"
    assert header[1].startswith(f"# window: {midnight} to ")
    assert header[1].endswith(" UTC, 3 request(s)")  # the 10-day-old one is outside the window
    out = done.stdout
    assert "-: requests that never reached a pool" in out
    done = run(tmp_path, "report", "--config", str(config), "--format", "csv")
    assert done.returncode == 0 and done.stderr.startswith(f"# database: {tmp_path / 'gw.db'}\n# window: ")
    assert next(csv.reader(io.StringIO(done.stdout)))[0] == "group"  # stdout is data only
    assert "4 request(s)" in done.stderr


def test_report_wide_formats_percentages_as_the_narrow_table_does(tmp_path: Path, usage_db: Path) -> None:
    config = usage_db
    narrow = procs.cli(tmp_path, "report", "--config", str(config), "--since", "yesterday")
    wide = procs.cli(tmp_path, "report", "--config", str(config), "--since", "yesterday", "--wide").splitlines()
    header = next(line.split() for line in wide if line.startswith("group"))
    total = next(line.split() for line in wide if line.startswith("TOTAL"))
    util, saved = total[header.index("utilisation")], total[header.index("savings_pct")]
    assert util.endswith("%") and saved.endswith("%")
    cost_total = next(
        line.split() for line in narrow[narrow.index("# GPU cost") :].splitlines() if line.startswith("TOTAL")
    )
    assert (cost_total[4], cost_total[8]) == (util, saved)
    assert util == "5.0%"  # by hand: 30 s served of 600 s billed


def test_report_anomalies_says_when_there_are_none(tmp_path: Path, usage_db: Path) -> None:
    config = usage_db
    out = procs.cli(tmp_path, "report", "--config", str(config), "--anomalies")
    assert "no requests flagged as token-count outliers" in out
    assert json.loads(procs.cli(tmp_path, "report", "--config", str(config), "--anomalies", "--format", "json")) == []


def test_report_bad_time_lists_the_accepted_forms(tmp_path: Path, usage_db: Path) -> None:
    config = usage_db
    done = run(tmp_path, "report", "--config", str(config), "--since", "last tuesday")
    assert done.returncode == 2
    assert "not a time: 'last tuesday'" in done.stderr and "7d" in done.stderr and "yesterday" in done.stderr
    assert "month (the 1st of this month)" in done.stderr
    assert "isoformat" not in done.stderr


def test_report_help_explains_by_and_format(tmp_path: Path) -> None:
    out = " ".join(procs.cli(tmp_path, "report", "--help").split())
    assert "one row per UTC day or hour, API key" in out and "csv / json: every column" in out
    assert "month (the 1st)" in out


@pytest.mark.parametrize("args", [("report",), ("report", "--by", "key"), ("keys", "list"), ("keys", "revoke", "x")])
def test_reading_a_missing_sqlite_file_is_an_error_not_an_empty_database(tmp_path: Path, args: tuple[str, ...]) -> None:
    done = run(tmp_path, *args)
    assert done.returncode == 2 and done.stdout == ""
    assert f"no database at {tmp_path / 'frugalserve.db'}" in done.stderr
    assert "--config" in done.stderr and "--database" in done.stderr
    assert not (tmp_path / "frugalserve.db").exists()


def test_keys_create_still_creates_the_database(tmp_path: Path) -> None:
    procs.cli(tmp_path, "keys", "create", "--name", "first")
    assert (tmp_path / "frugalserve.db").exists()
    assert "first" in procs.cli(tmp_path, "keys", "list")


@pytest.fixture
def without_psycopg(tmp_path: Path) -> dict[str, str]:
    """An environment where ``import psycopg`` fails as it does without the postgres extra."""
    shadow = tmp_path / "shadow" / "psycopg"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'psycopg'\", name='psycopg')\n")
    return {"PYTHONPATH": f"{shadow.parent}:{procs.SRC}"}


@pytest.mark.parametrize(
    "args",
    [
        ("report", "--database", "postgresql://x@127.0.0.1:1/db"),
        ("keys", "list", "--database", "postgresql://x@127.0.0.1:1/db"),
        ("check-config", "{pg}"),
        ("up", "--config", "{pg}"),
    ],
)
def test_postgres_without_its_driver_is_one_line_naming_the_extra(
    tmp_path: Path, without_psycopg: dict[str, str], args: tuple[str, ...]
) -> None:
    pg = tmp_path / "pg.yaml"
    pg.write_text("gateway: {database: 'postgresql://x@127.0.0.1:1/db'}\n" + POOL)
    done = run(tmp_path, *(a.format(pg=pg) for a in args), env=without_psycopg)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "PostgreSQL needs the postgres extra: pip install 'frugalserve[postgres]'" in done.stderr


def test_top_level_help_describes_the_program(tmp_path: Path) -> None:
    out = procs.cli(tmp_path, "--help")
    assert "``" not in out and "OpenAI-compatible gateway" in out


def test_check_config_without_pools_says_up_would_refuse_it(tmp_path: Path) -> None:
    config = write_config(tmp_path, pools="")
    out = procs.cli(tmp_path, "check-config", str(config))
    assert "no pool" in out and "`up` would refuse it" in out and "0 pool(s): \n" not in out
    assert run(tmp_path, "up", "--config", str(config)).returncode == 2  # and it does


def test_check_config_ignores_the_driver_when_the_gateway_never_opens_the_database(
    tmp_path: Path, without_psycopg: dict[str, str]
) -> None:
    pg = tmp_path / "pg.yaml"
    pg.write_text("gateway: {database: 'postgresql://x@127.0.0.1:1/db'}\naccounting: {enabled: false}\n" + POOL)
    done = run(tmp_path, "check-config", str(pg), env=without_psycopg)
    assert done.returncode == 0 and "ok, 1 pool(s): p" in done.stdout, done.stderr
