"""The Ray actor behind one replica: it runs the model server on the node Ray placed it on.

This module imports only the standard library (and Ray, inside methods), because it is shipped to the
nodes by value (``ray.cloudpickle.register_pickle_by_value``): a node needs Ray and the model server,
not frugalserve. It mirrors :mod:`.command` on the node: the server runs in its own process group with
its output appended to a log file, is gated on its health path, and is killed as a group on stop; it
also gets SIGKILL when the actor's worker dies (PR_SET_PDEATHSIG), so a killed actor leaves no server.

Errors reach the gateway as ``RuntimeError`` with a message to show (a class of this module would be
a different class on each side once pickled by value).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

# Proxies in the node's environment must not sit between the actor and its own server.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _http(method: str, url: str, timeout_s: float) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with _OPENER.open(request, timeout=timeout_s) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def fill(command: str, port: int, host: str, model: str, python: str) -> list[str]:
    """The argv of ``command`` with {port}, {host}, {model} and {python} (this node's interpreter) filled in."""
    line = command.replace("{port}", str(port)).replace("{host}", host).replace("{model}", model)
    return shlex.split(line.replace("{python}", shlex.quote(python)))


class ServerActor:
    """One replica's model server on a Ray node. An async actor, so that ``wait_exit`` (pending for the
    server's whole life) does not block ``sleep``, ``wake`` and ``stop``."""

    def __init__(self, replica: str, log_dir: str) -> None:
        import ray  # the worker has Ray; the gateway imports this module without needing it

        ctx = ray.get_runtime_context()
        self.replica = replica
        self.log_dir = log_dir
        self.node_id = ctx.get_node_id()
        # The address the gateway reaches the server at: FRUGALSERVE_NODE_IP when the node's environment (or
        # the pool's runtime_env env_vars) names one (a node with several networks), else the address the
        # node joined the cluster with.
        joined = [n.get("NodeManagerAddress") for n in ray.nodes() if n.get("NodeID") == self.node_id]
        self.node_ip = (
            os.environ.get("FRUGALSERVE_NODE_IP")
            or (joined[0] if joined and joined[0] else "")
            or ray.util.get_node_ip_address()
        )
        self.gpu_ids = [str(i) for i in ctx.get_accelerator_ids().get("GPU", [])]
        self.url = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    async def where(self) -> dict[str, Any]:
        """Where Ray placed this actor; answering at all means it was placed and constructed."""
        return {
            "node_id": self.node_id,
            "node_ip": self.node_ip,
            "gpu_ids": self.gpu_ids,
            "actor_pid": os.getpid(),
            "server_pid": self._proc.pid if self._proc is not None else None,
            "log_path": self._log.name if self._log is not None else None,
        }

    def _open_log(self) -> IO[bytes]:
        """The configured log file; a node where that path is not writable logs under its temp dir."""
        for folder in (Path(self.log_dir), Path(tempfile.gettempdir()) / "frugalserve-logs"):
            try:
                folder.mkdir(parents=True, exist_ok=True)
                return open(folder / f"{self.replica}.log", "ab")  # closed in stop()
            except OSError:
                continue
        raise RuntimeError(f"cannot open a log file for {self.replica} under {self.log_dir} or the temp dir")

    async def launch(
        self, command: str, model: str, startup_timeout_s: float, health_path: str, sleep_api: str
    ) -> dict[str, Any]:
        """Start the server, wait until ``health_path`` answers 200, and say where it is."""
        await self.stop(5.0)
        port = _free_port(self.node_ip)
        argv = fill(command, port, self.node_ip, model, sys.executable)
        self._log = self._open_log()
        self._log.write(f"\n=== frugalserve: starting {shlex.join(argv)} on {self.node_ip}\n".encode())
        self._log.flush()
        where = f"{self.node_ip}:{self._log.name}"
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},  # Ray's CUDA_VISIBLE_DEVICES and runtime_env included
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            await self.stop(5.0)
            raise RuntimeError(f"cannot run {argv[0]!r} on {self.node_ip}: {exc.strerror}") from None
        self.url = f"http://{self.node_ip}:{port}"
        try:
            await self._wait_healthy(startup_timeout_s, health_path, where)
            can_sleep = sleep_api == "vllm" or (sleep_api == "auto" and await self._answers("/is_sleeping"))
        except BaseException:
            await self.stop(5.0)
            raise
        return {"url": self.url, "can_sleep": can_sleep, **(await self.where())}

    async def _answers(self, path: str) -> bool:
        try:
            status, _ = await asyncio.to_thread(_http, "GET", self.url + path, 5.0)
        except (OSError, ValueError):
            return False
        return status == 200

    async def _wait_healthy(self, timeout_s: float, health_path: str, where: str) -> None:
        deadline = time.monotonic() + timeout_s
        pause = 0.02
        while True:
            proc = self._proc
            if proc is None or proc.returncode is not None:
                code = proc.returncode if proc is not None else None
                raise RuntimeError(f"the backend exited with code {code} before it was healthy (log: {where})")
            if await self._answers(health_path):
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"the backend was not healthy at {self.url}{health_path} within {timeout_s:g}s "
                    f"(does the command bind {{host}}? log: {where})"
                )
            await asyncio.sleep(pause)
            pause = min(0.25, pause * 1.5)

    async def _post(self, path: str, timeout_s: float) -> None:
        if not self.url:
            raise RuntimeError(f"POST {path}: the backend is not running")
        try:
            status, body = await asyncio.to_thread(_http, "POST", self.url + path, timeout_s)
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"POST {path} failed: {exc}") from None
        if status != 200:
            raise RuntimeError(f"POST {path} answered {status}: {body[:200]!r}")

    async def sleep(self, level: int, timeout_s: float) -> None:
        await self._post(f"/sleep?level={level}", timeout_s)

    async def wake(self, timeout_s: float) -> None:
        await self._post("/wake_up", timeout_s)

    async def wait_exit(self) -> int:
        """The server's exit code once it exits (0 when none runs)."""
        proc = self._proc
        if proc is None:
            return 0
        return await proc.wait()

    async def stop(self, stop_timeout_s: float) -> None:
        """SIGTERM the server's process group, SIGKILL it after ``stop_timeout_s``; idempotent."""
        proc, self._proc = self._proc, None
        self.url = ""
        if proc is not None:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), stop_timeout_s)
            # the whole group, even when the leader already exited: children must not outlive it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
