"""A real local Ray head for tests, with logical GPUs, started and stopped by the test itself.

``ray start --head --block`` runs in a session of its own, so that stopping it ends exactly what it
started: SIGTERM to ``ray start`` (which stops its processes), then SIGKILL to whatever of that session is
left (workers included). Not ``ray stop``: that stops every Ray of this user on the machine, other test
runs' included.

    with ray_head(num_gpus=4) as address:   # "127.0.0.1:<port>"
        ...
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
# Ray 2.60 turns token authentication on when ~/.ray/auth_token exists (and a head started by
# ray.init() writes one): the test cluster and its drivers say "disabled" so they agree whatever is there.
NO_TOKEN = {"RAY_AUTH_MODE": "disabled"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop_with_parent() -> None:  # in the child between fork and exec
    # a test run killed hard (a timeout) must not leave its cluster behind: `ray start --block` stops it on SIGTERM
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def ray_binary() -> Path:
    """The ``ray`` command of the interpreter running the tests; skip the test when Ray is not installed."""
    try:
        import ray  # noqa: F401
    except ImportError:
        pytest.skip("ray is not installed (pip install 'frugalserve[ray]')")
    binary = Path(sys.executable).parent / "ray"
    if not binary.exists():
        pytest.skip(f"ray is importable but there is no {binary}")
    return binary


def session_pids(sid: int) -> list[int]:
    """Processes of session ``sid`` (field 6 of /proc/<pid>/stat)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp session ...
        if int(fields[3]) == sid:
            pids.append(int(entry.name))
    return pids


@contextlib.contextmanager
def ray_head(num_gpus: int = 4, num_cpus: int = 16) -> Iterator[str]:
    binary = ray_binary()
    port = _free_port()
    # short: Ray's unix socket paths live under it and must fit in 107 bytes
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    log_path = Path(temp_dir) / "ray-start.log"
    argv = [
        str(binary), "start", "--head", "--block",
        "--num-gpus", str(num_gpus), "--num-cpus", str(num_cpus),
        "--node-ip-address", "127.0.0.1", "--port", str(port), "--temp-dir", temp_dir,
        "--include-dashboard=false", "--disable-usage-stats",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **NO_TOKEN},
            preexec_fn=_stop_with_parent,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while "Ray runtime started" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"ray start did not come up (exit {proc.poll()}):\n{tail}")
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        _stop(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    sid = proc.pid  # start_new_session: the session is numbered after its leader
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(STOP_TIMEOUT_S)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while (left := session_pids(sid)) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(1.0)
