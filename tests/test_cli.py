"""The ``frugalserve`` command as a user runs it: a real subprocess, real files, a real SQLite database."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from . import procs

ROOT = Path(__file__).parent.parent
BROKEN = (
    "pools:\n  - {name: a, model: m, backend: {url: 'http://x:1'}}\n  - {name: b, model: n, backend: {url: nope}}\n"
)


def frugalserve(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "frugalserve", *args],
        cwd=cwd,
        env=procs.spawn_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def keys_config(tmp_path: Path) -> Path:
    """A config naming its own database (no pools: the key and report commands need none)."""
    f = tmp_path / "keys.yaml"
    f.write_text(f"gateway: {{database: 'sqlite:///{tmp_path / 'keys.db'}'}}\n")
    return f


def test_keys_accept_config_after_the_action(tmp_path: Path, keys_config: Path) -> None:
    created = frugalserve("keys", "create", "--name", "team-a", "--config", str(keys_config), "--json", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["name"] == "team-a"
    assert (tmp_path / "keys.db").exists() and not (tmp_path / "frugalserve.db").exists()
    for args in (
        ("keys", "list", "--json", "--config", str(keys_config)),
        ("keys", "--config", str(keys_config), "list", "--json"),
        # after the action beats before it, as a later option does everywhere else
        ("keys", "--config", str(tmp_path / "absent.yaml"), "list", "--config", str(keys_config), "--json"),
    ):
        listed = frugalserve(*args, cwd=tmp_path)
        assert listed.returncode == 0, (args, listed.stderr)
        assert [k["name"] for k in json.loads(listed.stdout)] == ["team-a"], args


def test_keys_accept_database_after_the_action(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'other.db'}"
    assert frugalserve("keys", "create", "--name", "b", "--database", db, cwd=tmp_path).returncode == 0
    assert (tmp_path / "other.db").exists() and not (tmp_path / "frugalserve.db").exists()


def test_report_accepts_config_anywhere_after_the_subcommand(tmp_path: Path, keys_config: Path) -> None:
    assert frugalserve("keys", "create", "--name", "a", "--config", str(keys_config), cwd=tmp_path).returncode == 0
    for args in (
        ("report", "--config", str(keys_config), "--by", "key", "--format", "json"),
        ("report", "--by", "key", "--format", "json", "--config", str(keys_config)),
    ):
        done = frugalserve(*args, cwd=tmp_path)
        assert done.returncode == 0, (args, done.stderr)
        json.loads(done.stdout)
    assert (tmp_path / "keys.db").exists() and not (tmp_path / "frugalserve.db").exists()


@pytest.mark.parametrize(
    "args",
    [
        ("check-config", "{f}"),
        ("check-config", "--config", "{f}"),
        ("up", "--config", "{f}"),
        ("up", "--port", "9", "--config", "{f}"),
        ("keys", "create", "--name", "a", "--config", "{f}"),
        ("report", "--by", "key", "--config", "{f}"),
    ],
)
def test_a_broken_config_is_reported_once_with_its_key_path(tmp_path: Path, args: tuple[str, ...]) -> None:
    f = tmp_path / "broken.yaml"
    f.write_text(BROKEN)
    done = frugalserve(*(a.format(f=f) for a in args), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == f"error: pools[1].backend.url: not a URL: 'nope' (expected http://host:port) (in {f})\n"


def test_check_config_refuses_two_different_files(tmp_path: Path) -> None:
    done = frugalserve("check-config", "a.yaml", "--config", "b.yaml", cwd=tmp_path)
    assert done.returncode == 2 and "two config files" in done.stderr


def test_check_config_accepts_the_example(tmp_path: Path) -> None:
    done = frugalserve("check-config", str(ROOT / "config.example.yaml"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ok, 5 pool(s)" in done.stdout


def test_up_refuses_a_config_without_pools(tmp_path: Path, keys_config: Path) -> None:
    done = frugalserve("up", "--config", str(keys_config), cwd=tmp_path)
    assert done.returncode == 2
    assert "declares no pool" in done.stderr


def test_options_after_the_subcommand_appear_in_its_help(tmp_path: Path) -> None:
    done = frugalserve("keys", "create", "--help", cwd=tmp_path)
    assert done.returncode == 0
    assert "--config FILE" in done.stdout and "--database URL" in done.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_run_takes_port_host_and_config_from_its_command_line(tmp_path: Path) -> None:
    make = ["make", "--no-print-directory", "-C", str(ROOT), "-n", "run", "VENV=/v"]
    plan = subprocess.run([*make, "PORT=9123", "HOST=0.0.0.0", "CONFIG=my.yaml"], capture_output=True, text=True)
    assert plan.stdout.splitlines()[-1].split() == [
        "/v/bin/frugalserve",
        "up",
        "--config",
        "my.yaml",
        "--host",
        "0.0.0.0",
        "--port",
        "9123",
    ]
    # HOST and PORT in the environment belong to other programs (tcsh exports HOST).
    env = {**os.environ, "HOST": "elsewhere", "PORT": "1"}
    plan = subprocess.run(make, capture_output=True, text=True, env=env)
    assert plan.stdout.splitlines()[-1].split() == ["/v/bin/frugalserve", "up"]


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_run_port_starts_the_gateway_on_that_port(tmp_path: Path) -> None:
    venv = Path(sys.executable).parent.parent
    if not (venv / "bin" / "frugalserve").exists():
        pytest.skip("the test's Python is not a venv with frugalserve installed")
    config = tmp_path / "c.yaml"
    config.write_text(
        f"gateway: {{database: 'sqlite:///{tmp_path / 'gw.db'}'}}\n"
        "pools:\n  - {name: a, model: m, backend: {url: 'http://127.0.0.1:9'}}\n"
    )
    port = procs.free_port()
    stamp = venv / ".installed-run"  # -o: use the venv as it is, never install into it
    args = ["make", "-C", str(ROOT), "-o", str(stamp), "run", f"VENV={venv}", f"PORT={port}", f"CONFIG={config}"]
    proc = procs.spawn(args, tmp_path / "make.log")
    try:
        procs.wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60, proc=proc)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).json()["data"][0]["id"] == "m"
    finally:
        procs.stop(proc)
