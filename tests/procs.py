"""Real processes on loopback ports for tests: start, wait until healthy, always clean up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import openai

TESTS = Path(__file__).parent
FAKE_UPSTREAM = TESTS / "fake_upstream.py"
SRC = TESTS.parent / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "the condition") -> None:
    """Poll real state instead of sleeping a guessed time."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout}s")
        time.sleep(0.02)


async def eventually(predicate: Callable[[], bool], within_s: float = 10.0, what: str = "the condition") -> None:
    """:func:`wait_until` for async tests (the event loop keeps running while it waits)."""
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {within_s}s")
        await asyncio.sleep(0.02)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Stop a process started with :func:`spawn` and everything in its process group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def spawn_env(env: dict[str, str] | None = None) -> dict[str, str]:
    # The repository's src first, so a child runs this checkout's code even beside another install.
    pythonpath = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": pythonpath, **(env or {})}


def spawn(args: Sequence[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            list(args), stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=spawn_env(env)
        )


@contextlib.contextmanager
def fake_upstream(tmp: Path, *extra: str, port: int | None = None) -> Iterator[str]:
    port = port or free_port()
    proc = spawn([sys.executable, str(FAKE_UPSTREAM), "--port", str(port), *extra], tmp / f"upstream-{port}.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@contextlib.contextmanager
def gateway(
    tmp: Path, config_yaml: str, env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    cfg = tmp / f"gateway-{port}.yaml"
    cfg.write_text(config_yaml)
    proc = spawn(
        [sys.executable, "-m", "frugalserve", "up", "--config", str(cfg), "--port", str(port)],
        tmp / f"gateway-{port}.log",
        env,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        stop(proc)


def stored_record(db: Path, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The usage record a gateway wrote to the SQLite file ``db``, polled until it is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            with contextlib.closing(sqlite3.connect(db)) as conn:
                conn.row_factory = sqlite3.Row
                try:
                    row = conn.execute("SELECT * FROM usage_records WHERE request_id = ?", (request_id,)).fetchone()
                except sqlite3.OperationalError:  # the table is being created
                    row = None
            if row is not None:
                return dict(row)
        time.sleep(0.05)
    raise AssertionError(f"no record for {request_id}")


def cli(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``frugalserve ARGS`` as a user would (a subprocess of this checkout); its stdout, or fail."""
    out = subprocess.run(
        [sys.executable, "-m", "frugalserve", *args],
        cwd=cwd,
        env=spawn_env(env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def openai_client(base_url: str, api_key: str = "unused", **kwargs: Any) -> openai.OpenAI:
    """The official client, as tests use it: no retries, and no idle connections kept open after each answer,
    so a client a test does not close leaks no socket (ResourceWarning is an error in tests)."""
    http = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), timeout=kwargs.pop("timeout", 60))
    return openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, http_client=http, **kwargs)
