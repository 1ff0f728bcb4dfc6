"""The Prometheus tools (promtool, prometheus) for the deploy tests: Debian's package, installed when missing.

CI installs it before the tests (.ci/run). Elsewhere, running as root with apt-get, the session tries to
install it once (bounded); otherwise the tests that need it skip and say why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

INSTALL_TIMEOUT_S = 100  # under the 120 s test timeout, which the first test's fixture setup counts against


def _install_prometheus() -> str | None:
    """Install Debian's prometheus package; None when done, else why not."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "promtool not found (install Debian's 'prometheus' package; tests install it only as root with apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(
            "apt-get update -qq && apt-get install -y -qq prometheus",
            shell=True,
            check=True,
            capture_output=True,
            timeout=INSTALL_TIMEOUT_S,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return f"promtool not found and installing Debian's 'prometheus' took over {INSTALL_TIMEOUT_S}s"
    except subprocess.CalledProcessError as e:
        return f"promtool not found and apt-get failed: {e.stderr.decode(errors='replace')[-300:]}"
    return None


@pytest.fixture(scope="session")
def prometheus_bin() -> Path:
    """The folder holding promtool and prometheus."""
    if shutil.which("promtool") is None or shutil.which("prometheus") is None:
        reason = _install_prometheus()
        if reason is not None:
            pytest.skip(reason)
    promtool = shutil.which("promtool")
    if promtool is None or shutil.which("prometheus") is None:
        pytest.skip("the prometheus package was installed but promtool or prometheus is not on PATH")
    return Path(promtool).parent
