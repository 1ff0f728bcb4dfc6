"""The ``engine`` and ``demo-model`` subcommands: cheap to import, and demo-model writes a checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import SRC


def test_subcommands_do_not_import_torch_until_run() -> None:
    code = (
        "import sys; from frugalserve.cli import build_parser; build_parser(); "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ | {"PYTHONPATH": str(SRC)})


@pytest.mark.engine
@pytest.mark.integration
def test_demo_model_command_writes_a_text_checkpoint_and_refuses_to_overwrite(tmp_path: Path) -> None:
    env = os.environ | {"PYTHONPATH": str(SRC)}
    cmd = [sys.executable, "-m", "frugalserve", "demo-model", str(tmp_path / "m"), "--text-only"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "demo Qwen3 (text) checkpoint" in done.stdout
    assert (tmp_path / "m" / "model.safetensors").exists()
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "already holds a checkpoint" in again.stderr
