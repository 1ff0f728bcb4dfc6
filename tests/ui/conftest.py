"""Browser tests of the web UI: a real gateway process (``frugalserve up``), real Chromium driven by Playwright.

Playwright's own browser download does not work here; Debian's ``chromium`` does (``.ci/run`` installs
it). Without it these tests skip and say why. Screenshots go to ``$FRUGALSERVE_SCREENSHOTS`` when set (``make
screenshots`` points it at docs/img for the README), else to the test's temporary folder.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium_path() -> str | None:
    found = os.environ.get("FRUGALSERVE_CHROMIUM") or next(
        (p for p in CHROMIUM_CANDIDATES if Path(p).exists()), shutil.which("chromium")
    )
    return found or None


@pytest.fixture(scope="module")  # not longer: Playwright's sync API holds an event loop that async tests need
def browser() -> Iterator[Any]:
    path = chromium_path()
    if path is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    with sync_api.sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
        b = p.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where screenshots go (kept as test artifacts)."""
    out = Path(os.environ.get("FRUGALSERVE_SCREENSHOTS") or tmp_path / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out
